"""``report.claims`` rules: the checks of a claim's shape, the statistics' edge cases, the verdict texts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from scipy import stats

from test_claims import FT, JITTER, M, TUNED_WITHIN, _tuned_values
from vitbench.aggregate.claims import (Claim, Comparison, Evaluation, _verdict, check_claims, claims_text, evaluate,
                                       paired_test, render_claims)
from vitbench.errors import UserError
from vitbench.plan.planner import make_plan
from vitbench.record.rundir import RunDir, run_dir

ROOT = Path(__file__).resolve().parents[1]
POOL_LR = {"model.pool": ["cls", "gap"], "pretrain.lr": [1.0e-3, 3.0e-3, 1.0e-2]}
GAP1, CLS1 = {"model.pool": "gap", "pretrain.lr": 1.0e-3}, {"model.pool": "cls", "pretrain.lr": 1.0e-3}


def _experiment(tmp: Path, claims: Any, grid: dict[str, list] | None = POOL_LR,
                seeds: list[int] | None = None) -> Path:
    """An experiment file over ``grid`` (None: no grid, one run per seed) whose report holds ``claims``."""
    raw: dict[str, Any] = {"description": "claims rules", "extends": str(ROOT / "experiments" / "_scales.yaml")}
    if grid is not None:
        raw["grid"] = {"product": grid}
    raw["report"] = {"claims": claims}
    if seeds is not None:
        raw["scales"] = {"micro": {"seeds": seeds}}
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _claim(**spec: Any) -> dict[str, Any]:
    return {"id": "c", "claim": "a claim", "metric": M, **spec}


def _plan(tmp: Path, claims: list[dict[str, Any]], grid: dict[str, list] | None = None,
          seeds: list[int] | None = None):  # noqa: ANN202
    return make_plan(_experiment(tmp, claims, grid or POOL_LR, seeds), scale="micro", check_data=False)


def _error(tmp: Path, grid: dict[str, list] | None = None, **spec: Any) -> str:
    """The UserError check_claims raises for one claim, without the file name in front."""
    plan = _plan(tmp, [_claim(**spec)], grid)
    with pytest.raises(UserError) as e:
        check_claims(plan)
    prefix = f"{plan.experiment.path}: "
    assert str(e.value).startswith(prefix)
    return str(e.value)[len(prefix):]


def _records(results: Path, plan, summary: Callable[[Any], dict[str, float] | None], *,  # noqa: ANN001
             status: Callable[[Any], str] = lambda r: "done",
             converged: Callable[[Any], Any] = lambda r: None) -> None:
    """One result.json per run with the given summary (None: the run is missing) and convergence flag."""
    for r in plan.runs:
        s = summary(r)
        if s is None:
            continue
        rd = RunDir(run_dir(results, r.run_id))
        rd.create(r.config)
        pre: dict[str, Any] = {"train_flops": 6e12}
        flag = converged(r)
        if flag is not None:
            pre["convergence"] = {"converged": flag, "window": 50}
        rd.write_result({"status": status(r), "config": r.config, "summary": s, "pretrain": pre})


def _at(r: Any) -> tuple[str, float, int]:
    return r.config["model"]["pool"], r.config["pretrain"]["lr"], r.config["seed"]


def _gap_ahead(r: Any) -> dict[str, float]:
    pool, _, s = _at(r)
    v = 0.5 + JITTER[s] + (0.1 + 0.01 * s if pool == "gap" else 0.0)
    return {M: v, f"{M}/dev": v}


def _evaluate(tmp: Path, claims: list[dict[str, Any]], summary: Callable[[Any], Any] = _gap_ahead,
              grid: dict[str, list] | None = None, seeds: list[int] | None = None, **kw: Any) -> list[Evaluation]:
    plan = _plan(tmp, claims, grid, seeds)
    _records(tmp / "res", plan, summary, **kw)
    return evaluate(plan, tmp / "res")


def _cmp(label: str, side: str, a: list[float], b: list[float], delta: float = 0.0) -> Comparison:
    return Comparison(label, side, delta, paired_test(a, b, side, delta))


def _judged(*comps: Comparison) -> Evaluation:
    ev = Evaluation(Claim(0, {"id": "c", "kind": "greater"}, M), comparisons=list(comps))
    _verdict(ev)
    return ev


# ------------------------------------------------------------------------------------------- statistics

def test_one_seed_has_a_difference_but_no_interval() -> None:
    """A single paired seed gives the mean difference, but no interval and no p."""
    t = paired_test([0.6], [0.5], "gt")
    assert t["n"] == 1 and t["delta"] == pytest.approx(0.1)
    assert all(math.isnan(t[k]) for k in ("lo", "hi", "p", "p_contra"))


def test_two_seeds_are_enough_for_an_interval() -> None:
    """Two paired seeds get the Student-t interval (one degree of freedom)."""
    a, b = [0.61, 0.72], [0.5, 0.6]
    t = paired_test(a, b, "gt")
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (t["lo"], t["hi"]) == pytest.approx((ci.low, ci.high))
    assert 0 < t["p"] < 1


def test_a_constant_difference_is_a_point_decided_by_its_sign() -> None:
    """The same difference at every seed: the interval is that point, p 0 on its side and 1 on the other."""
    gt, lt = paired_test([1.5, 2.5], [1.0, 2.0], "gt"), paired_test([1.5, 2.5], [1.0, 2.0], "lt")
    assert gt["lo"] == gt["hi"] == gt["delta"] == 0.5 and not gt["tied"]
    assert (gt["p"], gt["p_contra"]) == (0.0, 1.0) and (lt["p"], lt["p_contra"]) == (1.0, 0.0)


def test_rounding_noise_on_a_large_constant_difference_is_still_a_point() -> None:
    """Differences equal up to floating-point rounding count as constant, whatever their size."""
    t = paired_test([1000.1, 2000.3, 3000.7], [0.1, 1000.3, 2000.7], "gt")
    assert t["lo"] == t["hi"] == t["delta"] and t["p"] == 0.0 and t["p_contra"] == 1.0


@pytest.mark.parametrize("side", ["gt", "lt"])
def test_equal_values_are_a_tie_with_p_one(side: str) -> None:
    """Equal values at every seed: tied, and neither the claim nor its contradiction has p below 1."""
    t = paired_test([0.5, 0.7, 0.6], [0.5, 0.7, 0.6], side)
    assert t["tied"] and t["lo"] == t["hi"] == 0.0
    assert (t["p"], t["p_contra"]) == (1.0, 1.0)


def test_a_constant_difference_inside_or_outside_the_margin() -> None:
    """±delta with the same difference at every seed: inside is equivalent (p 0), outside contradicts it."""
    inside = paired_test([0.51, 0.61, 0.71], [0.5, 0.6, 0.7], "within", 0.03)
    outside = paired_test([0.6, 0.7, 0.8], [0.5, 0.6, 0.7], "within", 0.03)
    assert (inside["p"], inside["p_contra"]) == (0.0, 1.0)
    assert (outside["p"], outside["p_contra"]) == (1.0, 0.0)


# ------------------------------------------------------------------------------------------- verdict texts

FLAT = "with the same difference at every seed (zero spread: the interval is a point)"
SPREAD = (0.10, 0.06, 0.08)  # a paired difference whose one interval excludes 0 at p ≈ 0.02


def test_two_seeds_can_reproduce_a_claim_of_two_comparisons() -> None:
    """Two seeds suffice; two comparisons say Holm, and count the zero-spread ones."""
    ev = _judged(_cmp("up", "gt", [1.5, 2.5], [1.0, 2.0]), _cmp("down", "lt", [1.0, 2.0], [1.5, 2.5]))
    assert ev.verdict == "reproduced"
    assert ev.reason == ("every 95% interval on the claimed side and every Holm-adjusted p < 0.05 (Holm over 2); "
                         f"2/2 {FLAT}")


def test_one_comparison_contradicted() -> None:
    """One comparison on the wrong side: its interval, which side, and no Holm note."""
    ev = _judged(_cmp("up", "gt", [1.0, 2.0], [1.5, 2.5]))
    assert ev.verdict == "not reproduced"
    assert ev.reason == f"up: interval [-0.5000, -0.5000] entirely ≤ 0, contradiction p < 0.05; 1/1 {FLAT}"


@pytest.mark.parametrize("n, more", [(3, ""), (4, " (+1 more)"), (5, " (+2 more)")])
def test_a_contradiction_lists_three_comparisons_and_counts_the_rest(n: int, more: str) -> None:
    """The not-reproduced reason names the first three contradicted comparisons and counts the others."""
    ev = _judged(*[_cmp(f"c{i}", "lt", [1.5, 2.5], [1.0, 2.0]) for i in range(n)])
    listed = "; ".join(f"c{i}: interval [+0.5000, +0.5000] entirely ≥ 0" for i in range(3))
    assert ev.verdict == "not reproduced"
    assert ev.reason == f"{listed}{more}, contradiction p < 0.05 (Holm over {n}); {n}/{n} {FLAT}"


@pytest.mark.parametrize("n, more", [(3, ""), (4, " (+1 more)")])
def test_ties_are_inconclusive_and_say_a_finer_grid_may_separate_them(n: int, more: str) -> None:
    """Equal values at every seed, for claims of either direction: not clear of 0, and a tie."""
    ev = _judged(*[_cmp(f"t{i}", ("gt", "lt")[i % 2], [0.5, 0.6], [0.5, 0.6]) for i in range(n)])
    assert ev.verdict == "inconclusive"
    assert ev.reason == (f"the 95% interval is not clear of 0 for {n}/{n}: t0, t1, t2{more}; "
                         "equal at every seed (a finer grid may separate them)")


def test_a_tie_beside_a_spread_asks_for_seeds() -> None:
    """When only some of the spanning comparisons are ties, the advice is more seeds."""
    ev = _judged(_cmp("tie", "gt", [0.5, 0.6], [0.5, 0.6]), _cmp("noisy", "gt", [0.5, 0.6, 0.55], [0.52, 0.5, 0.6]))
    assert ev.verdict == "inconclusive"
    assert ev.reason == "the 95% interval is not clear of 0 for 2/2: tie, noisy; seed spread: add seeds"


@pytest.mark.parametrize("side, a, delta", [("gt", [0.5 + d for d in SPREAD], 0.0),
                                            ("within", [0.5, 0.507, 0.514], 0.03)])
def test_every_interval_clears_but_holm_withholds(side: str, a: list[float], delta: float) -> None:
    """Three comparisons each clearing the threshold alone (p between 0.017 and 0.05) are not enough after Holm."""
    comps = [_cmp(f"c{i}", side, a, [0.5, 0.5, 0.5], delta) for i in range(3)]
    assert all(0.0167 < c.test["p"] < 0.05 for c in comps)
    ev = _judged(*comps)
    assert ev.verdict == "inconclusive"
    assert ev.reason == ("every 95% interval clears the threshold but not every Holm-adjusted p < 0.05 (Holm over 3); "
                         "seed spread: add seeds")


def test_a_constant_difference_of_exactly_the_margin_is_not_inside_it() -> None:
    """|Δ| equal to delta at every seed is neither inside ±delta nor a tie."""
    ev = _judged(_cmp("above", "within", [1.5, 2.5], [1.0, 2.0], 0.5),
                 _cmp("below", "within", [1.0, 2.0], [1.5, 2.5], 0.5))
    assert ev.verdict == "inconclusive"
    assert ev.reason.startswith("the 95% interval is not inside ±0.5 for 2/2: above, below; ")
    assert "equal at every seed" not in ev.reason


# ------------------------------------------------------------------------------------------- claim shapes

POOL_DROPOUT = {"model.pool": ["cls", "gap"], "model.dropout": [0.0, 0.1]}
TUNE_LR = {"subject": {"model.pool": "gap"}, "reference": {"model.pool": "cls"}, "key": "pretrain.lr"}


@pytest.mark.parametrize("spec, grid, message", [
    ({"kind": "greater", "subject": {"model.pool": "max", "pretrain.lr": 1e-3}, "reference": CLS1}, None,
     "report.claims[0].subject: {model.pool: max, pretrain.lr: 0.001} selects no grid point at this scale; "
     "values here: model.pool: cls, gap; pretrain.lr: 0.001, 0.003, 0.01"),
    ({"kind": "greater", "subject": {"model": "gap"}, "reference": CLS1}, None,
     "report.claims[0].subject.model: 'model' is a section, not a run-config key"),
    ({"kind": "greater", "subject": {"model.pool": "gap"}, "reference": CLS1}, None,
     "report.claims[0].subject: selects 3 grid points; greater needs exactly one (add keys)"),
    ({"kind": "less_than_each", "subject": {"model.pool": "gap"}}, None,
     "report.claims[0].subject: selects 3 grid points; less_than_each needs exactly one (add keys)"),
    ({"kind": "greater", "subject": GAP1, "reference": {"model.pool": "cls"}}, None,
     "report.claims[0].reference: selects 3 grid points; greater needs exactly one (add keys)"),
    ({"kind": "less_than_each", "subject": GAP1, "reference": GAP1}, None,
     "report.claims[0].reference: leaves no other grid point to compare the subject with"),
    ({"kind": "within_each", "among": GAP1, "delta": 0.03}, None,
     "report.claims[0].among: selects 1 grid point; within_each needs at least two"),
    ({**TUNE_LR, "kind": "tuned_lower", "subject": {"pretrain.lr": [1e-3, 3e-3]}}, None,
     "report.claims[0].subject: selects grid points that differ in more than pretrain.lr; fix the other keys"),
    ({"kind": "positive_then_shrinks", "subject": GAP1, "reference": {"model.pool": "cls"}, "along": "pretrain.lr"},
     None, "report.claims[0].subject: selects one value of pretrain.lr; positive_then_shrinks needs at least two"),
    ({**TUNE_LR, "kind": "tuned_within", "reference": {"model.pool": "gap"}, "delta": 0.03}, None,
     "report.claims[0].reference: subject and reference select the same grid points"),
    ({**TUNE_LR, "kind": "tuned_lower", "key": "model.dropout"}, POOL_DROPOUT,
     "report.claims[0].key: tuned_lower compares log10 of the tuned value; model.dropout=0 is not a positive number"),
    ({"kind": "tuned_lower", "subject": {"pretrain.lr": 1e-3}, "reference": {"pretrain.lr": 1e-2}, "key": "model.pool"},
     None, "report.claims[0].key: tuned_lower compares log10 of the tuned value; model.pool=cls is not a positive "
     "number"),
], ids=["no-point", "section", "greater-subject", "less-subject", "greater-reference", "no-other", "among-one",
        "differ-in-more", "one-value", "same-points", "tuned-zero", "tuned-string"])
def test_a_claim_of_the_wrong_shape_is_a_user_error(tmp_path: Path, spec: dict, grid: dict | None,
                                                    message: str) -> None:
    """Each shape rule has its one-line error: the claim's key and what is wrong."""
    assert _error(tmp_path, grid, **spec) == message


