"""The paper's fine-tuning protocol: one run per learning rate, the rate picked on the held-out dev split."""

from __future__ import annotations

import math
from typing import Any


def summarise_finetune(dataset: str, per_lr: dict[str, Any]) -> dict[str, Any]:
    """Pick the learning rate on the dev split (never on test), report test at that lr."""
    ok = {lr: r for lr, r in per_lr.items()
          if r.get("status") == "ok" and r.get("dev_top1") is not None and math.isfinite(r["dev_top1"])}
    out: dict[str, Any] = {"dataset": dataset, "per_lr": per_lr, "best_lr": None, "dev_top1": None, "test_top1": None}
    if ok:
        # ties go to the smaller learning rate, deterministically
        best = max(sorted(ok, key=float), key=lambda lr: ok[lr]["dev_top1"])
        out.update(best_lr=float(best), dev_top1=ok[best]["dev_top1"], test_top1=ok[best]["test_top1"],
                   converged=(ok[best].get("convergence") or {}).get("converged"))
    return out
