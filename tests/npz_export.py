"""Writes random timm models as JAX/flax ``.npz`` checkpoints, for offline tests of published-checkpoint import (issue 16)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from timm.layers import GroupNormAct, HybridEmbed, StdConv2d
from timm.models.resnetv2 import Bottleneck, PreActBottleneck, ResNetV2
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vitbench.models.hybrid import create_resnet_backbone

LAYOUTS = ("vit", "big_vision", "big_vision_scan", "bit")
DEFAULT_PREFIX = {"vit": "", "big_vision": "params/", "big_vision_scan": "params/", "bit": "resnet/"}
# vitbench's ViT-nano: dim, depth, heads, mlp ratio (VIT_SIZES["nano"] = (32, 2, 2, 64))
NANO = dict(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2)
BIT_NANO = dict(layers=(1, 1), channels=(32, 64), stem_chs=16, num_groups=4)  # vitbench.models.bit.TINY["nano"]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


def _conv(w: torch.Tensor) -> np.ndarray:
    """OIHW -> HWIO (the loaders transpose [3, 2, 0, 1])."""
    return np.ascontiguousarray(_np(w).transpose(2, 3, 1, 0))


def _dense(w: torch.Tensor) -> np.ndarray:
    """(out, in) -> (in, out)."""
    return np.ascontiguousarray(_np(w).T)


class _Writer:
    """Collects flax arrays and the model state-dict keys they came from (to refuse models it cannot represent)."""

    def __init__(self, model: nn.Module) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.names = {id(v): k for k, v in model.state_dict(keep_vars=True).items()}
        self.state_keys = set(model.state_dict().keys())
        self.covered: set[str] = set()

    def use(self, *tensors: torch.Tensor | None) -> None:
        for t in tensors:
            if t is None:
                raise ValueError("model has a parameter set to None that the JAX layout stores (e.g. a bias)")
            if id(t) in self.names:
                self.covered.add(self.names[id(t)])

    def put(self, key: str, value: np.ndarray, *sources: torch.Tensor | None) -> None:
        self.use(*sources)
        if key in self.arrays:
            raise AssertionError(f"duplicate key {key}")
        self.arrays[key] = np.asarray(value, dtype=np.float32)

    def check_covered(self) -> None:
        missing = sorted(self.state_keys - self.covered)
        if missing:
            raise ValueError(f"model has state the layout cannot hold: {missing[:8]}{' ...' if len(missing) > 8 else ''}")


def _norm(wr: _Writer, key: str, norm: nn.Module, names: tuple[str, str] = ("scale", "bias")) -> None:
    if not isinstance(norm, (nn.LayerNorm, nn.GroupNorm)) or norm.weight is None or norm.bias is None:
        raise ValueError(f"{key}: expected an affine LayerNorm/GroupNorm, got {type(norm).__name__}")
    wr.put(f"{key}/{names[0]}", _np(norm.weight), norm.weight)
    wr.put(f"{key}/{names[1]}", _np(norm.bias), norm.bias)


def _vit_block(block: nn.Module, layout: str, heads: int) -> dict[str, tuple[np.ndarray, tuple[torch.Tensor, ...]]]:
    """One encoder block's arrays, keyed relative to the block (``LayerNorm_0/scale`` ...)."""
    try:
        norm1, attn, norm2, mlp = block.norm1, block.attn, block.norm2, block.mlp
        qkv, proj, fc1, fc2 = attn.qkv, attn.proj, mlp.fc1, mlp.fc2
    except AttributeError as e:
        raise ValueError(f"unsupported ViT block {type(block).__name__}: {e}") from None
    if not all(isinstance(m, nn.Linear) for m in (qkv, proj, fc1, fc2)):
        raise ValueError("unsupported ViT block: attention/MLP projections must be nn.Linear")
    for m in (norm1, norm2):
        if not isinstance(m, nn.LayerNorm) or m.weight is None or m.bias is None:
            raise ValueError("unsupported ViT block: norms must be affine LayerNorm")
    if qkv.bias is None or proj.bias is None or fc1.bias is None or fc2.bias is None:
        raise ValueError("unsupported ViT block: every projection needs a bias in the JAX layout")
    mha, mlp_i, ln2 = ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1") if layout != "vit" else (
        "MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2")
    d = qkv.in_features
    if qkv.out_features != 3 * d or d % heads:
        raise ValueError("unsupported ViT block: qkv must be (3*dim, dim) with dim divisible by heads")
    hd = d // heads
    out: dict[str, tuple[np.ndarray, tuple[torch.Tensor, ...]]] = {
        "LayerNorm_0/scale": (_np(norm1.weight), (norm1.weight,)),
        "LayerNorm_0/bias": (_np(norm1.bias), (norm1.bias,)),
    }
    wq = _np(qkv.weight).reshape(3, d, d)  # (q|k|v, out, in)
    bq = _np(qkv.bias).reshape(3, heads, hd)
    for i, n in enumerate(("query", "key", "value")):
        out[f"{mha}/{n}/kernel"] = (np.ascontiguousarray(wq[i].T.reshape(d, heads, hd)), (qkv.weight,))
        out[f"{mha}/{n}/bias"] = (np.ascontiguousarray(bq[i]), (qkv.bias,))
    out[f"{mha}/out/kernel"] = (
        np.ascontiguousarray(_np(proj.weight).reshape(proj.out_features, heads, hd).transpose(1, 2, 0)), (proj.weight,))
    out[f"{mha}/out/bias"] = (_np(proj.bias), (proj.bias,))
    out[f"{ln2}/scale"] = (_np(norm2.weight), (norm2.weight,))
    out[f"{ln2}/bias"] = (_np(norm2.bias), (norm2.bias,))
    for r, fc in enumerate((fc1, fc2)):
        out[f"{mlp_i}/Dense_{r}/kernel"] = (_dense(fc.weight), (fc.weight,))
        out[f"{mlp_i}/Dense_{r}/bias"] = (_np(fc.bias), (fc.bias,))
    return out


