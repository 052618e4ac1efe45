"""Composable grids: product, zip, chain, plus excludes.

A grid expands to a list of *points*: dicts of dotted run-config key → value. Grammar::

    {key.path: [v1, v2], other.key: [a, b]}      # shorthand: the product of the axes
    {product: [GRID, GRID, ...]}                  # Cartesian product of sub-grids
    {product: {key.a: [..], key.b: [..]}}         # the same as the shorthand
    {zip: {key.a: [..], key.b: [..]}}             # vary keys together (equal lengths)
    {zip: [GRID, GRID, ...]}                      # zip sub-grids of equal length
    {chain: [GRID, GRID, ...]}                    # concatenation
    {key: value}                                  # a scalar is a one-value axis
An empty mapping is the single empty point (the base config alone). Excludes are a list of
partial points; a point that matches every key of an entry (a list there means "any of")
is dropped.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from vitbench.errors import UserError
from vitbench.spec.schema import Field, allowed_keys, check_value, schema_node

OPERATORS = ("product", "zip", "chain")
Point = dict[str, Any]
# The most points a grid may expand to, checked from the axis lengths before anything is expanded:
# each point becomes a fully resolved run config (~5 KB), so 100,000 is already ~0.5 GB of plan.
MAX_POINTS = 100_000


def _axis_field(key: str, file: str | None, where: str) -> Field:
    node = schema_node(key)
    if not isinstance(node, Field):
        prefix = key.rsplit(".", 1)[0] if "." in key else ""
        if not isinstance(schema_node(prefix) if prefix else {}, dict):
            prefix = ""
        allowed = ", ".join(allowed_keys(prefix)) + (", product, zip, chain" if not prefix else "")
        raise UserError(f"unknown grid key {key!r}; allowed: {allowed}", file=file, key=where)
    return node


def _axis(key: str, values: Any, file: str | None, where: str) -> list[Point]:
    field = _axis_field(key, file, where)
    # A list-typed field (e.g. eval.fewshot.shots) takes a list of lists as its axis.
    if field.type == (list,):
        if not isinstance(values, list) or not values or not all(isinstance(v, list) for v in values):
            raise UserError("a list-valued key takes a list of lists as grid axis", file=file, key=where)
    elif not isinstance(values, list):
        values = [values]
    if not values:
        raise UserError("empty value list: the grid would have no runs", file=file, key=where)
    return [{key: check_value(field, v, file=file, key=f"{where}[{i}]")} for i, v in enumerate(values)]


def _product(grids: list[list[Point]]) -> list[Point]:
    out: list[Point] = [{}]
    for g in grids:
        out = [{**a, **b} for a, b in itertools.product(out, g)]
    return out


def count(spec: Any) -> int:
    """How many points ``expand(spec)`` yields, from the axis lengths alone (nothing is expanded).

    Exact for a valid spec; for a malformed one an upper bound on every list expand would build
    before it reports the problem (a zip counts its longest part, an empty axis counts 1).
    """
    if not isinstance(spec, dict):
        return 1
    ops = [k for k in spec if k in OPERATORS]
    if ops and len(spec) == 1:
        op, body = ops[0], spec[ops[0]]
        if isinstance(body, dict):
            sizes = [_axis_len(v) for v in body.values()]
        elif isinstance(body, list):
            sizes = [count(g) for g in body]
        else:
            return 1
        if not sizes:
            return 1
        if op == "chain":
            return sum(sizes)
        if op == "zip":
            return max(sizes)
        return math.prod(sizes)
    if ops:
        return 1  # an operator mixed with axes: expand refuses it before expanding anything
    return math.prod(_axis_len(v) for v in spec.values())


def _axis_len(values: Any) -> int:
    return max(len(values), 1) if isinstance(values, list) else 1


def expand(spec: Any, *, file: str | None = None, where: str = "grid") -> list[Point]:
    """All points of a grid spec, in a deterministic order; refuses more than MAX_POINTS up front."""
    n = count(spec)
    if n > MAX_POINTS:
        raise UserError(f"grid expands to {n} points, more than the limit of {MAX_POINTS}", file=file, key=where)
    return _expand(spec, file=file, where=where)


def _expand(spec: Any, *, file: str | None = None, where: str = "grid") -> list[Point]:
    if spec is None:
        return [{}]
    if not isinstance(spec, dict):
        raise UserError(f"a grid is a mapping (axes or product/zip/chain), got {type(spec).__name__}",
                        file=file, key=where)
    ops = [k for k in spec if k in OPERATORS]
    if ops:
        if len(spec) != 1:
            raise UserError(f"'{ops[0]}' must be the only key of its mapping; nest other axes inside it",
                            file=file, key=where)
        op = ops[0]
        body = spec[op]
        here = f"{where}.{op}"
        if op in ("zip", "product") and isinstance(body, dict):
            axes = [_axis(str(k), v, file, f"{here}.{k}") for k, v in body.items()]
            if not axes:
                raise UserError(f"'{op}' of no axes: the grid would have no runs", file=file, key=here)
            return _zip(axes, file, here) if op == "zip" else _product(axes)
        if not isinstance(body, list) or not body:
            raise UserError(f"'{op}' takes a non-empty list of grids", file=file, key=here)
        subs = [_expand(g, file=file, where=f"{here}[{i}]") for i, g in enumerate(body)]
        if op == "product":
            return _product(subs)
        if op == "zip":
            return _zip(subs, file, here)
        return [p for sub in subs for p in sub]
    return _product([_axis(str(k), v, file, f"{where}.{k}") for k, v in spec.items()])


def _zip(subs: list[list[Point]], file: str | None, where: str) -> list[Point]:
    lengths = {len(s) for s in subs}
    if len(lengths) > 1:
        raise UserError(f"zip needs equal lengths, got {sorted(len(s) for s in subs)}", file=file, key=where)
    return [{k: v for part in parts for k, v in part.items()} for parts in zip(*subs)]


def parse_excludes(spec: Any, *, file: str | None = None, where: str = "exclude") -> list[dict[str, list[Any]]]:
    """Exclude entries as key → list of values that match."""
    if spec is None:
        return []
    if not isinstance(spec, list):
        raise UserError("exclude is a list of partial grid points", file=file, key=where)
    out = []
    for i, entry in enumerate(spec):
        if not isinstance(entry, dict) or not entry:
            raise UserError("each exclude entry is a non-empty mapping of key: value", file=file, key=f"{where}[{i}]")
        parsed: dict[str, list[Any]] = {}
        for key, value in entry.items():
            field = _axis_field(str(key), file, f"{where}[{i}].{key}")
            values = value if isinstance(value, list) and field.type != (list,) else [value]
            parsed[str(key)] = [check_value(field, v, file=file, key=f"{where}[{i}].{key}") for v in values]
        out.append(parsed)
    return out


def excluded(point: Point, resolved: dict[str, Any], excludes: list[dict[str, list[Any]]]) -> bool:
    """Whether a point (or its resolved config, for keys the grid does not vary) is excluded."""
    for entry in excludes:
        if all(_lookup(point, resolved, k) in vals for k, vals in entry.items()):
            return True
    return False


def _lookup(point: Point, resolved: dict[str, Any], key: str) -> Any:
    if key in point:
        return point[key]
    node: Any = resolved
    for part in key.split("."):
        node = node[part]
    return node
