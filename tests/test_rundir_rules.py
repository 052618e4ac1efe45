"""``record.rundir``: what the records hold (tensor and numpy scalars, paths), what is refused and how
it is named, the error record's fields, a config that is not a mapping, and the log's last line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vitbench.record import rundir as rundir_mod
from vitbench.record.rundir import RunDir, atomic_write_json, atomic_write_text, read_json, run_dir, runs_root


def _rd(tmp_path: Path) -> RunDir:
    rd = RunDir(tmp_path / "run-1")
    rd.create({"seed": 0})
    return rd


# -- layout and atomic writes --------------------------------------------------------------------

def test_runs_live_under_results_runs_by_id(tmp_path: Path) -> None:
    """A run's directory is RESULTS/runs/<run_id>, for a str or a Path results dir."""
    assert runs_root(tmp_path) == tmp_path / "runs"
    assert runs_root(str(tmp_path)) == tmp_path / "runs"
    assert run_dir(str(tmp_path), "vit-abc123") == tmp_path / "runs" / "vit-abc123"


def test_a_record_can_be_written_where_no_directory_exists_yet(tmp_path: Path) -> None:
    """Writing a record creates the missing directories above it."""
    target = tmp_path / "results" / "runs" / "r1" / "progress.json"
    atomic_write_text(target, "{}\n")
    assert target.read_text() == "{}\n"


def test_a_record_on_another_filesystem_than_tmpdir_is_written(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The new version is staged beside its target, so the rename works on any filesystem, not only $TMPDIR's."""
    import os
    import tempfile

    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)) or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a writable /dev/shm on another filesystem than the test's temp dir")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # $TMPDIR on one filesystem ...
    target_dir = Path(tempfile.mkdtemp(dir=shm))  # ... the record on another
    try:
        atomic_write_text(target_dir / "result.json", "new\n")
        assert (target_dir / "result.json").read_text() == "new\n"
        assert [p.name for p in target_dir.iterdir()] == ["result.json"]
    finally:
        for p in target_dir.iterdir():
            p.unlink()
        target_dir.rmdir()


