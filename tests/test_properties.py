"""Property-based tests (hypothesis) of the experiment-file loader and the --set parser: any input
either loads to a valid plan or fails with exit code 2 and ONE line — never a traceback, never a
partial submission."""

from __future__ import annotations

import itertools
import json
import string
from collections import Counter
from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vitbench.cli import main
from vitbench.errors import UserError
from vitbench.spec.overrides import parse_override

KEYS = ["seed", "model.name", "model.pos_embed", "model.pool", "pretrain.lr", "pretrain.steps", "pretrain.size",
        "eval.fewshot.shots", "runtime.device", "pretrain.augment.crop", "model", "nope", "pretrain.nope.x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(KEYS + ["product", "zip", "chain"]),
                                                                       inner, max_size=3)), max_leaves=8)

# --- experiment files: start from a valid one, then perhaps break it ---------------------------
# Axes whose values are all valid at smoke scale (with the defaults: ViT, 300 steps, warm-up 30),
# each value distinct, so a valid grid's run count is known exactly.
AXES = {
    "model.pool": ["cls", "gap"],
    "model.pos_embed": ["learned_1d", "learned_2d", "sincos_2d", "none", "relative"],
    "model.name": ["ViT-micro/4", "ViT-nano/4", "ViT-micro/2"],
    "pretrain.lr": [0.001, 0.003, 0.0001, 0.01],
    "pretrain.steps": [30, 40, 100],
    "pretrain.batch_size": [2, 8, 64],
    "pretrain.weight_decay": [0.0, 0.1, 0.3],
    "eval.fewshot.shots": [[1], [1, 5], [5, 10, 25]],
}


@st.composite
def valid_experiments(draw: st.DrawFn) -> tuple[dict, dict[str, list], list[int] | None]:
    """(doc, axes of its grid, seeds): a valid experiment at smoke scale and what its plan must hold."""
    names = draw(st.lists(st.sampled_from(sorted(AXES)), unique=True, max_size=3))
    axes = {k: draw(st.lists(st.sampled_from(AXES[k]), min_size=1, max_size=3, unique_by=repr)) for k in names}
    doc: dict = {"scales": {"smoke": {}}}
    if axes:
        style = draw(st.sampled_from(["shorthand", "product", "product-list"]))
        if style == "shorthand":
            doc["grid"] = dict(axes)
        elif style == "product":
            doc["grid"] = {"product": dict(axes)}
        else:
            doc["grid"] = {"product": [{k: v} for k, v in axes.items()]}
    seeds = draw(st.one_of(st.none(), st.lists(st.integers(0, 99), min_size=1, max_size=3, unique=True)))
    if seeds is not None:
        where = draw(st.sampled_from([doc, doc["scales"]["smoke"]]))
        where["seeds"] = seeds
    if draw(st.booleans()):  # a base that the grid may override: it changes no run count
        doc["base"] = {"model": {"pool": draw(st.sampled_from(["cls", "gap"]))},
                       "pretrain": {"lr": draw(st.sampled_from([0.001, 0.002]))}}
    if draw(st.booleans()):
        doc["description"] = draw(st.text(string.printable, max_size=20))
    return doc, axes, seeds


def _mutate(draw: st.DrawFn, doc: dict) -> str:
    """Break ``doc`` in place in one of many ways (some of them harmless); returns what it did."""
    kind = draw(st.sampled_from(["top", "leaf", "bogus", "axis", "seeds", "scales", "grid-op", "base"]))
    if kind == "top":
        doc[draw(st.sampled_from(["base", "grid", "seeds", "exclude", "extends", "scales", "report",
                                  "default_scale", "description", "recipes"]))] = draw(values)
    elif kind == "leaf" and doc.get("grid"):
        grid = doc["grid"]["product"] if "product" in doc["grid"] else doc["grid"]
        target = grid[draw(st.integers(0, len(grid) - 1))] if isinstance(grid, list) else grid
        key = draw(st.sampled_from(sorted(target)))
        target[key] = draw(st.one_of(values, st.lists(scalars, max_size=3)))
    elif kind == "bogus":
        doc[draw(st.sampled_from(["bogus", "Base", "grids", "1"]))] = draw(values)
    elif kind == "axis":
        doc.setdefault("grid", {})
        doc["grid"] = {draw(st.sampled_from(KEYS)): draw(st.one_of(values, st.lists(scalars, max_size=3)))}
    elif kind == "seeds":
        doc["seeds"] = draw(st.one_of(values, st.lists(st.integers(-2, 3), max_size=4)))
    elif kind == "scales":
        doc["scales"] = draw(st.one_of(values, st.fixed_dictionaries({draw(st.sampled_from(
            ["smoke", "micro", "huge"])): st.one_of(st.none(), values)})))
    elif kind == "grid-op":
        op = draw(st.sampled_from(["zip", "chain", "product"]))
        doc["grid"] = {op: draw(st.one_of(values, st.lists(st.dictionaries(st.sampled_from(sorted(AXES)),
                                                                             st.lists(scalars, max_size=3),
                                                                             max_size=2), max_size=3)))}
    else:
        doc["base"] = draw(st.one_of(values, st.fixed_dictionaries({}, optional={
            "model": st.dictionaries(st.sampled_from(["name", "pos_embed", "pool", "x"]),
                                     st.sampled_from(["ViT-nano/4", "BiT-nano", "none", "cls", "gap", 3, None]),
                                     max_size=3),
            "pretrain": st.dictionaries(st.sampled_from(["steps", "size", "lr", "batch_size"]),
                                        st.one_of(st.integers(-3, 50), st.floats(-1, 1), st.text(max_size=3)),
                                        max_size=3)})))
    return kind


