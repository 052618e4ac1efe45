"""The paper's claims as data: ``report.claims`` in an experiment file, each a test with a computed verdict.

A claim is a mapping::

    id:        none-is-worse                       # unique within the file
    claim:     "no position embedding is worse than every other variant (Table 8)"
    kind:      less_than_each                      # one of the kinds below
    metric:    fewshot/{fewshot_dataset}/5shot     # summary metric (test split); placeholders as in tables
    subject:   {model.pos_embed: none}             # partial grid point(s): selects groups
    reference: {model.name: ViT-micro/4}           # ditto (kinds that compare two sides)
    among:     {model.pos_embed: [learned_1d, ...]}  # within_each: the groups compared pairwise
    key:       pretrain.lr                         # tuned_*: the grid key tuned on the dev metric
    along:     pretrain.size                       # positive_then_shrinks: the axis
    delta:     0.03                                # within_* : the equivalence margin ±delta
    scales:    [micro]                             # optional: the scales the claim is about (default: all)

A *group* is one grid point of the plan (all varying keys except ``seed``); a selector
``{key: value or [values]}`` picks the groups whose point has those values.

Kinds (d_s = subject_s − other_s, paired over seeds):

- ``greater``: subject > reference (one group each), one paired comparison.
- ``less_than_each``: subject < each other group (or each ``reference`` group), Holm over the comparisons.
- ``within_each``: every pair of the ``among`` groups within ±delta (equivalence), Holm over the pairs.
- ``tuned_lower``: per seed, the ``key`` value with the best ``<metric>/dev`` (never test) is lower for the
  subject than for the reference, paired on log10 of the value.
- ``tuned_within``: at each side's own ``key`` value (best mean ``<metric>/dev`` over seeds), subject and
  reference are within ±delta on the test metric.
- ``positive_then_shrinks``: subject − reference is > 0 at the smallest ``along`` value, and smaller at the
  largest than at the smallest (paired difference of differences); Holm over the two.

Statistics (Student t via ``scipy.stats.ttest_rel``): every comparison gets its 95 % two-sided interval
*per comparison* (not multiplicity-adjusted) and a p-value for "the claim holds" that is below 0.05
exactly when that interval lies on the claimed side of the threshold (for ±delta: inside it — two
one-sided tests at 0.025 each, i.e. the 95 % interval-inclusion rule, Schuirmann 1987). A claim with k
comparisons Holm-adjusts (Holm 1979) these p-values, and those for "the data contradict it" (interval
entirely on the wrong side; for ±delta entirely outside), over its k comparisons.

Verdicts, computed, in this order:

- ``not applicable at this scale``: the claim's ``scales`` leave this scale out, or a key it selects on
  (or tunes / runs along) does not vary here;
- ``inconclusive`` with the reason: a run of the claim is missing, diverged, has no value for the metric,
  or did not converge (``pretrain.convergence.converged`` false; for a fine-tuning metric also
  ``finetune.converged``, at the picked learning rate), or a comparison has < 2 paired seeds;
- ``reproduced``: every Holm-adjusted p < 0.05 (hence every interval on the claimed side);
- ``not reproduced``: some Holm-adjusted contradiction p < 0.05 (that interval entirely on the wrong side);
- ``inconclusive`` otherwise: an interval spans the threshold (seed spread: add seeds), or every interval
  clears it but not after Holm's correction.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitbench.errors import UserError
from vitbench.spec.yamlio import value_text
from vitbench.record.metrics import check_metric
from vitbench.plan.planner import Plan
from vitbench.record.result import converged, read_result
from vitbench.record.rundir import RESULT, run_dir
from vitbench.spec.experiment import SCALES
from vitbench.spec.schema import get_path

ALPHA = 0.05
LEVEL = 0.95
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # kind -> (required keys, optional keys)
    "greater": (("subject", "reference"), ()),
    "less_than_each": (("subject",), ("reference",)),
    "within_each": (("among", "delta"), ()),
    "tuned_lower": (("subject", "reference", "key"), ()),
    "tuned_within": (("subject", "reference", "key", "delta"), ()),
    "positive_then_shrinks": (("subject", "reference", "along"), ()),
}
COMMON = ("id", "claim", "kind", "metric", "scales")
CLAIM_KEYS = (*COMMON, "subject", "reference", "among", "key", "along", "delta")
SELECTORS = ("subject", "reference", "among")


# ---------------------------------------------------------------------------------------------- statistics

def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979, "A simple sequentially rejective multiple test
    procedure", Scand. J. Statist. 6:65-70): sort ascending, p_(i) × (m − i + 1), running maximum, cap 1.
    Rejecting where the adjusted p < alpha controls the family-wise error rate at alpha. NaN counts as 1.
    """
    p = [1.0 if (x is None or not math.isfinite(x)) else float(x) for x in pvalues]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _one_sided(a: np.ndarray, b: np.ndarray, shift: float, alternative: str) -> float:
    """p of ttest_rel(a − shift, b) one-sided; zero spread of the differences is decided by the sign."""
    from scipy import stats

    d = a - shift - b
    m = float(d.mean())
    if float(d.std()) <= 1e-12 * max(1.0, abs(m)):  # constant differences: t is ±inf or undefined
        if abs(m) <= 1e-12:
            return 1.0
        return 0.0 if (m > 0) == (alternative == "greater") else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_rel(a - shift, b, alternative=alternative).pvalue)


