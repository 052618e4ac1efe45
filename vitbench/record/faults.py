"""Fault-injection points for the reliability tests.

``VITBENCH_FAULT=<point>`` kills the process with SIGKILL when it reaches that point, exactly
as a node dying there would: no cleanup, no exception handlers, no flushed buffers. Points:
``before_result`` (training and evaluation done, the final record not yet written);
``after_fewshot_probe@<step>`` (the few-shot probe at that pretraining step written to
metrics.jsonl, that step's checkpoint not yet).
"""

from __future__ import annotations

import os
import signal

ENV = "VITBENCH_FAULT"


def fault_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