@st.composite
def experiments(draw: st.DrawFn) -> tuple[dict, dict[str, list] | None, list[int] | None]:
    """(doc, axes, seeds); axes is None when the doc was perturbed (its plan is not known)."""
    doc, axes, seeds = draw(valid_experiments())
    n = draw(st.sampled_from([0, 0, 1, 1, 2]))  # ~40 % stay as drawn
    for _ in range(n):
        _mutate(draw, doc)
    return doc, (axes if n == 0 else None), seeds


def _get(cfg: dict, key: str) -> object:
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _check_plan(doc: dict, axes: dict[str, list], seeds: list[int] | None, out: str) -> None:
    """A valid file's plan holds exactly one run per (grid point, seed), each with its values."""
    rows = json.loads(out)
    seeds = seeds or [0]
    want = {(tuple(repr(v) for v in combo), s)
            for combo in itertools.product(*axes.values()) for s in seeds}
    got = {(tuple(repr(_get(r["config"], k)) for k in axes), r["config"]["seed"]) for r in rows}
    assert len(rows) == len(want) == len(got), (doc, len(rows), len(want))
    assert got == want, doc
    ids = [r["run_id"] for r in rows]
    assert len(set(ids)) == len(ids) and all(isinstance(i, str) and i for i in ids)
    assert all(r["state"] == "new" for r in rows)


def _run(f: Path, results: Path, capsys, *extra: str, dry: bool = True) -> tuple[int, str, str]:  # noqa: ANN001
    code = main(["run", str(f), "--scale", "smoke", "--cluster", "slurm", "--results", str(results),
                 *(["--dry-run"] if dry else []), *extra])
    cap = capsys.readouterr()
    assert code in (0, 2), (code, cap.err)
    if code == 2:
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1 and cap.err.startswith("vitbench: error: "), cap.err
    else:
        assert cap.err == "", cap.err
    assert not results.exists()  # a dry run writes nothing, valid or not
    if code == 2 and dry:
        # Refused without --dry-run too, before anything is written or submitted (without --dry-run
        # a file that passes would be submitted: this is the check that "nothing is written" means).
        assert _run(f, results, capsys, dry=False)[0] == 2
    return code, cap.out, cap.err


def test_any_experiment_file_plans_or_fails_cleanly(tmp_path_factory, capsys) -> None:  # noqa: ANN001
    outcomes: Counter[str] = Counter()

    @settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(drawn=experiments())
    def check(drawn: tuple) -> None:
        doc, axes, seeds = drawn
        d = tmp_path_factory.mktemp("prop")
        f = d / "exp.yaml"
        f.write_text(yaml.safe_dump(doc))
        code, out, err = _run(f, d / "results", capsys, "--json")
        if axes is not None:  # drawn valid and left alone: it must plan, and plan exactly this
            assert code == 0, (doc, err)
            _check_plan(doc, axes, seeds, out)
        elif code == 0:
            rows = json.loads(out)
            assert rows and len({r["run_id"] for r in rows}) == len(rows)
        outcome = "valid plan" if code == 0 else "one-line error"
        event(outcome)
        outcomes[outcome] += 1

    check()
    total = sum(outcomes.values())
    # The valid branch must really run: at least 30 % of the files plan (measured: 58 % of 300).
    assert outcomes["valid plan"] >= 0.3 * total, outcomes
    assert outcomes["one-line error"] >= 0.2 * total, outcomes