def paired_test(a: list[float], b: list[float], side: str, delta: float = 0.0) -> dict[str, Any]:
    """One paired comparison of a and b (same seeds, same order).

    side: ``gt`` (a − b > 0), ``lt`` (a − b < 0) or ``within`` (|a − b| < delta). Returns n, means,
    delta (mean difference), the 95 % interval (lo, hi; per comparison), ``p`` — below 0.05 iff the
    interval is on the claimed side — and ``p_contra`` — below 0.05 iff it is entirely on the wrong side.
    """
    from scipy import stats

    n = len(a)
    out: dict[str, Any] = {"n": n, "a": _mean(a), "b": _mean(b), "delta": math.nan, "lo": math.nan,
                           "hi": math.nan, "p": math.nan, "p_contra": math.nan, "tied": False}
    if n == 0:
        return out
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = x - y
    out["delta"] = float(d.mean())
    if n < 2:
        return out
    if float(d.std()) <= 1e-12 * max(1.0, abs(out["delta"])):
        out["lo"] = out["hi"] = out["delta"]
        out["tied"] = abs(out["delta"]) <= 1e-12
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.ttest_rel(x, y).confidence_interval(LEVEL)
        out["lo"], out["hi"] = float(ci.low), float(ci.high)

    def p2(p_one: float) -> float:  # one-sided at alpha/2 <=> the two-sided 95 % interval clears the bound
        return min(1.0, 2.0 * p_one)

    if side == "gt":
        out["p"], out["p_contra"] = p2(_one_sided(x, y, 0.0, "greater")), p2(_one_sided(x, y, 0.0, "less"))
    elif side == "lt":
        out["p"], out["p_contra"] = p2(_one_sided(x, y, 0.0, "less")), p2(_one_sided(x, y, 0.0, "greater"))
    else:  # equivalence: inside ±delta (both one-sided tests) vs entirely above +delta or below −delta
        inside = max(_one_sided(x, y, -delta, "greater"), _one_sided(x, y, delta, "less"))
        outside = min(_one_sided(x, y, delta, "greater"), _one_sided(x, y, -delta, "less"))
        out["p"], out["p_contra"] = p2(inside), p2(outside)
    return out


def _mean(values: Any) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else math.nan


# ---------------------------------------------------------------------------------------------- the spec

@dataclass
class Group:
    point: dict[str, Any]  # varying key (except seed) -> value
    runs: dict[int, str] = field(default_factory=dict)  # seed -> run id


@dataclass
class Claim:
    index: int
    spec: dict[str, Any]
    metric: str
    applicable: bool = True
    why_not: str = ""
    # resolved groups (indices into the plan's group list)
    subject: list[int] = field(default_factory=list)
    reference: list[int] = field(default_factory=list)
    among: list[int] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.spec["id"])

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])


def plan_groups(plan: Plan) -> tuple[list[str], list[Group]]:
    """The plan's grid points (all varying keys except seed), in plan order, with their runs by seed."""
    keys = [k for k in plan.varying if k != "seed"]
    groups: dict[tuple, Group] = {}
    for r in plan.runs:
        point = {k: get_path(r.config, k) for k in keys}
        g = groups.setdefault(tuple(repr(v) for v in point.values()), Group(point))
        g.runs[int(r.config["seed"])] = r.run_id
    return keys, list(groups.values())


def _same(a: Any, b: Any) -> bool:
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _select(groups: list[Group], selector: dict[str, Any]) -> list[int]:
    out = []
    for i, g in enumerate(groups):
        if all(any(_same(g.point[k], v) for v in (vals if isinstance(vals, list) else [vals]))
               for k, vals in selector.items()):
            out.append(i)
    return out



