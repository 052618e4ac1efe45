"""Preemption on the real local cluster: SIGUSR2 → checkpoint at a step boundary → requeue →
resume. Three times in one run, and still exactly one result; and the same path when the signal is
SLURM's own, sent before the profile's time limit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

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


@pytest.mark.timeout(420)  # above the sum of its waits: 180 + 150 = 330 s
def test_time_limit_sends_sigusr2_checkpoint_requeue_resume(slurm_cluster: None, tmp_path: Path) -> None:
    """A 1-minute time limit with a 30 s signal lead (the profile's time_min and signal_delay_s): SLURM,
    not the test, sends SIGUSR2; the run checkpoints, is requeued and resumes from that step. slurmctld
    checks limits once per scheduler pass (Slurm's sbatch --signal: "may be sent up to 60 seconds
    earlier than specified"), so the test waits for the signal's effects, never for a time."""
    results = tmp_path / "results"
    exp = one_run_experiment(tmp_path, "timelimit", [0], steps=LONG_STEPS)
    prof = tmp_path / "one-minute.yaml"
    prof.write_text(yaml.safe_dump({"partition": "debug", "cpus_per_task": 1, "mem_gb": 1, "time_min": 1,
                                    "signal_delay_s": 30, "array_parallelism": 1, "max_requeues": 3}))
    # 0.5 s a step: 150 s of training, longer than any attempt can last before its limit
    vitbench("run", str(exp), "--scale", "smoke", "--cluster", "slurm", "--profile", str(prof),
             "--results", str(results), env={"VITBENCH_TEST_STEP_DELAY_S": "0.5"})
    (rid, jid), = job_ids(results).items()
    run = results / "runs" / rid
    log = run / "log.txt"
    try:
        limit = subprocess.run(["scontrol", "show", "job", jid], capture_output=True, text=True).stdout
        assert "TimeLimit=00:01:00" in limit, limit
        wait_until(lambda: log.exists() and "preempted: checkpoint saved at step" in log.read_text(), 180,
                   "SLURM's SIGUSR2 before the time limit")
        wait_until(lambda: "resuming from checkpoint" in log.read_text(), 150, "the requeued run to resume")
    finally:
        subprocess.run(["scancel", jid], check=False)
    text = log.read_text()
    saved = int(text.split("preempted: checkpoint saved at step ")[1].split(";")[0])
    resumed = int(text.split("resuming from checkpoint")[1].split("at step ")[1].split("/")[0])
    assert 0 < saved < LONG_STEPS and resumed == saved, text
    assert text.count("(task 0/1, restart") >= 2 and not (run / "result.json").exists()