def test_within_each_takes_two_groups(tmp_path: Path) -> None:
    """Two groups are enough for an equivalence claim."""
    among = {"model.pool": "gap", "pretrain.lr": [1e-3, 3e-3]}
    claim, = check_claims(_plan(tmp_path, [_claim(kind="within_each", among=among, delta=0.03)]))
    assert len(claim.among) == 2


def test_only_tuned_lower_needs_positive_values(tmp_path: Path) -> None:
    """Only tuned_lower needs positive values of its key; positive_then_shrinks runs along zero too."""
    claim, = check_claims(_plan(tmp_path, [_claim(kind="positive_then_shrinks", subject={"model.pool": "gap"},
                                                  reference={"model.pool": "cls"}, along="model.dropout")],
                                POOL_DROPOUT))
    assert claim.applicable and len(claim.subject) == len(claim.reference) == 2


def test_a_selector_matches_grid_values_up_to_float_rounding(tmp_path: Path) -> None:
    """0.1 × 0.1 selects the grid's 0.01."""
    plan = _plan(tmp_path, [_claim(kind="greater", subject={"model.pool": "gap", "pretrain.lr": 0.1 * 0.1},
                                   reference=CLS1)])
    claim, = check_claims(plan)
    assert len(claim.subject) == 1


def test_a_quoted_number_does_not_select_a_numeric_value(tmp_path: Path) -> None:
    """A selector value "0.001" (a string) is not the grid's number 0.001."""
    msg = _error(tmp_path, kind="greater", subject={"model.pool": "gap", "pretrain.lr": "0.001"}, reference=CLS1)
    assert msg.startswith("report.claims[0].subject: {model.pool: gap, pretrain.lr: 0.001} selects no grid point")


