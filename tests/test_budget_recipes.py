"""Budgets in steps or epochs (one of the two) and recipes keyed by grid values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitbench.cli import main
from vitbench.data import get_dataset, train_size
from vitbench.errors import UserError
from vitbench.plan.planner import make_plan
from vitbench.record.rundir import RunDir
from vitbench.spec.budget import planned_steps, steps_for
from vitbench.spec.runconfig import resolve_run_config
from vitbench.spec.schema import deep_merge, default_config, set_path
from vitbench.train.run import Run


def test_epochs_convert_with_the_training_split_size() -> None:
    # ImageNet at the paper's recipe: 300 epochs of the 99% left after the dev split, batch 4096
    n = train_size("imagenet")
    assert n == 1_281_167 - round(0.01 * 1_281_167)
    assert steps_for({"epochs": 300.0, "steps": None, "batch_size": 4096}, n) == round(300 * n / 4096) == 92_897
    assert steps_for({"epochs": 0.0, "steps": None, "batch_size": 4096}, n) == 0
    assert steps_for({"epochs": 1e-9, "steps": None, "batch_size": 4096}, n) == 1  # never rounds a budget away
    assert steps_for({"epochs": None, "steps": 123, "batch_size": 4096}, n) == 123
    # nested subsets count, not the full pool
    assert train_size("synthetic", 2000) == 2000


@pytest.mark.parametrize("name,size", [("digits", None), ("digits", 300), ("synthetic", 512)])
def test_nominal_train_size_is_what_loads(name: str, size: int | None) -> None:
    assert train_size(name, size) == len(get_dataset(name, "train", img_size=8, size=size))


def test_a_layer_setting_one_budget_clears_the_other() -> None:
    cfg = deep_merge(default_config(), {"pretrain": {"epochs": 3}})
    assert cfg["pretrain"]["steps"] is None and cfg["pretrain"]["epochs"] == 3
    set_path(cfg, "pretrain.steps", 10)
    assert cfg["pretrain"]["epochs"] is None and cfg["pretrain"]["steps"] == 10
    ft = deep_merge(default_config(), {"eval": {"finetune": {"epochs": 2.0}}})["eval"]["finetune"]
    assert ft["steps"] is None and ft["epochs"] == 2.0


def test_both_budgets_in_one_layer_is_an_error() -> None:
    with pytest.raises(UserError, match=r"pretrain.steps and pretrain.epochs: set exactly one, got both"):
        resolve_run_config({"pretrain": {"steps": 10, "epochs": 2}}, file="x.yaml")
    with pytest.raises(UserError, match=r"eval.finetune.steps and eval.finetune.epochs: set exactly one, got neither"):
        resolve_run_config({"eval": {"finetune": {"steps": None}}}, file="x.yaml")


def test_warmup_is_checked_against_converted_epochs() -> None:
    # 2 epochs of 512 images at batch 128 = 8 steps < 10 warm-up steps
    with pytest.raises(UserError, match=r"warm-up \(10\) is longer than the run \(8 steps\)"):
        resolve_run_config({"pretrain": {"size": 512, "epochs": 2, "batch_size": 128, "warmup_steps": 10}})


def test_run_converts_epochs_and_records_them(tmp_path: Path) -> None:
    cfg = resolve_run_config({
        "model": {"name": "ViT-nano/4"},
        "pretrain": {"size": 96, "img_size": 16, "epochs": 0.5, "batch_size": 16, "warmup_steps": 1},
        "eval": {"fewshot": {"shots": [1], "seeds": 1},
                 "finetune": {"epochs": 0.05, "steps": None, "batch_size": 16, "lrs": [0.01], "warmup_steps": 0}},
        "runtime": {"device": "cpu", "checkpoint_every": 100, "log_every": 1, "progress": "off"}})
    rec = Run(cfg, RunDir(tmp_path / "r")).execute()
    assert rec["pretrain"]["steps"] == rec["pretrain"]["steps_done"] == 3  # round(0.5 * 96 / 16)
    assert rec["pretrain"]["train_size"] == 96 and rec["pretrain"]["epochs"] == 0.5
    n_ft = train_size("digits")
    assert rec["finetune"]["per_lr"]["0.01"]["steps"] == round(0.05 * n_ft / 16)
    log = (tmp_path / "r" / "log.txt").read_text()
    assert "0.5 epochs of 96 images at batch 16 = 3 steps" in log


def _experiment(tmp_path: Path, body: str) -> Path:
    scales = tmp_path / "scales.yaml"
    scales.write_text((Path(__file__).resolve().parents[1] / "experiments" / "_scales.yaml").read_text())
    f = tmp_path / "exp.yaml"
    f.write_text("extends: scales.yaml\n" + body)
    return f


RECIPES = """
grid:
  product:
    - {model.name: [ViT-nano/4, BiT-nano]}
    - {pretrain.size: [256, 512]}
    - {pretrain.lr: [0.001, 0.002]}
recipes:
  small-set:
    note: a test recipe keyed by a grid value
    when: {pretrain.size: 256}
    set: {pretrain: {epochs: 4, warmup_steps: 1, lr: 0.5}, model: {dropout: 0.2}}
  resnets:
    when: {model.family: bit, pretrain.size: [256, 512]}
    set: {pretrain: {weight_decay: 0.0}}