def _hybrid_backbone(wr: _Writer, p: str, backbone: nn.Module) -> None:
    """timm's hybrid keys (vision_transformer._load_weights): post-activation GN/WS ResNetV2 or its bare stem."""
    stem = backbone if not hasattr(backbone, "stem") else backbone.stem
    if not isinstance(getattr(stem, "conv", None), nn.Conv2d):
        raise ValueError("hybrid backbone: expected a timm ResNetV2 (or its stem) with a conv stem")
    wr.put(f"{p}conv_root/kernel", _conv(stem.conv.weight), stem.conv.weight)
    _norm(wr, f"{p}gn_root", getattr(stem, "norm", None))
    if not hasattr(backbone, "stem"):
        return
    if not isinstance(backbone, ResNetV2):
        raise ValueError(f"hybrid backbone: expected a timm ResNetV2, got {type(backbone).__name__}")
    for i, stage in enumerate(backbone.stages):
        for j, block in enumerate(stage.blocks):
            if not isinstance(block, Bottleneck):
                raise ValueError(f"hybrid backbone: expected post-activation Bottleneck blocks, got {type(block).__name__}")
            bp = f"{p}block{i + 1}/unit{j + 1}/"
            for r in range(3):
                conv = getattr(block, f"conv{r + 1}")
                wr.put(f"{bp}conv{r + 1}/kernel", _conv(conv.weight), conv.weight)
                _norm(wr, f"{bp}gn{r + 1}", getattr(block, f"norm{r + 1}"))
            if block.downsample is not None:
                wr.put(f"{bp}conv_proj/kernel", _conv(block.downsample.conv.weight), block.downsample.conv.weight)
                _norm(wr, f"{bp}gn_proj", block.downsample.norm)


