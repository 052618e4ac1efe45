"""BiT ResNets (Kolesnikov et al. 2020), the paper's CNN baseline: timm ``ResNetV2`` with pre-activation
bottlenecks, GroupNorm(32) + weight-standardised convs (``StdConv2d``, eps 1e-8) and the 'fixed' stem,
exactly as ``timm.create_model('resnetv2_50x1_bit')`` (same parameter names and count).

``BiT-micro`` / ``BiT-nano`` are CPU-sized stand-ins: the same stem and blocks, one block per stage, few
narrow stages and fewer GroupNorm groups so every width divides.

BiT has no pre-logits layer: ``forward_features`` is the globally average-pooled final feature map.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import torch
from timm.layers import GroupNormAct, StdConv2d
from timm.models.resnetv2 import ResNetV2

from vitbench.models.registry import VIT_DEFAULTS, check_rate, register_model

DEPTHS: dict[str, tuple[int, ...]] = {"50": (3, 4, 6, 3), "101": (3, 4, 23, 3), "152": (3, 8, 36, 3),
                                      "200": (3, 24, 36, 3)}
TINY: dict[str, dict[str, Any]] = {
    # ~130k parameters, like ViT-micro; GroupNorm(8): the narrowest bottleneck has 16 channels.
    "micro": dict(layers=(1, 1, 1), channels=(64, 128, 256), stem_chs=32, num_groups=8),
    # ~10k parameters; GroupNorm(4): the narrowest bottleneck has 8 channels.
    "nano": dict(layers=(1, 1), channels=(32, 64), stem_chs=16, num_groups=4),
}
VIT_ONLY = ("pos_embed", "pos_placement", "pool", "pre_logits")


class BiT(ResNetV2):
    """timm ResNetV2 (BiT flavour) with the vitbench model interface."""

    family = "bit"

    def __init__(self, *, model_name: str, img_size: int, num_classes: int, in_chans: int,
                 layers: tuple[int, ...], channels: tuple[int, ...] = (256, 512, 1024, 2048), width_factor: int = 1,
                 stem_chs: int = 64, num_groups: int = 32, dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__(layers=list(layers), channels=channels, num_classes=num_classes, in_chans=in_chans,
                         width_factor=width_factor, stem_chs=stem_chs, stem_type="fixed",
                         conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=partial(GroupNormAct, num_groups=num_groups),
                         drop_rate=dropout, drop_path_rate=drop_path)
        self.model_name = model_name
        self.img_size = img_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Globally average-pooled features (B, num_features) (timm's forward_features returns the map)."""
        return self.forward_head(ResNetV2.forward_features(self, x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(ResNetV2.forward_features(self, x))

    def no_weight_decay(self) -> set[str]:
        """No extra exclusions: a ResNet has no position tables or tokens, and its GroupNorm scales and biases
        (ndim <= 1) are excluded by shape in ``vitbench.train.optim``; every conv kernel is decayed."""
        return set()

    def reset_classifier(self, num_classes: int) -> None:  # type: ignore[override]
        """Fine-tuning head: a new zero-initialised classifier (BiT-HyperRule / paper App. B.1.1)."""
        super().reset_classifier(num_classes)
        fc = self.head.fc
        if isinstance(fc, (torch.nn.Conv2d, torch.nn.Linear)):
            p = self.norm.weight
            fc.to(device=p.device, dtype=p.dtype)
            torch.nn.init.zeros_(fc.weight)
            torch.nn.init.zeros_(fc.bias)

    def set_img_size(self, img_size: int) -> None:
        """Convolutions and global pooling work at any size: bookkeeping only."""
        self.img_size = img_size


def _validate_bit(name: str, m: re.Match[str], opts: dict[str, Any]) -> None:
    check_rate(name, "dropout", opts["dropout"])
    check_rate(name, "drop_path", opts["drop_path"])
    # Run configs carry the ViT options for every model: tolerate them at their defaults only.
    for key in VIT_ONLY:
        if opts[key] != VIT_DEFAULTS[key]:
            raise ValueError(f"{name}: {key}={opts[key]!r} applies to ViT/hybrid models only (leave it at "
                             f"{VIT_DEFAULTS[key]!r}); allowed for BiT: dropout, drop_path")


@register_model(
    "bit",
    pattern=r"BiT-R(?P<depth>50|101|152|200)x(?P<width>[1-4])|BiT-(?P<tiny>micro|nano)",
    grammar="BiT-R{50,101,152,200}x{1..4}, BiT-{micro,nano}",
    names=("BiT-R50x1", "BiT-R50x2", "BiT-R101x1", "BiT-R152x1", "BiT-R152x2", "BiT-R200x3", "BiT-micro",
           "BiT-nano"),
    defaults=VIT_DEFAULTS,
    validate=_validate_bit,
)
def _build_bit(m: re.Match[str], *, name: str, num_classes: int, img_size: int, in_chans: int,
               **opts: Any) -> BiT:
    arch: dict[str, Any] = dict(TINY[m["tiny"]]) if m["tiny"] else dict(
        layers=DEPTHS[m["depth"]], width_factor=int(m["width"]))
    return BiT(model_name=name, img_size=img_size, num_classes=num_classes, in_chans=in_chans,
               dropout=opts["dropout"], drop_path=opts["drop_path"], **arch)
