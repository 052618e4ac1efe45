"""Core-seconds per run, from run records: where a suite's compute goes, split by phase.

Each record's ``timing`` (vitbench/train/timing.py) holds the CPU seconds of its last process per
phase: start-up (interpreter, imports), setup (data, model), pretraining, evaluation (pretraining
top-1, few-shot, the fine-tuning sweep). Records made before ``timing`` existed carry only their
wall time, which for one-thread runs is the core-seconds too; they are shown as "total only".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitbench.record.rundir import read_json

PHASES = ("startup", "setup", "pretrain", "evaluate")


def load(results: Path) -> list[dict[str, Any]]:
    """One row per result.json under RESULTS/runs: model, phases (core-seconds), total."""
    rows = []
    for f in sorted((results / "runs").glob("*/result.json")):
        rec = read_json(f)
        if not isinstance(rec, dict):
            continue
        cpu = (rec.get("timing") or {}).get("cpu_s")
        total = sum(cpu.values()) if cpu else rec.get("wall_s")
        rows.append({"model": rec.get("model", {}).get("name"), "phases": cpu, "total": total,
                     "steps": rec.get("pretrain", {}).get("steps_done")})
    return rows


def summarise(label: str, results: Path) -> dict[str, Any]:
    rows = load(results)
    by_model: dict[str, dict[str, Any]] = {}
    for r in rows:
        m = by_model.setdefault(r["model"], {"runs": 0, "total": 0.0, **{p: 0.0 for p in PHASES}, "split": True})
        m["runs"] += 1
        m["total"] += r["total"] or 0.0
        if r["phases"]:
            for p in PHASES:
                m[p] += r["phases"].get(p, 0.0)
        else:
            m["split"] = False
    for m in by_model.values():
        for k in ("total", *PHASES):
            m[k] = round(m[k] / m["runs"], 2)
    return {"label": label, "results": str(results), "runs": len(rows),
            "core_minutes": round(sum(r["total"] or 0.0 for r in rows) / 60, 1), "per_model": by_model}


def table(summaries: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    out = []
    for s in summaries:
        rows = [[model, m["runs"], *((m[p] for p in PHASES) if m["split"] else ["", "", "", "(total only)"]),
                 m["total"]] for model, m in sorted(s["per_model"].items())]
        out.append(f"{s['label']}: {s['runs']} runs, {s['core_minutes']} core-minutes ({s['results']})\n"
                   + tabulate(rows, headers=["model", "runs", *(f"{p} s" for p in PHASES), "total s / run"],
                              tablefmt="github"))
    return "\n\n".join(out)
