"""The metric names of a record (one home): what a finished record's ``summary`` holds, and what a run
config will produce, so that ``report:`` metrics are checked when the plan is made."""

from __future__ import annotations

import math
from typing import Any

from vitbench.errors import UserError

from vitbench.record.result import COLUMNS

RECORD_COLUMNS = tuple(COLUMNS)  # per-run numbers besides the summary metrics (record/result.py)


def summary_metrics(record: dict[str, Any]) -> dict[str, float | None]:
    """Flat name → value view of a record, what tables and comparisons read."""
    out: dict[str, float | None] = {}
    if "top1" in record.get("pretrain", {}):
        out["pretrain/top1"] = record["pretrain"]["top1"]
    for ds, shots in (record.get("fewshot") or {}).items():
        for k, v in shots.items():
            out[f"fewshot/{ds}/{k}shot"] = v["mean"]
            if "dev_mean" in v:
                out[f"fewshot/{ds}/{k}shot/dev"] = v["dev_mean"]
    ft = record.get("finetune")
    if ft:
        out[f"finetune/{ft['dataset']}/top1"] = ft["test_top1"]
        out[f"finetune/{ft['dataset']}/top1/dev"] = ft["dev_top1"]
    for k, v in list(out.items()):
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
    return out


def planned_metrics(cfg: dict[str, Any]) -> set[str]:
    """The metric names a run of this config records (summary_metrics' names, and the Figure 9 curve)."""
    from vitbench.spec.budget import evaluation_only

    # a pretraining top-1 needs a supervised head: not for a published model as it is, nor a self-supervised one
    supervised = cfg["pretrain"].get("objective", "supervised") == "supervised"
    out = {"pretrain/top1"} if supervised and not evaluation_only(cfg) else set()
    fs, ft = cfg["eval"]["fewshot"], cfg["eval"]["finetune"]
    for ds in fs.get("datasets") or []:
        for k in fs.get("shots") or []:
            out |= {f"fewshot/{ds}/{k}shot", f"fewshot/{ds}/{k}shot/dev"}
            if fs.get("every"):
                out.add(f"fewshot_curve/{ds}/{k}shot")
    if ft.get("dataset") and ft.get("lrs"):
        out |= {f"finetune/{ft['dataset']}/top1", f"finetune/{ft['dataset']}/top1/dev"}
    return out


def check_metric(configs: list[dict[str, Any]], metric: str, *, file: str, key: str,
                 columns: bool = True) -> None:
    """UserError (one line) unless some run of the plan records ``metric``."""
    known = set().union(*(planned_metrics(c) for c in configs)) | (set(RECORD_COLUMNS) if columns else set())
    if metric not in known:
        shown = sorted(known)
        raise UserError(f"{metric!r} is recorded by no run of this plan at this scale; recorded: "
                        f"{', '.join(shown[:24])}{' …' if len(shown) > 24 else ''}", file=file, key=key)
