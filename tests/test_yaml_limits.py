"""YAML never crashes the loader: one deterministic test per limit and per hostile input.

Whatever an experiment file (or run config, profile, compare variant: they all go through
vitbench.spec.runconfig.read_yaml) holds, the result is a valid experiment or ONE line
``vitbench: error: FILE: ...`` with exit code 2 — quickly, and with nothing run or written.
"""

from __future__ import annotations

import codecs
import json
import os
import time
from pathlib import Path

import pytest

from vitbench.cli import main
from vitbench.errors import UserError
from vitbench.plan import planner
from vitbench.spec import grid, yamlio
from vitbench.spec.experiment import MAX_EXTENDS_DEPTH, MAX_EXTENDS_FILES
from vitbench.spec.runconfig import read_yaml

VALID = "scales: {smoke: {}}\ngrid: {model.pool: [cls, gap]}\n"


def _run(path: Path | str, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    results = tmp_path / "results"
    code = main(["run", str(path), "--scale", "smoke", "--cluster", "slurm", "--dry-run", "--results", str(results),
                 *extra])
    cap = capsys.readouterr()
    assert not results.exists()
    return code, cap.out, cap.err


def _refused(path: Path | str, tmp_path: Path, capsys: pytest.CaptureFixture[str], match: str,
             *extra: str, named: Path | str | None = None) -> str:
    code, _, err = _run(path, tmp_path, capsys, *extra)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("vitbench: error: "), err
    assert f"vitbench: error: {named or path}: " in lines[0], lines[0]  # names the file first
    assert match in lines[0], lines[0]
    return lines[0]


def _write(tmp_path: Path, text: str | bytes, name: str = "exp.yaml") -> Path:
    f = tmp_path / name
    f.write_bytes(text.encode() if isinstance(text, str) else text)
    return f


def _laughs(levels: int) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "scales: {smoke: {}}\n" + "\n".join(lines) + "\n"


def test_limits_are_documented_constants() -> None:
    assert yamlio.MAX_FILE_BYTES == 1 << 20
    assert yamlio.MAX_DEPTH == 32
    assert yamlio.MAX_NODES == 100_000
    assert grid.MAX_POINTS == planner.MAX_RUNS_LIMIT == 100_000
    assert planner.DEFAULT_MAX_RUNS == 5000
    # the repository's own YAML is far inside every limit
    root = Path(__file__).resolve().parents[1]
    for d in ("experiments", "ablations", "slurm/profiles", "tests/malformed"):
        for f in (root / d).rglob("*.yaml"):
            assert f.stat().st_size < yamlio.MAX_FILE_BYTES // 100, f


def test_repository_yaml_still_loads() -> None:
    root = Path(__file__).resolve().parents[1]
    for d in ("experiments", "ablations", "slurm/profiles"):
        for f in (root / d).rglob("*.yaml"):
            assert isinstance(read_yaml(f), dict), f


# --- size, depth, aliases ---------------------------------------------------------------------
def test_billion_laughs_is_refused_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, _laughs(10))  # 10^10 values once expanded
    t = time.perf_counter()
    with pytest.raises(UserError, match="once aliases are expanded"):
        read_yaml(f)
    assert time.perf_counter() - t < 1.0
    line = _refused(f, tmp_path, capsys, f"more than {yamlio.MAX_NODES} values once aliases are expanded")
    assert "line 6" in line  # the first node past the limit: l5 = 10^6 values


