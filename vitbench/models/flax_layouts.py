"""The paper's flax ``.npz`` checkpoints under timm's parameter names (which vitbench's models use).

Three layouts, told apart by their keys:

* **vision_transformer / AugReg** (google-research/vision_transformer ``models_vit.py``): ``embedding/kernel``,
  ``cls``, ``Transformer/posembed_input/pos_embedding``, ``Transformer/encoderblock_{i}/`` with sub-modules
  ``LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3``; ``pre_logits``, ``head``; hybrids add
  the R50 root (``conv_root``, ``gn_root``) and ``block{s}/unit{u}/``; an ``opt/target/`` prefix is allowed;
* **big_vision** (``big_vision/models/vit.py``): ``params/`` prefix, a top-level ``pos_embedding`` with no [class]
  entry (big_vision adds it before prepending the token, so the token's position is zero), sub-modules
  ``LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0``, and the scanned form
  ``Transformer/encoderblock/`` whose arrays carry a leading layer axis;
* **BiT** (google-research/big_transfer ``bit_jax``): ``resnet/root_block/standardized_conv2d/kernel``,
  ``resnet/block{s}/unit{uu}/{a,b,c}/``, ``resnet/group_norm``, ``resnet/head/conv2d``.

The conversions are those of timm's own loaders (``timm.models.vision_transformer._load_weights``,
``timm.models.resnetv2._load_weights``), written as a pure function over the file's arrays so that a missing
array is a one-line error naming it, the pre-logits layer is kept (timm drops it), and resizing stays in one place
(:func:`vitbench.models.published.adapt_state`). tests/test_published_npz.py checks the result against timm's
loaders on files written in each layout.
"""

from __future__ import annotations

import re

import torch

from vitbench.errors import UserError

VIT_PREFIXES = ("", "opt/target/", "params/")
BIT_ROOT = "root_block/standardized_conv2d/kernel"


def detect(arrays: dict[str, torch.Tensor]) -> str | None:
    """'bit', 'vit' (vision_transformer / AugReg), 'big_vision', or None for anything else."""
    if any(k.endswith(BIT_ROOT) for k in arrays):
        return "bit"
    for prefix in VIT_PREFIXES:
        if f"{prefix}embedding/kernel" in arrays:
            return "big_vision" if _big_vision(arrays, prefix) else "vit"
    return None


def _big_vision(arrays: dict[str, torch.Tensor], prefix: str) -> bool:
    return (prefix == "params/" or f"{prefix}pos_embedding" in arrays
            or f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in arrays)


def _flax(w: torch.Tensor, transpose: bool = True) -> torch.Tensor:
    """timm's ``_n2p``: HWIO -> OIHW, (in, out) -> (out, in); a (1, 1, 1, C) GroupNorm vector flattened."""
    if w.ndim == 4 and w.shape[0] == w.shape[1] == w.shape[2] == 1:
        w = w.flatten()
    if transpose:
        w = w.permute(3, 2, 0, 1) if w.ndim == 4 else w.permute(2, 0, 1) if w.ndim == 3 else w.T if w.ndim == 2 else w
    return w.contiguous()


class _Reader:
    """The file's arrays; a missing one is a one-line error naming it and the layout."""

    def __init__(self, arrays: dict[str, torch.Tensor], prefix: str, layout: str, file: str) -> None:
        self.arrays, self.prefix, self.layout, self.file = arrays, prefix, layout, file

    def has(self, key: str) -> bool:
        return self.prefix + key in self.arrays

    def __call__(self, key: str, transpose: bool = True, layer: int | None = None) -> torch.Tensor:
        full = self.prefix + key
        if full not in self.arrays:
            raise UserError(f"the checkpoint has no array {full!r} ({self.layout} layout)", file=self.file,
                            key="model.init")
        w = self.arrays[full]
        return _flax(w if layer is None else w[layer], transpose)


def _resnet_stages(r: _Reader, out: dict[str, torch.Tensor], into: str, bit: bool) -> None:
    """``block{s}/unit{u}`` units: BiT's pre-activation naming (a/b/c) or the hybrid's (conv{n}/gn{n})."""
    units = sorted({(int(m[1]), int(m[2])) for k in r.arrays
                    if (m := re.match(re.escape(r.prefix) + r"block(\d+)/unit(\d+)/", k))})
    for s, u in units:
        src, dst = f"block{s}/unit{u:02d}/" if bit else f"block{s}/unit{u}/", f"{into}stages.{s - 1}.blocks.{u - 1}."
        if bit:
            for n, part in enumerate("abc", 1):
                out[f"{dst}conv{n}.weight"] = r(f"{src}{part}/standardized_conv2d/kernel")
                out[f"{dst}norm{n}.weight"] = r(f"{src}{part}/group_norm/gamma")
                out[f"{dst}norm{n}.bias"] = r(f"{src}{part}/group_norm/beta")
            if r.has(f"{src}a/proj/standardized_conv2d/kernel"):
                out[f"{dst}downsample.conv.weight"] = r(f"{src}a/proj/standardized_conv2d/kernel")
        else:
            for n in (1, 2, 3):
                out[f"{dst}conv{n}.weight"] = r(f"{src}conv{n}/kernel")
                out[f"{dst}norm{n}.weight"] = r(f"{src}gn{n}/scale")
                out[f"{dst}norm{n}.bias"] = r(f"{src}gn{n}/bias")
            if r.has(f"{src}conv_proj/kernel"):
                out[f"{dst}downsample.conv.weight"] = r(f"{src}conv_proj/kernel")
                out[f"{dst}downsample.norm.weight"] = r(f"{src}gn_proj/scale")
                out[f"{dst}downsample.norm.bias"] = r(f"{src}gn_proj/bias")


