"""Optimisers and learning-rate schedules of the paper's recipes (Tables 3 and 4)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Norm scales, biases and embeddings-as-vectors are not decayed (common ViT/BiT practice).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _fused_ok(model: nn.Module) -> bool:
    # Fused Adam/SGD kernels exist for CUDA tensors; on CPU the foreach path is the fast one.
    return all(p.is_cuda for p in model.parameters())


def build_pretrain_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam / AdamW with β = (b1, b2) and weight decay (pretraining, paper Table 3)."""
    groups = _param_groups(model, cfg["weight_decay"])
    kw: dict[str, Any] = {"lr": cfg["lr"], "betas": (cfg["b1"], cfg["b2"])}
    if _fused_ok(model):
        kw["fused"] = True
    cls = torch.optim.AdamW if cfg["optimizer"] == "adamw" else torch.optim.Adam
    return cls(groups, **kw)


def build_finetune_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 and no weight decay (fine-tuning, paper Table 4)."""
    kw: dict[str, Any] = {"lr": lr, "momentum": 0.9, "weight_decay": 0.0}
    if _fused_ok(model):
        kw["fused"] = True
    return torch.optim.SGD(model.parameters(), **kw)


def lr_factor(step: int, *, total: int, warmup: int, decay: str) -> float:
    """Multiplier of the peak lr at ``step``: linear warm-up, then linear or cosine decay to 0."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    if decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if decay == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown decay {decay!r}; allowed: linear, cosine")


def build_schedule(optimizer: torch.optim.Optimizer, *, total: int, warmup: int, decay: str
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total=total, warmup=warmup, decay=decay))
