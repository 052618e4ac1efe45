"""Experiment files: one YAML file per comparison (``experiments/*.yaml``, ``ablations/*.yaml``).

Top-level keys (anything else is an error)::

    extends:      path (or list of paths) of experiment files this one builds on, relative to it
    description:  one line: what the experiment reproduces (cite the table / figure)
    base:         partial run config shared by every run (see vitbench.spec.schema)
    grid:         what varies (see vitbench.spec.grid: product / zip / chain)
    exclude:      partial points to drop from the grid
    seeds:        list of seeds; every grid point runs once per seed
    recipes:      named rules {NAME: {when: {key: value or [values]}, set: partial run config, note}}: a run
                  whose config matches every ``when`` key (``model.family`` = vit | bit | hybrid too)
                  takes the ``set`` values — e.g. Table 3's recipe per pretraining dataset and model
    scales:       {paper|small|micro|smoke: {base, grid, exclude, seeds, recipes, description}}
    default_scale: the scale used without --scale
    report:       how `vitbench table` / `plot` lay the results out (vitbench.aggregate)
    plugins:      Python files, relative to this file, that register models, position embeddings, pooling
                  heads or datasets (vitbench.plugins); imported when the file is read

Merging: ``extends`` parents first (in order), then this file. ``base``, ``recipes`` and ``scales``
are deep merged (a recipe is replaced or amended by name), ``grid``, ``exclude``, ``seeds`` and
``report`` replace. A scale's ``base`` is applied on top of the experiment's ``base``, its
``recipes`` after the experiment's; its ``grid``/``exclude``/``seeds`` replace the experiment's.

A run's config: defaults ⊕ base ⊕ matching recipes (in file order) ⊕ grid point ⊕ seed ⊕ ``--set``.
Recipes match on the config *without* recipes (grid point and ``--set`` included), and a grid axis or
``--set`` wins over a recipe: a learning-rate axis (Figure 9) stays an axis.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitbench.errors import UserError
from vitbench.spec.runconfig import read_yaml
from vitbench.spec.schema import deep_merge, validate_structure

SCALES = ("paper", "small", "micro", "smoke")
TOP_KEYS = ("extends", "description", "base", "grid", "exclude", "seeds", "recipes", "scales", "default_scale",
            "report", "plugins")
SCALE_KEYS = ("description", "base", "grid", "exclude", "seeds", "recipes")
RECIPE_KEYS = ("when", "set", "note")
FAMILY_KEY = "model.family"  # a recipe may match the model family (vit | bit | hybrid) instead of names
REPLACED = ("grid", "exclude", "seeds", "report", "description", "default_scale")
# extends: the deepest chain (the repository's is 2) and the most files one experiment may read,
# repeats included — a diamond of extends would otherwise re-read files exponentially often.
MAX_EXTENDS_DEPTH = 16
MAX_EXTENDS_FILES = 64


@dataclass
class Experiment:
    """A loaded, structurally valid experiment file (scales not yet applied)."""

    path: Path
    name: str
    raw: dict[str, Any]
    chain: list[Path] = field(default_factory=list)  # files merged, parents first

    @property
    def default_scale(self) -> str:
        return self.raw.get("default_scale") or "micro"

    def scale_names(self) -> list[str]:
        return [s for s in SCALES if s in (self.raw.get("scales") or {})]

    def resolve_scale(self, scale: str | None) -> tuple[str, dict[str, Any]]:
        """(scale name, {base, grid, exclude, seeds}) with the scale's overlays applied."""
        scale = scale or self.default_scale
        scales = self.raw.get("scales") or {}
        if scale not in SCALES:
            raise UserError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}", file=str(self.path), key="--scale")
        if scale not in scales:
            have = ", ".join(self.scale_names()) or "none"
            raise UserError(f"has no scale {scale!r}; it defines: {have}", file=str(self.path), key=f"scales.{scale}")
        sc = scales[scale] or {}
        out = {
            "base": deep_merge(self.raw.get("base") or {}, sc.get("base") or {}),
            "recipes": deep_merge(self.raw.get("recipes") or {}, sc.get("recipes") or {}),
            "grid": sc["grid"] if "grid" in sc else self.raw.get("grid"),
            "exclude": sc["exclude"] if "exclude" in sc else self.raw.get("exclude"),
            "seeds": sc["seeds"] if "seeds" in sc else self.raw.get("seeds", [0]),
        }
        grid_where = f"scales.{scale}.grid" if "grid" in sc else "grid"
        out["grid_where"] = grid_where
        out["exclude_where"] = f"scales.{scale}.exclude" if "exclude" in sc else "exclude"
        return scale, out


