"""Run records → one pandas DataFrame: a row per planned run, whatever its state.

Only ``result.json`` files feed numbers. A planned run without a record is a row with state
``missing``, a diverged run keeps its state and NaN metrics — tables show
both as such, never as numbers.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vitbench.plan.planner import Plan
from vitbench.record.result import read_result, record_row
from vitbench.record.rundir import RESULT, run_dir
from vitbench.spec.schema import get_path


def load_frame(plan: Plan, results: str | Path) -> pd.DataFrame:
    """One row per planned run: run_id, seed, the varying keys, state and every metric."""
    rows = []
    for run in plan.runs:
        rec = read_result(run_dir(results, run.run_id) / RESULT)
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