def test_aliases_within_the_limit_load_unshared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yamlio.loads("a: &a {x: [1, 2]}\nb: *a\nc: {<<: *a, y: 3}\n")
    assert data == {"a": {"x": [1, 2]}, "b": {"x": [1, 2]}, "c": {"x": [1, 2], "y": 3}}
    data["a"]["x"].append(9)
    assert data["b"] == {"x": [1, 2]} and data["c"]["x"] == [1, 2]  # aliases are independent copies
    f = _write(tmp_path, "scales: {smoke: &s {seeds: [0, 1]}, micro: *s}\nbase: &b {model: {pool: gap}}\n")
    code, out, err = _run(f, tmp_path, capsys, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 2 and {r["config"]["model"]["pool"] for r in rows} == {"gap"}


def test_recursive_alias_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(_write(tmp_path, "base: &a {model: *a}\n"), tmp_path, capsys, "recursive alias")
    _refused(_write(tmp_path, "seeds: &s [1, *s]\n", "b.yaml"), tmp_path, capsys, "recursive alias")


def test_undefined_alias_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(_write(tmp_path, "base: *nowhere\n"), tmp_path, capsys, "undefined alias")


@pytest.mark.parametrize("style", ["flow-seq", "flow-map", "block"])
def test_deep_nesting_is_one_line(style: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = 10_000
    if style == "flow-seq":
        text = "base: " + "[" * n + "]" * n + "\n"
    elif style == "flow-map":
        text = "base: " + "{a: " * n + "1" + "}" * n + "\n"
    else:
        text = "base:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(200))
    f = _write(tmp_path, text)
    t = time.perf_counter()
    with pytest.raises(UserError, match="nested deeper"):
        read_yaml(f)  # no RecursionError
    assert time.perf_counter() - t < 1.0
    _refused(f, tmp_path, capsys, f"nested deeper than {yamlio.MAX_DEPTH} levels")


def test_depth_through_aliases_is_counted() -> None:
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 40)]
    with pytest.raises(yamlio.RefusedYAML, match="once aliases are expanded"):
        yamlio.loads("\n".join(lines))


def test_depth_at_the_limit_loads() -> None:
    depth = yamlio.MAX_DEPTH  # a scalar inside MAX_DEPTH - 1 lists
    value = yamlio.loads("[" * (depth - 1) + "1" + "]" * (depth - 1))
    for _ in range(depth - 1):
        value = value[0]
    assert value == 1
    with pytest.raises(yamlio.RefusedYAML):
        yamlio.loads("[" * depth + "1" + "]" * depth)


def test_too_many_values_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "seeds: [" + ", ".join(["1"] * (yamlio.MAX_NODES + 10)) + "]\n")
    _refused(f, tmp_path, capsys, f"more than {yamlio.MAX_NODES} values")


def test_huge_file_is_refused_without_reading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "big.yaml"
    with open(f, "wb") as fh:
        fh.write(b"scales: {smoke: {}}\n")
        fh.truncate(2 << 20)  # 2 MiB (sparse: NUL bytes that would also be refused if read)
    t = time.perf_counter()
    _refused(f, tmp_path, capsys, "is larger than 1024 KiB")
    assert time.perf_counter() - t < 0.5