def _check_top(raw: Any, path: Path) -> dict[str, Any]:
    file = str(path)
    if raw is None:
        raise UserError("is empty; an experiment needs at least base, grid or scales", file=file)
    if not isinstance(raw, dict):
        raise UserError(f"must be a mapping of {', '.join(TOP_KEYS)}, got {type(raw).__name__}", file=file)
    for key in raw:
        if key not in TOP_KEYS:
            raise UserError(f"unknown key; allowed: {', '.join(TOP_KEYS)}", file=file, key=str(key))
    if "description" in raw and not isinstance(raw["description"], str):
        raise UserError("must be a string", file=file, key="description")
    if "base" in raw:
        if raw["base"] is not None:
            raw["base"] = _validate_base(raw["base"], file, "base")
    if "seeds" in raw:
        raw["seeds"] = _check_seeds(raw["seeds"], file, "seeds")
    if raw.get("recipes") is not None:
        raw["recipes"] = _check_recipes(raw["recipes"], file, "recipes")
    if "default_scale" in raw and raw["default_scale"] not in SCALES:
        raise UserError(f"unknown scale {raw['default_scale']!r}; allowed: {', '.join(SCALES)}", file=file,
                        key="default_scale")
    scales = raw.get("scales")
    if scales is not None:
        if not isinstance(scales, dict):
            raise UserError(f"must be a mapping of scale names ({', '.join(SCALES)})", file=file, key="scales")
        for name, sc in scales.items():
            where = f"scales.{name}"
            if name not in SCALES:
                raise UserError(f"unknown scale; allowed: {', '.join(SCALES)}", file=file, key=where)
            if sc is None:
                continue
            if not isinstance(sc, dict):
                raise UserError(f"must be a mapping of {', '.join(SCALE_KEYS)}", file=file, key=where)
            for key in sc:
                if key not in SCALE_KEYS:
                    raise UserError(f"unknown key; allowed: {', '.join(SCALE_KEYS)}", file=file, key=f"{where}.{key}")
            if sc.get("base") is not None:
                sc["base"] = _validate_base(sc["base"], file, f"{where}.base")
            if "seeds" in sc:
                sc["seeds"] = _check_seeds(sc["seeds"], file, f"{where}.seeds")
            if sc.get("recipes") is not None:
                sc["recipes"] = _check_recipes(sc["recipes"], file, f"{where}.recipes")
    if "report" in raw and raw["report"] is not None and not isinstance(raw["report"], dict):
        raise UserError("must be a mapping", file=file, key="report")
    return raw


def _validate_base(base: Any, file: str, where: str) -> dict[str, Any]:
    if not isinstance(base, dict):
        raise UserError(f"must be a mapping of run-config keys, got {type(base).__name__}", file=file, key=where)
    try:
        return validate_structure(base, file=file)
    except UserError as exc:
        # re-anchor the key path under base / scales.X.base
        msg = str(exc)
        prefix = f"{file}: "
        rest = msg[len(prefix):] if msg.startswith(prefix) else msg
        raise UserError(f"{where}.{rest}", file=file) from None


def _check_recipes(recipes: Any, file: str, where: str) -> dict[str, Any]:
    """Each recipe: ``when`` (dotted run-config keys or model.family → value or list of values), ``set``.

    A scale or a child file may amend a recipe by name with only some of its keys; that both are
    there once merged is checked when the plan is made.
    """
    from vitbench.models.registry import FAMILIES
    from vitbench.spec.grid import parse_excludes

    if not isinstance(recipes, dict):
        raise UserError("must be a mapping of recipe names to {when, set, note}", file=file, key=where)
    for name, r in recipes.items():
        here = f"{where}.{name}"
        if not isinstance(r, dict):
            raise UserError(f"must be a mapping of {', '.join(RECIPE_KEYS)}", file=file, key=here)
        for key in r:
            if key not in RECIPE_KEYS:
                raise UserError(f"unknown key; allowed: {', '.join(RECIPE_KEYS)}", file=file, key=f"{here}.{key}")
        if "when" not in r and "set" not in r:
            raise UserError("needs when (what it matches) and set (what it sets)", file=file, key=here)
        when = r.get("when", {})
        if "when" in r and (not isinstance(when, dict) or not when):
            raise UserError("needs a non-empty mapping of key: value (or [values]) to match", file=file,
                            key=f"{here}.when")
        family = when.get(FAMILY_KEY)
        if family is not None:
            values = family if isinstance(family, list) else [family]
            bad = [v for v in values if v not in FAMILIES]
            if bad:
                raise UserError(f"{bad[0]!r} is not a model family; allowed: {', '.join(FAMILIES)}", file=file,
                                key=f"{here}.when.{FAMILY_KEY}")
        rest = {k: v for k, v in when.items() if k != FAMILY_KEY}
        if rest:
            parse_excludes([rest], file=file, where=f"{here}.when")  # same key/value checks as excludes
        if "note" in r and not isinstance(r["note"], str):
            raise UserError("must be a string (why this recipe, and its source)", file=file, key=f"{here}.note")
        if "set" in r:
            if not isinstance(r["set"], dict) or not r["set"]:
                raise UserError("needs a non-empty partial run config", file=file, key=f"{here}.set")
            r["set"] = _validate_base(r["set"], file, f"{here}.set")
    return recipes