# ------------------------------------------------------------------------------------------- evaluation

def test_notes_and_labels_name_the_keys_that_differ(tmp_path: Path) -> None:
    """Groups are labelled by the keys that tell them apart; a group against itself is "base", a tie."""
    two, one, same = _evaluate(tmp_path, [
        {**_claim(kind="greater", subject=GAP1, reference={"model.pool": "cls", "pretrain.lr": 3e-3}), "id": "two"},
        {**_claim(kind="greater", subject=GAP1, reference=CLS1), "id": "one"},
        {**_claim(kind="greater", subject=GAP1, reference=GAP1), "id": "same"}])
    assert two.notes == ["groups by model.pool/pretrain.lr; subject: model.pool=gap, pretrain.lr=0.001; "
                         "reference: model.pool=cls, pretrain.lr=0.003"]
    assert [c.label for c in two.comparisons] == ["gap/0.001 vs cls/0.003"]
    assert one.notes[0].startswith("groups by model.pool; ") and one.comparisons[0].label == "gap vs cls"
    assert same.comparisons[0].label == "base vs base" and same.verdict == "inconclusive"
    assert same.reason == ("the 95% interval is not clear of 0 for 1/1: base vs base; "
                           "equal at every seed (a finer grid may separate them)")


def test_evaluate_takes_the_claims_it_is_given(tmp_path: Path) -> None:
    """evaluate() judges the checked claims passed to it, not the file's whole list."""
    plan = _plan(tmp_path, [{**_claim(kind="greater", subject=GAP1, reference=CLS1), "id": i} for i in "ab"])
    ev, = evaluate(plan, tmp_path / "nothing", check_claims(plan)[1:])
    assert ev.claim.id == "b" and ev.reason.startswith("6/6 runs missing")


