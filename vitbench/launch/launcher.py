"""Dispatch a plan: every run that is not finished, queued or running goes out as ONE job array.

``--cluster slurm`` submits through submitit's SLURM executor and returns (``--wait`` waits);
``local`` runs the jobs as subprocesses of this command (it waits: they are its children);
``debug`` runs them one after another in this process (for pdb and tests).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitbench.errors import UserError
from vitbench.launch.job import RunJob
from vitbench.launch.profiles import Profile
from vitbench.launch.state import JOB_FILE, STATE_UNKNOWN, RunState, collect_states, log_paths
from vitbench.plan.planner import Plan
from vitbench.record.rundir import RunDir, atomic_write_json, now_iso, run_dir

CLUSTERS = ("slurm", "local", "debug")
ACTIVE = {"pending", "running"}


@dataclass
class Submission:
    submitted: list[str]  # run ids
    skipped: dict[str, str]  # run id → state that made us skip it
    job_ids: list[str]
    array_id: str | None


def plan_states(plan: Plan, results: Path) -> dict[str, RunState]:
    return collect_states([RunDir(run_dir(results, r.run_id)) for r in plan.runs])


def submit(plan: Plan, results: Path, *, cluster: str, profile: Profile, wait: bool = False,
           out: Any = sys.stdout) -> Submission:
    if cluster not in CLUSTERS:
        raise UserError(f"unknown cluster {cluster!r}; allowed: {', '.join(CLUSTERS)}", key="--cluster")
    states = plan_states(plan, results)
    todo = [r for r in plan.runs if states[r.run_id].state not in ({"done", "diverged"} | ACTIVE)]
    skipped = {r.run_id: states[r.run_id].state for r in plan.runs if r not in todo}
    if not todo:
        print(f"nothing to submit: {len(plan.runs)} runs are done, queued or running", file=out)
        if wait:
            wait_for_plan(plan, results, out=out)
        return Submission([], skipped, [], None)

    import submitit

    folder = results / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster,
                                     slurm_max_num_timeout=profile["max_requeues"])
    params = profile.submitit_parameters(cluster)
    params["name"] = f"vitbench-{plan.experiment.name}-{plan.scale}"
    executor.update_parameters(**params)
    for r in todo:
        RunDir(run_dir(results, r.run_id)).create(r.config)

    if cluster == "debug":
        jobs = [executor.submit(RunJob(r.config, str(run_dir(results, r.run_id)))) for r in todo]
    else:
        with executor.batch():  # one sbatch: a job array
            jobs = [executor.submit(RunJob(r.config, str(run_dir(results, r.run_id)))) for r in todo]
    job_ids = [str(j.job_id) for j in jobs]
    array_id = job_ids[0].split("_")[0] if job_ids else None
    for r, job in zip(todo, jobs):
        stdout, stderr = log_paths(results / "slurm" / "%j", str(job.job_id))
        atomic_write_json(run_dir(results, r.run_id) / JOB_FILE, {
            "job_id": str(job.job_id), "cluster": cluster, "submitted_at": now_iso(),
            "experiment": str(plan.experiment.path), "scale": plan.scale, "profile": profile.name,
            "stdout": stdout, "stderr": stderr})
    print(f"submitted {len(todo)} runs as {'array ' + array_id if cluster == 'slurm' else cluster + ' jobs'} "
          f"({len(skipped)} already done, queued or running)", file=out)
    if wait or cluster != "slurm":
        wait_for(jobs, out=out)
    if wait and any(st in ACTIVE for st in skipped.values()):
        wait_for_plan(plan, results, out=out)  # runs an earlier command queued are part of this plan too
    return Submission([r.run_id for r in todo], skipped, job_ids, array_id)


def wait_for_plan(plan: Plan, results: Path, *, out: Any = sys.stdout, poll_s: float = 5.0) -> None:
    """Block until no run of the plan is queued or running, whoever submitted it (one sacct call a poll)."""
    last = ""
    while True:
        states = plan_states(plan, results)
        active = sum(1 for st in states.values() if st.state in ACTIVE)
        line = f"{len(states) - active}/{len(states)} runs no longer queued or running"
        if line != last:
            print(line, file=out, flush=True)
            last = line
        if not active:
            return
        if any(st.state in ACTIVE and st.detail.endswith(STATE_UNKNOWN) for st in states.values()):
            print("cannot wait: sacct does not answer, so SLURM's job states are unknown", file=out)
            return
        time.sleep(poll_s)


def wait_for(jobs: list[Any], *, out: Any = sys.stdout, poll_s: float = 2.0) -> None:
    """Block until every job ends, printing progress when it changes; failures do not raise
    (they are recorded in the run directories and shown by ``vitbench status``)."""
    last = ""
    while True:
        done = sum(1 for j in jobs if j.done())
        line = f"{done}/{len(jobs)} jobs finished"
        if line != last:
            print(line, file=out, flush=True)
            last = line
        if done == len(jobs):
            break
        time.sleep(poll_s)
    failed = 0
    for j in jobs:
        try:
            j.result()
        except Exception:  # the run directory has the reason; status shows it
            failed += 1
    if failed:
        print(f"{failed} job(s) failed; see `vitbench status`", file=out)