def _values_text(groups: list[Group], key: str) -> str:
    seen: list[str] = []
    for g in groups:
        t = value_text(g.point[key])
        if t not in seen:
            seen.append(t)
    return ", ".join(seen)


def claim_specs(plan: Plan) -> list[dict[str, Any]]:
    """The raw ``report.claims`` list (empty when the file has none); not checked."""
    report = plan.experiment.raw.get("report") or {}
    specs = report.get("claims")
    if specs is None:
        return []
    if not isinstance(specs, list):
        raise UserError("must be a list of claims ({id, claim, kind, metric, ...})", file=str(plan.experiment.path),
                        key="report.claims")
    return specs


def check_claims(plan: Plan) -> list[Claim]:
    """Check ``report.claims`` against the plan: structure, kinds, keys of the run config, and that every
    selector picks at least one group at this scale. Raises UserError (one line: file, key, what is
    allowed); claims not about this scale come back with ``applicable`` false. No claims: an empty list.
    """
    from vitbench.aggregate.tables import placeholders

    file = str(plan.experiment.path)
    specs = claim_specs(plan)
    base = plan.runs[0].config
    fill = placeholders(plan)
    keys, groups = plan_groups(plan)
    out: list[Claim] = []
    ids: set[str] = set()
    for i, spec in enumerate(specs):
        where = f"report.claims[{i}]"

        def err(msg: str, key: str | None = None) -> UserError:
            return UserError(msg, file=file, key=f"{where}.{key}" if key else where)

        if not isinstance(spec, dict):
            raise err("must be a mapping of " + ", ".join(CLAIM_KEYS))
        for k in spec:
            if k not in CLAIM_KEYS:
                raise err(f"unknown key; allowed: {', '.join(CLAIM_KEYS)}", str(k))
        for k in ("id", "claim", "kind", "metric"):
            if k not in spec:
                raise err(f"is required (every claim has {', '.join(COMMON[:4])})", k)
            if not isinstance(spec[k], str) or not spec[k].strip():
                raise err("must be a non-empty string", k)
        if spec["id"] in ids:
            raise err(f"duplicate id {spec['id']!r}; ids are unique within the file", "id")
        ids.add(spec["id"])
        kind = spec["kind"]
        if kind not in KINDS:
            raise err(f"unknown kind {kind!r}; allowed: {', '.join(KINDS)}", "kind")
        required, optional = KINDS[kind]
        takes = ", ".join((*required, *optional))
        for k in required:
            if k not in spec:
                raise err(f"is required by kind {kind} (it takes: {takes})", k)
        for k in spec:
            if k not in COMMON and k not in required and k not in optional:
                raise err(f"is not used by kind {kind}; it takes: {takes}", str(k))
        try:
            metric = spec["metric"].format(**fill)
        except (KeyError, IndexError, ValueError):
            raise err(f"unknown placeholder; allowed: {', '.join('{' + p + '}' for p in fill)}", "metric") from None
        check_metric([r.config for r in plan.runs], metric, file=str(plan.experiment.path),
                     key=f"report.claims[{i}].metric", columns=False)
        if "delta" in spec and (isinstance(spec["delta"], bool) or not isinstance(spec["delta"], (int, float))
                                or not spec["delta"] > 0):
            raise err("must be a positive number (the equivalence margin ±delta)", "delta")
        scales = spec.get("scales")
        if scales is not None:
            if not isinstance(scales, list) or not scales or any(s not in SCALES for s in scales):
                raise err(f"must be a non-empty list of scales; allowed: {', '.join(SCALES)}", "scales")
        claim = Claim(i, spec, metric)
        out.append(claim)
        # keys: run-config keys; selector values: scalars or lists of scalars
        used: list[str] = []
        for sel in SELECTORS:
            if sel not in spec:
                continue
            s = spec[sel]
            if not isinstance(s, dict) or not s:
                raise err("must be a non-empty mapping {run-config key: value or [values]}", sel)
            for k, v in s.items():
                _check_key(base, k, err, f"{sel}.{k}")
                vals = v if isinstance(v, list) else [v]
                if not vals or any(isinstance(x, (dict, list)) for x in vals):
                    raise err("must be a value or a non-empty list of values", f"{sel}.{k}")
                used.append(str(k))
        for k in ("key", "along"):
            if k in spec:
                if not isinstance(spec[k], str):
                    raise err("must be a dotted run-config key", k)
                _check_key(base, spec[k], err, k)
                used.append(spec[k])
        # applicability at this scale
        if scales is not None and plan.scale not in scales:
            claim.applicable, claim.why_not = False, f"the claim is about scales: {', '.join(scales)}"
            continue
        still = sorted({k for k in used if k not in keys})
        if still:
            claim.applicable = False
            claim.why_not = f"{', '.join(still)} {'does' if len(still) == 1 else 'do'} not vary at scale {plan.scale}"
            continue
        _resolve(claim, keys, groups, err)
    return out


