"""Optimisers and learning-rate schedules of the paper's recipes (Tables 3 and 4)."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

# ---- weight decay: which tensors --------------------------------------------------------------------------
# One rule, owned by the model (timm / nanoGPT style): decay the kernels (Linear / Conv weights) only. Not
# decayed: every tensor with ndim <= 1 or named ``*.bias`` (norm scales, biases; timm's
# ``param_groups_weight_decay``) plus the model's ``no_weight_decay()`` names (position tables, [class]
# token, relative-position biases). This is big_vision's rule: its optax ``wd_mults`` default is
# ``('.*/kernel$', 1.0)``.


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """The model's own exclusions (``model.no_weight_decay()``, timm's convention); none if it has none."""
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def decay_summary(model: nn.Module) -> dict[str, Any]:
    """What the weight-decay rule decides for ``model`` (trainable parameters only), nanoGPT-style.

    Keys: ``decayed`` / ``not_decayed`` (parameter names), ``*_tensors`` / ``*_params`` (counts) and
    ``not_decayed_matrices``: the not-decayed names with ndim >= 2 (the interesting ones: position tables,
    [class] token, relative biases; norms and biases are excluded by shape).
    """
    # The rule does not depend on the value (timm puts everything in one group for 0): ask with 1.
    groups = param_groups_weight_decay(model, 1.0, no_weight_decay_list=sorted(no_weight_decay_names(model)))
    decayed_ids = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    decayed: list[str] = []
    not_decayed: list[str] = []
    n_decayed = n_not = 0
    matrices: list[str] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in decayed_ids:
            decayed.append(name)
            n_decayed += p.numel()
        else:
            not_decayed.append(name)
            n_not += p.numel()
            if p.ndim >= 2:
                matrices.append(name)
    return {"decayed": decayed, "not_decayed": not_decayed,
            "decayed_tensors": len(decayed), "decayed_params": n_decayed,
            "not_decayed_tensors": len(not_decayed), "not_decayed_params": n_not,
            "not_decayed_matrices": matrices}


def describe_decay(summary: dict[str, Any], weight_decay: float, max_names: int = 6) -> str:
    """One log line, e.g. ``weight decay 0.1 on 26 tensors (101,888 params); not decayed: 31 tensors
    (5,312 params) incl. cls_token, pos_embed.0.pos``."""
    head = (f"weight decay {weight_decay:g} on" if weight_decay else "weight decay off (0); would decay") + \
        f" {summary['decayed_tensors']} tensors ({summary['decayed_params']:,} params)"
    tail = f"; not decayed: {summary['not_decayed_tensors']} tensors ({summary['not_decayed_params']:,} params)"
    names = summary["not_decayed_matrices"]
    if names:
        tail += " incl. " + ", ".join(names[:max_names]) + (", …" if len(names) > max_names else "")
    else:
        tail += ", norms and biases only"
    return head + tail


def _fused_ok(model: nn.Module) -> bool:
    # Fused Adam/SGD kernels exist for CUDA tensors; on CPU the foreach path is the fast one.
    return all(p.is_cuda for p in model.parameters())


def build_pretrain_optimizer(model: nn.Module, cfg: dict[str, Any],
                             log: Callable[[str], None] | None = None) -> torch.optim.Optimizer:
    """AdamW with β = (b1, b2) and decoupled weight decay × lr (pretraining, paper Table 3).

    ``log``, if given, receives one line saying which tensors are decayed (``describe_decay``).
    """
    # Adam vs AdamW. The paper's code (2020, Flax) used flax.optim.Adam(beta1, beta2, weight_decay=wd), whose
    # decay is decoupled from the adaptive step and multiplied by the learning rate (flax/optim/adam.py):
    #     new_param = param - lr * m_hat / (sqrt(v_hat) + eps);  new_param -= lr * weight_decay * param
    # which is exactly torch.optim.AdamW(weight_decay=wd). So both names build AdamW; "adam" is the paper's
    # name for it (torch's Adam(weight_decay=) would instead add L2 to the gradient). Difference to big_vision
    # (the successor): its decay is decoupled too but multiplied by the schedule only, not the base lr
    # (optax.add_decayed_weights after optax.scale(config.lr)), so its "decoupled" config.wd ~ our lr * wd.
    if cfg["optimizer"] not in ("adam", "adamw"):
        raise ValueError(f"unknown optimizer {cfg['optimizer']!r}; allowed: adam, adamw")
    nwd = sorted(no_weight_decay_names(model))
    groups = param_groups_weight_decay(model, cfg["weight_decay"], no_weight_decay_list=nwd)
    if log is not None:
        log(describe_decay(decay_summary(model), cfg["weight_decay"]))
    kw: dict[str, Any] = {"lr": cfg["lr"], "betas": (cfg["b1"], cfg["b2"])}
    if _fused_ok(model):
        kw["fused"] = True
    return torch.optim.AdamW(groups, **kw)


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
