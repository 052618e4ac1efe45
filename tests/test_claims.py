"""``report.claims``: computed verdicts from synthetic run records (records written here; no training)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from vitbench.aggregate.claims import check_claims, evaluate, holm, paired_test
from vitbench.aggregate.compare import compare_frame, make_variant, render_comparison
from vitbench.cli import main
from vitbench.errors import UserError
from vitbench.plan.planner import make_plan
from vitbench.record.rundir import RunDir, run_dir

ROOT = Path(__file__).resolve().parents[1]
M = "fewshot/digits/5shot"
FT = "finetune/digits/top1"
JITTER = (0.0, 0.004, -0.003)  # a small seed-to-seed spread so no paired difference is exactly constant


def experiment(tmp: Path, claims: list[dict[str, Any]], name: str = "exp", seeds: list[int] | None = None) -> Path:
    """A small experiment: [class] vs GAP × three learning rates (6 grid points), the micro scale's 3 seeds."""
    raw: dict[str, Any] = {
        "description": "claims test", "extends": str(ROOT / "experiments" / "_scales.yaml"),
        "grid": {"product": {"model.pool": ["cls", "gap"], "pretrain.lr": [1.0e-3, 3.0e-3, 1.0e-2]}},
        "report": {"tables": [{"metric": "fewshot/{fewshot_dataset}/5shot", "rows": "model.pool"}],
                   "claims": claims},
    }
    if seeds is not None:
        raw["scales"] = {"micro": {"seeds": seeds}}
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


Values = Callable[[str, float, int], "float | tuple[float, float] | None"]  # (pool, lr, seed) -> test or (test, dev)


def write_records(results: Path, plan, values: Values, *,  # noqa: ANN001 - plan: Plan
                  status: Callable[[Any], str] = lambda r: "done",
                  converged: Callable[[Any], bool | None] = lambda r: None,
                  ft_converged: Callable[[Any], bool | None] | None = None) -> None:
    """Records as ``vitbench.record.rundir`` writes them: config.yaml, then result.json (with a
    fine-tuning section, its metric FT equal to the few-shot value, when ``ft_converged`` is given)."""
    for r in plan.runs:
        pool, lr, seed = r.config["model"]["pool"], r.config["pretrain"]["lr"], r.config["seed"]
        v = values(pool, lr, seed)
        if v is None:
            continue  # a missing run
        test, dev = v if isinstance(v, tuple) else (v, v)
        st = status(r)
        rd = RunDir(run_dir(results, r.run_id))
        rd.create(r.config)
        pre: dict[str, Any] = {"train_flops": 6e12, "diverged_at": 5 if st == "diverged" else None}
        conv = converged(r)
        if conv is not None:
            pre["convergence"] = {"converged": conv, "window": 50}
        rec = {"status": st, "config": r.config,
               "summary": {M: test, f"{M}/dev": dev} if st == "done" else {},
               "model": {"params": 1000, "flops_per_image": 2_000_000}, "pretrain": pre}
        if ft_converged is not None:
            rec["finetune"] = {"converged": ft_converged(r), "best_lr": 0.01}
            rec["summary"][FT] = test
        rd.write_result(rec)


def verdicts(tmp: Path, claims: list[dict[str, Any]], values: Values, **kw: Any) -> list[Any]:
    plan = make_plan(experiment(tmp, claims, seeds=kw.pop("seeds", None)), scale="micro", check_data=False)
    write_records(tmp / "res", plan, values, **kw)
    return evaluate(plan, tmp / "res")


def one(tmp: Path, claim: dict[str, Any], values: Values, **kw: Any):  # noqa: ANN201
    return verdicts(tmp, [{"id": "c", "claim": "a claim", "metric": "fewshot/{fewshot_dataset}/5shot", **claim}],
                    values, **kw)[0]


# ------------------------------------------------------------------------------------------- statistics

def test_holm_textbook_example() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.04]) == [0.04]
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([float("nan"), 0.01]) == pytest.approx([1.0, 0.02])