def test_file_at_the_size_limit_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = VALID.encode()
    pad = yamlio.MAX_FILE_BYTES - len(head)
    f = _write(tmp_path, head + (b"#" * 1023 + b"\n") * (pad // 1024) + b"#" * (pad % 1024))
    assert f.stat().st_size == yamlio.MAX_FILE_BYTES
    code, _, err = _run(f, tmp_path, capsys)
    assert code == 0, err


# --- tags and types ---------------------------------------------------------------------------
def test_python_object_tags_run_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "PWNED"
    for i, tag in enumerate(["!!python/object/apply:os.system", "!!python/object/new:os.system",
                             "!!python/object:os.system", "!!python/name:os.system", "!!python/module:os"]):
        f = _write(tmp_path, f"scales: {{smoke: {{}}}}\nbase: {tag} [\"touch {marker}\"]\n", f"e{i}.yaml")
        _refused(f, tmp_path, capsys, f"the tag {tag} is not allowed")
    assert not marker.exists()


@pytest.mark.parametrize("value,match", [
    ("!foo 3", "the tag !foo is not allowed"),
    ("!<tag:evil.com,2000:x> 3", "the tag tag:evil.com,2000:x is not allowed"),
    ("!!binary aGVsbG8=", "binary data (!!binary) is not allowed"),
    ("2020-01-01", "a date/time (!!timestamp) is not allowed"),
    ("2001-12-14t21:59:43.10-05:00", "a date/time (!!timestamp)"),
    ("2020-13-45", "a date/time (!!timestamp)"),  # an impossible date: datetime would raise ValueError
    ("!!timestamp 2020-02-30", "a date/time (!!timestamp)"),
    ("!!set {a, b}", "a set (!!set) is not allowed"),
    ("!!omap [a: 1, b: 2]", "an ordered map (!!omap) is not allowed"),
    ("!!pairs [a: 1]", "a list of pairs (!!pairs)"),
    ("!!str [a]", "the tag !!str is not allowed"),
    ("!!int 0x", "cannot read !!int '0x'"),  # int('', 16): ValueError inside PyYAML
    ("!!float abc", "cannot read !!float 'abc'"),
    ("9" * 30, "out of range"),
    ("9" * 5000, "integer longer than 64 characters"),  # int() of it raises ValueError (4300 digits)
    (":".join(["59"] * 12), "out of range"),  # a YAML 1.1 base-60 integer
])
def test_unsupported_values_are_one_line(value: str, match: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused(_write(tmp_path, f"scales: {{smoke: {{}}}}\ndescription: {value}\n"), tmp_path, capsys, match)
    assert "at line 2, column 14" in line


def test_quoted_date_is_a_string(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, VALID + "description: '2020-01-01'\n")
    assert _run(f, tmp_path, capsys)[0] == 0


def test_yaml_12_floats_unchanged() -> None:
    assert yamlio.loads("lr: 1e-3") == {"lr": 0.001}
    assert yamlio.loads("a: [1.5e+2, .5, -.inf, 3]") == {"a": [150.0, 0.5, float("-inf"), 3]}
    assert yamlio.loads("") is None


@pytest.mark.parametrize("text,match", [
    ("1: 2", "mapping keys must be strings, got !!int '1'"),
    ("~: 2", "got !!null '~'"),
    ("null: 2", "got !!null"),
    ("yes: 2", "got !!bool 'yes'"),
    ("off: 2", "got !!bool 'off'"),
    ("1.5: 2", "got !!float"),
    ("2020-01-01: 2", "a date/time (!!timestamp) is not allowed"),
    ("? [a, b]\n: 2", "got a list"),  # unhashable: PyYAML's ConstructorError / TypeError before
    ("? {a: 1}\n: 2", "got a mapping"),
    ("base: {[1]: 2}", "got a list"),
    ("base: {model: {? !!set {a} : 1}}", "a set (!!set) is not allowed"),
    ("base: {model: {? {a: 1} : 1}}", "got a mapping"),
    ("base: {}\nbase: {}", "duplicate key 'base' (first at line 1)"),
])
def test_odd_keys_are_one_line(text: str, match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(_write(tmp_path, text + "\n"), tmp_path, capsys, match)


def test_quoted_keys_are_strings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, '"scales": {"smoke": {}}\n"grid": {"model.pool": ["cls"]}\n')
    assert _run(f, tmp_path, capsys)[0] == 0


def test_multiple_documents_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(_write(tmp_path, VALID + "---\n" + VALID), tmp_path, capsys, "expected a single document")
    f = _write(tmp_path, "---\n" + VALID + "...\n", "one.yaml")  # explicit markers around ONE document
    assert _run(f, tmp_path, capsys)[0] == 0


# --- encodings and bytes ----------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom"])
def test_bom_encodings_load(encoding: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = VALID + "description: café ∞\n"
    if encoding.endswith("-bom"):
        enc = encoding[:-4]
        data = (codecs.BOM_UTF16_LE if enc.endswith("le") else codecs.BOM_UTF16_BE) + text.encode(enc)
    else:
        data = text.encode(encoding)
    code, out, err = _run(_write(tmp_path, data), tmp_path, capsys, "--json")
    assert code == 0, err
    assert len(json.loads(out)) == 2


@pytest.mark.parametrize("data,match", [
    ("description: café\n".encode("latin-1"), "is not UTF-8 text: invalid continuation byte"),
    (b"description: \xed\xa0\x80\n", "is not UTF-8 text"),  # a lone surrogate, UTF-8 encoded
    (codecs.BOM_UTF16_LE + "description: ".encode("utf-16-le") + b"\x00\xd8" + "x\n".encode("utf-16-le"),
     "is not UTF-16 text"),  # a lone high surrogate in UTF-16
    (VALID.encode("utf-16-le"), "a NUL byte at byte 1 (line 1); UTF-16 needs a byte-order mark"),
    (VALID.encode("utf-32"), "is UTF-32 text"),
    (b"scales: {smoke: {}}\x00\n", "a NUL byte at byte 19"),
    (b"description: \x07bell\n", "unacceptable character #x0007"),
    (b"description: \x1b[31mred\n", "unacceptable character #x001b"),
    (b"\xff\xfe\xfd", "is not UTF-16 text"),
    (b"\x80\x81", "is not UTF-8 text: invalid start byte at byte 0 (line 1)"),
])
def test_bad_bytes_are_one_line(data: bytes, match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(_write(tmp_path, data), tmp_path, capsys, match)


def test_odd_extends_paths_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, 'scales: {smoke: {}}\nextends: "x\\0y"\n')  # a NUL byte, escaped in YAML
    _refused(f, tmp_path, capsys, "extends a file that does not exist: x\\x00y")
    f = _write(tmp_path, "scales: {smoke: {}}\nextends: " + "x" * 5000 + "\n", "long.yaml")
    _refused(f, tmp_path, capsys, "extends a path that cannot be read")


# --- paths that are not files -----------------------------------------------------------------
def test_directory_fifo_missing_and_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "dir.yaml"
    d.mkdir()
    _refused(d, tmp_path, capsys, "not a regular file (a directory)")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    t = time.perf_counter()
    _refused(fifo, tmp_path, capsys, "not a regular file (a FIFO)")  # and does not block opening it
    assert time.perf_counter() - t < 1.0
    _refused(tmp_path / "nowhere.yaml", tmp_path, capsys, "no such file")
    (tmp_path / "loop1.yaml").symlink_to(tmp_path / "loop2.yaml")
    (tmp_path / "loop2.yaml").symlink_to(tmp_path / "loop1.yaml")
    _refused(tmp_path / "loop1.yaml", tmp_path, capsys, "cannot read")
    _refused("exp\0.yaml", tmp_path, capsys, "cannot read: embedded null byte", named="exp\\x00.yaml")
    _refused("x" * 5000 + ".yaml", tmp_path, capsys, "cannot read")


def test_unreadable_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    f = _write(tmp_path, VALID)
    f.chmod(0)
    _refused(f, tmp_path, capsys, "cannot read: Permission denied")


# --- extends ----------------------------------------------------------------------------------
def test_extends_chain_too_deep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(MAX_EXTENDS_DEPTH + 5):
        _write(tmp_path, f"extends: e{i + 1}.yaml\n", f"e{i}.yaml")
    _write(tmp_path, VALID, f"e{MAX_EXTENDS_DEPTH + 5}.yaml")
    _refused(tmp_path / "e0.yaml", tmp_path, capsys, f"extends chain deeper than {MAX_EXTENDS_DEPTH} files",
             named=tmp_path / f"e{MAX_EXTENDS_DEPTH}.yaml")


def test_extends_diamond_is_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # each level extends the next ten times: 10^8 reads without a bound
    for i in range(8):
        _write(tmp_path, "extends: [" + ", ".join([f"d{i + 1}.yaml"] * 10) + "]\n", f"d{i}.yaml")
    _write(tmp_path, VALID, "d8.yaml")
    t = time.perf_counter()
    _refused(tmp_path / "d0.yaml", tmp_path, capsys, f"extends more than {MAX_EXTENDS_FILES} files",
             named=tmp_path / "d8.yaml")
    assert time.perf_counter() - t < 2.0


# --- the number of runs -----------------------------------------------------------------------
def _huge_grid(axes: int = 12) -> str:
    keys = ["pretrain.lr", "pretrain.steps", "pretrain.batch_size", "pretrain.weight_decay", "pretrain.b1",
            "pretrain.b2", "pretrain.warmup_steps", "pretrain.grad_clip", "pretrain.label_smoothing",
            "model.dropout", "model.drop_path", "eval.fewshot.l2"]
    return "\n".join(f"  {k}: [{', '.join(str(j + 1) for j in range(10))}]" for k in keys[:axes])


def test_grid_of_a_trillion_runs_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "scales: {smoke: {}}\ngrid:\n" + _huge_grid() + "\n")
    t = time.perf_counter()
    line = _refused(f, tmp_path, capsys, "grid: grid expands to 1000000000000 runs, more than the cap of 5000")
    assert time.perf_counter() - t < 1.0, line
    # --max-runs cannot lift it past the ceiling a plan may hold
    _refused(f, tmp_path, capsys, f"more than the limit of {planner.MAX_RUNS_LIMIT} runs", "--max-runs",
             str(10**13))


def test_huge_grid_in_a_scale_names_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = "\n".join("    " + line for line in _huge_grid().splitlines())
    f = _write(tmp_path, "scales:\n  smoke:\n    grid:\n" + body + "\n")
    _refused(f, tmp_path, capsys, "scales.smoke.grid: grid expands to 1000000000000 runs")


@pytest.mark.parametrize("spec,n", [
    ({"a": [1, 2], "b": [1, 2, 3]}, 6),
    ({"product": [{"a": [1, 2]}, {"b": [1, 2, 3]}]}, 6),
    ({"zip": {"a": [1, 2], "b": [3, 4]}}, 2),
    ({"chain": [{"a": [1, 2]}, {"b": [1, 2, 3]}]}, 5),
    ({"a": 3}, 1),
    ({}, 1),
    (None, 1),
])
def test_grid_count_matches_expand(spec: object, n: int) -> None:
    assert grid.count(spec) == n


def test_expand_refuses_before_expanding() -> None:
    spec = {"product": [{"pretrain.lr": list(range(1, 1001))}, {"pretrain.steps": list(range(1, 1001))}]}
    t = time.perf_counter()
    with pytest.raises(UserError, match="grid expands to 1000000 points, more than the limit of 100000"):
        grid.expand(spec)
    assert time.perf_counter() - t < 0.5
    # a zip of a huge part and a small one is counted by its largest part: nothing huge is built
    with pytest.raises(UserError, match="more than the limit"):
        grid.expand({"zip": [spec, {"pretrain.lr": [0.1]}]})


# --- every reader goes through the same limits -----------------------------------------------
def test_run_config_profile_and_set_flag_share_the_limits(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path, _laughs(9), "run.yaml")
    code = main(["run-one", str(cfg), "--run-dir", str(tmp_path / "rd")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "once aliases are expanded" in err, err
    assert not (tmp_path / "rd").exists()
    prof = _write(tmp_path, "partition: !!python/object/apply:os.system [true]\n", "site.yaml")
    exp = _write(tmp_path, VALID)
    _refused(exp, tmp_path, capsys, "refused at line 1, column 12: the tag !!python/object/apply:os.system",
             "--profile", str(prof), named=prof)
    code, _, err = _run(exp, tmp_path, capsys, "--set", "model.pool=" + "[" * 5000 + "]" * 5000)  # no RecursionError
    assert code == 2 and len(err.strip().splitlines()) == 1 and "model.pool: cannot read value" in err, err
