"""Helpers shared by the integration tests: the CLI as a subprocess, bounded waits, run probes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
# A run that a test requeues, cancels or preempts: 300 steps of at least 0.1 s each (the test-only step
# delay, vitbench/record/faults.py, which sbatch passes on to the job with the environment), so it is
# still training 30 s after it starts on any CPU, and no test waits for a long run and hopes.
LONG_STEPS = 300
LONG_ENV = {"VITBENCH_TEST_STEP_DELAY_S": "0.1"}


def vitbench(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "vitbench.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"vitbench {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def job_ids(results: Path) -> dict[str, str]:
    out = {}
    for f in (results / "runs").glob("*/job.json"):
        out[f.parent.name] = json.loads(f.read_text())["job_id"]
    return out


def checkpoint_steps(run: Path) -> list[int]:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(x)["step"] for x in lines if '"checkpoint"' in x]


def one_run_experiment(tmp_path: Path, name: str, seeds: list[int], steps: int) -> Path:
    exp = tmp_path / f"{name}.yaml"
    exp.write_text(
        f"extends: {REPO / 'experiments' / '_scales.yaml'}\n"
        f"seeds: {seeds}\n"
        "scales:\n  smoke:\n"
        f"    seeds: {seeds}\n"
        f"    base: {{pretrain: {{steps: {steps}, batch_size: 64}}, runtime: {{checkpoint_every: 10, log_every: 10}}}}\n")
    return exp
