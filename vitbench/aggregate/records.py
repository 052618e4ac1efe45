"""Run records → one pandas DataFrame: a row per planned run, whatever its state.

Only ``result.json`` files feed numbers. A planned run without a record is a row with state
``missing`` (or its live state), a diverged run keeps its state and NaN metrics — tables show
both as such, never as numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from vitbench.plan.planner import Plan
from vitbench.record.rundir import RESULT, run_dir
from vitbench.spec.schema import get_path


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            rec = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "status" in rec else None


def record_row(rec: dict[str, Any] | None) -> dict[str, Any]:
    """The flat numbers of one record (summary metrics, compute, per-lr fine-tuning)."""
    if rec is None:
        return {"state": "missing"}
    row: dict[str, Any] = {"state": "diverged" if rec.get("status") == "diverged" else "done"}
    for key, value in (rec.get("summary") or {}).items():
        row[key] = float("nan") if value is None else float(value)
    model, pre = rec.get("model") or {}, rec.get("pretrain") or {}
    row["params"] = model.get("params")
    row["flops_per_image"] = model.get("flops_per_image")
    row["train_flops"] = pre.get("train_flops")
    row["exaflops"] = pre["train_flops"] / 1e18 if pre.get("train_flops") is not None else float("nan")
    row["diverged_at"] = pre.get("diverged_at")
    ft = rec.get("finetune") or {}
    row["finetune_best_lr"] = ft.get("best_lr")
    row["fewshot_curve"] = rec.get("fewshot_curve")  # {dataset: [{step, epoch, "<k>": acc}]}: the curve plots
    return row


def load_frame(plan: Plan, results: str | Path) -> pd.DataFrame:
    """One row per planned run: run_id, seed, the varying keys, state and every metric."""
    rows = []
    for run in plan.runs:
        rec = _read(run_dir(results, run.run_id) / RESULT)
        row = {"run_id": run.run_id, "seed": run.config["seed"]}
        for key in plan.varying:
            row[key] = get_path(run.config, key)
        row.update(record_row(rec))
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in frame.columns:
        if col.startswith(("fewshot/", "finetune/", "pretrain/")):
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame
