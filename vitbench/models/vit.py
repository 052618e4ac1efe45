"""Vision Transformer (paper §3.1) with the Table 8 position-embedding variants and [class]/GAP pooling.

Built from timm layers (PatchEmbed, Mlp, DropPath, trunc_normal_); the parameter layout of patch embed,
blocks (qkv/proj/fc1/fc2), final norm and head is timm's, so ``ViT-B/16`` with ``pool='cls'``,
``pos_embed='learned_1d'``, ``pre_logits=False`` and 1000 classes has exactly the 86,567,656 parameters
of ``timm``'s ``vit_base_patch16_224``.

Design choices (documented where the paper leaves room):
* GAP pools *after* the final LayerNorm, as the paper's code (timm instead normalises after pooling).
* Init follows timm's default: Linear trunc-normal(0.02) with zero bias, position tables trunc-normal(0.02),
  class token normal(1e-6), patch conv PyTorch default. The classifier is zero-initialised only by
  ``reset_classifier`` (fine-tuning, paper App. B.1.1).
* Replacing parameters (``set_img_size``, ``reset_classifier``) means optimisers must be built afterwards.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_
from torch import nn

from vitbench.models.pos_embed import PLACEMENTS, AbsPosEmbed, RelativePositionBias, attention_kind, attention_pos, \
    create_abs_pos_embed, is_absolute, pos_embed_names
from vitbench.models.registry import VIT_DEFAULTS, check_bool, check_choice, check_rate, register_model

# size -> (width D, depth, heads, MLP width); paper Table 1 plus Ti/S (DeiT) and two CPU-sized models.
VIT_SIZES: dict[str, tuple[int, int, int, int]] = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
    "micro": (64, 4, 4, 128),
    "nano": (32, 2, 2, 64),
}
POOLS = ("cls", "gap")
# Plugin pooling heads (vitbench.plugins.pool): name -> (needs_cls, class built as cls(dim)).
PLUGIN_POOLS: dict[str, tuple[bool, type]] = {}


def pool_names() -> tuple[str, ...]:
    """Every pooling a ViT accepts: [class], GAP, then those plugins registered."""
    return POOLS + tuple(PLUGIN_POOLS)


def _has_cls(pool: str) -> bool:
    return pool == "cls" or PLUGIN_POOLS.get(pool, (False, None))[0]


class Attention(nn.Module):
    """Multi-head self-attention with timm's parameter layout (``qkv``, ``proj``) and an optional relative bias.

    The default path is fused ``F.scaled_dot_product_attention`` (bias as additive ``attn_mask``). With
    ``return_attn=True`` (or ``fused=False``, used while counting FLOPs) it computes the softmax
    explicitly and returns the probabilities (B, heads, N, N).
    """

    def __init__(self, dim: int, num_heads: int, proj_drop: float = 0.0,
                 rel_pos: RelativePositionBias | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.rel_pos = rel_pos
        self.fused = True

    def forward(self, x: torch.Tensor, return_attn: bool = False,
                pos_attn: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if pos_attn is not None:  # a plugin's attention-kind position embedding (rotary): acts on q and k
            q, k = pos_attn(q, k)
        bias = self.rel_pos().to(q.dtype) if self.rel_pos is not None else None
        attn = None
        if self.fused and not return_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            logits = (q * self.scale) @ k.transpose(-2, -1)
            if bias is not None:
                logits = logits + bias
            attn = logits.softmax(dim=-1)
            x = attn @ v
        x = self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))
        return x, attn


class Block(nn.Module):
    """Pre-norm transformer block (paper Eq. 2-3), LayerNorm eps 1e-6, GELU MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float, drop_path: float,
                 rel_pos: RelativePositionBias | None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, proj_drop=dropout, rel_pos=rel_pos)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden_features=mlp_dim, act_layer=nn.GELU, drop=dropout)

    def forward(self, x: torch.Tensor, return_attn: bool = False,
                pos_attn: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, attn = self.attn(self.norm1(x), return_attn, pos_attn)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, attn


class VisionTransformer(nn.Module):
    """ViT encoder + [class]/GAP pooling + optional pre-logits (Linear+tanh) + linear classifier."""

    family = "vit"

    def __init__(self, *, model_name: str, img_size: int, patch_size: int, num_classes: int, in_chans: int,
                 dim: int, depth: int, num_heads: int, mlp_dim: int, pos_embed: str = "learned_1d",
                 pos_placement: str = "stem", pool: str = "cls", pre_logits: bool = True, dropout: float = 0.0,
                 drop_path: float = 0.0, embed: nn.Module | None = None) -> None:
        super().__init__()
        self.model_name = model_name
        self.img_size = img_size
        self.num_classes = num_classes
        self.num_features = dim
        self.embed_dim = dim
        self.pos_embed_type = pos_embed
        self.pos_placement = pos_placement
        self.pool = pool
        # The hybrid passes its CNN embedding; the plain ViT cuts the image into patches.
        self.patch_embed = embed if embed is not None else PatchEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=dim,
            strict_img_size=False)  # a wrong size is reported by _encode, with the fix (set_img_size)
        grid = tuple(self.patch_embed.grid_size)
        self.grid_size = grid

        self.num_prefix_tokens = 1 if _has_cls(pool) else 0  # GAP has no class token
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if _has_cls(pool) else None
        self.pool_head = PLUGIN_POOLS[pool][1](dim) if pool in PLUGIN_POOLS else None

        # Absolute embeddings: one module (stem / every_layer_shared) or one per block (every_layer).
        n_abs = 0 if not is_absolute(pos_embed) else (depth if pos_placement == "every_layer" else 1)
        self.pos_embed = nn.ModuleList(
            create_abs_pos_embed(pos_embed, grid, dim, self.num_prefix_tokens) for _ in range(n_abs))
        self.pos_attn = attention_pos(pos_embed, grid, dim // num_heads, self.num_prefix_tokens)
        self.pos_drop = nn.Dropout(dropout)

        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows linearly
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_dim, dropout, dpr[i],
                  RelativePositionBias(grid, num_heads, self.num_prefix_tokens) if pos_embed == "relative" else None)
            for i in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pre_logits = nn.Sequential(OrderedDict(fc=nn.Linear(dim, dim), act=nn.Tanh())) if pre_logits \
            else nn.Identity()
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        # Only the transformer's Linears: a hybrid's CNN keeps timm's ResNet init.
        for part in (self.blocks, self.pre_logits, self.head):
            for m in part.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    # ---- encoder ----------------------------------------------------------------------------------------

    def _pos(self, i: int) -> AbsPosEmbed | None:
        """The absolute embedding added at the input of block i, if any."""
        if len(self.pos_embed) == 0 or (self.pos_placement == "stem" and i > 0):
            return None
        return self.pos_embed[i if self.pos_placement == "every_layer" else 0]

    def _encode(self, x: torch.Tensor, return_attn: bool = False,
                corrupt: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.patch_embed(x)
        n_expected = self.grid_size[0] * self.grid_size[1]
        if x.shape[1] != n_expected:
            raise ValueError(f"{self.model_name} is set up for {self.img_size}px ({n_expected} patches), "
                             f"got {x.shape[1]} patches; call set_img_size() first")
        if corrupt is not None:  # masked patch prediction: the patch embeddings, before [class] and positions
            x = corrupt(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        attns = []
        for i, blk in enumerate(self.blocks):
            pos = self._pos(i)
            if pos is not None:
                x = pos(x)
            if i == 0:
                x = self.pos_drop(x)
            x, attn = blk(x, return_attn, self.pos_attn)
            if attn is not None:
                attns.append(attn)
        return self.norm(x), attns

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_head is not None:
            return self.pool_head(x)
        return x[:, 0] if self.pool == "cls" else x.mean(dim=1)

    # ---- common model interface ---------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-logit representation (B, num_features): pooled, after the pre-logits tanh layer if present."""
        return self.pre_logits(self._pool(self._encode(x)[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def encode_patches(self, x: torch.Tensor,
                       corrupt: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The encoder's output at the patch tokens (B, N, D), after the final norm; ``corrupt`` maps the patch
        embeddings (B, N, D) first (masked patch prediction, vitbench/train/mpp.py)."""
        return self._encode(x, corrupt=corrupt)[0][:, self.num_prefix_tokens:]

    def forward_attention(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Softmax attention probabilities, one (B, heads, N, N) tensor per layer (N includes the class token).

        Uses the explicit (unfused) attention path; call under ``torch.no_grad()`` and ``eval()`` for analyses.
        """
        return self._encode(x, return_attn=True)[1]

    def no_weight_decay(self) -> set[str]:
        """Names of the class token and position tables (timm's convention for excluding them from decay)."""
        return {n for n, _ in self.named_parameters()
                if n == "cls_token" or n.startswith(("pos_embed.", "pos_attn.")) or ".rel_pos." in n}

    def reset_classifier(self, num_classes: int) -> None:
        """Fine-tuning head (paper §3.1): drop pre-logits, new zero-initialised Linear(D, num_classes)."""
        p = self.norm.weight
        self.pre_logits = nn.Identity()
        self.num_classes = num_classes
        if num_classes > 0:
            self.head = nn.Linear(self.num_features, num_classes, device=p.device, dtype=p.dtype)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        else:
            self.head = nn.Identity()

    def _embed_grid(self, img_size: int) -> tuple[int, int]:
        """Resize the patch embedding's bookkeeping to ``img_size`` and return the new token grid."""
        self.patch_embed.set_input_size(img_size=(img_size, img_size))
        return tuple(self.patch_embed.grid_size)

    def set_img_size(self, img_size: int) -> None:
        """Adapt to a new resolution: interpolate learned tables, recompute sin-cos, resize relative biases."""
        if img_size == self.img_size:
            return
        grid = self._embed_grid(img_size)
        for pe in [*self.pos_embed, *([self.pos_attn] if self.pos_attn is not None else [])]:
            pe.set_grid_size(grid)
        for blk in self.blocks:
            if blk.attn.rel_pos is not None:
                blk.attn.rel_pos.set_grid_size(grid)
        self.img_size = img_size
        self.grid_size = grid


# ---- options, validation and registration -------------------------------------------------------------------


def validate_vit_options(name: str, opts: dict[str, Any], dim: int) -> None:
    """Checks shared by ViT and hybrid models (``opts`` has defaults filled in)."""
    check_choice(name, "pos_embed", opts["pos_embed"], pos_embed_names())
    check_choice(name, "pos_placement", opts["pos_placement"], PLACEMENTS)
    check_choice(name, "pool", opts["pool"], pool_names())
    check_bool(name, "pre_logits", opts["pre_logits"])
    check_rate(name, "dropout", opts["dropout"])
    check_rate(name, "drop_path", opts["drop_path"])
    pe, place = opts["pos_embed"], opts["pos_placement"]
    if (pe in ("none", "relative") or attention_kind(pe)) and place != "stem":
        raise ValueError(f"{name}: pos_embed={pe!r} only works with pos_placement='stem' (paper Table 8), "
                         f"got {place!r}")
    if pe == "learned_2d" and dim % 2:
        raise ValueError(f"{name}: pos_embed='learned_2d' needs an even width, got {dim}")
    if pe == "sincos_2d" and dim % 4:
        raise ValueError(f"{name}: pos_embed='sincos_2d' needs a width divisible by 4, got {dim}")


def _validate_vit(name: str, m: re.Match[str], opts: dict[str, Any]) -> None:
    dim = VIT_SIZES[m["size"]][0]
    validate_vit_options(name, opts, dim)
    patch = int(m["patch"])
    img = opts.get("img_size")
    if isinstance(img, int) and img % patch:
        raise ValueError(f"{name}: img_size {img} must be a multiple of the patch size {patch}")


@register_model(
    "vit",
    pattern=r"ViT-(?P<size>Ti|S|B|L|H|micro|nano)/(?P<patch>[1-9][0-9]*)",
    grammar="ViT-{Ti,S,B,L,H,micro,nano}/<patch>",
    names=("ViT-Ti/16", "ViT-S/16", "ViT-S/32", "ViT-B/16", "ViT-B/32", "ViT-L/16", "ViT-L/32", "ViT-H/14",
           "ViT-micro/4", "ViT-micro/2", "ViT-nano/4"),
    defaults=VIT_DEFAULTS,
    validate=_validate_vit,
)
def _build_vit(m: re.Match[str], *, name: str, num_classes: int, img_size: int, in_chans: int,
               **opts: Any) -> VisionTransformer:
    dim, depth, heads, mlp = VIT_SIZES[m["size"]]
    return VisionTransformer(model_name=name, img_size=img_size, patch_size=int(m["patch"]), num_classes=num_classes,
                             in_chans=in_chans, dim=dim, depth=depth, num_heads=heads, mlp_dim=mlp, **opts)