# --- raw YAML text built from fragments: structure, tags, aliases, encodings, bytes ------------
SCALAR_TEXT = [
    "cls", "gap", "0", "1", "-1", "3", "1e-3", "0.5", ".inf", ".nan", "~", "null", "yes", "no", "on", "true",
    "2020-01-01", "2020-13-45", "2001-12-14t21:59:43.10-05:00", "0x1F", "0o17", "017", "0b101", "1:2:3",
    "190:20:30.15", "=", "<<", "9" * 70, "9" * 25, '"quoted"', "'single'", '"\\0 nul"', '"\\ud800"',
    '"\\x00"', "ViT-micro/4", "learned_1d", "!!binary aGVsbG8=", "!!binary ###", "!!int 0x", "!!float abc",
    "!!timestamp 2020-02-30", "!foo bar", "!!python/name:os.system", "!!python/object/apply:os.system [true]",
    "!!set {a, b}", "!!omap [a: 1, b: 2]", "!!pairs [a: 1]", "!!str 3", "!!null ''", "*a", "*b", "*zz",
    "&a cls", "&b [1, 2]", "|\n  literal\n", ">-\n  folded\n", "[]", "{}", "[cls, gap]", "{smoke: {}}",
    "{model.pool: [cls, gap]}", "{model: {pool: gap}}", "[0, 1]", "{product: [{model.pool: [cls]}]}",
    "{zip: {model.pool: [cls, gap], pretrain.lr: [0.1]}}", "{chain: []}",
]
KEY_TEXT = [
    "base", "grid", "seeds", "scales", "smoke", "micro", "model", "pool", "model.pool", "pretrain", "lr",
    "steps", "exclude", "extends", "report", "recipes", "description", "default_scale", "product", "zip",
    "chain", "1", "~", "yes", "off", "2020-01-01", "1.5", '"base"', "'grid'", "<<", "=", "*a", "&k base",
    "!!python/name:os.system", "!foo base", "? [a, b]", "? {a: 1}", "? !!set {a}", '"\\0"', "é", "∞",
]
PROPS = ["", "", "", "", "&a ", "&b ", "!!map ", "!!seq ", "!!str ", "!foo ", "!!set ", "!!omap ",
         "!!python/object:os.system "]

leaf = st.tuples(st.just("s"), st.sampled_from(SCALAR_TEXT))
keys = st.sampled_from(KEY_TEXT)