def _check_key(base: dict[str, Any], key: Any, err: Any, where: str) -> None:
    try:
        node = get_path(base, str(key))
    except (KeyError, TypeError):
        raise err(f"{key!r} is not a run-config key", where) from None
    if isinstance(node, dict):
        raise err(f"{key!r} is a section, not a run-config key", where)


def _resolve(claim: Claim, keys: list[str], groups: list[Group], err: Any) -> None:
    """Selectors → groups; the shape each kind needs (one group, one group per key value, ...)."""
    spec, kind = claim.spec, claim.kind
    for sel in SELECTORS:
        if sel not in spec:
            continue
        picked = _select(groups, spec[sel])
        if not picked:
            allowed = "; ".join(f"{k}: {_values_text(groups, k)}" for k in spec[sel])
            asked = ", ".join(f"{k}: {v}" for k, v in spec[sel].items())
            raise err(f"{{{asked}}} selects no grid point at this scale; values here: {allowed}", sel)
        setattr(claim, sel, picked)
    if kind in ("greater", "less_than_each"):
        if len(claim.subject) != 1:
            raise err(f"selects {len(claim.subject)} grid points; {kind} needs exactly one (add keys)", "subject")
    if kind == "greater" and len(claim.reference) != 1:
        raise err(f"selects {len(claim.reference)} grid points; greater needs exactly one (add keys)", "reference")
    if kind == "less_than_each":
        others = claim.reference or list(range(len(groups)))
        claim.reference = [g for g in others if g not in claim.subject]
        if not claim.reference:
            raise err("leaves no other grid point to compare the subject with", "reference")
    if kind == "within_each" and len(claim.among) < 2:
        raise err(f"selects {len(claim.among)} grid point; within_each needs at least two", "among")
    free = spec.get("key") or spec.get("along")
    if free:
        for sel in ("subject", "reference"):
            picked = getattr(claim, sel)
            rest = {tuple(repr(groups[g].point[k]) for k in keys if k != free) for g in picked}
            if len(rest) != 1:
                raise err(f"selects grid points that differ in more than {free}; fix the other keys", sel)
            n_values = len({repr(groups[g].point[free]) for g in picked})
            if n_values < 2:
                raise err(f"selects one value of {free}; {kind} needs at least two", sel)
        if set(claim.subject) & set(claim.reference):
            raise err("subject and reference select the same grid points", "reference")
        if kind == "tuned_lower":
            for g in (*claim.subject, *claim.reference):
                v = groups[g].point[free]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                    raise err(f"tuned_lower compares log10 of the tuned value; {free}={value_text(v)} is not a positive "
                              "number", "key")


# ---------------------------------------------------------------------------------------------- evaluation

@dataclass
class Comparison:
    label: str
    side: str  # gt | lt | within
    bound: float  # 0 or delta
    test: dict[str, Any]
    p_adj: float = math.nan
    p_contra_adj: float = math.nan


@dataclass
class Evaluation:
    claim: Claim
    verdict: str = ""
    reason: str = ""
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # extra number lines (tuned values, Δ along the axis)
    runs_line: str = ""
    blockers: list[str] = field(default_factory=list)  # missing / diverged / not converged: inconclusive


class Data:
    """Metric values by (run id, metric), states and convergence of the plan's runs."""

    def __init__(self, plan: Plan, results: str | Path) -> None:
        from vitbench.aggregate.records import load_frame

        frame = load_frame(plan, results)
        self.frame = frame.set_index("run_id")
        # (run id, phase) -> converged; the fine-tuning's is that of its picked learning rate
        self.converged: dict[tuple[str, str], bool | None] = {}
        for r in plan.runs:
            for phase, flag in converged(read_result(run_dir(results, r.run_id) / RESULT)).items():
                self.converged[r.run_id, phase] = flag

    def state(self, rid: str) -> str:
        return str(self.frame.at[rid, "state"])

    def value(self, rid: str, metric: str) -> float | None:
        if self.state(rid) != "done" or metric not in self.frame.columns:
            return None
        v = self.frame.at[rid, metric]
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) else None