scales:
  smoke:
    recipes:
      resnets: {set: {pretrain: {weight_decay: 0.01}}}
"""


def test_recipes_apply_by_grid_value_and_family_and_lose_to_grid_axes(tmp_path: Path) -> None:
    plan = make_plan(_experiment(tmp_path, RECIPES), scale="smoke", check_data=False)
    assert len(plan.runs) == 8
    for r in plan.runs:
        p, m = r.config["pretrain"], r.config["model"]
        small, resnet = p["size"] == 256, m["name"] == "BiT-nano"
        assert r.recipes == [n for n, on in (("small-set", small), ("resnets", resnet)) if on]
        assert (p["epochs"], p["steps"]) == ((4.0, None) if small else (None, 12))
        assert p["lr"] in (0.001, 0.002)  # the grid's lr axis wins over the recipe's 0.5
        assert m["dropout"] == (0.2 if small else 0.0)
        # the smoke scale amends the file's recipe by name
        assert p["weight_decay"] == (0.01 if resnet else 0.1)
        assert planned_steps(r.config)["pretrain"] == (32 if small else 12)  # 4 epochs of 256 at batch 32


def test_set_overrides_win_over_recipes_and_pick_them(tmp_path: Path) -> None:
    f = _experiment(tmp_path, RECIPES)
    plan = make_plan(f, scale="smoke", overrides=["pretrain.steps=5"], check_data=False)
    assert all(r.config["pretrain"]["steps"] == 5 and r.config["pretrain"]["epochs"] is None for r in plan.runs)
    plan = make_plan(f, scale="smoke", overrides=["pretrain.size=256"], check_data=False)
    assert all("small-set" in r.recipes for r in plan.runs)


@pytest.mark.parametrize("recipes,match", [
    ("r: {when: {pretrain.sizes: 3}, set: {pretrain: {lr: 0.1}}}", r"recipes\.r\.when\[0\]\.pretrain\.sizes.*unknown grid key"),
    ("r: {when: {model.family: cnn}, set: {pretrain: {lr: 0.1}}}", r"recipes\.r\.when\.model\.family: 'cnn' is not a model family"),
    ("r: {when: {pretrain.size: 3}, set: {pretrain: {lrr: 0.1}}}", r"recipes\.r\.set\.pretrain\.lrr: unknown key"),
    ("r: {when: {pretrain.size: 3}}", r"recipes\.r: has no set once scales and extends are merged"),
    ("r: {when: {pretrain.size: 3}, set: {}}", r"recipes\.r\.set: needs a non-empty partial run config"),
    ("r: {set: {pretrain: {lr: 0.1}}}", r"recipes\.r: has no when once scales and extends are merged"),
    ("r: {when: [], set: {pretrain: {lr: 0.1}}}", r"recipes\.r\.when: needs a non-empty mapping"),
    ("r: {when: {pretrain.size: 3}, set: {pretrain: {lr: 0.1}}, because: x}", r"recipes\.r\.because: unknown key"),
    ("[1, 2]", r"recipes: must be a mapping of recipe names"),
])
def test_bad_recipes_are_one_line_errors(tmp_path: Path, recipes: str, match: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    f = _experiment(tmp_path, "grid: {pretrain.size: [256]}\nrecipes:\n  " + recipes.replace("\n", "\n  ") + "\n")
    with pytest.raises(UserError, match=match):
        make_plan(f, scale="smoke", check_data=False)
    assert main(["run", str(f), "--scale", "smoke", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(f) in err


def test_compare_variant_takes_the_recipes(tmp_path: Path) -> None:
    from vitbench.aggregate.compare import make_variant

    plan = make_plan(_experiment(tmp_path, RECIPES), scale="smoke", check_data=False)
    v = make_variant(plan, variant_file=None, overrides=["pretrain.size=256", "model.name=ViT-nano/4"])
    assert all(r.recipes == ["small-set"] and r.config["pretrain"]["epochs"] == 4.0 for r in v.runs)


def test_dry_run_json_of_a_grid_with_recipes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _experiment(tmp_path, RECIPES)
    assert main(["run", str(f), "--scale", "smoke", "--dry-run", "--json", "--results", str(tmp_path / "res")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 8 and {r["state"] for r in rows} == {"new"}
    assert {tuple(r["recipes"]) for r in rows} == {(), ("small-set",), ("resnets",), ("small-set", "resnets")}


@pytest.mark.parametrize("report,key", [
    ("tables: [{title: t, metric: m, rows: model.name, colz: pretrain.lr}]", "report.tables[0].colz"),
    ("plots: [{kind: pie, x: pretrain.lr, metric: m}]", "report.plots[0].kind"),
])
def test_report_is_checked_before_anything_runs(tmp_path: Path, report: str, key: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    f = _experiment(tmp_path, "grid: {pretrain.size: [256]}\nreport:\n  " + report + "\n")
    assert main(["run", str(f), "--scale", "smoke", "--cluster", "debug", "--results", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err
    assert not (tmp_path / "res").exists()  # nothing submitted, nothing written
