"""Smoke test of the local SLURM cluster (slurm/start-cluster.sh) through
submitit: a 3-task job array runs, returns its results, and accounting
(``sacct``, which submitit uses for job states) knows the jobs."""

from __future__ import annotations

import subprocess
import time

import pytest

submitit = pytest.importorskip("submitit")

pytestmark = pytest.mark.slurm

RESULT_TIMEOUT_S = 240
STATE_TIMEOUT_S = 60


def _diagnostics(job_ids: list[str]) -> str:
    out = []
    for cmd in (["squeue", "-a"], ["sacct", "-a", "-j", ",".join(job_ids), "-o", "JobID,State,ExitCode,Reason%30"], ["sinfo", "-N", "-l"]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        out.append(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return "\n".join(out)


def test_map_array_runs_and_sacct_knows_the_jobs(slurm_cluster, tmp_path):
    # Defined locally so that cloudpickle ships it by value: the job's python
    # cannot import this test module.
    def task(x: int) -> tuple[int, str | None, str | None]:
        import os

        return x * 10, os.environ.get("SLURM_ARRAY_TASK_ID"), os.environ.get("SLURM_CLUSTER_NAME")

    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(
        slurm_partition=slurm_cluster.partition,
        timeout_min=5,
        slurm_array_parallelism=3,
        cpus_per_task=1,
        mem_gb=1,
    )
    jobs = executor.map_array(task, [1, 2, 3])
    assert len(jobs) == 3
    job_ids = [job.job_id for job in jobs]
    array_ids = {job_id.split("_")[0] for job_id in job_ids}
    assert len(array_ids) == 1, job_ids
    (array_id,) = array_ids

    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while not all(job.done() for job in jobs):
        if time.monotonic() > deadline:
            pytest.fail(f"array {array_id} not done after {RESULT_TIMEOUT_S}s\n{_diagnostics(job_ids)}")
        time.sleep(0.5)
    results = [job.result() for job in jobs]
    assert [r[0] for r in results] == [10, 20, 30]
    assert sorted(r[1] for r in results) == ["0", "1", "2"]
    assert {r[2] for r in results} == {slurm_cluster.name}

    # submitit's states come from sacct; force a fresh sacct call rather than
    # waiting for the watcher's own (back-off) refresh.
    deadline = time.monotonic() + STATE_TIMEOUT_S
    while True:
        states = [job.watcher.get_state(job.job_id, mode="force") for job in jobs]
        if states == ["COMPLETED"] * 3:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"submitit states {states} after {STATE_TIMEOUT_S}s\n{_diagnostics(job_ids)}")
        time.sleep(0.5)
    assert [job.state for job in jobs] == ["COMPLETED"] * 3

    sacct = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", array_id, "-o", "JobID,State,Partition"],
        capture_output=True, text=True, check=True,
    )
    rows = {line.split("|")[0]: line.split("|")[1:] for line in sacct.stdout.splitlines() if line}
    assert rows == {job_id: ["COMPLETED", slurm_cluster.partition] for job_id in job_ids}, sacct.stdout