def phases(metrics: list[str]) -> list[str]:
    """The training phases a claim's metrics depend on: pretraining always, fine-tuning for its metrics."""
    return ["pretrain", *(["finetune"] if any(m.startswith("finetune/") for m in metrics) else [])]


def _shown(groups: list[Group], involved: list[int], drop: tuple[str, ...] = ()) -> list[str]:
    """The keys that tell the claim's groups apart (constant ones and ``drop`` left out)."""
    keys = list(groups[involved[0]].point)
    return [k for k in keys if k not in drop and len({repr(groups[g].point[k]) for g in involved}) > 1]


def _label(groups: list[Group], g: int, keys: list[str]) -> str:
    return "/".join(value_text(groups[g].point[k]) for k in keys) or "base"


def _point(groups: list[Group], g: int, drop: tuple[str, ...] = ()) -> str:
    return ", ".join(f"{k}={value_text(v)}" for k, v in groups[g].point.items() if k not in drop) or "base"


def _by_seed(data: Data, group: Group, metric: str) -> dict[int, float]:
    out = {}
    for seed, rid in sorted(group.runs.items()):
        v = data.value(rid, metric)
        if v is not None:
            out[seed] = v
    return out


def _pair(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], list[float]]:
    seeds = sorted(set(a) & set(b))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def _problems(data: Data, groups: list[Group], involved: list[int], metrics: list[str]) -> tuple[str, list[str]]:
    """The runs line and the reasons that make the claim inconclusive whatever its numbers."""
    rids = [rid for g in involved for _, rid in sorted(groups[g].runs.items())]
    n = len(rids)
    missing = sum(data.state(r) not in ("done", "diverged") for r in rids)
    diverged = sum(data.state(r) == "diverged" for r in rids)
    novalue = sum(data.state(r) == "done" and any(data.value(r, m) is None for m in metrics) for r in rids)
    # a run counts as converged when every phase the metrics depend on has converged
    conv = []
    for r in rids:
        if data.state(r) == "done":
            flags = [data.converged[r, ph] for ph in phases(metrics)]
            conv.append(False if False in flags else None if None in flags else True)
    recorded = [c for c in conv if c is not None]
    not_conv = sum(c is False for c in recorded)
    done = sum(data.state(r) == "done" for r in rids)
    line = f"runs: {done}/{n} done"
    line += f", {diverged} diverged" if diverged else ""
    line += f", {missing} missing" if missing else ""
    if recorded:
        line += f"; converged: {len(recorded) - not_conv}/{len(recorded)}"
        if len(recorded) < len(conv):
            line += f" ({len(conv) - len(recorded)} without a convergence record)"
    else:
        line += "; convergence: not recorded"
    reasons = []
    if missing:
        reasons.append(f"{missing}/{n} runs missing")
    if diverged:
        reasons.append(f"{diverged}/{n} runs diverged")
    if novalue:
        reasons.append(f"{novalue}/{n} records have no {' or '.join(metrics)}")
    if not_conv:
        reasons.append(f"not converged: {not_conv} runs")
    return line, reasons


def evaluate(plan: Plan, results: str | Path, claims: list[Claim] | None = None) -> list[Evaluation]:
    claims = check_claims(plan) if claims is None else claims
    _, groups = plan_groups(plan)
    data = Data(plan, results) if any(c.applicable for c in claims) else None
    out = []
    for c in claims:
        ev = Evaluation(c)
        if not c.applicable:
            ev.verdict, ev.reason = "not applicable at this scale", c.why_not
        else:
            assert data is not None
            _EVALUATORS[c.kind](ev, data, groups)
            _verdict(ev)
        out.append(ev)
    return out


def _eval_greater(ev: Evaluation, data: Data, groups: list[Group]) -> None:
    c = ev.claim
    s, r = c.subject[0], c.reference[0]
    a, b = _pair(_by_seed(data, groups[s], c.metric), _by_seed(data, groups[r], c.metric))
    keys = _shown(groups, [s, r])
    ev.notes.append(f"groups by {'/'.join(keys)}; subject: {_point(groups, s)}; reference: {_point(groups, r)}")
    ev.comparisons.append(Comparison(f"{_label(groups, s, keys)} vs {_label(groups, r, keys)}", "gt", 0.0,
                                     paired_test(a, b, "gt")))
    ev.runs_line, ev.blockers = _problems(data, groups, [s, r], [c.metric])


