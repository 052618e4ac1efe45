"""`vitbench compare`'s variant, its paired rows and their rendering, on edge cases (records written here)."""

import math
from pathlib import Path

import pytest

from tests.test_aggregate import POS, fill, write_record
from vitbench.aggregate.compare import compare_frame, make_variant, paired_delta, render_comparison
from vitbench.errors import UserError
from vitbench.plan.planner import make_plan

REPO = Path(__file__).resolve().parents[1]
METRIC = "fewshot/digits/5shot"


def experiment(tmp_path: Path, grid: str = "{eval.finetune.img_size: [null, 16]}") -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(f"description: t\nextends: {REPO / 'experiments' / '_scales.yaml'}\ngrid: {grid}\n")
    return path


def test_a_variant_needs_a_file_or_a_set() -> None:
    """Neither --variant nor --set: one line naming --variant."""
    plan = make_plan(POS, scale="smoke", check_data=False)
    with pytest.raises(UserError, match=r"^--variant: give the variant with --variant FILE and/or --set key=value$"):
        make_variant(plan, variant_file=None, overrides=[])


def test_variant_file_and_set_both_apply_at_the_plans_scale(tmp_path: Path) -> None:
    """The file's keys and every --set land in each seed's config, on the plan's (non-default) scale."""
    vfile = tmp_path / "nopos.yaml"
    vfile.write_text("model: {pos_embed: none}\n")
    plan = make_plan(POS, scale="smoke", check_data=False)
    v = make_variant(plan, variant_file=str(vfile), overrides=["eval.finetune.steps=7"])
    assert v.name == "nopos, eval.finetune.steps=7"
    (run,) = v.runs
    assert run.config["model"]["pos_embed"] == "none" and run.config["eval"]["finetune"]["steps"] == 7
    assert run.config["pretrain"]["steps"] == 12  # the smoke scale's, not micro's
    assert run.point == {"seed": 0}


def test_an_empty_variant_file_adds_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    plan = make_plan(POS, scale="smoke", check_data=False)
    v = make_variant(plan, variant_file=str(tmp_path / "empty.yaml"), overrides=["model.pos_embed=relative"])
    assert v.runs[0].config["model"]["pos_embed"] == "relative"


@pytest.mark.parametrize("text, match", [("model: {bogus: 1}", r"^\S*bad\.yaml: model\.bogus: unknown key"),
                                         ("eval: {fewshot: {shots: [1, 1]}}", r"^\S*bad\.yaml: .*distinct")])
def test_a_bad_variant_file_is_named(tmp_path: Path, text: str, match: str) -> None:
    """Structure and cross-field errors in the variant file name that file (a one-seed plan checks too)."""
    (tmp_path / "bad.yaml").write_text(text + "\n")
    plan = make_plan(POS, scale="smoke", check_data=False)
    assert len({r.config["seed"] for r in plan.runs}) == 1
    with pytest.raises(UserError, match=match):
        make_variant(plan, variant_file=str(tmp_path / "bad.yaml"), overrides=[])


@pytest.mark.parametrize("override, match", [("nokey", r"^--set: expects key\.path=value, got 'nokey'$"),
                                             ("eval.fewshot.shots=[1,1]", r"^--set: eval\.fewshot\.shots: shot counts")])
def test_a_bad_set_is_named_once(override: str, match: str) -> None:
    plan = make_plan(POS, scale="smoke", check_data=False)
    with pytest.raises(UserError, match=match):
        make_variant(plan, variant_file=None, overrides=[override])


def test_paired_delta_uses_only_the_seeds_both_sides_have() -> None:
    d = paired_delta({0: 0.6, 1: 0.7, 2: 0.9}, {0: 0.5, 1: 0.55})
    assert d["n"] == 2 and d["delta"] == pytest.approx(0.125)


def test_rows_follow_the_plans_order(tmp_path: Path) -> None:
    plan = make_plan(POS, scale="micro", check_data=False)
    fill(tmp_path, plan)
    v = make_variant(plan, variant_file=None, overrides=["model.pos_embed=sincos_2d", "model.pos_placement=every_layer"])
    frame = compare_frame(plan, v, tmp_path, METRIC)
    order = list(dict.fromkeys((r.config["model"]["pos_embed"], r.config["model"]["pos_placement"]) for r in plan.runs))
    assert list(zip(frame["model.pos_embed"], frame["model.pos_placement"])) == order


def test_a_metric_no_record_has_is_an_error(tmp_path: Path) -> None:
    plan = make_plan(POS, scale="micro", check_data=False)
    fill(tmp_path, plan)
    v = make_variant(plan, variant_file=None, overrides=["model.pos_embed=none"])
    with pytest.raises(UserError, match=r"^--metric: no run record has metric 'finetune/bogus'$"):
        compare_frame(plan, v, tmp_path, "finetune/bogus")


