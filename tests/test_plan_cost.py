"""Longest runs first: the launcher orders a grid by estimated training FLOPs (3 × forward FLOPs ×
images, pretraining plus every fine-tuning lr), so the array's last tasks are its shortest."""

from __future__ import annotations

from pathlib import Path

import torch

from vitbench.models import count_flops, create_model
from vitbench.plan.cost import estimated_flops, longest_first
from vitbench.plan.planner import make_plan
from vitbench.models import config_kwargs as model_kwargs

REPO = Path(__file__).resolve().parents[1]


def test_estimate_is_three_forward_passes_per_image_of_each_phase() -> None:
    plan = make_plan(str(REPO / "experiments" / "model_compute.yaml"), scale="micro", check_data=False)
    cfg = next(r.config for r in plan.runs if r.config["model"]["name"] == "ViT-micro/4")
    m, p, ft = cfg["model"], cfg["pretrain"], cfg["eval"]["finetune"]
    torch.manual_seed(0)
    pre = count_flops(create_model(m["name"], num_classes=32, img_size=16, **model_kwargs(m)), 16)
    fine = count_flops(create_model(m["name"], num_classes=10, img_size=16, **model_kwargs(m)), 16)
    expected = 3 * pre * 2000 * p["batch_size"] + 3 * fine * 400 * ft["batch_size"] * len(ft["lrs"])
    assert (p["steps"], ft["steps"], len(ft["lrs"])) == (2000, 400, 2)
    assert estimated_flops(cfg) == expected


def test_a_grid_goes_longest_first() -> None:
    plan = make_plan(str(REPO / "experiments" / "data_scaling.yaml"), scale="micro", check_data=False)
    names = [r.config["model"]["name"] for r in longest_first(plan.runs)]
    # measured core-seconds per run (results/bench/runcost-*.json): hybrid 119, ViT-micro 100, BiT-micro 47
    assert names == ["Rmicro+micro"] * 15 + ["ViT-micro/4"] * 15 + ["BiT-micro"] * 15
    same = [r.run_id for r in longest_first(plan.runs) if r.config["model"]["name"] == "BiT-micro"]
    assert same == [r.run_id for r in plan.runs if r.config["model"]["name"] == "BiT-micro"]  # ties: plan order
