"""``record.rundir``: what the records hold (tensor and numpy scalars, paths), what is refused and how
it is named, the error record's fields, a config that is not a mapping, and the log's last line."""

from __future__ import annotations

import datetime as dt
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