def test_a_diverged_run_is_counted_and_its_values_are_not_used(tmp_path: Path) -> None:
    """A diverged run's record, even with numbers in its summary, blocks the claim and adds no seed."""
    ev, = _evaluate(tmp_path, [_claim(kind="greater", subject=GAP1, reference=CLS1)],
                    status=lambda r: "diverged" if _at(r)[0] == "cls" and _at(r)[2] == 0 else "done")
    assert ev.runs_line == "runs: 5/6 done, 1 diverged; convergence: not recorded"
    assert ev.reason == "1/6 runs diverged" and ev.comparisons[0].test["n"] == 2


def test_a_missing_run_with_two_seeds_leaves_one_pair(tmp_path: Path) -> None:
    """Reasons add up: the missing run, and the comparison left with one paired seed."""
    ev, = _evaluate(tmp_path, [_claim(kind="greater", subject=GAP1, reference=CLS1)], seeds=[0, 1],
                    summary=lambda r: None if _at(r)[0] == "gap" and _at(r)[2] == 1 else _gap_ahead(r))
    assert ev.runs_line == "runs: 3/4 done, 1 missing; convergence: not recorded"
    assert ev.reason == "1/4 runs missing; fewer than 2 paired seeds in 1/1 comparisons"


def test_a_record_without_the_dev_metric_blocks_a_tuned_claim(tmp_path: Path) -> None:
    """A tuned claim needs the test and the dev metric of every run; one record lacking dev is named."""
    def summary(r: Any) -> dict[str, float]:
        s = _gap_ahead(r)
        return {M: s[M]} if _at(r) == ("gap", 1e-3, 0) else s

    ev, = _evaluate(tmp_path, [_claim(**TUNED_WITHIN)], summary)
    assert ev.verdict == "inconclusive"
    assert ev.reason == f"1/18 records have no {M} or {M}/dev"


