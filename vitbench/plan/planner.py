"""Planning: an experiment file (at one scale) → the list of runs it implies.

Each run's config is: defaults ⊕ base ⊕ scale base ⊕ grid point ⊕ {seed} ⊕ ``--set`` overrides,
then checked as a whole. Identical configs collapse to one run (one id, one directory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitbench.errors import UserError
from vitbench.plan.ids import run_id
from vitbench.spec.experiment import Experiment, load_experiment
from vitbench.spec.grid import excluded, expand, parse_excludes
from vitbench.spec.overrides import parse_override
from vitbench.spec.runconfig import check_semantics
from vitbench.spec.schema import deep_merge, default_config, flatten, get_path, set_path

DEFAULT_MAX_RUNS = 5000


@dataclass
class PlannedRun:
    run_id: str
    config: dict[str, Any]
    point: dict[str, Any]  # the grid point (dotted keys) plus "seed"


@dataclass
class Plan:
    experiment: Experiment
    scale: str
    runs: list[PlannedRun]
    varying: list[str] = field(default_factory=list)  # dotted keys that differ between runs
    duplicates: int = 0

    def labels(self, run: PlannedRun) -> dict[str, Any]:
        return {k: get_path(run.config, k) for k in self.varying}


def max_runs_default() -> int:
    try:
        return int(os.environ.get("VITBENCH_MAX_RUNS", DEFAULT_MAX_RUNS))
    except ValueError:
        raise UserError(f"must be an integer, got {os.environ['VITBENCH_MAX_RUNS']!r}", key="$VITBENCH_MAX_RUNS") from None


def make_plan(path: str | Path, *, scale: str | None = None, overrides: list[str] | None = None,
              max_runs: int | None = None, check_data: bool = True) -> Plan:
    """Load, expand and check an experiment; raises UserError before anything runs."""
    exp = load_experiment(path)
    file = str(exp.path)
    scale, spec = exp.resolve_scale(scale)
    points = expand(spec["grid"], file=file, where=spec["grid_where"])
    excludes = parse_excludes(spec["exclude"], file=file, where=spec["exclude_where"])
    seeds = spec["seeds"]
    cap = max_runs if max_runs is not None else max_runs_default()
    n = len(points) * len(seeds)
    if n > cap:
        raise UserError(f"grid expands to {n} runs, more than the cap of {cap} (raise it with --max-runs)",
                        file=file, key=spec["grid_where"])
    parsed = [parse_override(o, file="--set") for o in overrides or []]
    base = deep_merge(default_config(), spec["base"])

    runs: list[PlannedRun] = []
    seen: set[str] = set()
    checked: dict[str, None] = {}
    duplicates = 0
    for point in points:
        for seed in seeds:
            cfg = deep_merge(base, {})
            for key, value in point.items():
                set_path(cfg, key, value)
            cfg["seed"] = seed
            for key, value in parsed:
                set_path(cfg, key, value)
            if excluded(point, cfg, excludes):
                continue
            rid = run_id(cfg)
            if rid in seen:
                duplicates += 1
                continue
            seen.add(rid)
            # Semantic checks cost little but repeat across seeds: check each distinct
            # seed-less config once.
            sig = run_id({**cfg, "seed": 0})
            if sig not in checked:
                try:
                    check_semantics(cfg, file=file, check_data=check_data)
                except UserError as exc:
                    where = ", ".join(f"{k}={v}" for k, v in point.items())
                    raise UserError(f"{exc} (grid point: {where or 'base'})") from None
                checked[sig] = None
            runs.append(PlannedRun(rid, cfg, {**point, "seed": seed}))
    if not runs:
        raise UserError("the grid is empty after excludes: nothing to run", file=file, key=spec["grid_where"])
    return Plan(exp, scale, runs, varying=_varying(runs), duplicates=duplicates)


def _varying(runs: list[PlannedRun]) -> list[str]:
    if len(runs) < 2:
        return []
    flat = [flatten(r.config) for r in runs]
    keys = sorted(k for k in flat[0] if not k.startswith("runtime."))
    return [k for k in keys if any(repr(f.get(k)) != repr(flat[0].get(k)) for f in flat[1:])]