def _eval_less_than_each(ev: Evaluation, data: Data, groups: list[Group]) -> None:
    c = ev.claim
    s = c.subject[0]
    a_all = _by_seed(data, groups[s], c.metric)
    keys = _shown(groups, [s, *c.reference])
    ev.notes.append(f"groups by {'/'.join(keys)}; subject: {_point(groups, s)}; "
                    f"{len(c.reference)} others")
    for r in c.reference:
        a, b = _pair(a_all, _by_seed(data, groups[r], c.metric))
        ev.comparisons.append(Comparison(f"vs {_label(groups, r, keys)}", "lt", 0.0, paired_test(a, b, "lt")))
    ev.runs_line, ev.blockers = _problems(data, groups, [s, *c.reference], [c.metric])


def _eval_within_each(ev: Evaluation, data: Data, groups: list[Group]) -> None:
    c = ev.claim
    delta = float(c.spec["delta"])
    vals = {g: _by_seed(data, groups[g], c.metric) for g in c.among}
    keys = _shown(groups, c.among)
    ev.notes.append(f"groups by {'/'.join(keys)}: {len(c.among)} groups, {len(c.among) * (len(c.among) - 1) // 2} "
                    "pairs")
    for i, g in enumerate(c.among):
        for h in c.among[i + 1:]:
            a, b = _pair(vals[g], vals[h])
            ev.comparisons.append(Comparison(f"{_label(groups, g, keys)} vs {_label(groups, h, keys)}", "within",
                                             delta,
                                             paired_test(a, b, "within", delta)))
    ev.runs_line, ev.blockers = _problems(data, groups, c.among, [c.metric])


def _tuned_per_seed(data: Data, groups: list[Group], picked: list[int], key: str, dev: str) -> dict[int, Any]:
    """Per seed, the value of ``key`` whose group has the best dev metric (first in plan order on ties)."""
    best: dict[int, tuple[float, Any]] = {}
    for g in picked:
        for seed, v in _by_seed(data, groups[g], dev).items():
            if seed not in best or v > best[seed][0]:
                best[seed] = (v, groups[g].point[key])
    return {s: best[s][1] for s in sorted(best)}


def _tuned_by_mean(data: Data, groups: list[Group], picked: list[int], dev: str) -> int | None:
    """The group (one per value of the tuned key) with the best mean dev metric over seeds."""
    best, best_v = None, -math.inf
    for g in picked:
        vals = list(_by_seed(data, groups[g], dev).values())
        if vals and _mean(vals) > best_v:
            best, best_v = g, _mean(vals)
    return best


def _eval_tuned_lower(ev: Evaluation, data: Data, groups: list[Group]) -> None:
    c = ev.claim
    key, dev = c.spec["key"], c.metric + "/dev"
    subj = _tuned_per_seed(data, groups, c.subject, key, dev)
    ref = _tuned_per_seed(data, groups, c.reference, key, dev)
    for name, picked, tuned in (("subject", c.subject, subj), ("reference", c.reference, ref)):
        per = ", ".join(f"{s}: {value_text(v)}" for s, v in tuned.items()) or "none"
        ev.notes.append(f"{name} ({_point(groups, picked[0], (key,))}): tuned {key} on {dev} by seed — {per}")
    a, b = _pair({s: math.log10(v) for s, v in subj.items()}, {s: math.log10(v) for s, v in ref.items()})
    ev.comparisons.append(Comparison(f"log10 tuned {key}: subject vs reference", "lt", 0.0, paired_test(a, b, "lt")))
    ev.runs_line, ev.blockers = _problems(data, groups, [*c.subject, *c.reference], [dev])


def _eval_tuned_within(ev: Evaluation, data: Data, groups: list[Group]) -> None:
    c = ev.claim
    key, dev, delta = c.spec["key"], c.metric + "/dev", float(c.spec["delta"])
    s = _tuned_by_mean(data, groups, c.subject, dev)
    r = _tuned_by_mean(data, groups, c.reference, dev)
    for name, picked, g in (("subject", c.subject, s), ("reference", c.reference, r)):
        at = "none (no dev values)" if g is None else value_text(groups[g].point[key])
        ev.notes.append(f"{name} ({_point(groups, picked[0], (key,))}): tuned {key} (best mean {dev}) = {at}")
    a_all = _by_seed(data, groups[s], c.metric) if s is not None else {}
    b_all = _by_seed(data, groups[r], c.metric) if r is not None else {}
    a, b = _pair(a_all, b_all)
    ev.comparisons.append(Comparison(f"{c.metric} at the tuned {key}: subject vs reference", "within", delta,
                                     paired_test(a, b, "within", delta)))
    ev.runs_line, ev.blockers = _problems(data, groups, [*c.subject, *c.reference], [c.metric, dev])