def test_convergence_records_partly_missing_or_not_booleans(tmp_path: Path) -> None:
    """Runs without a convergence flag are counted apart; a flag that is not a boolean is no record."""
    def converged(r: Any) -> Any:
        pool, lr, _ = _at(r)
        return "no" if lr == 1e-2 else (True if pool == "gap" else None)

    part, none = _evaluate(tmp_path, [
        {**_claim(kind="greater", subject=GAP1, reference=CLS1), "id": "part"},
        {**_claim(kind="greater", subject={"model.pool": "gap", "pretrain.lr": 1e-2},
                  reference={"model.pool": "cls", "pretrain.lr": 1e-2}), "id": "none"}], converged=converged)
    assert part.runs_line == "runs: 6/6 done; converged: 3/3 (3 without a convergence record)"
    assert none.runs_line == "runs: 6/6 done; convergence: not recorded"


TUNED_LOWER = {"kind": "tuned_lower", **TUNE_LR}


def test_tuning_ties_go_to_the_first_value_in_plan_order(tmp_path: Path) -> None:
    """The same dev metric at every learning rate: both tunings pick the first one."""
    lower, within = _evaluate(tmp_path, [{**_claim(**TUNED_LOWER), "id": "lower"},
                                         {**_claim(**TUNED_WITHIN), "id": "within"}],
                              lambda r: {M: _gap_ahead(r)[M], f"{M}/dev": 0.5})
    assert lower.notes[0] == (f"subject (model.pool=gap): tuned pretrain.lr on {M}/dev by seed — "
                              "0: 0.001, 1: 0.001, 2: 0.001")
    assert within.notes[1] == f"reference (model.pool=cls): tuned pretrain.lr (best mean {M}/dev) = 0.001"


