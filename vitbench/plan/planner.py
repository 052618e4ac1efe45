"""Planning: an experiment file (at one scale) → the list of runs it implies.

Each run's config is: defaults ⊕ base ⊕ scale base ⊕ matching recipes ⊕ grid point ⊕ {seed} ⊕
``--set`` overrides, then checked as a whole (see vitbench.spec.experiment for recipes). Identical
configs collapse to one run (one id, one directory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitbench.errors import UserError
from vitbench.plan.ids import run_id
from vitbench.spec.experiment import FAMILY_KEY, Experiment, load_experiment
from vitbench.spec.grid import MAX_POINTS, count, excluded, expand, parse_excludes
from vitbench.spec.overrides import parse_override
from vitbench.spec.runconfig import check_semantics, stamp_hashes
from vitbench.spec.schema import deep_merge, default_config, flatten, get_path, set_path

DEFAULT_MAX_RUNS = 5000
# The ceiling --max-runs / $VITBENCH_MAX_RUNS cannot raise: a plan holds one resolved config per run.
MAX_RUNS_LIMIT = MAX_POINTS


@dataclass
class PlannedRun:
    run_id: str
    config: dict[str, Any]
    point: dict[str, Any]  # the grid point (dotted keys) plus "seed"
    recipes: list[str] = field(default_factory=list)  # names of the recipes that applied


@dataclass(frozen=True)
class Recipe:
    name: str
    when: dict[str, list[Any]]  # dotted key (or model.family) -> values that match
    values: dict[str, Any]  # the partial run config it sets


def parse_recipes(raw: dict[str, Any], file: str | None) -> list[Recipe]:
    out = []
    for name, r in (raw or {}).items():
        for part in ("when", "set"):
            if part not in r:
                raise UserError(f"has no {part} once scales and extends are merged", file=file,
                                key=f"recipes.{name}")
        when = {k: v for k, v in r["when"].items() if k != FAMILY_KEY}
        parsed = parse_excludes([when], file=file, where=f"recipes.{name}.when")[0] if when else {}
        if FAMILY_KEY in r["when"]:
            fam = r["when"][FAMILY_KEY]
            parsed[FAMILY_KEY] = fam if isinstance(fam, list) else [fam]
        out.append(Recipe(str(name), parsed, r["set"]))
    return out


def _matches(recipe: Recipe, cfg: dict[str, Any]) -> bool:
    from vitbench.models import model_family

    for key, values in recipe.when.items():
        if key == FAMILY_KEY:
            try:
                if model_family(cfg["model"]["name"]) not in values:
                    return False
            except ValueError:
                return False  # an unknown model name is reported by the semantic checks
        elif get_path(cfg, key) not in values:
            return False
    return True


def resolve_config(base: dict[str, Any], recipes: list[Recipe], layers: list[tuple[str, Any]]
                   ) -> tuple[dict[str, Any], list[str]]:
    """base ⊕ the recipes matching (base ⊕ layers) ⊕ layers; layers are (dotted key, value) in order."""
    def with_layers(cfg: dict[str, Any]) -> dict[str, Any]:
        cfg = deep_merge(cfg, {})
        for key, value in layers:
            set_path(cfg, key, value)
        return cfg

    probe = with_layers(base)
    applied = [r for r in recipes if _matches(r, probe)]
    if not applied:
        return probe, []
    cfg = base
    for r in applied:
        cfg = deep_merge(cfg, r.values)
    return with_layers(cfg), [r.name for r in applied]


def scale_base(exp: Experiment, scale: str | None) -> tuple[str, dict[str, Any], dict[str, Any], list[Recipe]]:
    """(scale, its spec, defaults ⊕ base ⊕ scale base, its recipes): what every run of the scale starts from."""
    scale, spec = exp.resolve_scale(scale)
    return scale, spec, deep_merge(default_config(), spec["base"]), parse_recipes(spec["recipes"], str(exp.path))


def planned_run(base: dict[str, Any], recipes: list[Recipe], layers: list[tuple[str, Any]],
                point: dict[str, Any], *, file: str | None = None) -> PlannedRun:
    """One run: ``resolve_config`` of the layers (the checkpoint's and plugins' hashes stamped in), its id, the point
    it stands for and the recipes applied."""
    cfg, applied = resolve_config(base, recipes, layers)
    cfg = stamp_hashes(cfg, file=file)
    return PlannedRun(run_id(cfg), cfg, point, applied)


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
    scale, spec, base, recipes = scale_base(exp, scale)
    seeds = spec["seeds"]
    cap = max_runs if max_runs is not None else max_runs_default()
    # Counted from the axis lengths BEFORE expanding: a 10^12-run grid is refused at once.
    n = count(spec["grid"]) * len(seeds)
    if n > min(cap, MAX_RUNS_LIMIT):
        why = (f"the cap of {cap} (raise it with --max-runs)" if cap <= MAX_RUNS_LIMIT
               else f"the limit of {MAX_RUNS_LIMIT} runs one plan may hold")
        raise UserError(f"grid expands to {n} runs, more than {why}", file=file, key=spec["grid_where"])
    points = expand(spec["grid"], file=file, where=spec["grid_where"])
    excludes = parse_excludes(spec["exclude"], file=file, where=spec["exclude_where"])
    parsed = [parse_override(o, file="--set") for o in overrides or []]

    runs: list[PlannedRun] = []
    seen: set[str] = set()
    checked: dict[str, None] = {}
    duplicates = 0
    for point in points:
        for seed in seeds:
            run = planned_run(base, recipes, [*point.items(), ("seed", seed), *parsed], {**point, "seed": seed},
                              file=file)
            cfg, rid = run.config, run.run_id
            if excluded(point, cfg, excludes):
                continue
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
            runs.append(run)
    if not runs:
        raise UserError("the grid is empty after excludes: nothing to run", file=file, key=spec["grid_where"])
    return Plan(exp, scale, runs, varying=_varying(runs), duplicates=duplicates)


def _varying(runs: list[PlannedRun]) -> list[str]:
    if len(runs) < 2:
        return []
    flat = [flatten(r.config) for r in runs]
    keys = sorted(k for k in flat[0] if not k.startswith("runtime."))
    return [k for k in keys if any(repr(f.get(k)) != repr(flat[0].get(k)) for f in flat[1:])]
