"""Where a run's time goes: wall and CPU (core-) seconds per phase of this process.

Core-seconds are ``time.process_time()`` (all threads of the process), so they mean the same on a
laptop and on a busy cluster node; ``startup`` is from the process start (interpreter, imports, job
set-up) to the run's first line. A resumed run reports the phases of its last process only.
"""

from __future__ import annotations

import os
import time
from typing import Any


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class Phases:
    """``mark(name)`` closes the phase that ran since the previous mark."""

    def __init__(self) -> None:
        age = process_age_s()
        self.wall: dict[str, float] = {"startup": round(age, 2)} if age is not None else {}
        self.cpu: dict[str, float] = {"startup": round(time.process_time(), 2)}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def mark(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall[name] = round(self.wall.get(name, 0.0) + wall - self._wall, 2)
        self.cpu[name] = round(self.cpu.get(name, 0.0) + cpu - self._cpu, 2)
        self._wall, self._cpu = wall, cpu

    def record(self) -> dict[str, Any]:
        return {"wall_s": dict(self.wall), "cpu_s": dict(self.cpu), "cpu_total_s": round(sum(self.cpu.values()), 2)}