def test_tuning_without_dev_values_says_none(tmp_path: Path) -> None:
    """No dev metric recorded: nothing is tuned, and the notes say so."""
    lower, within = _evaluate(tmp_path, [{**_claim(**TUNED_LOWER), "id": "lower"},
                                         {**_claim(**TUNED_WITHIN), "id": "within"}],
                              lambda r: {M: _gap_ahead(r)[M]})
    assert lower.notes[0] == f"subject (model.pool=gap): tuned pretrain.lr on {M}/dev by seed — none"
    assert within.notes[0] == f"subject (model.pool=gap): tuned pretrain.lr (best mean {M}/dev) = none (no dev values)"
    assert within.reason == f"18/18 records have no {M} or {M}/dev; fewer than 2 paired seeds in 1/1 comparisons"


def test_tuning_over_the_only_varying_key_names_the_sides_base(tmp_path: Path) -> None:
    """When the tuned key is all a side's points differ in, the note calls its point "base"."""
    lr4 = {"pretrain.lr": [1e-3, 3e-3, 1e-2, 3e-2]}
    ev, = _evaluate(tmp_path, [_claim(kind="tuned_lower", subject={"pretrain.lr": [1e-3, 3e-3]},
                                      reference={"pretrain.lr": [1e-2, 3e-2]}, key="pretrain.lr")], grid=lr4)
    assert ev.notes[0].startswith("subject (base): tuned pretrain.lr on ")


def test_tuned_within_spanning_the_margin_says_not_inside(tmp_path: Path) -> None:
    """An equivalence interval at the tuned rates that spans ±delta: not inside it, add seeds."""
    f = _tuned_values(lambda s: 0.61 + JITTER[s] + 0.03 * (s - 1))
    ev, = _evaluate(tmp_path, [_claim(**TUNED_WITHIN)], lambda r: dict(zip((M, f"{M}/dev"), f(*_at(r)))))
    assert ev.verdict == "inconclusive"
    assert ev.reason == (f"the 95% interval is not inside ±0.03 for 1/1: {M} at the tuned pretrain.lr: "
                         "subject vs reference; seed spread: add seeds")