def _bit(arrays: dict[str, torch.Tensor], file: str) -> dict[str, torch.Tensor]:
    prefix = next(k for k in arrays if k.endswith(BIT_ROOT))[: -len(BIT_ROOT)]
    r = _Reader(arrays, prefix, "BiT", file)
    out = {"stem.conv.weight": r(BIT_ROOT), "norm.weight": r("group_norm/gamma"), "norm.bias": r("group_norm/beta")}
    _resnet_stages(r, out, "", bit=True)
    if r.has("head/conv2d/kernel"):
        out["head.fc.weight"], out["head.fc.bias"] = r("head/conv2d/kernel"), r("head/conv2d/bias")
    return out


def _vit(arrays: dict[str, torch.Tensor], file: str, big_vision: bool) -> dict[str, torch.Tensor]:
    prefix = next(p for p in VIT_PREFIXES if f"{p}embedding/kernel" in arrays)
    r = _Reader(arrays, prefix, "big_vision" if big_vision else "vision_transformer", file)
    if r.has("MAPHead_0/probe"):
        raise UserError("the checkpoint pools with a MAP head (attention pooling); vitbench's models pool by "
                        "[class] token or GAP", file=file, key="model.pool")
    out: dict[str, torch.Tensor] = {}
    if r.has("conv_root/kernel"):  # R50+ViT hybrid: the ResNet's root and units
        b = "patch_embed.backbone."
        out.update({f"{b}stem.conv.weight": r("conv_root/kernel"), f"{b}stem.norm.weight": r("gn_root/scale"),
                    f"{b}stem.norm.bias": r("gn_root/bias")})
        _resnet_stages(r, out, b, bit=False)
    out["patch_embed.proj.weight"], out["patch_embed.proj.bias"] = r("embedding/kernel"), r("embedding/bias")
    if r.has("cls"):
        out["cls_token"] = r("cls", transpose=False)
    pos = r("pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding", transpose=False)
    if big_vision and "cls_token" in out:  # big_vision's token has no position: a zero entry is the same sum
        pos = torch.cat([pos.new_zeros(pos.shape[0], 1, pos.shape[2]), pos], dim=1)
    out["pos_embed"] = pos
    out["norm.weight"], out["norm.bias"] = r("Transformer/encoder_norm/scale"), r("Transformer/encoder_norm/bias")
    if r.has("pre_logits/kernel"):
        out["pre_logits.fc.weight"], out["pre_logits.fc.bias"] = r("pre_logits/kernel"), r("pre_logits/bias")
    if r.has("head/kernel"):
        out["head.weight"], out["head.bias"] = r("head/kernel"), r("head/bias")

    scanned = r.has("Transformer/encoderblock/LayerNorm_0/scale")
    if scanned:
        depth = int(arrays[prefix + "Transformer/encoderblock/LayerNorm_0/scale"].shape[0])
    else:
        depth = len({m[1] for k in arrays if (m := re.match(re.escape(prefix) + r"Transformer/encoderblock_(\d+)/", k))})
    mha, ln2, mlp = (0, 1, 0) if big_vision else (1, 2, 3)
    for i in range(depth):
        src, layer = ("Transformer/encoderblock/", i) if scanned else (f"Transformer/encoderblock_{i}/", None)
        att, dst = f"{src}MultiHeadDotProductAttention_{mha}/", f"blocks.{i}."

        def qkv(part: str, s: str = src, li: int | None = layer, a: str = att) -> torch.Tensor:
            w = [r(f"{a}{n}/{part}", transpose=False, layer=li) for n in ("query", "key", "value")]
            # (D, heads, head_dim) kernels -> (heads*head_dim, D); (heads, head_dim) biases -> flat
            return torch.cat([x.flatten(1).T if part == "kernel" else x.reshape(-1) for x in w]).contiguous()

        out[f"{dst}norm1.weight"] = r(f"{src}LayerNorm_0/scale", layer=layer)
        out[f"{dst}norm1.bias"] = r(f"{src}LayerNorm_0/bias", layer=layer)
        out[f"{dst}attn.qkv.weight"], out[f"{dst}attn.qkv.bias"] = qkv("kernel"), qkv("bias")
        out[f"{dst}attn.proj.weight"] = r(f"{att}out/kernel", layer=layer).flatten(1)
        out[f"{dst}attn.proj.bias"] = r(f"{att}out/bias", layer=layer)
        out[f"{dst}norm2.weight"] = r(f"{src}LayerNorm_{ln2}/scale", layer=layer)
        out[f"{dst}norm2.bias"] = r(f"{src}LayerNorm_{ln2}/bias", layer=layer)
        for n in (0, 1):
            out[f"{dst}mlp.fc{n + 1}.weight"] = r(f"{src}MlpBlock_{mlp}/Dense_{n}/kernel", layer=layer)
            out[f"{dst}mlp.fc{n + 1}.bias"] = r(f"{src}MlpBlock_{mlp}/Dense_{n}/bias", layer=layer)
    return out


def to_timm(arrays: dict[str, torch.Tensor], *, file: str) -> dict[str, torch.Tensor] | None:
    """The file's arrays as a timm state dict, or None when the keys are none of the three layouts."""
    layout = detect(arrays)
    if layout is None:
        return None
    arrays = {k: v.float() for k, v in arrays.items()}
    return _bit(arrays, file) if layout == "bit" else _vit(arrays, file, big_vision=layout == "big_vision")