def _collections(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(st.sampled_from(["fseq", "bseq", "fmap", "bmap"]), st.sampled_from(PROPS),
                     st.lists(st.tuples(keys, children), max_size=4))


trees = st.recursive(leaf, _collections, max_leaves=16)


def _render(node: tuple, indent: int, flow: bool) -> str:
    """YAML text of ``node`` at a value position (after ``key:`` or ``- ``)."""
    if node[0] == "s":
        return " " + node[1]
    kind, props, items = node
    if flow or kind in ("fseq", "fmap") or not items:
        if kind.endswith("seq"):
            body = ", ".join(_render(v, indent, True).strip() for _, v in items)
            return f" {props}[{body}]"
        body = ", ".join(f"{k}:{_render(v, indent, True)}" for k, v in items)
        return f" {props}{{{body}}}"
    pad = " " * (indent + 2)
    if kind == "bseq":
        lines = [f"{pad}-{_render(v, indent + 2, False)}" for _, v in items]
    else:
        lines = [f"{pad}{k}:{_render(v, indent + 2, False)}" for k, v in items]
    return f" {props}".rstrip() + "\n" + "\n".join(lines)


def _laughs(levels: int) -> str:
    out = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    out += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(out)


# Whole top-level entries that are valid (flow and block styles, explicit tags, anchors, aliases and
# merge keys), keyed by their top-level key so that a document holds each at most once.
GOOD_LINES = {
    "grid": ["grid: {model.pool: [cls, gap]}", "grid:\n  model.pool: [cls, gap]\n  pretrain.lr: [1e-3, 3e-3]",
             "grid: {product: [&ax {model.pool: [cls, gap]}, {pretrain.steps: [40, 50]}]}",
             '"grid": {"zip": {"model.pool": ["cls", "gap"], "pretrain.lr": [0.001, !!float 3e-3]}}',
             "grid:\n  chain:\n    - {model.pool: [cls]}\n    - {model.pos_embed: [none]}"],
    "seeds": ["seeds: [0, 1]", "seeds:\n  - 0\n  - 7", "seeds: !!seq [3]", "seeds: 5"],
    "base": ["base: {model: {pool: gap}}", "base:\n  model: &m {pool: gap}\n  pretrain: {lr: 0.002, steps: 50}",
             "base: {<<: {model: {pool: gap}}}", "base: !!map {pretrain: {batch_size: 64}}", "base:", "base: {}"],
    "description": ["description: !!str 2020-01-01", "description: 'Table 8: a, b'",
                    "description: >-\n  folded\n  text", 'description: "caf\\u00e9 \\u221e"'],
    "scales": ["scales: {smoke: &sm {}, micro: *sm}", "scales:\n  smoke:\n    seeds: [1, 2]", "scales: {smoke: }"],
}


@st.composite
def yaml_documents(draw: st.DrawFn) -> bytes:
    good = draw(st.lists(st.sampled_from(sorted(GOOD_LINES)), unique=True, max_size=4))
    lines = [draw(st.sampled_from(GOOD_LINES[k])) for k in good]
    if draw(st.sampled_from([True, True, True, False])) and "scales" not in good:
        lines.append("scales: {smoke: {}}")  # so that a fair share of documents are valid experiments
    n_hostile = draw(st.sampled_from([0, 0, 1, 2, 3]))
    for key, value in draw(st.lists(st.tuples(keys, trees), min_size=n_hostile, max_size=n_hostile)):
        lines.insert(draw(st.integers(0, len(lines))), f"{key}:{_render(value, 0, False)}")
    extra = draw(st.sampled_from(["", "", "", "", "", "deep", "laughs", "docs", "directive", "comment", "tab"]))
    if extra == "deep":
        n = draw(st.integers(1, 2000))
        lines.append(f"grid: {'[' * n}{']' * n}" if draw(st.booleans()) else
                     "base:\n" + "\n".join(" " * (2 * i) + f"  k{i}:" for i in range(min(n, 300))))
    elif extra == "laughs":
        lines.append(_laughs(draw(st.integers(1, 9))))
    elif extra == "docs":
        lines = ["---", *lines, "---", draw(st.sampled_from(["base: {}", "", "...", "[1, 2]"]))]
    elif extra == "directive":
        lines = [draw(st.sampled_from(["%YAML 1.2", "%YAML 1.1", "%TAG ! tag:evil.com,2000:", "%FOO"])), "---",
                 *lines]
    elif extra == "comment":
        lines.append("# " + draw(st.text(max_size=20)))
    elif extra == "tab":
        lines.append("\tbase: {}")
    text = "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))
    encoding = draw(st.sampled_from(["utf-8"] * 8 + ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                                                     "latin-1", "cp1252"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.sampled_from([False] * 7 + [True])):  # random bytes somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data


def test_any_yaml_text_plans_or_fails_cleanly(tmp_path_factory, capsys) -> None:  # noqa: ANN001
    outcomes: Counter[str] = Counter()

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=yaml_documents())
    def check(data: bytes) -> None:
        d = tmp_path_factory.mktemp("yml")
        f = d / "exp.yaml"
        f.write_bytes(data)
        code, out, err = _run(f, d / "results", capsys)
        if code == 2:
            assert err.startswith(f"vitbench: error: {f}: ")  # names the file
        else:
            assert f"{f} @ smoke: " in out and " runs" in out
        outcome = "valid plan" if code == 0 else "one-line error"
        event(outcome)
        outcomes[outcome] += 1

    check()
    assert outcomes["valid plan"] >= 0.05 * sum(outcomes.values()), outcomes  # valid documents are reached (~20 %)


@settings(max_examples=300, deadline=None)
@given(text=st.text(string.printable + "é∞", max_size=40))
def test_any_override_parses_or_raises_user_error(text: str) -> None:
    try:
        key, _ = parse_override(text)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert key in text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=st.text(string.printable, max_size=15))
def test_any_set_flag_on_a_real_experiment(key: str, value: str, tmp_path_factory, capsys) -> None:  # noqa: ANN001
    results = tmp_path_factory.mktemp("r") / "results"
    code = main(["run", "ablations/pos_embed.yaml", "--scale", "smoke", "--dry-run", "--results", str(results),
                 "--set", f"{key}={value}"])
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
    assert not Path(results).exists()
