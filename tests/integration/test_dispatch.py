"""Dispatch through the real local SLURM cluster (slurm/start-cluster.sh): arrays, skip of
finished runs, requeue with resume, cancel and re-submit. No mocks of sbatch."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from vitbench.plan.planner import make_plan

from conftest import SmokeStore
from slurm_helpers import (LONG_ENV, LONG_STEPS, REPO, checkpoint_steps, job_ids, one_run_experiment, vitbench,
                           wait_until)

pytestmark = pytest.mark.slurm


@pytest.mark.timeout(900)  # the first user of the session's smoke store trains it
def test_smoke_grid_is_one_array_and_rerun_submits_nothing(smoke_store: SmokeStore) -> None:
    results = smoke_store.results  # the session's smoke runs (conftest.py), not trained again here
    plan = make_plan(REPO / "ablations" / "pos_embed.yaml", scale="smoke", check_data=False)
    ids = {rid: jid for rid, jid in job_ids(results).items() if rid in {r.run_id for r in plan.runs}}
    assert len(ids) == 10 and "submitted 10 runs as array" in smoke_store.submitted["ablations/pos_embed.yaml"]
    assert len({j.split("_")[0] for j in ids.values()}) == 1, f"expected one array, got {ids}"
    for rid in ids:
        rec = json.loads((results / "runs" / rid / "result.json").read_text())
        assert rec["status"] == "done" and rec["summary"]["fewshot/digits/5shot"] is not None
    args = ["run", "ablations/pos_embed.yaml", "--scale", "smoke", "--cluster", "slurm", "--results", str(results)]
    again = vitbench(*args).stdout
    assert "nothing to submit" in again and {r: job_ids(results)[r] for r in ids} == ids
    status = vitbench("status", "ablations/pos_embed.yaml", "--scale", "smoke", "--results", str(results)).stdout
    assert "10 done" in status


def test_requeue_resumes_from_checkpoint(slurm_cluster: None, tmp_path: Path) -> None:
    results = tmp_path / "results"
    exp = one_run_experiment(tmp_path, "requeue", [0], steps=LONG_STEPS)
    vitbench("run", str(exp), "--scale", "smoke", "--results", str(results), env=LONG_ENV)
    (rid, jid), = job_ids(results).items()
    run = results / "runs" / rid
    wait_until(lambda: len(checkpoint_steps(run)) >= 2, 120, "two checkpoints")
    subprocess.run(["scontrol", "requeue", jid], check=True)
    wait_until(lambda: (run / "result.json").exists(), 300, "the requeued run to finish")
    log = (run / "log.txt").read_text()
    resumed = [ln for ln in log.splitlines() if "resuming from checkpoint at step" in ln]
    assert resumed, log
    step = int(resumed[0].split("at step ")[1].split("/")[0])
    assert 20 <= step < LONG_STEPS
    assert log.count("result written") == 1
    assert json.loads((run / "result.json").read_text())["pretrain"]["steps_done"] == LONG_STEPS


def test_cancelled_run_is_failed_and_only_it_is_resubmitted(slurm_cluster: None, tmp_path: Path) -> None:
    results = tmp_path / "results"
    exp = one_run_experiment(tmp_path, "cancel", [0, 1], steps=LONG_STEPS)
    vitbench("run", str(exp), "--scale", "smoke", "--results", str(results), env=LONG_ENV)
    ids = job_ids(results)
    assert len(ids) == 2
    victim = sorted(ids)[0]
    wait_until(lambda: len(checkpoint_steps(results / "runs" / victim)) >= 1, 120, "the victim to start")
    subprocess.run(["scancel", ids[victim]], check=True)
    other = next(r for r in ids if r != victim)
    wait_until(lambda: (results / "runs" / other / "result.json").exists(), 300, "the other run")

    def victim_failed() -> bool:
        st = vitbench("status", str(exp), "--scale", "smoke", "--results", str(results)).stdout
        return any(victim in ln and " failed " in f" {ln} " for ln in st.splitlines())
    wait_until(victim_failed, 60, "status to report the cancelled run as failed")
    st = vitbench("status", str(exp), "--scale", "smoke", "--results", str(results)).stdout
    assert "CANCELLED" in st and "1 done" in st and "1 failed" in st
    out = vitbench("run", str(exp), "--scale", "smoke", "--results", str(results), "--wait").stdout
    assert "submitted 1 runs" in out
    new_ids = job_ids(results)
    assert new_ids[other] == ids[other] and new_ids[victim] != ids[victim]
    assert (results / "runs" / victim / "result.json").exists()


def test_several_runs_per_task_one_record_each(slurm_cluster: None, tmp_path: Path) -> None:
    """Profile runs_per_task: 3 runs as 2 array tasks (one process start-up per task), one record per run."""
    results = tmp_path / "results"
    exp = one_run_experiment(tmp_path, "grouped", [0, 1, 2], steps=4)
    prof = tmp_path / "grouped-profile.yaml"
    prof.write_text((Path(__file__).resolve().parents[2] / "slurm" / "profiles" / "local.yaml").read_text()
                    + "runs_per_task: 2\n")
    out = vitbench("run", str(exp), "--scale", "smoke", "--profile", str(prof), "--results", str(results),
                   "--wait").stdout
    assert "submitted 3 runs as array" in out and "2 runs per task" in out, out
    ids = job_ids(results)
    tasks = sorted(ids.values())
    assert len(set(tasks)) == 2 and sorted(tasks.count(t) for t in set(tasks)) == [1, 2], ids
    for rid in ids:
        rec = json.loads((results / "runs" / rid / "result.json").read_text())
        assert rec["status"] == "done" and rec["run_id"] == rid
    status = vitbench("status", str(exp), "--scale", "smoke", "--results", str(results)).stdout
    assert "3 done" in status
