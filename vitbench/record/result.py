"""The result record (``result.json``): what makes a file a record, the one reader, and the flat row the
aggregation reads. The writer is ``RunDir.write_result`` (the file's schema version, run id and time around
the fields ``train/run.py`` assembles); everything that reads a record goes through here."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

STATUSES = ("done", "diverged")  # what a finished run records; anything else in result.json is not a record


class NotARecord(ValueError):
    """Valid JSON, but not a result record."""


def parse_result(text: str | bytes) -> dict[str, Any]:
    """The record in ``text``; ValueError when it is not JSON, NotARecord when it is JSON of another shape."""
    rec = json.loads(text)
    if not isinstance(rec, dict):
        raise NotARecord(f"a JSON {type(rec).__name__}, not an object")
    if rec.get("status") not in STATUSES:
        raise NotARecord(f"status must be {' or '.join(STATUSES)}, got {rec.get('status')!r}")
    return rec


def read_result(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record at ``path``, or None when there is none: missing, torn, foreign or without a valid status."""
    try:
        with open(path, "rb") as fh:
            return parse_result(fh.read())
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def _section(rec: dict[str, Any], name: str) -> dict[str, Any]:
    value = rec.get(name)
    return value if isinstance(value, dict) else {}


def _exaflops(rec: dict[str, Any]) -> float:
    flops = _section(rec, "pretrain").get("train_flops")
    return flops / 1e18 if flops is not None else float("nan")


# Per-run numbers tables, plots and claims may read besides the summary metrics, and where each comes from.
COLUMNS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "params": lambda rec: _section(rec, "model").get("params"),
    "flops_per_image": lambda rec: _section(rec, "model").get("flops_per_image"),
    "train_flops": lambda rec: _section(rec, "pretrain").get("train_flops"),
    "exaflops": _exaflops,
    "diverged_at": lambda rec: _section(rec, "pretrain").get("diverged_at"),
    "finetune_best_lr": lambda rec: _section(rec, "finetune").get("best_lr"),
}


def record_row(rec: dict[str, Any] | None) -> dict[str, Any]:
    """The flat numbers of one record (state, summary metrics, COLUMNS, the few-shot curve)."""
    if rec is None:
        return {"state": "missing"}
    row: dict[str, Any] = {"state": "diverged" if rec.get("status") == "diverged" else "done"}
    for key, value in (rec.get("summary") or {}).items():
        row[key] = float("nan") if value is None else float(value)
    row.update({name: get(rec) for name, get in COLUMNS.items()})
    row["fewshot_curve"] = rec.get("fewshot_curve")  # {dataset: [{step, epoch, "<k>": acc}]}: the curve plots
    return row


def converged(rec: dict[str, Any] | None) -> dict[str, bool | None]:
    """{phase: converged} of the record's convergence checks (None: not measured or no record); the
    fine-tuning's is that of its picked learning rate. A run with no pretraining phase (a published model as
    it is, ``pretrain.objective: none``) has nothing there to stop short: its pretraining counts as converged."""
    rec = rec or {}
    pre = _section(rec, "pretrain")
    check = pre.get("convergence")
    flags = {"pretrain": True if pre.get("steps") == 0 and rec.get("status") == "done" else
             check.get("converged") if isinstance(check, dict) else None,
             "finetune": _section(rec, "finetune").get("converged")}
    return {k: v if isinstance(v, bool) else None for k, v in flags.items()}