def _check_seeds(seeds: Any, file: str, where: str) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds:
        raise UserError("must be a non-empty list of non-negative integers", file=file, key=where)
    for i, s in enumerate(seeds):
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise UserError(f"item {i} must be a non-negative integer, got {s!r:.40}", file=file, key=where)
    if len(set(seeds)) != len(seeds):
        raise UserError("seeds must be distinct", file=file, key=where)
    return seeds


def _load_plugins(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """Import the file's plugins (paths relative to it); ``plugins`` becomes their resolved paths."""
    from vitbench.plugins import load_plugin

    plugins = raw.get("plugins")
    if plugins is None:
        return raw
    if not isinstance(plugins, list) or not all(isinstance(x, str) and x for x in plugins):
        raise UserError("must be a list of plugin file paths (relative to this file)", file=str(path), key="plugins")
    files = [load_plugin(path.parent / rel, file=str(path), key=f"plugins[{i}]").file for i, rel in enumerate(plugins)]
    return {**raw, "plugins": files}


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(parent)
    for key, value in child.items():
        if key == "extends":
            continue
        if key in ("base", "scales", "recipes") and isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = deep_merge(out[key], value)
        elif key == "plugins":  # every file's plugins stay registered: the union, in order
            out[key] = list(dict.fromkeys([*out.get(key, []), *value]))
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_experiment(path: str | Path, _stack: tuple[Path, ...] = (), _reads: list[int] | None = None
                    ) -> Experiment:
    """Read an experiment file and everything it extends; structural validation only."""
    path = Path(path)
    reads = _reads if _reads is not None else [0]
    try:
        resolved = path.resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte in the path, a symlink loop
        read_yaml(path)  # names the problem as a one-line UserError
        raise UserError("cannot resolve the path", file=str(path)) from None
    if resolved in _stack:
        cycle = " -> ".join(p.name for p in (*_stack, resolved))
        raise UserError(f"include cycle: {cycle}", file=str(path), key="extends")
    if len(_stack) >= MAX_EXTENDS_DEPTH:
        raise UserError(f"extends chain deeper than {MAX_EXTENDS_DEPTH} files", file=str(path), key="extends")
    reads[0] += 1
    if reads[0] > MAX_EXTENDS_FILES:
        raise UserError(f"extends more than {MAX_EXTENDS_FILES} files in all (repeats included)",
                        file=str(path), key="extends")
    raw = _check_top(read_yaml(path), path)
    raw = _load_plugins(raw, path)
    parents = raw.get("extends") or []
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise UserError("must be a path or a list of paths", file=str(path), key="extends")
    merged: dict[str, Any] = {}
    chain: list[Path] = []
    for rel in parents:
        ppath = (path.parent / rel)
        try:
            there = ppath.exists()
        except (OSError, ValueError):  # a NUL byte ("\0" in a quoted string), a name too long
            raise UserError(f"extends a path that cannot be read: {rel!r:.80}", file=str(path),
                            key="extends") from None
        if not there:
            raise UserError(f"extends a file that does not exist: {rel}", file=str(path), key="extends")
        parent = load_experiment(ppath, (*_stack, resolved), reads)
        merged = _merge(merged, parent.raw)
        chain += [c for c in parent.chain if c not in chain]
    merged = _merge(merged, raw)
    chain.append(resolved)
    return Experiment(path=path, name=path.stem, raw=merged, chain=chain)
