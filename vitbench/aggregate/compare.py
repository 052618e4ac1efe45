"""Compare a new variant against an experiment's baselines.

The variant is the experiment's base config (at the chosen scale) with an overlay — a partial run
config file (``--variant FILE``) and/or ``--set key=value`` — run with the experiment's seeds.
Baseline runs are whatever the experiment's plan already holds; only missing variant runs are
launched. Each baseline group (one grid point, all seeds) gets a paired comparison over seeds:
d_s = variant_s − baseline_s, the mean difference with a Student-t 95% confidence interval per
comparison and a two-sided paired t-test (``scipy.stats.ttest_rel``). The k baseline comparisons
are one family: their p-values are Holm-adjusted (Holm 1979, vitbench.aggregate.claims.holm) and
"significant" means Holm-adjusted p < 0.05.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from vitbench.aggregate.records import load_frame
from vitbench.errors import UserError
from vitbench.plan.planner import Plan, PlannedRun, planned_run, scale_base
from vitbench.spec.overrides import parse_override
from vitbench.spec.runconfig import check_semantics, read_yaml
from vitbench.spec.schema import flatten, validate_structure


@dataclass
class Variant:
    name: str
    runs: list[PlannedRun] = field(default_factory=list)
    in_grid: dict[str, Any] | None = None  # set by compare_frame when the variant is one of the grid points


def make_variant(plan: Plan, *, variant_file: str | None, overrides: list[str], name: str | None = None) -> Variant:
    """One run per seed of the plan: base ⊕ scale base ⊕ variant overlay ⊕ seed."""
    if not variant_file and not overrides:
        raise UserError("give the variant with --variant FILE and/or --set key=value", key="--variant")
    _, _, base, recipes = scale_base(plan.experiment, plan.scale)
    label, layers = [], []
    if variant_file:
        raw = read_yaml(variant_file)
        raw = validate_structure(raw if raw is not None else {}, file=variant_file)
        layers += list(flatten(raw).items())
        label.append(Path(variant_file).stem)
    for text in overrides:
        key, value = parse_override(text, file="--set")
        layers.append((key, value))
        label.append(f"{key}={value}")
    seeds = sorted({r.config["seed"] for r in plan.runs})
    runs = []
    for s in seeds:
        run = planned_run(base, recipes, [*layers, ("seed", s)], {"seed": s}, file=variant_file or "--set")
        if not runs:
            check_semantics(run.config, file=variant_file or "--set")
        runs.append(run)
    return Variant(name or ", ".join(label), runs)


def paired_delta(variant: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    """Mean paired difference over common seeds, its 95% t interval and two-sided p (``ttest_rel``).

    ``significant`` here is per comparison (p < 0.05, i.e. the interval excludes 0); ``compare_frame``
    replaces it with the Holm-adjusted decision over all baselines.
    """
    from vitbench.aggregate.claims import paired_test

    seeds = sorted(set(variant) & set(baseline))
    t = paired_test([variant[s] for s in seeds], [baseline[s] for s in seeds], "gt")
    out: dict[str, Any] = {"n": t["n"], "delta": t["delta"], "lo": t["lo"], "hi": t["hi"], "p": math.nan,
                           "significant": None}
    if t["n"] >= 2:
        p = min(t["p"], t["p_contra"])  # each is 2 x one-sided: the smaller is the two-sided p
        out.update(p=p, significant=bool(p < 0.05))
    return out


def compare_frame(plan: Plan, variant: Variant, results: str | Path, metric: str) -> pd.DataFrame:
    """One row per baseline group: baseline and variant means, delta, 95% CI, significance."""
    base = load_frame(plan, results)
    var = load_frame(replace(plan, runs=variant.runs), results)
    if metric not in base.columns and metric not in var.columns:
        raise UserError(f"no run record has metric {metric!r}", key="--metric")
    vals = _by_seed(var, metric)
    group_keys = [k for k in plan.varying if k != "seed"]
    own = {r.run_id for r in variant.runs}
    rows = []
    by_id = {r.run_id: r for r in plan.runs}
    groups = base.groupby(group_keys, sort=False, dropna=False) if group_keys else [((), base)]
    for _, sub in groups:
        # the grid point as the plan has it (the frame's columns turn null into NaN and 16 into 16.0)
        point = {k: v for k, v in plan.labels(by_id[sub["run_id"].iloc[0]]).items() if k in group_keys}
        if set(sub["run_id"]) <= own:  # the variant is already a grid point: no row comparing it with itself
            variant.in_grid = point
            continue
        b = _by_seed(sub, metric)
        d = paired_delta(vals, b)
        row = dict(point)
        row.update(baseline=_mean(b.values()), variant=_mean(vals.values()), **d)
        row["seeds"] = f"{d['n']}/{len(sub)}"
        rows.append(row)
    _holm_rows(rows)
    frame = pd.DataFrame(rows)
    for k in group_keys:
        frame[k] = pd.Series([r[k] for r in rows], dtype=object)
    return frame


def _holm_rows(rows: list[dict[str, Any]]) -> None:
    """Holm (1979) over the baseline comparisons that have a test; significance on the adjusted p."""
    from vitbench.aggregate.claims import holm

    tested = [r for r in rows if r["n"] >= 2]
    for r, p in zip(tested, holm([r["p"] for r in tested])):
        r["p_holm"], r["significant"] = p, bool(p < 0.05)
    for r in rows:
        r.setdefault("p_holm", math.nan)


def _by_seed(frame: pd.DataFrame, metric: str) -> dict[int, float]:
    if metric not in frame.columns:
        return {}
    ok = frame[(frame["state"] == "done") & frame[metric].notna()]
    return {int(s): float(v) for s, v in zip(ok["seed"], ok[metric])}


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def _text(value: Any) -> str:
    return "null" if value is None else str(value)  # as the experiment file spells it


def render_comparison(frame: pd.DataFrame, variant: Variant, metric: str) -> str:
    from tabulate import tabulate

    def f(x: Any, signed: bool = False) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "—"
        return f"{x:+.4f}" if signed else f"{x:.4f}"

    rows = []
    keys = [c for c in frame.columns if c not in ("baseline", "variant", "n", "delta", "lo", "hi", "significant",
                                                   "seeds", "p", "p_holm")]
    for r in frame.to_dict("records"):
        ci = "—" if math.isnan(r["lo"]) else f"[{r['lo']:+.4f}, {r['hi']:+.4f}]"
        sig = {True: "yes", False: "no", None: "n/a (<2 paired seeds)"}[r["significant"]]
        ph = "—" if math.isnan(r["p_holm"]) else ("<0.0001" if r["p_holm"] < 1e-4 else f"{r['p_holm']:.4f}")
        rows.append([*(_text(r[k]) for k in keys), f(r["baseline"]), f(r["variant"]), f(r["delta"], True), ci, ph,
                     sig, r["seeds"]])
    k = int((frame["n"] >= 2).sum()) if len(frame) else 0
    head = (f"variant: {variant.name}\nmetric: {metric} (paired over seeds, 95% t interval per comparison; "
            f"two-sided paired t-test, Holm-adjusted (Holm 1979) over the {k} baseline comparisons; "
            "significant: Holm-adjusted p < 0.05)\n")
    if variant.in_grid is not None:
        point = ", ".join(f"{k}={_text(v)}" for k, v in variant.in_grid.items())
        head += f"(the variant is the experiment's own grid point {point}; its row is left out)\n"
    head += "\n"
    return head + tabulate(rows, headers=[*keys, "baseline", "variant", "Δ", "95% CI", "p (Holm)", "significant",
                                          "paired seeds"], tablefmt="github", disable_numparse=True) + "\n"
