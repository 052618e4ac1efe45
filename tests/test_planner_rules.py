"""planner rules: each test kills mutants of vitbench/plan/planner.py that the older tests let live (tools/mutation.sh)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vitbench.errors import UserError
from vitbench.plan import planner
from vitbench.plan.planner import (MAX_RUNS_LIMIT, Recipe, _matches, make_plan, max_runs_default,
                                   parse_recipes)
from vitbench.spec.schema import deep_merge, default_config

SCALES = Path(__file__).resolve().parents[1] / "experiments" / "_scales.yaml"


def _exp(tmp_path: Path, smoke: str, top: str = "") -> Path:
    """An experiment extending the shared scales; ``smoke`` is the body of its smoke scale (YAML, indented 4)."""
    (tmp_path / "scales.yaml").write_text(SCALES.read_text())
    f = tmp_path / "exp.yaml"
    body = "extends: scales.yaml\n" + top + "scales:\n  smoke:\n" + "".join(
        f"    {line}\n" for line in smoke.strip("\n").splitlines())
    f.write_text(body)
    return f


# ---- parse_recipes / _matches ------------------------------------------------------------------


def test_recipe_matching_on_family_alone_is_a_list_and_applies(tmp_path: Path) -> None:
    recipes = parse_recipes({"fam": {"when": {"model.family": "vit"}, "set": {"model": {"dropout": 0.25}}}}, "x.yaml")
    assert recipes == [Recipe("fam", {"model.family": ["vit"]}, {"model": {"dropout": 0.25}})]
    f = _exp(tmp_path, "grid: {pretrain.lr: [0.1]}\nrecipes:\n  fam:\n    when: {model.family: vit}\n"
                       "    set: {model: {dropout: 0.25}}")
    plan = make_plan(f, scale="smoke", check_data=False)
    assert plan.runs[0].recipes == ["fam"] and plan.runs[0].config["model"]["dropout"] == 0.25


def test_recipe_family_list_kept_and_keys_parsed() -> None:
    r = parse_recipes({"a": {"when": {"model.family": ["vit", "bit"], "pretrain.lr": 0.5},
                             "set": {"pretrain": {"steps": 3}}}}, None)
    assert r == [Recipe("a", {"pretrain.lr": [0.5], "model.family": ["vit", "bit"]}, {"pretrain": {"steps": 3}})]
    assert parse_recipes(None, None) == []


def test_recipe_when_errors_name_file_and_recipe() -> None:
    with pytest.raises(UserError) as e:
        parse_recipes({"r1": {"when": {"pretrain.nope": 1}, "set": {"pretrain": {"steps": 3}}}}, "x.yaml")
    assert str(e.value).startswith("x.yaml: recipes.r1.when[0].pretrain.nope: unknown grid key 'pretrain.nope'")


@pytest.mark.parametrize("part", ["when", "set"])
def test_recipe_missing_part(part: str) -> None:
    r = {"when": {"pretrain.lr": 0.5}, "set": {"pretrain": {"steps": 3}}}
    del r[part]
    with pytest.raises(UserError) as e:
        parse_recipes({"r1": r}, "x.yaml")
    assert str(e.value) == f"x.yaml: recipes.r1: has no {part} once scales and extends are merged"


def test_unknown_model_name_matches_no_family_recipe(tmp_path: Path) -> None:
    cfg = deep_merge(default_config(), {"model": {"name": "Bogus"}})
    assert not _matches(Recipe("r", {"model.family": ["vit", "bit", "hybrid"]}, {}), cfg)
    # A recipe must not repair an unknown name: the semantic checks report it.
    f = _exp(tmp_path, "base: {model: {name: Bogus}}\nrecipes:\n  fix:\n"
                       "    when: {model.family: [vit, bit, hybrid]}\n    set: {model: {name: ViT-nano/4}}")
    with pytest.raises(UserError, match=r"^.*exp\.yaml: model\.name: unknown model 'Bogus'.*\(grid point: base\)$"):
        make_plan(f, scale="smoke", check_data=False)


# ---- max runs ----------------------------------------------------------------------------------


def test_max_runs_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITBENCH_MAX_RUNS", raising=False)
    assert max_runs_default() == 5000
    monkeypatch.setenv("VITBENCH_MAX_RUNS", "7")
    assert max_runs_default() == 7
    monkeypatch.setenv("VITBENCH_MAX_RUNS", "lots")
    with pytest.raises(UserError) as e:
        max_runs_default()
    assert str(e.value) == "$VITBENCH_MAX_RUNS: must be an integer, got 'lots'"


def test_max_runs_env_caps_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _exp(tmp_path, "grid: {pretrain.lr: [0.1, 0.2, 0.3]}")
    monkeypatch.setenv("VITBENCH_MAX_RUNS", "2")
    with pytest.raises(UserError) as e:
        make_plan(f, scale="smoke", check_data=False)
    assert str(e.value) == (f"{f}: scales.smoke.grid: grid expands to 3 runs, more than the cap of 2 "
                            "(raise it with --max-runs)")


def test_cap_equal_to_runs_is_allowed(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {pretrain.lr: [0.1, 0.2]}\nseeds: [0, 1]")
    assert len(make_plan(f, scale="smoke", max_runs=4, check_data=False).runs) == 4
    with pytest.raises(UserError, match=r"grid expands to 4 runs, more than the cap of 3 \(raise it with --max-runs\)"):
        make_plan(f, scale="smoke", max_runs=3, check_data=False)


def test_cap_at_and_above_the_limit(tmp_path: Path) -> None:
    lrs = ", ".join(str(i + 1) for i in range(1001))
    f = _exp(tmp_path, f"grid: {{pretrain.lr: [{lrs}], pretrain.steps: [{', '.join(str(i + 1) for i in range(100))}]}}")
    n = 1001 * 100
    with pytest.raises(UserError) as e:
        make_plan(f, scale="smoke", max_runs=MAX_RUNS_LIMIT, check_data=False)
    assert str(e.value) == (f"{f}: scales.smoke.grid: grid expands to {n} runs, more than the cap of "
                            f"{MAX_RUNS_LIMIT} (raise it with --max-runs)")
    with pytest.raises(UserError) as e:
        make_plan(f, scale="smoke", max_runs=MAX_RUNS_LIMIT + 1, check_data=False)
    assert str(e.value) == (f"{f}: scales.smoke.grid: grid expands to {n} runs, more than the limit of "
                            f"{MAX_RUNS_LIMIT} runs one plan may hold")


# ---- errors name the file and the key ----------------------------------------------------------


def test_grid_error_names_file_and_scale_grid(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {pretrain.nope: [1]}")
    with pytest.raises(UserError) as e:
        make_plan(f, scale="smoke", check_data=False)
    assert str(e.value).startswith(f"{f}: scales.smoke.grid.pretrain.nope: unknown grid key 'pretrain.nope'")


def test_exclude_error_names_file_and_scale_exclude(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {pretrain.lr: [0.1]}\nexclude: [{pretrain.nope: 1}]")
    with pytest.raises(UserError) as e:
        make_plan(f, scale="smoke", check_data=False)
    assert str(e.value).startswith(f"{f}: scales.smoke.exclude[0].pretrain.nope: unknown grid key 'pretrain.nope'")


def test_set_error_names_set_and_key(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {pretrain.lr: [0.1]}")
    with pytest.raises(UserError) as e:
        make_plan(f, scale="smoke", overrides=["pretrain.nope=1"], check_data=False)
    assert str(e.value).startswith("--set: pretrain.nope: unknown key; allowed: ")
    with pytest.raises(UserError) as e:
        make_plan(f, scale="smoke", overrides=["pretrain.steps=abc"], check_data=False)
    assert str(e.value).startswith("--set: pretrain.steps: ")


def test_empty_after_excludes_message(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {pretrain.lr: [0.1, 0.2]}\nexclude: [{pretrain.lr: [0.1, 0.2]}]")
    with pytest.raises(UserError) as e:
        make_plan(f, scale="smoke", check_data=False)
    assert str(e.value) == f"{f}: scales.smoke.grid: the grid is empty after excludes: nothing to run"


# ---- semantic checks ---------------------------------------------------------------------------


def test_semantic_error_names_file_key_and_grid_point(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {zip: {model.name: [ViT-nano/4, Bogus], pretrain.lr: [0.1, 0.2]}}")
    with pytest.raises(UserError) as e:
        make_plan(f, scale="smoke", check_data=False)
    msg = str(e.value)
    assert msg.startswith(f"{f}: model.name: unknown model 'Bogus'; allowed: ")
    assert msg.endswith(" (grid point: model.name=Bogus, pretrain.lr=0.2)")


def test_semantic_error_of_the_base(tmp_path: Path) -> None:
    f = _exp(tmp_path, "base: {model: {name: Bogus}}\nseeds: [0, 1]")
    with pytest.raises(UserError) as e:
        make_plan(f, scale="smoke", check_data=False)
    msg = str(e.value)
    assert msg.startswith(f"{f}: model.name: unknown model 'Bogus'") and msg.endswith(" (grid point: base)")


def test_check_data_is_on_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITBENCH_DATA", raising=False)
    f = _exp(tmp_path, f"base: {{pretrain: {{dataset: cifar10}}, runtime: {{data_root: '{tmp_path / 'none'}'}}}}\n"
                       "grid: {pretrain.lr: [0.1]}")
    assert len(make_plan(f, scale="smoke", check_data=False).runs) == 1
    with pytest.raises(UserError) as e:
        make_plan(f, scale="smoke")
    msg = str(e.value)
    assert msg.startswith(f"{f}: pretrain.dataset: cifar10: data root ")
    assert msg.endswith("(grid point: pretrain.lr=0.1)")
    with pytest.raises(UserError):
        make_plan(f, scale="smoke", check_data=True)


def test_semantics_checked_once_per_seedless_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    real = planner.check_semantics

    def spy(cfg: dict[str, Any], **kw: Any) -> None:
        calls.append(cfg)
        real(cfg, **kw)

    monkeypatch.setattr(planner, "check_semantics", spy)
    f = _exp(tmp_path, "grid: {pretrain.lr: [0.1, 0.2]}\nseeds: [0, 1, 2]")
    plan = make_plan(f, scale="smoke", check_data=False)
    assert len(plan.runs) == 6
    assert [c["pretrain"]["lr"] for c in calls] == [0.1, 0.2]
    assert [c["seed"] for c in calls] == [0, 0]


def test_every_distinct_config_is_checked(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {model.name: [ViT-nano/4, Bogus]}")
    with pytest.raises(UserError, match=r"unknown model 'Bogus'.*\(grid point: model\.name=Bogus\)$"):
        make_plan(f, scale="smoke", check_data=False)


# ---- runs, excludes, duplicates ----------------------------------------------------------------


def test_runs_points_scale_and_no_duplicates(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {pretrain.lr: [0.1, 0.2]}\nseeds: [3, 4]")
    plan = make_plan(f, scale="smoke", check_data=False)
    assert plan.scale == "smoke" and plan.duplicates == 0
    assert [r.point for r in plan.runs] == [{"pretrain.lr": 0.1, "seed": 3}, {"pretrain.lr": 0.1, "seed": 4},
                                           {"pretrain.lr": 0.2, "seed": 3}, {"pretrain.lr": 0.2, "seed": 4}]
    assert [r.config["seed"] for r in plan.runs] == [3, 4, 3, 4]
    assert plan.varying == ["pretrain.lr", "seed"]


def test_exclude_drops_grid_points(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {pretrain.lr: [0.1, 0.2, 0.3]}\nexclude: [{pretrain.lr: 0.2}]")
    plan = make_plan(f, scale="smoke", check_data=False)
    assert [r.point["pretrain.lr"] for r in plan.runs] == [0.1, 0.3]


def test_exclude_by_resolved_key_skips_only_that_seed(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {pretrain.lr: [0.1, 0.2]}\nseeds: [0, 1]\nexclude: [{seed: 0}]")
    plan = make_plan(f, scale="smoke", check_data=False)
    assert [(r.point["pretrain.lr"], r.point["seed"]) for r in plan.runs] == [(0.1, 1), (0.2, 1)]


def test_duplicates_are_counted(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {pretrain.lr: [0.1, 0.2, 0.3]}")
    plan = make_plan(f, scale="smoke", overrides=["pretrain.lr=0.5"], check_data=False)
    assert len(plan.runs) == 1 and plan.duplicates == 2
    assert plan.runs[0].config["pretrain"]["lr"] == 0.5 and plan.varying == []


def test_a_duplicate_skips_only_its_own_seed(tmp_path: Path) -> None:
    # At seed 0 both chain points resolve to the base; at seed 1 a recipe sets the lr, which only the
    # second point (an lr axis) overrides, so the second point's seed-1 run is new.
    f = _exp(tmp_path, "base: {pretrain: {lr: 0.001}}\n"
                       "grid: {chain: [{pretrain.warmup_steps: [2]}, {pretrain.lr: [0.001]}]}\nseeds: [0, 1]\n"
                       "recipes:\n  odd:\n    when: {seed: 1}\n    set: {pretrain: {lr: 0.5}}")
    plan = make_plan(f, scale="smoke", check_data=False)
    assert plan.duplicates == 1
    assert [(r.point, r.config["pretrain"]["lr"]) for r in plan.runs] == [
        ({"pretrain.warmup_steps": 2, "seed": 0}, 0.001), ({"pretrain.warmup_steps": 2, "seed": 1}, 0.5),
        ({"pretrain.lr": 0.001, "seed": 1}, 0.001)]


# ---- varying -----------------------------------------------------------------------------------


def test_varying_of_two_runs_leaves_out_runtime(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {zip: {pretrain.lr: [0.1, 0.2], runtime.log_every: [1, 2]}}")
    plan = make_plan(f, scale="smoke", check_data=False)
    assert len(plan.runs) == 2
    assert plan.varying == ["pretrain.lr"]
    assert plan.labels(plan.runs[1]) == {"pretrain.lr": 0.2}


def test_varying_when_only_the_last_of_three_differs(tmp_path: Path) -> None:
    f = _exp(tmp_path, "grid: {chain: [{pretrain.warmup_steps: [2]}, {pretrain.lr: [0.1, 0.2]}]}\n"
                       "base: {pretrain: {lr: 0.1}}")
    plan = make_plan(f, scale="smoke", check_data=False)
    assert len(plan.runs) == 2 and plan.duplicates == 1
    assert plan.varying == ["pretrain.lr"]
