"""Estimated compute of a planned run, so that a grid is submitted longest first: SLURM starts array
tasks in index order, and a long run started last leaves every other core idle at the tail."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=256)
def _forward_flops(name: str, kwargs: str, img_size: int, num_classes: int) -> int:
    import torch

    from vitbench.models import count_flops, create_model

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = create_model(name, num_classes=num_classes, img_size=img_size, **json.loads(kwargs))
    return count_flops(model, img_size)


def estimated_flops(cfg: dict[str, Any]) -> float:
    """Training FLOPs of the run: 3 × forward FLOPs × images, pretraining plus every fine-tuning lr
    (few-shot feature extraction is a forward pass over small sets, left out)."""
    from vitbench.data import dataset_info
    from vitbench.spec.budget import planned_steps
    from vitbench.models import config_kwargs

    m, p, ft = cfg["model"], cfg["pretrain"], cfg["eval"]["finetune"]
    kw = json.dumps(config_kwargs(m), sort_keys=True)
    steps = planned_steps(cfg)
    total = 3.0 * _forward_flops(m["name"], kw, p["img_size"], dataset_info(p["dataset"]).num_classes) \
        * (steps.get("pretrain") or 0) * p["batch_size"]
    if ft.get("dataset") and ft.get("lrs"):
        size = ft.get("img_size") or p["img_size"]
        total += 3.0 * _forward_flops(m["name"], kw, size, dataset_info(ft["dataset"]).num_classes) \
            * (steps.get("finetune") or 0) * ft["batch_size"] * len(ft["lrs"])
    return total


def longest_first(runs: list[Any]) -> list[Any]:
    """Planned runs ordered by estimated FLOPs, largest first (ties keep the plan's order)."""
    return sorted(runs, key=lambda r: -estimated_flops(r.config))
