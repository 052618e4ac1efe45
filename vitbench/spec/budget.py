"""Training budgets: ``steps``, or ``epochs`` of the training split converted to steps.

The paper states pretraining budgets in epochs (Table 3: ImageNet 300, ImageNet-21k 90) and
fine-tuning in steps (Table 4). An epoch is one pass over the *training split the run trains on*:
after the dev split is carved out and after the nested subset (``pretrain.size``) is taken. The run
converts with the number of images it loaded and records both; planning uses the nominal size.
"""

from __future__ import annotations

from typing import Any

KINDS = ("pretrain", "finetune")


def steps_for(section: dict[str, Any], n_train: int) -> int:
    """Optimiser steps of a pretrain / finetune section trained on ``n_train`` images."""
    epochs = section.get("epochs")
    if epochs is None:
        return int(section["steps"])
    if epochs == 0:
        return 0
    return max(1, round(epochs * n_train / section["batch_size"]))


def epochs_of(section: dict[str, Any], steps: int, n_train: int) -> float:
    return steps * section["batch_size"] / n_train if n_train else float("nan")


def describe(section: dict[str, Any], steps: int, n_train: int) -> str:
    """One log line: how the budget was stated and what it came to."""
    stated = (f"{section['epochs']:g} epochs of {n_train:,} images" if section.get("epochs") is not None
              else f"{steps:,} steps ({epochs_of(section, steps, n_train):.3g} epochs of {n_train:,} images)")
    return f"{stated} at batch {section['batch_size']:,} = {steps:,} steps"


def sections(cfg: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any], int | None]]:
    """(key prefix, section, nominal train size) of each budgeted phase; size None when unknown."""
    from vitbench.data import train_size

    p, ft = cfg["pretrain"], cfg["eval"]["finetune"]
    out = {"pretrain": ("pretrain", p, train_size(p["dataset"], p["size"]))}
    if ft["dataset"]:
        out["finetune"] = ("eval.finetune", ft, train_size(ft["dataset"], None))
    return out


def planned_steps(cfg: dict[str, Any]) -> dict[str, int | None]:
    """Steps each phase will take with the datasets' nominal sizes (None where a size is unknown)."""
    out: dict[str, int | None] = {}
    for kind, (_, section, n) in sections(cfg).items():
        out[kind] = steps_for(section, n) if section.get("epochs") is None or n is not None else None
    return out


def evaluation_only(cfg: dict[str, Any]) -> bool:
    """No pretraining phase: a published checkpoint evaluated as it is (``model.init`` with a zero pretraining
    budget), or ``pretrain.objective: none`` (from scratch: the fine-tuning budget alone).

    Such a run loads no pretraining data (the checkpoint's pretraining set need not be on disk, and a
    from-scratch run has none) and records no pretraining top-1; few-shot and fine-tuning run as for any run.
    """
    p = cfg["pretrain"]
    if p.get("objective") == "none":
        return True
    budget = p.get("steps") if p.get("epochs") is None else p["epochs"]
    return cfg["model"].get("init") is not None and budget == 0
