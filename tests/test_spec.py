"""Experiment files, grids, overrides and run ids."""

import json
from pathlib import Path

import pytest

from vitbench.errors import UserError
from vitbench.plan.ids import run_id
from vitbench.spec.grid import excluded, expand, parse_excludes
from vitbench.spec.overrides import apply_overrides, parse_override
from vitbench.spec.schema import default_config, deep_merge, validate_structure
from vitbench.spec.yamlio import loads


def test_yaml_reads_exponent_floats() -> None:
    assert loads("lr: 1e-3") == {"lr": 0.001}
    assert loads("x: 3") == {"x": 3} and loads("v: 1.5e+2") == {"v": 150.0}


def test_product_zip_chain_exclude() -> None:
    grid = {"chain": [
        {"product": {"model.pos_embed": ["learned_1d", "learned_2d"], "model.pos_placement": ["stem", "every_layer"]}},
        {"zip": {"model.name": ["ViT-micro/4", "BiT-micro"], "pretrain.lr": [1e-3, 3e-3]}},
    ]}
    pts = expand(grid)
    assert len(pts) == 4 + 2
    assert pts[4] == {"model.name": "ViT-micro/4", "pretrain.lr": 1e-3}
    assert pts[5] == {"model.name": "BiT-micro", "pretrain.lr": 3e-3}
    ex = parse_excludes([{"model.pos_embed": "learned_2d", "model.pos_placement": ["every_layer"]}])
    kept = [p for p in pts if not excluded(p, default_config(), ex)]
    assert len(kept) == 5
    # zip of sub-grids, product of sub-grids
    z = expand({"zip": [{"seed": [1, 2]}, {"pretrain.steps": [10, 20]}]})
    assert z == [{"seed": 1, "pretrain.steps": 10}, {"seed": 2, "pretrain.steps": 20}]
    p = expand({"product": [{"seed": [1, 2]}, {"chain": [{"pretrain.steps": [1]}, {"pretrain.lr": [0.5]}]}]})
    assert len(p) == 4
    assert expand(None) == [{}] and expand({}) == [{}]


def test_list_valued_axis_takes_lists() -> None:
    assert expand({"eval.fewshot.shots": [[1, 5], [10]]}) == [{"eval.fewshot.shots": [1, 5]},
                                                               {"eval.fewshot.shots": [10]}]
    with pytest.raises(UserError, match="list of lists"):
        expand({"eval.fewshot.shots": [1, 5]})


@pytest.mark.parametrize("grid,match", [
    ({"model.nope": [1]}, "unknown grid key"),
    ({"pretrain.lr": []}, "empty"),
    ({"zip": {"seed": [1, 2], "pretrain.steps": [1]}}, "equal lengths"),
    ({"chain": []}, "non-empty list"),
    ({"product": [{"seed": [1]}], "seed": [2]}, "only key"),
    ({"pretrain.steps": [1, "x"]}, "must be int"),
    ([1, 2], "mapping"),
])
def test_grid_errors_are_one_line(grid: object, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        expand(grid, file="f.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("f.yaml: grid")


def test_overrides() -> None:
    assert parse_override("pretrain.lr=3e-4") == ("pretrain.lr", 3e-4)
    assert parse_override("eval.fewshot.shots=[1, 5]") == ("eval.fewshot.shots", [1, 5])
    assert parse_override("pretrain.size=null") == ("pretrain.size", None)
    cfg = apply_overrides({}, ["model.name=BiT-micro", "seed=3"])
    assert cfg == {"model": {"name": "BiT-micro"}, "seed": 3}
    for bad, match in [("pretrain.lr", "key.path=value"), ("pretrain.lrr=1", "unknown key; allowed: augment"),
                       ("pretrain=1", "section"), ("pretrain.steps=abc", "must be int"), ("=3", "empty key"),
                       ("model..name=x", "empty key"), ("pretrain.steps=[", "cannot read")]:
        with pytest.raises(UserError, match=match):
            parse_override(bad)


def test_structure_validation_names_key() -> None:
    with pytest.raises(UserError, match=r"^x.yaml: pretrain.augment.crop: 'rotate' is not allowed"):
        validate_structure({"pretrain": {"augment": {"crop": "rotate"}}}, file="x.yaml")
    with pytest.raises(UserError, match="must be int"):
        validate_structure({"seed": True})
    assert validate_structure({"pretrain": {"lr": 1}})["pretrain"]["lr"] == 1.0


def test_run_id_is_stable_and_ignores_runtime_and_key_order() -> None:
    a = default_config()
    b = json.loads(json.dumps(a))
    b = dict(reversed(list(b.items())))
    b["runtime"]["device"] = "cuda:3"
    b["runtime"]["data_root"] = "/somewhere"
    assert run_id(a) == run_id(b)
    c = deep_merge(a, {"pretrain": {"lr": 0.002}})
    assert run_id(c) != run_id(a)
    assert run_id(deep_merge(a, {"pretrain": {"lr": 1e-3}})) == run_id(a)  # 1e-3 == 0.001
    assert len(run_id(a)) == 12


def test_load_experiment_merges_extends(tmp_path: Path) -> None:
    from vitbench.spec.experiment import load_experiment

    (tmp_path / "parent.yaml").write_text(
        "base: {pretrain: {steps: 7, lr: 0.5}}\nseeds: [0, 1]\nscales: {smoke: {base: {pretrain: {steps: 3}}}}\n")
    (tmp_path / "child.yaml").write_text(
        "extends: parent.yaml\nbase: {pretrain: {lr: 0.25}}\ngrid: {model.pool: [cls, gap]}\n"
        "scales: {smoke: {seeds: [5]}}\n")
    exp = load_experiment(tmp_path / "child.yaml")
    scale, spec = exp.resolve_scale("smoke")
    assert spec["base"]["pretrain"] == {"steps": 3, "lr": 0.25}
    assert spec["seeds"] == [5] and spec["grid"] == {"model.pool": ["cls", "gap"]}
    with pytest.raises(UserError, match="has no scale 'paper'"):
        exp.resolve_scale("paper")
