"""The run directory: where one run keeps its config, log, checkpoints and final record.

Layout (``RESULTS/runs/<run_id>/``)::

    config.yaml      resolved run config (what the run id hashes; written before training)
    metrics.jsonl    one JSON object per line: {"event": ..., "step": ..., ...}; one writer per run
    log.txt          human-readable log (resume points, checkpoint fallbacks, errors)
    ckpt/last.pt     newest checkpoint; ckpt/prev.pt the one before (a corrupt last falls back)
    progress.json    evaluation results finished so far (few-shot, fine-tune per lr), for resume
    result.json      the final record, written atomically as the very last step: present = done
    error.json       written when the run fails: the reason and the last error line

A run directory is owned by one process at a time (SLURM runs one task per run id), so
``metrics.jsonl`` and ``log.txt`` are appended without locks; everything that other processes
read as a whole (result, progress, error, config) is written atomically (temp file + rename).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

import yaml

from vitbench.record.result import read_result

RESULT = "result.json"
ERROR = "error.json"
PROGRESS = "progress.json"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
LOG = "log.txt"
CKPT_DIR = "ckpt"
RECORD_SCHEMA = 1


def runs_root(results_dir: str | os.PathLike[str]) -> Path:
    return Path(results_dir) / "runs"


def run_dir(results_dir: str | os.PathLike[str], run_id: str) -> Path:
    return runs_root(results_dir) / run_id


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None], *,
                 before_replace: Callable[[], None] | None = None) -> None:
    """``write(fh)`` into a temporary ``.<name>.*.tmp`` beside ``path``, fsync, then rename it over ``path``:
    readers see the old file or the whole new one, never a torn one. ``before_replace`` runs just before
    the rename (checkpoints keep the old file as prev.pt there). On any failure the temporary file goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) atomically (``atomic_write``)."""
    atomic_write(path, lambda fh: fh.write(text.encode()))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """The parsed file, or None if it is missing or not valid JSON (a torn or foreign file)."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def dump_config(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=True, default_flow_style=False)


class RunDir:
    """Accessors for one run directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def ckpt_dir(self) -> Path:
        return self.path / CKPT_DIR

    def create(self, cfg: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.file(CONFIG), dump_config(cfg))

    def read_config(self) -> dict[str, Any] | None:
        try:
            with open(self.file(CONFIG)) as fh:
                cfg = yaml.safe_load(fh)
        except (FileNotFoundError, yaml.YAMLError):
            return None
        return cfg if isinstance(cfg, dict) else None

    # -- logs ---------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """Append one line to log.txt (and echo it, so SLURM's stdout log has it too)."""
        line = f"[{now_iso()}] {message}"
        print(line, flush=True)
        with open(self.file(LOG), "a") as fh:
            fh.write(line + "\n")

    def metric(self, event: str, **fields: Any) -> None:
        fields = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.file(METRICS), "a") as fh:
            fh.write(json.dumps(fields, sort_keys=True, default=_json_default) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        out = []
        try:
            with open(self.file(METRICS)) as fh:
                for line in fh:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue  # a line torn by a killed process: skip, the rest is intact
        except FileNotFoundError:
            pass
        return out

    def last_log_line(self) -> str | None:
        try:
            with open(self.file(LOG), "rb") as fh:
                lines = fh.read().decode(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return None
        return lines[-1] if lines else None

    # -- records ------------------------------------------------------------------------------
    def read_result(self) -> dict[str, Any] | None:
        return read_result(self.file(RESULT))

    def write_result(self, record: dict[str, Any]) -> None:
        record = {"schema": RECORD_SCHEMA, "run_id": self.run_id, "finished_at": now_iso(), **record}
        atomic_write_json(self.file(RESULT), record)
        try:
            os.unlink(self.file(ERROR))  # a success supersedes an earlier failure
        except FileNotFoundError:
            pass

    def read_error(self) -> dict[str, Any] | None:
        rec = read_json(self.file(ERROR))
        return rec if isinstance(rec, dict) else None

    def write_error(self, reason: str, **extra: Any) -> None:
        atomic_write_json(self.file(ERROR), {"status": "failed", "reason": reason, "time": now_iso(), **extra})

    def clear_error(self) -> None:
        try:
            os.unlink(self.file(ERROR))
        except FileNotFoundError:
            pass

    def read_progress(self) -> dict[str, Any]:
        rec = read_json(self.file(PROGRESS))
        return rec if isinstance(rec, dict) else {}

    def write_progress(self, progress: dict[str, Any]) -> None:
        atomic_write_json(self.file(PROGRESS), progress)

    def local_state(self) -> str:
        """State from the directory alone: done | diverged | failed | incomplete | new."""
        rec = self.read_result()
        if rec is not None:
            return "diverged" if rec.get("status") == "diverged" else "done"
        if self.read_error() is not None:
            return "failed"
        if self.path.exists() and (self.ckpt_dir.exists() or self.file(METRICS).exists()):
            return "incomplete"
        return "new"
