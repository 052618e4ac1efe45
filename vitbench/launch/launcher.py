"""Dispatch a plan: every run that is not finished, queued or running goes out as ONE job array.

``--cluster slurm`` submits through submitit's SLURM executor and returns (``--wait`` waits);
``local`` runs the jobs as subprocesses of this command (it waits: they are its children);
``debug`` runs them one after another in this process (for pdb and tests).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitbench.errors import CONTROL, UserError
from vitbench.launch.job import RunGroupJob, RunJob
from vitbench.launch.profiles import Profile
from vitbench.launch.slurm_limits import ClusterLimits, check_profile, explain_refusal, read_limits
from vitbench.launch.state import JOB_FILE, STATE_UNKNOWN, RunState, collect_states, local_job, log_paths
from vitbench.plan.cost import longest_first
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
           out: Any = None) -> Submission:
    out = sys.stdout if out is None else out  # resolved per call: stdout may be replaced (capture, redirect)
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

    todo = longest_first(todo)  # array index order is start order: the longest runs go first
    limits = read_limits() if cluster == "slurm" else None
    if limits is not None:
        check_profile(profile, limits)
    executor = make_executor(profile, cluster, results, job_name(plan.experiment.name, plan.scale))
    for r in todo:
        RunDir(run_dir(results, r.run_id)).create(r.config)

    tasks = group_runs(todo, profile["runs_per_task"])
    if cluster == "debug":
        jobs = [executor.submit(task_job(t, results)) for t in tasks]
        record_jobs(plan, results, tasks, jobs, cluster=cluster, profile=profile)
        arrays: list[str] = []
    else:
        chunk = array_chunk(limits, len(tasks))
        jobs, arrays = [], []
        for start in range(0, len(tasks), chunk):  # MaxArraySize bounds one array's indices: split
            part = tasks[start:start + chunk]
            part_jobs = _submit_array(executor, part, results, profile, submitted=sum(map(len, tasks[:start])),
                                      remaining=sum(map(len, tasks[start:])))
            record_jobs(plan, results, part, part_jobs, cluster=cluster, profile=profile)
            jobs += part_jobs
            arrays.append(str(part_jobs[0].job_id).split("_")[0])
    job_ids = [str(j.job_id) for j in jobs]
    array_id = arrays[0] if arrays else None
    if cluster == "slurm":
        how = (f"array {array_id}" if len(arrays) == 1 else
               f"{len(arrays)} arrays {', '.join(arrays)} (MaxArraySize {limits.max_array_size if limits else '?'})")
    else:
        how = f"{cluster} jobs"
    per = f", {profile['runs_per_task']} runs per task" if len(tasks) < len(todo) else ""
    print(f"submitted {len(todo)} runs as {how}{per} ({len(skipped)} already done, queued or running)", file=out)
    if wait or cluster != "slurm":
        wait_for(jobs, out=out)
    if wait and any(st in ACTIVE for st in skipped.values()):
        wait_for_plan(plan, results, out=out)  # runs an earlier command queued are part of this plan too
    return Submission([r.run_id for r in todo], skipped, job_ids, array_id)


def make_executor(profile: Profile, cluster: str, results: Path, name: str) -> Any:
    """submitit's executor for a plan: the profile's parameters, logs under RESULTS/slurm/<job id>/."""
    import submitit

    folder = results / "slurm" / "%j"
    if CONTROL.search(str(folder.absolute())):  # the path goes into the sbatch header (--output)
        raise UserError("the results path holds a control character; it goes into the sbatch script",
                        key="--results")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=profile["max_requeues"])
    executor.update_parameters(**profile.submitit_parameters(cluster), name=name)
    return executor


def job_name(experiment: str, scale: str) -> str:
    """The SLURM job name: from the experiment's file name, so only [A-Za-z0-9._-] (it goes in the header)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"vitbench-{experiment}-{scale}")[:120]


def array_chunk(limits: ClusterLimits | None, n: int) -> int:
    """Runs per job array: indices run 0..size-1 and must stay below the cluster's MaxArraySize; the
    arrays are made equal in size (5 runs at MaxArraySize 4 go as 3 + 2, not 4 + a lone job)."""
    if limits is None or not limits.max_array_size or n <= limits.max_array_size:
        return max(1, n)
    arrays = -(-n // limits.max_array_size)
    return -(-n // arrays)


def group_runs(runs: list[Any], per_task: int) -> list[list[Any]]:
    """Runs → array tasks of up to ``per_task`` runs each, dealt round-robin so that a grid ordered longest
    first gives every task a similar share (task i: runs i, i+T, i+2T, ...)."""
    n_tasks = -(-len(runs) // max(1, per_task))
    return [runs[i::n_tasks] for i in range(n_tasks)]


def task_job(task: list[Any], results: Path) -> RunJob | RunGroupJob:
    jobs = [RunJob(r.config, str(run_dir(results, r.run_id))) for r in task]
    return jobs[0] if len(jobs) == 1 else RunGroupJob(jobs)


def _submit_array(executor: Any, tasks: list[list[Any]], results: Path, profile: Profile, *, submitted: int,
                  remaining: int) -> list[Any]:
    """One sbatch for ``tasks``; a refusal becomes one line naming the profile (submitit would print
    sbatch's stderr itself and raise a multi-line FailedJobError)."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    noise = io.StringIO()
    try:
        with contextlib.redirect_stderr(noise), executor.batch():
            jobs = [executor.submit(task_job(t, results)) for t in tasks]
    except (FailedJobError, FailedSubmissionError) as exc:
        raise explain_refusal(str(exc) or noise.getvalue(), profile, submitted=submitted,
                              remaining=remaining) from None
    return jobs


def record_jobs(plan: Plan, results: Path, tasks: list[list[Any]], jobs: list[Any], *, cluster: str,
                profile: Profile) -> None:
    """job.json per run, written as soon as its array is accepted (a later refused array leaves these);
    the runs of one task share its job id."""
    for task, job in zip(tasks, jobs):
        stdout, stderr = log_paths(results / "slurm" / "%j", str(job.job_id))
        for r in task:
            atomic_write_json(run_dir(results, r.run_id) / JOB_FILE, {
                "job_id": str(job.job_id), "cluster": cluster, "submitted_at": now_iso(),
                "experiment": str(plan.experiment.path), "scale": plan.scale, "profile": profile.name,
                "runs_in_task": len(task), "stdout": stdout, "stderr": stderr,
                **(local_job(int(job.job_id)) if cluster == "local" else {})})


def wait_for_plan(plan: Plan, results: Path, *, out: Any = None, poll_s: float = 5.0) -> None:
    """Block until no run of the plan is queued or running, whoever submitted it (one sacct call a poll)."""
    out = sys.stdout if out is None else out  # resolved per call: stdout may be replaced (capture, redirect)
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


def wait_for(jobs: list[Any], *, out: Any = None, poll_s: float = 2.0) -> None:
    """Block until every job ends (submitit's ``as_completed``), printing progress; failures do not raise
    (they are recorded in the run directories and shown by ``vitbench status``)."""
    from submitit.helpers import as_completed

    out = sys.stdout if out is None else out  # resolved per call: stdout may be replaced (capture, redirect)
    print(f"0/{len(jobs)} jobs finished", file=out, flush=True)
    failed = 0
    for n, job in enumerate(as_completed(jobs, poll_frequency=poll_s), 1):
        print(f"{n}/{len(jobs)} jobs finished", file=out, flush=True)
        try:
            job.result()
        except Exception:  # the run directory has the reason; status shows it
            failed += 1
    if failed:
        print(f"{failed} job(s) failed; see `vitbench status`", file=out)