def _export_vit(wr: _Writer, model: nn.Module, layout: str, p: str) -> None:
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"layout {layout!r} needs a timm VisionTransformer, got {type(model).__name__}")
    if getattr(model, "attn_pool", None) is not None or getattr(model, "reg_token", None) is not None:
        raise ValueError("MAP heads and register tokens are not supported")
    has_cls = model.cls_token is not None
    if has_cls and model.global_pool != "token":
        raise ValueError("a class token model must pool with the class token ('token')")
    if not has_cls and model.global_pool != "avg":
        raise ValueError("a model without a class token must use global_pool='avg' (GAP)")
    if has_cls and layout == "vit" and model.no_embed_class:
        raise ValueError("the 'vit' layout's position table includes the [class] entry: use no_embed_class=False")
    if has_cls and layout != "vit" and not model.no_embed_class:
        raise ValueError("big_vision adds posemb before the [class] token: use no_embed_class=True")
    if model.pos_embed is None:
        raise ValueError("model has no learned position table")
    pe = model.patch_embed
    proj = getattr(pe, "proj", None)
    if not isinstance(proj, nn.Conv2d) or proj.bias is None:
        raise ValueError("patch embedding must be a Conv2d with a bias")
    if isinstance(pe, HybridEmbed) or hasattr(pe, "backbone"):
        _hybrid_backbone(wr, p, pe.backbone)
    wr.put(f"{p}embedding/kernel", _conv(proj.weight), proj.weight)
    wr.put(f"{p}embedding/bias", _np(proj.bias), proj.bias)
    if has_cls:
        wr.put(f"{p}cls", _np(model.cls_token), model.cls_token)
    pos_key = f"{p}pos_embedding" if layout != "vit" else f"{p}Transformer/posembed_input/pos_embedding"
    wr.put(pos_key, _np(model.pos_embed), model.pos_embed)

    heads = model.blocks[0].attn.num_heads if len(model.blocks) else 1
    blocks = [_vit_block(b, layout, getattr(b.attn, "num_heads", heads)) for b in model.blocks]
    if layout == "big_vision_scan":
        if not blocks:
            raise ValueError("a scanned checkpoint needs at least one block")
        for k in blocks[0]:
            wr.put(f"{p}Transformer/encoderblock/{k}", np.stack([b[k][0] for b in blocks]),
                   *(t for b in blocks for t in b[k][1]))
    else:
        for i, b in enumerate(blocks):
            for k, (arr, src) in b.items():
                wr.put(f"{p}Transformer/encoderblock_{i}/{k}", arr, *src)
    _norm(wr, f"{p}Transformer/encoder_norm", model.norm)
    if isinstance(model.head, nn.Linear):
        if model.head.bias is None:
            raise ValueError("the classifier head needs a bias")
        wr.put(f"{p}head/kernel", _dense(model.head.weight), model.head.weight)
        wr.put(f"{p}head/bias", _np(model.head.bias), model.head.bias)
    elif not isinstance(model.head, nn.Identity):
        raise ValueError(f"unsupported head {type(model.head).__name__}")


def _export_bit(wr: _Writer, model: nn.Module, p: str) -> None:
    if not isinstance(model, ResNetV2):
        raise ValueError(f"layout 'bit' needs a timm ResNetV2, got {type(model).__name__}")
    c = "standardized_conv2d"
    wr.put(f"{p}root_block/{c}/kernel", _conv(model.stem.conv.weight), model.stem.conv.weight)
    _norm(wr, f"{p}group_norm", model.norm, ("gamma", "beta"))
    fc = getattr(model.head, "fc", None)
    if isinstance(fc, nn.Conv2d):
        wr.put(f"{p}head/conv2d/kernel", _conv(fc.weight), fc.weight)
        wr.put(f"{p}head/conv2d/bias", _np(fc.bias), fc.bias)
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            if not isinstance(block, PreActBottleneck):
                raise ValueError(f"layout 'bit' needs pre-activation bottlenecks, got {type(block).__name__}")
            bp = f"{p}block{i + 1}/unit{j + 1:02d}/"
            for r, u in enumerate("abc"):
                conv = getattr(block, f"conv{r + 1}")
                wr.put(f"{bp}{u}/{c}/kernel", _conv(conv.weight), conv.weight)
                _norm(wr, f"{bp}{u}/group_norm", getattr(block, f"norm{r + 1}"), ("gamma", "beta"))
            if block.downsample is not None:
                wr.put(f"{bp}a/proj/{c}/kernel", _conv(block.downsample.conv.weight), block.downsample.conv.weight)


