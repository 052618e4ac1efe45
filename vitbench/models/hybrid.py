"""Hybrid models (paper §3.1 "Hybrid Architecture"): a ResNet feature map, 1x1 patches, then a ViT.

Built exactly as timm's ``vit_base_r50_s16_224`` / ``vit_large_r50_s32_224``: timm ``ResNetV2`` with
``preact=False`` (post-activation bottlenecks, as the paper's R50), GroupNorm(32) + weight-standardised
convs (``StdConv2dSame``, eps 1e-8, TF 'SAME' padding), no head, wrapped in timm's ``HybridEmbed`` whose
1x1 conv projects the feature map to the ViT width.

The number after the slash is the total stride of the ResNet, not a patch size (paper App. D.2 / Table 6):
``/16`` = R50 with stage 4 removed and its blocks moved to stage 3, i.e. stages (3, 4, 9); ``/32`` = the
full R50, stages (3, 4, 6, 3). ``Rmicro+micro`` is a CPU-sized stand-in: the stride-4 stem plus one narrow
stage (GroupNorm with 8 groups so channels divide), then ViT-micro on its feature map.
"""

from __future__ import annotations

import math
import re
from functools import partial
from typing import Any

from timm.layers import GroupNormAct, HybridEmbed, StdConv2dSame
from timm.models.resnetv2 import ResNetV2
from torch import nn

from vitbench.models.registry import VIT_DEFAULTS, register_model
from vitbench.models.vit import VIT_SIZES, VisionTransformer, validate_vit_options

# backbone name -> ResNetV2 arguments
BACKBONES: dict[str, dict[str, Any]] = {
    "R50/16": dict(layers=(3, 4, 9)),
    "R50/32": dict(layers=(3, 4, 6, 3)),
    "Rmicro": dict(layers=(1,), channels=(64,), stem_chs=32, num_groups=8),
}


def create_resnet_backbone(in_chans: int, layers: tuple[int, ...], channels: tuple[int, ...] = (256, 512, 1024, 2048),
                           stem_chs: int = 64, num_groups: int = 32) -> ResNetV2:
    """Headless post-activation GN/WS ResNet returning the NCHW feature map (timm's hybrid ``_resnetv2``)."""
    return ResNetV2(layers=layers, channels=channels, num_classes=0, global_pool="", in_chans=in_chans,
                    preact=False, stem_type="same", stem_chs=stem_chs,
                    conv_layer=partial(StdConv2dSame, eps=1e-8),
                    norm_layer=partial(GroupNormAct, num_groups=num_groups))


class HybridViT(VisionTransformer):
    """ViT on a ResNet feature map; same interface as ``VisionTransformer`` (forward_attention included)."""

    family = "hybrid"

    def __init__(self, *, backbone: nn.Module, img_size: int, in_chans: int, dim: int, **kwargs: Any) -> None:
        # HybridEmbed probes the backbone once with a zero image to find the feature map's size and channels.
        embed = HybridEmbed(backbone, img_size=img_size, patch_size=1, in_chans=in_chans, embed_dim=dim)
        super().__init__(img_size=img_size, patch_size=1, in_chans=in_chans, dim=dim, embed=embed, **kwargs)
        self._reduction: int = backbone.feature_info[-1]["reduction"]  # total stride of the ResNet
        if self.grid_size != self._grid(img_size):  # the analytic rule used by set_img_size must agree
            raise AssertionError(f"feature grid {self.grid_size} != {self._grid(img_size)}")

    def _grid(self, img_size: int) -> tuple[int, int]:
        g = math.ceil(img_size / self._reduction)  # 'SAME' padding: every stride-s layer gives ceil(n / s)
        return g, g

    def _embed_grid(self, img_size: int) -> tuple[int, int]:
        # Set HybridEmbed's bookkeeping directly: its set_input_size re-probes the backbone with a CPU tensor
        # in older timm, which breaks for models on an accelerator.
        grid = self._grid(img_size)
        pe = self.patch_embed
        pe.img_size = (img_size, img_size)
        pe.feature_size = grid
        pe.grid_size = grid
        pe.num_patches = grid[0] * grid[1]
        return grid


def _validate_hybrid(name: str, m: re.Match[str], opts: dict[str, Any]) -> None:
    validate_vit_options(name, opts, VIT_SIZES[m["size"] or m["msize"]][0])


@register_model(
    "hybrid",
    pattern=r"R50\+(?P<size>Ti|S|B|L|H)/(?P<stride>16|32)|Rmicro\+(?P<msize>micro|nano)",
    grammar="R50+{Ti,S,B,L,H}/{16,32}, Rmicro+{micro,nano}",
    names=("R50+B/16", "R50+B/32", "R50+L/16", "R50+L/32", "Rmicro+micro"),
    defaults=VIT_DEFAULTS,
    validate=_validate_hybrid,
)
def _build_hybrid(m: re.Match[str], *, name: str, num_classes: int, img_size: int, in_chans: int,
                  **opts: Any) -> HybridViT:
    size = m["size"] or m["msize"]
    dim, depth, heads, mlp = VIT_SIZES[size]
    cfg = BACKBONES["Rmicro" if m["msize"] else f"R50/{m['stride']}"]
    backbone = create_resnet_backbone(in_chans, **cfg)
    return HybridViT(backbone=backbone, model_name=name, img_size=img_size, num_classes=num_classes,
                     in_chans=in_chans, dim=dim, depth=depth, num_heads=heads, mlp_dim=mlp, **opts)