def test_paired_test_interval_matches_scipy() -> None:
    from scipy import stats

    a, b = [0.61, 0.72, 0.83], [0.5, 0.6, 0.7]
    t = paired_test(a, b, "gt")
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (t["lo"], t["hi"]) == pytest.approx((ci.low, ci.high))
    assert t["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)  # the mean is on the claimed side
    assert t["p"] < 0.05 and t["lo"] > 0


# ------------------------------------------------------------------------------------------- each kind

def _greater(d: tuple[float, float, float]) -> Values:
    return lambda pool, lr, s: 0.5 + JITTER[s] + (d[s] if pool == "gap" else 0.0)


GREATER = {"kind": "greater", "subject": {"model.pool": "gap", "pretrain.lr": 1.0e-3},
           "reference": {"model.pool": "cls", "pretrain.lr": 1.0e-3}}


@pytest.mark.parametrize("d, verdict", [((0.10, 0.11, 0.09), "reproduced"), ((-0.10, -0.11, -0.09), "not reproduced"),
                                        ((0.05, -0.03, 0.01), "inconclusive")])
def test_greater(tmp_path: Path, d: tuple, verdict: str) -> None:
    ev = one(tmp_path, GREATER, _greater(d))
    assert ev.verdict == verdict
    if verdict == "inconclusive":
        assert "add seeds" in ev.reason and "not clear of 0" in ev.reason


LESS = {"kind": "less_than_each", "subject": {"model.pool": "gap", "pretrain.lr": 1.0e-2}}


def _less(subject_at: float, spread: float = 0.0) -> Values:
    def f(pool: str, lr: float, s: int) -> float:
        if pool == "gap" and lr == 1.0e-2:
            return subject_at + JITTER[s] * (1 + 10 * spread) + spread * (s - 1)
        return 0.6 + 0.02 * [1.0e-3, 3.0e-3, 1.0e-2].index(lr) + (0.01 if pool == "gap" else 0) + JITTER[(s + 1) % 3]
    return f


def test_less_than_each_reproduced(tmp_path: Path) -> None:
    ev = one(tmp_path, LESS, _less(0.3))
    assert ev.verdict == "reproduced" and len(ev.comparisons) == 5
    assert "Holm over 5" in ev.reason


def test_less_than_each_not_reproduced(tmp_path: Path) -> None:
    ev = one(tmp_path, LESS, _less(0.9))  # above every other group
    assert ev.verdict == "not reproduced" and "entirely ≥ 0" in ev.reason


def test_less_than_each_inconclusive_spread(tmp_path: Path) -> None:
    ev = one(tmp_path, LESS, _less(0.58, spread=0.05))
    assert ev.verdict == "inconclusive" and "add seeds" in ev.reason


def test_holm_can_be_what_withholds_the_verdict(tmp_path: Path) -> None:
    """Each interval alone excludes 0, but the smallest p × 5 comparisons is not below 0.05."""
    # d = subject − other per seed for 5 groups, t ≈ 6.9 over 3 seeds: per-comparison p ≈ 0.02
    def f(pool: str, lr: float, s: int) -> float:
        if pool == "gap" and lr == 1.0e-2:
            return 0.5
        return 0.5 + (0.10, 0.06, 0.08)[s]

    ev = one(tmp_path, LESS, f)
    assert all(c.test["hi"] < 0 for c in ev.comparisons)
    assert all(0.01 < c.test["p"] < 0.05 for c in ev.comparisons)
    assert ev.verdict == "inconclusive" and "not every Holm-adjusted p < 0.05" in ev.reason


WITHIN = {"kind": "within_each", "among": {"model.pool": "cls"}, "delta": 0.03}


@pytest.mark.parametrize("offset, spread, verdict", [(0.002, 0.0, "reproduced"), (0.2, 0.0, "not reproduced"),
                                                     (0.02, 0.02, "inconclusive")])
def test_within_each(tmp_path: Path, offset: float, spread: float, verdict: str) -> None:
    def f(pool: str, lr: float, s: int) -> float:
        g = [1.0e-3, 3.0e-3, 1.0e-2].index(lr)
        extra = (offset + spread * (s - 1) * 2 + JITTER[s]) if g == 2 else 0.0
        return 0.5 + 0.001 * g + 0.0004 * ((s * (g + 1)) % 3) + extra

    ev = one(tmp_path, WITHIN, f)
    assert len(ev.comparisons) == 3 and ev.verdict == verdict
    if verdict == "not reproduced":
        assert "outside ±0.03" in ev.reason
    if verdict == "inconclusive":
        assert "not inside ±0.03" in ev.reason and "add seeds" in ev.reason


TUNED_LOWER = {"kind": "tuned_lower", "subject": {"model.pool": "gap"}, "reference": {"model.pool": "cls"},
               "key": "pretrain.lr"}


def _best_dev(best: dict[str, tuple[float, float, float]], test_best: dict[str, tuple] | None = None) -> Values:
    """dev peaks at best[pool][seed]; test peaks at test_best (default: the same)."""
    def f(pool: str, lr: float, s: int) -> tuple[float, float]:
        dev = 0.8 if math.isclose(lr, best[pool][s]) else 0.4 + JITTER[s]
        tb = (test_best or best)[pool][s]
        test = 0.8 if math.isclose(lr, tb) else 0.4 + JITTER[s]
        return test, dev
    return f


@pytest.mark.parametrize("best, verdict", [
    ({"gap": (1e-3, 1e-3, 1e-3), "cls": (1e-2, 3e-3, 1e-2)}, "reproduced"),
    ({"gap": (1e-2, 1e-2, 1e-2), "cls": (1e-3, 1e-3, 1e-3)}, "not reproduced"),
    ({"gap": (1e-3, 1e-2, 1e-3), "cls": (1e-2, 1e-3, 3e-3)}, "inconclusive"),
])
def test_tuned_lower(tmp_path: Path, best: dict, verdict: str) -> None:
    ev = one(tmp_path, TUNED_LOWER, _best_dev(best))
    assert ev.verdict == verdict
    assert any("tuned pretrain.lr on fewshot/digits/5shot/dev by seed" in n for n in ev.notes)


def test_tuned_lower_picks_on_dev_not_test(tmp_path: Path) -> None:
    dev = {"gap": (1e-3, 1e-3, 1e-3), "cls": (1e-2, 3e-3, 1e-2)}
    test = {"gap": (1e-2, 1e-2, 1e-2), "cls": (1e-3, 1e-3, 1e-3)}  # test alone would say the opposite
    ev = one(tmp_path, TUNED_LOWER, _best_dev(dev, test))
    assert ev.verdict == "reproduced"
    assert "gap): tuned pretrain.lr on fewshot/digits/5shot/dev by seed — 0: 0.001, 1: 0.001, 2: 0.001" in \
        "\n".join(ev.notes)


TUNED_WITHIN = {"kind": "tuned_within", "subject": {"model.pool": "gap"}, "reference": {"model.pool": "cls"},
                "key": "pretrain.lr", "delta": 0.03}


def _tuned_values(gap_at_tuned: Callable[[int], float], gap_elsewhere: float = 0.3) -> Values:
    """dev picks gap @ 1e-3 and cls @ 3e-3; test: cls 0.6 at its tuned rate, gap as given at its own."""
    def f(pool: str, lr: float, s: int) -> tuple[float, float]:
        tuned = 1e-3 if pool == "gap" else 3e-3
        dev = 0.9 if math.isclose(lr, tuned) else 0.2
        if pool == "cls":
            test = 0.6 + JITTER[s] if math.isclose(lr, tuned) else 0.1
        else:
            test = gap_at_tuned(s) if math.isclose(lr, tuned) else gap_elsewhere
        return test, dev
    return f


@pytest.mark.parametrize("gap, verdict", [
    (lambda s: 0.605 + JITTER[s] + 0.001 * s, "reproduced"),
    (lambda s: 0.8 + JITTER[s] + 0.001 * s, "not reproduced"),
    (lambda s: 0.61 + JITTER[s] + 0.03 * (s - 1), "inconclusive"),
])
def test_tuned_within(tmp_path: Path, gap: Callable[[int], float], verdict: str) -> None:
    ev = one(tmp_path, TUNED_WITHIN, _tuned_values(gap))
    assert ev.verdict == verdict
    assert "gap): tuned pretrain.lr (best mean fewshot/digits/5shot/dev) = 0.001" in "\n".join(ev.notes)


def test_tuned_within_picks_on_dev_not_test(tmp_path: Path) -> None:
    # gap's test metric is far higher at the rates dev did not pick: picking on test would give
    # |Δ| ≈ 0.3 (not reproduced); on dev it is ≈ 0.005 (reproduced)
    ev = one(tmp_path, TUNED_WITHIN, _tuned_values(lambda s: 0.605 + JITTER[s] + 0.001 * s, gap_elsewhere=0.95))
    assert ev.verdict == "reproduced"


SHRINKS = {"kind": "positive_then_shrinks", "subject": {"model.pool": "gap"}, "reference": {"model.pool": "cls"},
           "along": "pretrain.lr"}


@pytest.mark.parametrize("d_lo, d_hi, spread, verdict", [(0.2, 0.0, 0.0, "reproduced"),
                                                         (-0.2, -0.2, 0.0, "not reproduced"),
                                                         (0.05, 0.03, 0.05, "inconclusive")])
def test_positive_then_shrinks(tmp_path: Path, d_lo: float, d_hi: float, spread: float, verdict: str) -> None:
    def f(pool: str, lr: float, s: int) -> float:
        d = {1e-3: d_lo, 3e-3: (d_lo + d_hi) / 2, 1e-2: d_hi}[lr] + spread * (s - 1) * (1 if lr == 1e-3 else -1)
        return 0.5 + JITTER[(s + 2) % 3] + (d + JITTER[s] if pool == "gap" else 0.0)

    ev = one(tmp_path, SHRINKS, f)
    assert len(ev.comparisons) == 2 and ev.verdict == verdict


# ------------------------------------------------------------------------------------------- data problems

def test_missing_runs_are_inconclusive_with_the_count(tmp_path: Path) -> None:
    f = _greater((0.10, 0.11, 0.09))
    ev = one(tmp_path, GREATER, lambda p, lr, s: None if (p == "gap" and s == 2) else f(p, lr, s))
    assert ev.verdict == "inconclusive" and "1/6 runs missing" in ev.reason


def test_diverged_runs_are_inconclusive(tmp_path: Path) -> None:
    ev = one(tmp_path, GREATER, _greater((0.10, 0.11, 0.09)),
             status=lambda r: "diverged" if r.config["model"]["pool"] == "cls" and r.config["seed"] == 0 else "done")
    assert ev.verdict == "inconclusive" and "1/6 runs diverged" in ev.reason


def test_not_converged_runs_are_inconclusive(tmp_path: Path) -> None:
    ev = one(tmp_path, GREATER, _greater((0.10, 0.11, 0.09)),
             converged=lambda r: not (r.config["model"]["pool"] == "gap" and r.config["seed"] in (0, 1)))
    assert ev.verdict == "inconclusive" and "not converged: 2 runs" in ev.reason
    assert "converged: 4/6" in ev.runs_line


def test_converged_runs_are_reported(tmp_path: Path) -> None:
    ev = one(tmp_path, GREATER, _greater((0.10, 0.11, 0.09)), converged=lambda r: True)
    assert ev.verdict == "reproduced" and "converged: 6/6" in ev.runs_line
    ev = one(tmp_path / "b", GREATER, _greater((0.10, 0.11, 0.09)))
    assert "convergence: not recorded" in ev.runs_line


def test_a_fine_tuning_that_has_not_converged_blocks_only_fine_tuning_claims(tmp_path: Path) -> None:
    gap0 = lambda r: not (r.config["model"]["pool"] == "gap" and r.config["seed"] == 0)  # noqa: E731
    claims = [{"id": "ft", "claim": "a", "metric": FT, **GREATER}, {"id": "fs", "claim": "b", "metric": M, **GREATER}]
    ft, fs = verdicts(tmp_path, claims, _greater((0.10, 0.11, 0.09)), converged=lambda r: True, ft_converged=gap0)
    assert ft.verdict == "inconclusive" and "not converged: 1 runs" in ft.reason and "converged: 5/6" in ft.runs_line
    assert fs.verdict == "reproduced" and "converged: 6/6" in fs.runs_line
    ft, = verdicts(tmp_path / "b", claims[:1], _greater((0.10, 0.11, 0.09)), converged=gap0, ft_converged=lambda r: True)
    assert ft.verdict == "inconclusive" and "converged: 5/6" in ft.runs_line  # pretraining still counts


def test_fewer_than_two_seeds_is_inconclusive(tmp_path: Path) -> None:
    ev = one(tmp_path, GREATER, _greater((0.10, 0.11, 0.09)), seeds=[0])
    assert ev.verdict == "inconclusive" and "fewer than 2 paired seeds" in ev.reason


def test_not_applicable_at_this_scale(tmp_path: Path) -> None:
    evs = verdicts(tmp_path, [
        {"id": "a", "claim": "x", "kind": "greater", "metric": M, "subject": {"model.name": "BiT-micro"},
         "reference": {"model.name": "ViT-micro/4"}},  # model.name does not vary in this grid
        {"id": "b", "claim": "y", "kind": "greater", "metric": M, "scales": ["paper"], **{k: GREATER[k] for k in
                                                                                       ("subject", "reference")}},
    ], _greater((0.1, 0.1, 0.1)))
    assert [e.verdict for e in evs] == ["not applicable at this scale"] * 2
    assert "model.name does not vary at scale micro" in evs[0].reason
    assert "scales: paper" in evs[1].reason


def test_experiment_files_claims_check_at_every_scale() -> None:
    for f in ("ablations/pos_embed.yaml", "ablations/class_vs_gap.yaml", "experiments/data_scaling.yaml",
              "experiments/model_compute.yaml"):
        for scale in ("paper", "small", "micro", "smoke"):
            claims = check_claims(make_plan(ROOT / f, scale=scale, check_data=False))
            assert claims, f
            if scale == "micro":
                assert all(c.applicable for c in claims), f
    paper = check_claims(make_plan(ROOT / "experiments/data_scaling.yaml", scale="paper", check_data=False))
    assert not any(c.applicable for c in paper)


# ------------------------------------------------------------------------------------------- the command

@pytest.mark.parametrize("claim, key, words", [
    ({"kind": "bigger", "subject": {"model.pool": "gap"}}, "report.claims[0].kind", "allowed: greater"),
    ({"kind": "greater", "subject": {"model.pool": "gap", "pretrain.lr": 1e-3}}, "report.claims[0].reference",
     "is required by kind greater"),
    ({"kind": "greater", "subject": {"model.pool": "max", "pretrain.lr": 1e-3},
      "reference": {"model.pool": "cls", "pretrain.lr": 1e-3}}, "report.claims[0].subject",
     "selects no grid point"),
    ({"kind": "greater", "subject": {"model.poool": "gap"}, "reference": {"model.pool": "cls"}},
     "report.claims[0].subject.model.poool", "is not a run-config key"),
    ({**WITHIN, "delta": -1}, "report.claims[0].delta", "positive number"),
    ({**GREATER, "along": "pretrain.lr"}, "report.claims[0].along", "not used by kind greater"),
])
def test_bad_claims_spec_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, claim: dict, key: str,
                                               words: str) -> None:
    path = experiment(tmp_path, [{"id": "c", "claim": "x", "metric": M, **claim}])
    for argv in (["claims", str(path), "--scale", "micro", "--results", str(tmp_path / "r")],
                 ["run", str(path), "--scale", "micro", "--dry-run", "--results", str(tmp_path / "r")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and key in err and words in err, err


def test_claims_command_output_is_stable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    claims = [{"id": f"c-{k['kind']}", "claim": f"a {k['kind']} claim", "metric": "fewshot/{fewshot_dataset}/5shot",
               **k} for k in (GREATER, LESS, WITHIN, TUNED_LOWER, TUNED_WITHIN, SHRINKS)]
    path = experiment(tmp_path, claims)
    plan = make_plan(path, scale="micro", check_data=False)
    write_records(tmp_path / "r", plan, lambda pool, lr, s: (0.5 + 0.1 * (pool == "gap") + JITTER[s] * (lr * 100),
                                                             0.5 + 0.01 * lr + JITTER[s]))
    argv = ["claims", str(path), "--scale", "micro", "--results", str(tmp_path / "r")]
    outs = []
    for _ in range(2):
        assert main(argv) == 0
        outs.append(capsys.readouterr().out.encode())
    assert outs[0] == outs[1]
    assert main([*argv, "--out", str(tmp_path / "c.md")]) == 0
    assert (tmp_path / "c.md").read_bytes() == outs[0]
    text = outs[0].decode()
    assert text.count("\nverdict: ") == 6 and "Holm" in text and "95%" in text and "per comparison" in text
    for c in claims:
        assert f"## {c['id']}\n" in text


def test_claims_command_without_claims_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["claims", str(ROOT / "ablations/pos_embed.yaml"), "--scale", "micro", "--results",
                 str(tmp_path)]) == 0  # has claims: evaluates (all inconclusive: nothing ran)
    assert "30/30 runs missing" in capsys.readouterr().out
    path = experiment(tmp_path, [])
    assert main(["claims", str(path), "--scale", "micro", "--results", str(tmp_path)]) == 2
    assert "report.claims" in capsys.readouterr().err


def test_check_claims_raises_user_error(tmp_path: Path) -> None:
    path = experiment(tmp_path, [{"id": "c", "claim": "x", "metric": "fewshot/{nope}/5shot", **GREATER}])
    with pytest.raises(UserError, match=r"report\.claims\[0\]\.metric: unknown placeholder"):
        check_claims(make_plan(path, scale="micro", check_data=False))


# ------------------------------------------------------------------------------------------- compare

def test_compare_applies_holm_and_says_so(tmp_path: Path) -> None:
    path = experiment(tmp_path, [])
    plan = make_plan(path, scale="micro", check_data=False)
    # baselines 0.5 (+ jitter); the variant (pool=gap at lr 3e-2, not a grid point) 0.52 with a spread that
    # gives per-comparison p just below 0.05: Holm over the 6 baselines makes none significant
    write_records(tmp_path / "r", plan, lambda pool, lr, s: 0.5)
    variant = make_variant(plan, variant_file=None, overrides=["pretrain.lr=0.03"])
    for r in variant.runs:
        rd = RunDir(run_dir(tmp_path / "r", r.run_id))
        rd.create(r.config)
        rd.write_result({"status": "done", "config": r.config,
                         "summary": {M: 0.5 + (0.10, 0.06, 0.08)[r.config["seed"]]}})
    frame = compare_frame(plan, variant, tmp_path / "r", M)
    assert len(frame) == 6
    assert (frame["p"] < 0.05).all() and (frame["lo"] > 0).all()  # each alone: significant
    assert (frame["p_holm"] >= 0.05).all() and not frame["significant"].any()
    text = render_comparison(frame, variant, M)
    assert "Holm-adjusted (Holm 1979) over the 6 baseline comparisons" in text and "p (Holm)" in text
