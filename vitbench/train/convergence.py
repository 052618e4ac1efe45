"""Has a phase converged? The logged training loss is flat over the last fifth of its steps.

Each logged loss is the mean over the steps since the previous log line (vitbench/train/loop.py; records
before 2026-12-02 17:40 UTC logged single-batch losses), and the test compares means again: the last
fifth of the logged points is split in two halves, and the drop from the first half's mean to the second's, relative to
the loss the phase started from, must be below ``TOLERANCE``. Relative to the start (not to the
current loss) so that a loss of 1e-4 falling to 3e-5 counts as flat: it came from ln(K).
"""

from __future__ import annotations

from typing import Any

TOLERANCE = 0.02  # a drop of 2 % of the initial loss over the last fifth still counts as flat
WINDOW = 0.2  # the last fifth of the phase's steps


def curve(metrics: list[dict[str, Any]], phase: str) -> list[tuple[int, float]]:
    """(step, loss) of one phase's train lines, the last line per step (a resumed run re-logs steps)."""
    by_step: dict[int, float] = {}
    for m in metrics:
        if m.get("event") == "train" and m.get("phase") == phase and m.get("loss") is not None:
            by_step[int(m["step"])] = float(m["loss"])
    return sorted(by_step.items())


def check(points: list[tuple[int, float]], total_steps: int) -> dict[str, Any]:
    """{converged, rel_drop, first_half, second_half, window, points}; converged None when unmeasurable."""
    out: dict[str, Any] = {"rule": f"drop over the last {WINDOW:.0%} of steps < {TOLERANCE:.0%} of the initial loss",
                           "converged": None, "rel_drop": None}
    start = total_steps * (1 - WINDOW)
    tail = [loss for step, loss in points if step > start]
    if not points or len(tail) < 4:
        out["reason"] = f"{len(tail)} logged losses in the last fifth (need 4)"
        return out
    half = len(tail) // 2
    first, second = sum(tail[:half]) / half, sum(tail[half:]) / (len(tail) - half)
    scale = max(points[0][1], 1e-12)
    rel = (first - second) / scale
    out.update(converged=bool(rel < TOLERANCE), rel_drop=round(rel, 5), first_half=round(first, 6),
               second_half=round(second, 6), initial=round(points[0][1], 6), window=[int(start), total_steps],
               points=len(tail))
    return out