def _eval_positive_then_shrinks(ev: Evaluation, data: Data, groups: list[Group]) -> None:
    c = ev.claim
    along = c.spec["along"]

    def by_value(picked: list[int]) -> dict[str, int]:
        return {repr(groups[g].point[along]): g for g in picked}

    subj, ref = by_value(c.subject), by_value(c.reference)
    common = [g for g in c.subject if repr(groups[g].point[along]) in ref]
    values = sorted((groups[g].point[along] for g in common), key=_sort_key)
    diffs: dict[str, dict[int, float]] = {}
    for v in values:
        a_all = _by_seed(data, groups[subj[repr(v)]], c.metric)
        b_all = _by_seed(data, groups[ref[repr(v)]], c.metric)
        diffs[repr(v)] = {s: a_all[s] - b_all[s] for s in sorted(set(a_all) & set(b_all))}
    ev.notes.append(f"mean subject − reference by {along}: " + ", ".join(
        f"{value_text(v)}: {_num(_mean(diffs[repr(v)].values()), True)}" for v in values))
    if len(values) >= 2:
        lo, hi = values[0], values[-1]
        sl, rl = subj[repr(lo)], ref[repr(lo)]
        a, b = _pair(_by_seed(data, groups[sl], c.metric), _by_seed(data, groups[rl], c.metric))
        ev.comparisons.append(Comparison(f"subject − reference at {along}={value_text(lo)}", "gt", 0.0,
                                         paired_test(a, b, "gt")))
        a, b = _pair(diffs[repr(hi)], diffs[repr(lo)])
        ev.comparisons.append(Comparison(f"(subject − reference) at {value_text(hi)} vs at {value_text(lo)}", "lt", 0.0,
                                         paired_test(a, b, "lt")))
    ev.runs_line, ev.blockers = _problems(data, groups, [*c.subject, *c.reference], [c.metric])


def _sort_key(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))


_EVALUATORS = {"greater": _eval_greater, "less_than_each": _eval_less_than_each, "within_each": _eval_within_each,
               "tuned_lower": _eval_tuned_lower, "tuned_within": _eval_tuned_within,
               "positive_then_shrinks": _eval_positive_then_shrinks}


def _g(x: float) -> str:
    return f"{x:g}"


def _verdict(ev: Evaluation) -> None:
    comps = ev.comparisons
    for comp, p in zip(comps, holm([x.test["p"] for x in comps])):
        comp.p_adj = p
    for comp, p in zip(comps, holm([x.test["p_contra"] for x in comps])):
        comp.p_contra_adj = p
    reasons = list(ev.blockers)
    few = [x for x in comps if x.test["n"] < 2]
    if few:
        reasons.append(f"fewer than 2 paired seeds in {len(few)}/{len(comps)} comparisons")
    if not comps:
        reasons.append("nothing to compare")
    if reasons:
        ev.verdict, ev.reason = "inconclusive", "; ".join(reasons)
        return
    k = len(comps)
    holm_note = f" (Holm over {k})" if k > 1 else ""
    flat = sum(1 for x in comps if x.test["n"] >= 2 and x.test["lo"] == x.test["hi"])
    flat_note = (f"; {flat}/{k} with the same difference at every seed (zero spread: the interval is a point)"
                 if flat else "")
    if all(x.p_adj < ALPHA for x in comps):
        ev.verdict = "reproduced"
        ev.reason = (f"every 95% interval on the claimed side and every Holm-adjusted p < {ALPHA:g}{holm_note}"
                     if k > 1 else f"95% interval on the claimed side, p < {ALPHA:g}") + flat_note
        return
    wrong = [x for x in comps if x.p_contra_adj < ALPHA]
    if wrong:
        ev.verdict = "not reproduced"
        ev.reason = "; ".join(f"{x.label}: interval {_ci(x)} entirely {_wrong_side(x)}" for x in wrong[:3])
        ev.reason += f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else ""
        ev.reason += f", contradiction p < {ALPHA:g}{holm_note}" + flat_note
        return
    ev.verdict = "inconclusive"
    spans = [x for x in comps if x.p_adj >= ALPHA and not _clears(x)]
    tied = [x for x in spans if x.test["tied"]]
    parts = []
    if spans:
        names = ", ".join(x.label for x in spans[:3]) + (f" (+{len(spans) - 3} more)" if len(spans) > 3 else "")
        what = "inside ±" + _g(spans[0].bound) if spans[0].side == "within" else "clear of 0"
        parts.append(f"the 95% interval is not {what} for {len(spans)}/{k}: {names}")
    else:
        parts.append(f"every 95% interval clears the threshold but not every Holm-adjusted p < {ALPHA:g}{holm_note}")
    if tied and len(tied) == len(spans):
        parts.append("equal at every seed (a finer grid may separate them)")
    else:
        parts.append("seed spread: add seeds")
    ev.reason = "; ".join(parts)