def export_npz(model: torch.nn.Module, path: str | Path, layout: str, *, prefix: str = "",
               extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``model``'s weights to ``path`` as a flax ``.npz`` in ``layout``; the exact inverse of timm's loaders.

    ``layout``: "vit" (google-research/vision_transformer, AugReg; hybrids included), "big_vision",
    "big_vision_scan" (blocks stacked on a leading layer axis) or "bit" (big_transfer ResNetV2).
    ``prefix`` is prepended to every key ("" -> "params/" for big_vision, "resnet/" for bit). ``extra`` keys are
    written verbatim after the prefix. Raises ValueError for a model the layout cannot represent exactly.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    p = prefix or DEFAULT_PREFIX[layout]
    wr = _Writer(model)
    with torch.no_grad():
        if layout == "bit":
            _export_bit(wr, model, p)
        else:
            _export_vit(wr, model, layout, p)
    wr.check_covered()
    for k, v in (extra or {}).items():
        if p + k in wr.arrays:
            raise ValueError(f"extra key {k!r} collides with a weight")
        wr.arrays[p + k] = np.asarray(v, dtype=np.float32)
    path = Path(path)
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(f, **wr.arrays)
    return path


# ----- small random timm models (the dims of vitbench's nano models) -----

def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter ~ N(0, 0.2) (norm scales ~ N(1, 0.2)) under a seeded generator; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
                m.weight.add_(1.0)
    return model.eval()


def _pool_args(layout: str, pool: str) -> dict:
    if pool == "gap":
        return dict(class_token=False, global_pool="avg", fc_norm=False)
    if pool == "cls":
        return dict(class_token=True, global_pool="token", no_embed_class=layout != "vit")
    raise ValueError(f"pool must be 'cls' or 'gap', got {pool!r}")


def timm_vit(img_size: int, patch_size: int, num_classes: int, *, layout: str = "vit", pool: str = "cls",
             seed: int = 0) -> VisionTransformer:
    """timm ViT with vitbench's ViT-nano/<patch> dims; pos table with or without the [class] entry per layout."""
    torch.manual_seed(seed)
    m = VisionTransformer(img_size=img_size, patch_size=patch_size, num_classes=num_classes, **NANO,
                          **_pool_args(layout, pool))
    return randomise(m, seed)


def timm_hybrid(img_size: int, num_classes: int, seed: int = 0) -> VisionTransformer:
    """timm hybrid ViT with vitbench's "Rmicro+nano" architecture (Rmicro backbone, 1x1 patches, ViT-nano)."""
    torch.manual_seed(seed)
    backbone = create_resnet_backbone(3, layers=(1,), channels=(64,), stem_chs=32, num_groups=8)
    m = VisionTransformer(img_size=img_size, patch_size=1, in_chans=3, num_classes=num_classes, **NANO,
                          embed_layer=partial(HybridEmbed, backbone=backbone))
    return randomise(m, seed)


def timm_bit(num_classes: int, seed: int = 0) -> ResNetV2:
    """timm ResNetV2 exactly as vitbench's "BiT-nano" builds it (vitbench.models.bit.BiT)."""
    torch.manual_seed(seed)
    a = BIT_NANO
    m = ResNetV2(layers=list(a["layers"]), channels=a["channels"], num_classes=num_classes, in_chans=3,
                 width_factor=1, stem_chs=a["stem_chs"], stem_type="fixed", conv_layer=partial(StdConv2d, eps=1e-8),
                 norm_layer=partial(GroupNormAct, num_groups=a["num_groups"]))
    return randomise(m, seed)


def write_stand_ins(root: Path, seed: int = 1) -> dict[str, Path]:
    """The smoke scale's two files: a ViT-nano/4 with pre-logits (vision_transformer layout) and a BiT-nano."""
    gen = torch.Generator().manual_seed(seed)
    pre = {"pre_logits/kernel": (torch.randn(32, 32, generator=gen) * 0.2).numpy(),
           "pre_logits/bias": (torch.randn(32, generator=gen) * 0.2).numpy()}
    d = root / "published-smoke"
    d.mkdir(parents=True, exist_ok=True)
    return {"ViT-nano/4": export_npz(timm_vit(16, 4, 10, seed=seed), d / "ViT-nano_4.npz", "vit", extra=pre),
            "BiT-nano": export_npz(timm_bit(10, seed=seed), d / "BiT-nano.npz", "bit")}


def paper_resize(table: torch.Tensor, prefix: int, side: int) -> torch.Tensor:
    """vit_jax/checkpoint.py's resize of a (1, prefix + g*g, D) table to side x side: the prefix entries kept, the
    grid zoomed with ``scipy.ndimage.zoom(order=1)`` (an implementation independent of vitbench's)."""
    import scipy.ndimage

    tok, grid = table[:, :prefix], table[0, prefix:].numpy()
    g = int(round(grid.shape[0] ** 0.5))
    zoomed = scipy.ndimage.zoom(grid.reshape(g, g, -1), (side / g, side / g, 1), order=1)
    return torch.cat([tok, torch.from_numpy(zoomed.reshape(1, side * side, -1)).to(table.dtype)], dim=1)
