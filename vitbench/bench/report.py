"""The benchmark record (JSON under ``results/bench/``) and its readable tables."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

SCHEMA = "vitbench.bench/1"
RECORD_KEYS = ("schema", "date", "command", "git", "versions", "machine", "peak", "settings", "models", "planning")
MODEL_KEYS = ("model", "img_size", "batch", "flops_per_image", "vitbench", "reference", "ratio", "ablations")
METHOD_KEYS = ("images_per_s", "images_per_s_repeats", "split_ms", "peak_memory_bytes", "mfu", "model_source")


def versions() -> dict[str, str | None]:
    import timm
    import torch
    import torchvision

    import vitbench

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "vitbench": getattr(vitbench, "__version__", None),
            "cuda": torch.version.cuda, "cudnn": (str(torch.backends.cudnn.version())
                                                  if torch.backends.cudnn.is_available() else None)}


def git_info(where: Path | None = None) -> dict[str, Any]:
    """Commit of the checkout vitbench runs from (None outside a git checkout) and whether it has edits."""
    where = where or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def now() -> _dt.datetime:
    return _dt.datetime.now().astimezone()


def record_path(out_dir: Path, device_tag: str, when: _dt.datetime) -> Path:
    tag = re.sub(r"[^A-Za-z0-9]+", "-", device_tag).strip("-").lower() or "device"
    path = out_dir / f"bench-{tag}-{when.strftime('%Y%m%d-%H%M%S')}.json"
    i = 1
    while path.exists():
        i += 1
        path = out_dir / f"bench-{tag}-{when.strftime('%Y%m%d-%H%M%S')}-{i}.json"
    return path


def write_record(record: dict[str, Any], out_dir: Path, device_tag: str, when: _dt.datetime) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = record_path(out_dir, device_tag, when)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
    return path


# ---- tables ------------------------------------------------------------------------------------------


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2 ** 20:.0f}"


def _split(s: dict[str, float]) -> str:
    return f"{s['data']:.1f}/{s['fwd_bwd']:.1f}/{s['optimizer']:.1f}"


def format_tables(record: dict[str, Any]) -> str:
    from tabulate import tabulate

    parts = []
    m = record["machine"]
    peak = record["peak"]
    parts.append(f"{m['device_name']} ({m['device']}, {m['torch_threads']} threads), peak "
                 f"{peak['dtype']} matmul {peak['flops_per_s'] / 1e9:.1f} GFLOP/s; load average "
                 f"{m.get('load_average_start')} -> {m.get('load_average_end')}")
    rows = []
    for r in record["models"]:
        vb, ref = r["vitbench"], r["reference"]
        rows.append([r["model"], r["img_size"], r["batch"], f"{vb['images_per_s']:.0f}",
                     f"{ref['images_per_s']:.0f} (w={ref['workers']})", f"{r['ratio']:.2f}x",
                     _split(vb["split_ms"]), _split(ref["split_ms"]),
                     f"{100 * vb['mfu']:.1f}/{100 * ref['mfu']:.1f}",
                     f"{_mib(vb['peak_memory_bytes'])}/{_mib(ref['peak_memory_bytes'])}"])
    parts.append(tabulate(rows, headers=["model", "px", "batch", "vitbench img/s", "reference img/s", "ratio",
                                         "vitbench ms data/fb/opt", "reference ms data/fb/opt", "MFU % vb/ref",
                                         "peak MiB vb/ref"], tablefmt="simple"))
    rows = []
    for r in record["models"]:
        for label, a in r["ablations"].items():
            if not isinstance(a, dict) or "images_per_s" not in a:
                continue
            extra = ""
            if "compile_s" in a:
                extra = f"compile {a['compile_s']:.0f} s, break-even {a.get('break_even_steps')} steps"
            rows.append([r["model"], label, f"{a['images_per_s']:.0f}",
                         "1.00x" if label == "default" else f"{a['speedup_vs_default']:.2f}x",
                         a.get("setup", extra)])
    if rows:
        parts.append(tabulate(rows, headers=["model", "vitbench variant", "img/s", "vs default", "note"],
                              tablefmt="simple"))
    plan = record.get("planning")
    if plan:
        rows = [[v["runs"], f"{v['seconds_first']:.3f}", f"{v['seconds_best']:.3f}"]
                for k, v in plan.items() if k.startswith("runs_")]
        parts.append(tabulate(rows, headers=["planned runs", "make_plan s (first)", "best s"], tablefmt="simple"))
    return "\n\n".join(parts)


def check_record(record: dict[str, Any]) -> list[str]:
    """Missing keys of a record (empty when well-formed); used by the tests."""
    missing = [k for k in RECORD_KEYS if k not in record]
    for i, r in enumerate(record.get("models", [])):
        missing += [f"models[{i}].{k}" for k in MODEL_KEYS if k not in r]
        for side in ("vitbench", "reference"):
            missing += [f"models[{i}].{side}.{k}" for k in METHOD_KEYS if k not in r.get(side, {})]
    return missing
