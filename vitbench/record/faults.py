"""Fault-injection points for the reliability tests.

``VITBENCH_TEST_STEP_DELAY_S=<seconds>`` sleeps after every pretraining step, so an integration test
that requeues, cancels or preempts a run knows it is still training (a lower bound on its length,
not a hope about the CPU's speed).

``VITBENCH_FAULT=<point>`` kills the process with SIGKILL when it reaches that point, exactly
as a node dying there would: no cleanup, no exception handlers, no flushed buffers. Points:
``before_result`` (training and evaluation done, the final record not yet written);
``after_fewshot_probe@<step>`` (the few-shot probe at that pretraining step written to
metrics.jsonl, that step's checkpoint not yet); ``after_checkpoint@<step>`` (that pretraining
checkpoint saved and logged, the next step not begun: a kill mid-run at a known step, on any CPU);
``after_finetune@<lr>`` (fine-tuning at that learning rate, e.g. ``0.01``, written to progress.json, the
next one not begun: evaluation resumes from a partial progress.json).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable

ENV = "VITBENCH_FAULT"
DELAY_ENV = "VITBENCH_TEST_STEP_DELAY_S"  # tests only: a run outlasts the test's signal on any CPU


def fault_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def with_step_delay(on_step: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """``on_step`` followed by the test-only per-step sleep; ``on_step`` itself when none is set."""
    delay = float(os.environ.get(DELAY_ENV) or 0)
    if delay <= 0:
        return on_step

    def step(done: int) -> None:
        if on_step is not None:
            on_step(done)
        time.sleep(delay)
    return step
