"""Parameter and FLOP counts (paper Table 6 / Figure 5 use pretraining compute in exaFLOPs)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vitbench.models.vit import Attention


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (buffers such as the sin-cos table and index tensors excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextmanager
def _explicit_attention(model: nn.Module) -> Iterator[None]:
    # FlopCounterMode has no formula for the fused CPU SDPA kernel (it reports 0), so while counting the
    # attention runs as two explicit matmuls, which are counted on every device.
    mods = [m for m in model.modules() if isinstance(m, Attention)]
    saved = [m.fused for m in mods]
    for m in mods:
        m.fused = False
    try:
        yield
    finally:
        for m, f in zip(mods, saved):
            m.fused = f


def count_flops(model: nn.Module, img_size: int, in_chans: int = 3) -> int:
    """Forward FLOPs for one image of ``img_size`` x ``img_size`` (FLOPs = 2 x multiply-accumulates).

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` on a batch of 1 (in eval mode, no grad, on the
    model's device, which may be ``meta``): convolutions (patch embedding, ResNet convs), linear layers
    (qkv, proj, MLP, pre-logits, head) and the two attention matmuls (QK^T and AV). Not counted:
    normalisation (LayerNorm, GroupNorm, weight standardisation), softmax, activations, residual and
    position-embedding additions, pooling - together well under 1% for ViT/BiT at the paper's sizes.
    A model set up for another resolution is counted on a copy resized with ``set_img_size``.
    A training step costs about 3x this (forward + backward).
    """
    target = model
    if getattr(model, "img_size", img_size) != img_size:
        target = copy.deepcopy(model)
        target.set_img_size(img_size)  # type: ignore[operator]
    p = next(target.parameters())
    x = torch.zeros(1, in_chans, img_size, img_size, device=p.device, dtype=p.dtype)
    was_training = target.training
    target.eval()
    try:
        with torch.no_grad(), _explicit_attention(target), FlopCounterMode(display=False) as counter:
            target(x)
    finally:
        target.train(was_training)
    return int(counter.get_total_flops())
