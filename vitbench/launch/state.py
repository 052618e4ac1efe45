"""Run state from the run directory and SLURM's accounting (``sacct``).

States: ``done`` and ``diverged`` (a result record exists: both are finished data), ``running`` (SLURM says
so, or a ``--cluster local`` job's process is still alive on this host),
``pending`` (queued or requeued), ``failed`` (with the reason and the log to read),
``incomplete`` (started, no result, no job alive — e.g. a node died before the record was
written) and ``new`` (never submitted).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from vitbench.record.rundir import RunDir, read_json

PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED",
          "REVOKED", "SPECIAL_EXIT"}
FINISHED = {"done", "diverged"}
JOB_FILE = "job.json"


STATE_UNKNOWN = "(SLURM state unknown)"  # sacct did not answer: the job may or may not still be queued


@dataclass
class RunState:
    state: str
    detail: str = ""  # failure reason / job id
    log: str | None = None  # the log to read


def sacct_states(job_ids: Iterable[str]) -> dict[str, str]:
    """Job id (e.g. '123_4') → SLURM state word, in one ``sacct`` call; {} without SLURM."""
    arrays = sorted({str(j).split("_")[0] for j in job_ids if j})
    if not arrays or shutil.which("sacct") is None:
        return {}
    cmd = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]
    for a in arrays:
        cmd += ["-j", a]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    info = SlurmInfoWatcher().read_info(out)
    return {jid: (v.get("State") or "UNKNOWN").split()[0] for jid, v in info.items()}


def process_start(pid: int) -> str | None:
    """When a live process started (field 22 of /proc/PID/stat, clock ticks since boot); None when it is gone
    or a zombie. The pid alone is no identity: the kernel reuses it."""
    try:
        fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def local_job(pid: int) -> dict[str, str | None]:
    """What job.json keeps of a ``--cluster local`` job so another process can tell it is still alive."""
    return {"host": socket.gethostname(), "pid_start": process_start(pid)}


def local_alive(job: dict) -> bool:
    """A local job is alive when its process, on this host, is the one that was started (same start time):
    a second ``vitbench run`` must not start a writer beside it. On another host it cannot be told."""
    try:
        pid = int(job.get("job_id"))  # submitit's local job id is the process id
    except (TypeError, ValueError):
        return False
    start = job.get("pid_start")
    return bool(start) and job.get("host") == socket.gethostname() and process_start(pid) == start


def read_job(rd: RunDir) -> dict | None:
    rec = read_json(rd.file(JOB_FILE))
    return rec if isinstance(rec, dict) else None


def _last_line(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


def run_state(rd: RunDir, slurm: dict[str, str]) -> RunState:
    local = rd.local_state()
    if local in FINISHED:
        return RunState(local)
    job = read_job(rd)
    err = rd.read_error()
    if job is not None:
        jid = str(job.get("job_id"))
        s = slurm.get(jid)
        log = job.get("stderr")
        if s in PENDING:
            return RunState("pending", jid, log)
        if s in RUNNING:
            return RunState("running", jid, log)
        if s in FAILED:
            reason = err["reason"] if err else _last_line(log) or "no error line in the log"
            return RunState("failed", f"SLURM {s} (job {jid}): {reason}", log)
        if s == "COMPLETED":
            return RunState("incomplete", f"job {jid} ended without writing a result", log)
        if job.get("cluster") == "local" and local_alive(job):
            return RunState("running", f"local process {jid}", log)
    if local == "failed" and err is not None:
        return RunState("failed", err.get("reason", ""), str(rd.file("log.txt")))
    if local == "incomplete":
        return RunState("incomplete", "started, no result and no live job", str(rd.file("log.txt")))
    if job is not None and not slurm and job.get("cluster") == "slurm":
        return RunState("pending", f"job {job.get('job_id')} {STATE_UNKNOWN}", job.get("stderr"))
    return RunState("new")


def collect_states(rundirs: list[RunDir]) -> dict[str, RunState]:
    """States of many runs with one sacct call."""
    jobs = [read_job(rd) for rd in rundirs]
    ids = [str(j["job_id"]) for j in jobs if j and j.get("cluster") == "slurm" and j.get("job_id")]
    slurm = sacct_states(ids)
    return {rd.run_id: run_state(rd, slurm) for rd in rundirs}


def log_paths(job_folder: Path, job_id: str) -> tuple[str, str]:
    """submitit's stdout / stderr paths for a job id."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(job_folder, job_id=job_id)
    return str(paths.stdout), str(paths.stderr)