def test_a_write_killed_midway_leaves_the_old_record_and_a_hidden_temp(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """A kill before the rename keeps the old record whole; the only litter is a hidden .<name>.*.tmp file."""
    atomic_write_text(tmp_path / "result.json", "old\n")

    def killed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt  # stands in for SIGKILL at the rename

    monkeypatch.setattr(rundir_mod.os, "replace", killed)
    monkeypatch.setattr(rundir_mod.os, "unlink", lambda *a, **k: None)  # a killed process cleans nothing up
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(tmp_path / "result.json", "new\n")
    monkeypatch.undo()
    assert (tmp_path / "result.json").read_text() == "old\n"
    (litter,) = [p.name for p in tmp_path.iterdir() if p.name != "result.json"]
    assert litter.startswith(".result.json.") and litter.endswith(".tmp")


def test_a_failed_rename_is_raised_and_leaves_no_temp(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """If the rename fails, its OSError reaches the caller, the old record stays and the temp file is removed."""
    import errno

    atomic_write_text(tmp_path / "result.json", "old\n")

    def refused(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(rundir_mod.os, "replace", refused)
    with pytest.raises(OSError, match="Permission denied"):
        atomic_write_text(tmp_path / "result.json", "new\n")
    monkeypatch.undo()
    assert (tmp_path / "result.json").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


# -- byte-stable records ------------------------------------------------------------------------

COMMITTED = sorted((Path(__file__).resolve().parents[1] / "results" / "micro" / "reference" / "runs").glob("*/result.json"))


@pytest.mark.skipif(not COMMITTED, reason="no committed reference runs")
def test_rewriting_a_committed_record_reproduces_its_bytes(tmp_path: Path) -> None:
    """A committed result.json and config.yaml, read and written again, come out byte for byte the same."""
    from vitbench.record.rundir import dump_config

    for result in COMMITTED[:3]:
        rd = RunDir(tmp_path / result.parent.name)
        rd.create(RunDir(result.parent).read_config())
        assert rd.file("config.yaml").read_bytes() == result.with_name("config.yaml").read_bytes()
        atomic_write_json(rd.file("result.json"), read_json(result))
        assert rd.file("result.json").read_bytes() == result.read_bytes()
        assert dump_config(rd.read_config()) == result.with_name("config.yaml").read_text()


def test_records_do_not_depend_on_key_order(tmp_path: Path) -> None:
    """The same content built in different key orders writes identical JSON and YAML files."""
    a = {"b": 1, "a": {"d": [1, 2], "c": "x"}}
    b = {"a": {"c": "x", "d": [1, 2]}, "b": 1}
    atomic_write_json(tmp_path / "a.json", a)
    atomic_write_json(tmp_path / "b.json", b)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.json").read_text().index('"a"') < (tmp_path / "a.json").read_text().index('"b"')
    RunDir(tmp_path / "ra").create(a)
    RunDir(tmp_path / "rb").create(b)
    text = (tmp_path / "ra" / "config.yaml").read_text()
    assert text == (tmp_path / "rb" / "config.yaml").read_text()
    assert text == "a:\n  c: x\n  d:\n  - 1\n  - 2\nb: 1\n"  # block style, sorted keys


def test_metrics_lines_do_not_depend_on_field_order(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Two metrics logged with the same fields in different orders are the same line."""
    monkeypatch.setattr(rundir_mod.time, "time", lambda: 1700000000.0)
    rd = _rd(tmp_path)
    rd.metric("train", step=1, loss=2.0, lr=0.1)
    rd.metric("train", lr=0.1, loss=2.0, step=1)
    first, second = rd.file("metrics.jsonl").read_text().splitlines()
    assert first == second
    assert list(json.loads(first)) == sorted(json.loads(first))


def test_a_metric_carries_its_event_and_a_millisecond_timestamp(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Each metrics line holds the event name and the wall-clock time to the millisecond."""
    monkeypatch.setattr(rundir_mod.time, "time", lambda: 1700000000.123456)
    rd = _rd(tmp_path)
    rd.metric("eval", top1=0.5)
    assert rd.read_metrics() == [{"event": "eval", "time": 1700000000.123, "top1": 0.5}]


def test_a_torn_metrics_line_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    """A line torn by a killed writer is skipped; the lines after it are still read."""
    rd = _rd(tmp_path)
    rd.metric("train", step=1)
    with open(rd.file("metrics.jsonl"), "a") as fh:
        fh.write('{"event": "train", "st\n')
    rd.metric("train", step=2)
    assert [m["step"] for m in rd.read_metrics()] == [1, 2]


# -- run directory lifecycle ----------------------------------------------------------------------

def test_creating_an_existing_run_directory_again_is_fine(tmp_path: Path) -> None:
    """A resumed run creates its directory again: the config is rewritten, the rest is kept."""
    rd = _rd(tmp_path)
    rd.metric("train", step=1)
    rd.create({"seed": 1})
    assert rd.read_config() == {"seed": 1} and len(rd.read_metrics()) == 1


def test_log_lines_are_echoed_to_stdout(tmp_path, capsys) -> None:  # noqa: ANN001
    """Each log line goes to log.txt and, identically, to stdout (SLURM's log)."""
    rd = _rd(tmp_path)
    rd.log("resumed at step 4")
    out = capsys.readouterr().out
    assert out == rd.file("log.txt").read_text()
    assert out.startswith("[") and out.endswith("] resumed at step 4\n")


def test_the_stdout_echo_survives_an_abrupt_exit(tmp_path: Path) -> None:
    """The echo is flushed at once, so a process killed right after logging still has the line in SLURM's log."""
    import os
    import subprocess
    import sys

    code = ("import os, sys; from vitbench.record.rundir import RunDir; "
            "rd = RunDir(sys.argv[1]); rd.path.mkdir(); rd.log('about to die'); os._exit(0)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as in a job
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True,
                         timeout=60, env=env).stdout
    assert out.endswith("] about to die\n")


def test_result_record_carries_schema_run_id_and_finish_time(tmp_path: Path) -> None:
    """write_result adds the schema version, the run id and an aware UTC finish time to the caller's fields."""
    rd = _rd(tmp_path)
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    rd.write_result({"status": "done", "summary": {"m": 0.5}})
    rec = rd.read_result()
    assert set(rec) == {"schema", "run_id", "finished_at", "status", "summary"}
    assert (rec["schema"], rec["run_id"], rec["status"]) == (rundir_mod.RECORD_SCHEMA, "run-1", "done")
    when = dt.datetime.fromisoformat(rec["finished_at"])
    assert when.utcoffset() == dt.timedelta(0) and before <= when <= dt.datetime.now(dt.timezone.utc)


@pytest.mark.parametrize("text", ['{"summary": 1}', "[1, 2]", '"done"'])
def test_a_result_file_that_is_not_a_status_record_is_no_result(tmp_path: Path, text: str) -> None:
    """result.json that is not an object with a status is not a result: the run is not done."""
    rd = _rd(tmp_path)
    rd.metric("train", step=1)
    rd.file("result.json").write_text(text)
    assert rd.read_result() is None
    assert rd.local_state() == "incomplete"


@pytest.mark.parametrize("text", ["[1, 2]", '"boom"', "3"])
def test_an_error_file_that_is_not_an_object_is_no_error(tmp_path: Path, text: str) -> None:
    """error.json that is not a JSON object is not an error record: the run is not failed."""
    rd = _rd(tmp_path)
    rd.metric("train", step=1)
    rd.file("error.json").write_text(text)
    assert rd.read_error() is None
    assert rd.local_state() == "incomplete"


def test_progress_round_trips_and_defaults_to_empty(tmp_path: Path) -> None:
    """Progress written is progress read; no progress file, or one that is not an object, reads as {}."""
    rd = _rd(tmp_path)
    assert rd.read_progress() == {}
    rd.write_progress({"fewshot": {"digits/1/0": 0.5}})
    assert rd.read_progress() == {"fewshot": {"digits/1/0": 0.5}}
    assert read_json(rd.file("progress.json")) == {"fewshot": {"digits/1/0": 0.5}}
    rd.file("progress.json").write_text("[1, 2]")
    assert rd.read_progress() == {}


def test_clearing_an_error_makes_the_run_no_longer_failed(tmp_path: Path) -> None:
    """clear_error removes error.json (a retried run is not failed any more), and is harmless without one."""
    rd = _rd(tmp_path)
    rd.metric("train", step=1)
    rd.write_error("boom")
    rd.clear_error()
    assert rd.read_error() is None and not rd.file("error.json").exists()
    assert rd.local_state() == "incomplete"
    rd.clear_error()


# -- JSON records ---------------------------------------------------------------------------------

def test_tensor_and_numpy_scalars_are_written_as_numbers(tmp_path: Path) -> None:
    """A result holding torch / numpy scalars is recorded with their plain values."""
    rd = _rd(tmp_path)
    rd.write_result({"status": "done", "loss": torch.tensor(1.5), "acc": np.float32(0.25), "n": np.int64(7)})
    rec = rd.read_result()
    assert (rec["loss"], rec["acc"], rec["n"]) == (1.5, 0.25, 7)


def test_paths_are_written_as_strings(tmp_path: Path) -> None:
    """A Path in a record is stored as its string."""
    atomic_write_json(tmp_path / "x.json", {"data": tmp_path / "data" / "digits"})
    assert read_json(tmp_path / "x.json") == {"data": str(tmp_path / "data" / "digits")}


def test_other_objects_are_refused_by_type_name(tmp_path: Path) -> None:
    """An object that is not JSON is an error naming its type, and the old record stays."""

    class Widget:
        pass

    atomic_write_json(tmp_path / "x.json", {"a": 1})
    with pytest.raises(TypeError, match=r"^not JSON serialisable: Widget$"):
        atomic_write_json(tmp_path / "x.json", {"a": Widget()})
    assert read_json(tmp_path / "x.json") == {"a": 1}


def test_metrics_lines_hold_scalar_values(tmp_path: Path) -> None:
    """A metric logged with a tensor loss reads back as a number."""
    rd = _rd(tmp_path)
    rd.metric("train", step=3, loss=torch.tensor(0.5))
    (m,) = rd.read_metrics()
    assert (m["event"], m["step"], m["loss"]) == ("train", 3, 0.5)


def test_error_record_says_failed_with_reason_time_and_extras(tmp_path: Path) -> None:
    """error.json is a failed-status record with the reason, an aware UTC timestamp and any extra fields."""
    rd = _rd(tmp_path)
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    rd.write_error("CUDA out of memory", job_id="7_3")
    rec = rd.read_error()
    assert set(rec) == {"status", "reason", "time", "job_id"}
    assert (rec["status"], rec["reason"], rec["job_id"]) == ("failed", "CUDA out of memory", "7_3")
    when = dt.datetime.fromisoformat(rec["time"])
    assert when.utcoffset() == dt.timedelta(0)
    assert before <= when <= dt.datetime.now(dt.timezone.utc)


# -- config ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_a_config_that_is_not_a_mapping_is_none(tmp_path: Path, text: str) -> None:
    """config.yaml holding a list or a scalar is not a run config: read_config gives None."""
    rd = _rd(tmp_path)
    rd.file("config.yaml").write_text(text)
    assert rd.read_config() is None


def test_a_mapping_config_reads_back(tmp_path: Path) -> None:
    """The config written at creation is the one read back."""
    rd = RunDir(tmp_path / "r")
    rd.create({"seed": 3, "model": {"name": "ViT-nano/4"}})
    assert rd.read_config() == {"seed": 3, "model": {"name": "ViT-nano/4"}}


# -- the log's last line --------------------------------------------------------------------------

def test_last_log_line_is_the_newest_message(tmp_path: Path) -> None:
    """Of several logged messages the last one is returned, with its timestamp."""
    rd = _rd(tmp_path)
    for msg in ("resumed at step 4", "checkpoint step 8", "done"):
        rd.log(msg)
    last = rd.last_log_line()
    assert last is not None and last.startswith("[") and last.endswith("] done")


def test_last_log_line_of_a_single_line_log(tmp_path: Path) -> None:
    """A log of one line returns that line; trailing blank lines are ignored."""
    rd = _rd(tmp_path)
    rd.file("log.txt").write_bytes(b"only line\n\n  \n")
    assert rd.last_log_line() == "only line"


def test_last_log_line_survives_undecodable_bytes(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are replaced rather than failing the read."""
    rd = _rd(tmp_path)
    rd.file("log.txt").write_bytes(b"start\nbad \xff byte\n")
    assert rd.last_log_line() == "bad \ufffd byte"


@pytest.mark.parametrize("content", [None, b"", b"\n \n"])
def test_no_log_or_an_empty_log_has_no_last_line(tmp_path: Path, content: bytes | None) -> None:
    """Without log.txt, or with nothing but blanks in it, there is no last line (None)."""
    rd = _rd(tmp_path)
    if content is not None:
        rd.file("log.txt").write_bytes(content)
    assert rd.last_log_line() is None


def test_a_log_line_is_pushed_out_of_a_buffered_stdout_at_once(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The stdout echo is flushed by log() itself: a block-buffered stdout (SLURM's log file) holds the whole
    line as soon as log() returns, not only when the buffer fills or the process exits."""
    import io
    import sys

    rd = _rd(tmp_path)
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8"))  # buffered, no line buffering
    rd.log("checkpoint step 8")
    echoed = raw.getvalue().decode()
    monkeypatch.undo()
    assert echoed == rd.file("log.txt").read_text()
    assert echoed.startswith("[") and echoed.endswith("] checkpoint step 8\n")