def test_a_variant_not_yet_run_shows_dashes(tmp_path: Path) -> None:
    """Baselines recorded, the variant not: no error, its mean and every interval are '—', none tested."""
    plan = make_plan(experiment(tmp_path), scale="micro", check_data=False)
    fill(tmp_path, plan)
    v = make_variant(plan, variant_file=None, overrides=["model.pos_embed=none"])
    frame = compare_frame(plan, v, tmp_path, METRIC)
    assert len(frame) == 2  # the null grid value is a group of its own
    assert math.isnan(frame["variant"][0]) and (frame["n"] == 0).all() and frame["p_holm"].isna().all()
    text = render_comparison(frame, v, METRIC)
    assert "Holm 1979) over the 0 baseline comparisons" in text
    row = next(line for line in text.splitlines() if line.startswith("| null"))
    assert [c.strip() for c in row.split("|")[1:9]] == ["null", "0.5110", "—", "—", "—", "—",
                                                         "n/a (<2 paired seeds)", "0/3"]


def test_the_variant_only_recorded_is_compared_with_nothing(tmp_path: Path) -> None:
    """Variant records but no baseline records: rows with no paired seeds, no error."""
    plan = make_plan(experiment(tmp_path), scale="micro", check_data=False)
    v = make_variant(plan, variant_file=None, overrides=["model.pos_embed=none"])
    for r in v.runs:
        write_record(tmp_path, r, 0.7)
    frame = compare_frame(plan, v, tmp_path, METRIC)
    assert frame["variant"].tolist() == [pytest.approx(0.7)] * 2 and math.isnan(frame["baseline"][0])


def test_two_paired_seeds_are_tested_and_counted(tmp_path: Path) -> None:
    """Two seeds in common make a test (Holm-adjusted, counted in the header); tiny p shows as <0.0001."""
    plan = make_plan(experiment(tmp_path), scale="micro", check_data=False)
    fill(tmp_path, plan)
    v = make_variant(plan, variant_file=None, overrides=["model.pos_embed=none"])
    for r in v.runs[:2]:
        write_record(tmp_path, r, 0.9 + 0.011001 * r.config["seed"])  # Δ nearly the same at both seeds (fill: +0.011 a seed)
    frame = compare_frame(plan, v, tmp_path, METRIC)
    assert (frame["n"] == 2).all() and frame["p_holm"].notna().all()
    text = render_comparison(frame, v, METRIC)
    assert "over the 2 baseline comparisons" in text and "| <0.0001 " in text and "| yes " in text


def test_a_done_run_without_the_metric_is_not_a_seed(tmp_path: Path) -> None:
    plan = make_plan(experiment(tmp_path), scale="micro", check_data=False)
    fill(tmp_path, plan)
    v = make_variant(plan, variant_file=None, overrides=["model.pos_embed=none"])
    write_record(tmp_path, v.runs[0], 0.9)
    write_record(tmp_path, v.runs[1], float("nan"))
    frame = compare_frame(plan, v, tmp_path, METRIC)
    assert frame["variant"][0] == pytest.approx(0.9) and (frame["n"] == 1).all()


def test_a_single_point_experiment_compares_with_its_one_group(tmp_path: Path) -> None:
    plan = make_plan(experiment(tmp_path, "{seed: [0, 1, 2]}"), scale="micro", check_data=False)
    fill(tmp_path, plan)
    v = make_variant(plan, variant_file=None, overrides=["model.pos_embed=none"])
    for r in v.runs:
        write_record(tmp_path, r, 0.9 + 0.01 * r.config["seed"] ** 2)
    frame = compare_frame(plan, v, tmp_path, METRIC)
    assert len(frame) == 1 and frame["n"][0] == 3


def test_the_variant_takes_the_recipes_of_the_plans_scale(tmp_path: Path) -> None:
    path = experiment(tmp_path)
    path.write_text(path.read_text() + "scales:\n  micro:\n    recipes:\n      warm:\n        note: seven\n"
                    "        when: {pretrain.dataset: synthetic}\n        set: {pretrain: {warmup_steps: 7}}\n")
    plan = make_plan(path, scale="micro", check_data=False)
    v = make_variant(plan, variant_file=None, overrides=["model.pos_embed=none"])
    assert v.runs[0].recipes == plan.runs[0].recipes == ["warm"]
    assert v.runs[0].config["pretrain"]["warmup_steps"] == 7


def test_one_seed_groups_compare(tmp_path: Path) -> None:
    plan = make_plan(experiment(tmp_path), scale="smoke", check_data=False)
    fill(tmp_path, plan)
    v = make_variant(plan, variant_file=None, overrides=["model.pos_embed=none"])
    frame = compare_frame(plan, v, tmp_path, METRIC)
    assert frame["eval.finetune.img_size"].tolist() == [None, 16] and (frame["seeds"] == "0/1").all()


def test_a_variant_that_is_the_only_grid_point_leaves_no_rows(tmp_path: Path) -> None:
    plan = make_plan(experiment(tmp_path, "{seed: [0, 1, 2]}"), scale="micro", check_data=False)
    fill(tmp_path, plan)
    v = make_variant(plan, variant_file=None, overrides=["seed=0"])
    frame = compare_frame(plan, v, tmp_path, METRIC)
    text = render_comparison(frame, v, METRIC)
    assert frame.empty and v.in_grid == {} and "over the 0 baseline comparisons" in text
    assert "| baseline   | variant   | Δ   | 95% CI   | p (Holm)   | significant   | paired seeds   |" in text