def test_positive_then_shrinks_compares_the_ends_of_the_common_values(tmp_path: Path) -> None:
    """Two common values make both comparisons; one makes none; a missing run only blocks."""
    gap, cls = {"model.pool": "gap"}, {"model.pool": "cls"}
    ends, one, missing = _evaluate(tmp_path, [
        {**_claim(kind="positive_then_shrinks", subject={**gap, "pretrain.lr": [1e-3, 1e-2]},
                  reference={**cls, "pretrain.lr": [1e-3, 1e-2]}, along="pretrain.lr"), "id": "ends"},
        {**_claim(kind="positive_then_shrinks", subject={**gap, "pretrain.lr": [1e-3, 3e-3]},
                  reference={**cls, "pretrain.lr": [3e-3, 1e-2]}, along="pretrain.lr"), "id": "one"},
        {**_claim(kind="positive_then_shrinks", subject=gap, reference=cls, along="pretrain.lr"), "id": "missing"}],
        lambda r: None if _at(r) == ("gap", 1e-2, 2) else _gap_ahead(r))
    assert [c.label for c in ends.comparisons] == ["subject − reference at pretrain.lr=0.001",
                                                   "(subject − reference) at 0.01 vs at 0.001"]
    assert one.comparisons == [] and one.reason == "nothing to compare"
    assert missing.reason == "1/18 runs missing" and [c.test["n"] for c in missing.comparisons] == [3, 2]


def test_an_axis_runs_from_its_smallest_value_to_all_and_strings_in_order(tmp_path: Path) -> None:
    """Along pretrain.size, null (the whole set) comes after every number; a string axis runs sorted."""
    grid = {"model.pool": ["gap", "cls"], "pretrain.size": [None, 20000, 2000]}
    size, pool = _evaluate(tmp_path, [
        {**_claim(kind="positive_then_shrinks", subject={"model.pool": "gap"}, reference={"model.pool": "cls"},
                  along="pretrain.size"), "id": "size"},
        {**_claim(kind="positive_then_shrinks", subject={"pretrain.size": 2000}, reference={"pretrain.size": 20000},
                  along="model.pool"), "id": "pool"}], grid=grid)
    assert [c.label for c in size.comparisons] == ["subject − reference at pretrain.size=2000",
                                                   "(subject − reference) at None vs at 2000"]
    assert [c.label for c in pool.comparisons] == ["subject − reference at model.pool=cls",
                                                   "(subject − reference) at gap vs at cls"]


# ------------------------------------------------------------------------------------------- rendering

def _cells(text: str, row: int) -> list[str]:
    """The cells of a table row (0: the first row after the header line) of the first table in text."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    return [c.strip() for c in lines[2 + row].strip("|").split("|")]


def test_rendered_numbers_dashes_and_tiny_p(tmp_path: Path) -> None:
    """Two seeds give a p (tiny: "<0.0001"); a metric no record has is dashes; selectors show every key."""
    def summary(r: Any) -> dict[str, float]:
        pool, _, s = _at(r)
        return {M: 0.5 + JITTER[s] + (0.125 if pool == "gap" else 0.0)}

    claims = [{**_claim(kind="greater", subject=GAP1, reference=CLS1), "id": "shown"},
              {**_claim(kind="greater", subject=GAP1, reference=CLS1, metric=FT), "id": "none"}]
    plan = _plan(tmp_path, claims, seeds=[0, 1])
    _records(tmp_path / "res", plan, summary)
    shown, none = evs = evaluate(plan, tmp_path / "res")
    text = render_claims(plan, evs)
    assert f"kind: greater; metric: {M}; subject: model.pool=gap, pretrain.lr=0.001; " \
           "reference: model.pool=cls, pretrain.lr=0.001\n" in text
    assert _cells(text, 0) == ["gap vs cls", "Δ > 0", "0.6270", "0.5020", "+0.1250", "[+0.1250, +0.1250]",
                               "<0.0001", "2"]
    assert none.reason == f"4/4 records have no {FT}; fewer than 2 paired seeds in 1/1 comparisons"
    assert _cells(text.split("## none")[1], 0) == ["gap vs cls", "Δ > 0", "—", "—", "—", "—", "—", "0"]


def test_claims_text_without_claims_is_a_user_error(tmp_path: Path) -> None:
    """`vitbench claims` on a file without report.claims: one line naming the file and the key."""
    plan = _plan(tmp_path, [])
    with pytest.raises(UserError) as e:
        claims_text(plan, tmp_path)
    assert str(e.value) == (f"{plan.experiment.path}: report.claims: has no report.claims section "
                            "(a list of {id, claim, kind, metric, ...}) to evaluate")
