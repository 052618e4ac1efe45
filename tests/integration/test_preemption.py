"""Preemption on the real local cluster: SIGUSR2 → checkpoint at a step boundary → requeue →
resume. Three times in one run, and still exactly one result."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from slurm_helpers import LONG_ENV, LONG_STEPS, checkpoint_steps, job_ids, one_run_experiment, vitbench, wait_until

pytestmark = pytest.mark.slurm


def _squeue_state(jid: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", jid, "-o", "%T"], capture_output=True, text=True).stdout.strip()
    return out.splitlines()[0] if out else ""


@pytest.mark.timeout(900)  # above the sum of its waits: 3 x (120 + 60) + 180 = 720 s
def test_sigusr2_three_times_checkpoint_requeue_resume(slurm_cluster: None, tmp_path: Path) -> None:
    results = tmp_path / "results"
    exp = one_run_experiment(tmp_path, "preempt", [0], steps=LONG_STEPS)
    vitbench("run", str(exp), "--scale", "smoke", "--results", str(results), env=LONG_ENV)
    (rid, jid), = job_ids(results).items()
    run = results / "runs" / rid
    log = run / "log.txt"
    seen = 0
    for attempt in range(1, 4):
        # started for the attempt-th time, and written a checkpoint since (so its handlers are
        # installed and it is inside the training loop)
        wait_until(lambda: _squeue_state(jid) == "RUNNING" and log.exists()
                   and log.read_text().count("(task 0/1, restart") >= attempt
                   and len(checkpoint_steps(run)) > seen, 120, f"attempt {attempt} to be training")
        if (run / "result.json").exists():
            pytest.fail("the run finished before it could be preempted three times")
        subprocess.run(["scancel", "--signal=USR2", jid], check=True)
        wait_until(lambda: log.read_text().count("preempted: checkpoint saved at step") >= attempt, 60,
                   f"checkpoint after signal {attempt}")
        seen = len(checkpoint_steps(run))
    wait_until(lambda: (run / "result.json").exists(), 180, "the run to finish after three preemptions")
    text = log.read_text()
    saved = [int(x.split("at step ")[1].split(";")[0]) for x in text.splitlines() if "preempted: checkpoint" in x]
    resumed = [int(x.split("at step ")[1].split("/")[0]) for x in text.splitlines() if "resuming from checkpoint" in x]
    assert len(saved) == 3 and resumed[-3:] == saved, text
    assert text.count("result written") == 1
    rec = json.loads((run / "result.json").read_text())
    assert rec["status"] == "done" and rec["pretrain"]["steps_done"] == LONG_STEPS