def _clears(x: Comparison) -> bool:
    t = x.test
    if x.side == "gt":
        return t["lo"] > 0
    if x.side == "lt":
        return t["hi"] < 0
    return -x.bound < t["lo"] and t["hi"] < x.bound


def _wrong_side(x: Comparison) -> str:
    if x.side == "gt":
        return "≤ 0"
    if x.side == "lt":
        return "≥ 0"
    return f"outside ±{_g(x.bound)}"


# ---------------------------------------------------------------------------------------------- rendering

def _num(x: Any, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _p(x: float) -> str:
    return "<0.0001" if x < 1e-4 else f"{x:.4f}"


def _ci(x: Comparison) -> str:
    t = x.test
    return "—" if not math.isfinite(t["lo"]) else f"[{t['lo']:+.4f}, {t['hi']:+.4f}]"


def _claimed(x: Comparison) -> str:
    return {"gt": "Δ > 0", "lt": "Δ < 0"}.get(x.side, f"|Δ| < {_g(x.bound)}")


CONVENTION = (
    "Paired over seeds: Δ = subject − other, seed by seed. 95% CI: Student-t interval per comparison (not\n"
    "multiplicity-adjusted). p (Holm): twice the one-sided paired t-test p, so p < 0.05 exactly when the 95% CI\n"
    "lies on the claimed side (for ±delta: inside it), Holm-adjusted (Holm 1979) over the claim's comparisons.\n"
    f"reproduced: every adjusted p < {ALPHA:g}; not reproduced: some 95% CI entirely on the wrong side (its p\n"
    "Holm-adjusted the same way); otherwise inconclusive, with the reason.")


def render_claims(plan: Plan, evaluations: list[Evaluation]) -> str:
    from tabulate import tabulate

    lines = [f"# claims: {plan.experiment.path} @ {plan.scale}", "", CONVENTION, ""]
    for ev in evaluations:
        c = ev.claim
        lines.append(f"## {c.id}")
        lines.append("")
        lines.append(f"claim: {c.spec['claim']}")
        desc = f"kind: {c.kind}; metric: {c.metric}"
        for k in ("subject", "reference", "among", "key", "along", "delta"):
            if k in c.spec:
                v = c.spec[k]
                desc += f"; {k}: " + (", ".join(f"{kk}={_sel(vv)}" for kk, vv in v.items())
                                      if isinstance(v, dict) else _sel(v))
        lines.append(desc)
        if ev.runs_line:
            lines.append(ev.runs_line)
        lines.extend(ev.notes)
        if ev.comparisons:
            rows = [[x.label, _claimed(x), _num(x.test["a"]), _num(x.test["b"]), _num(x.test["delta"], True),
                     _ci(x), _p(x.p_adj) if x.test["n"] >= 2 else "—", str(x.test["n"])] for x in ev.comparisons]
            lines.append("")
            lines.append(tabulate(rows, headers=["comparison", "claimed", "subject", "other", "Δ", "95% CI",
                                                 "p (Holm)", "seeds"], tablefmt="github", disable_numparse=True))
        lines.append("")
        lines.append(f"verdict: {ev.verdict}" + (f" — {ev.reason}" if ev.reason else ""))
        lines.append("")
    return "\n".join(lines)


def _sel(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    return value_text(v)


def claims_text(plan: Plan, results: str | Path) -> str:
    """What ``vitbench claims`` prints; a UserError when the file has no claims or a bad one."""
    if not claim_specs(plan):
        raise UserError("has no report.claims section (a list of {id, claim, kind, metric, ...}) to evaluate",
                        file=str(plan.experiment.path), key="report.claims")
    return render_claims(plan, evaluate(plan, results))
