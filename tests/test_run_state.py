"""Run state as `vitbench status` reports it: the run directory and SLURM's accounting, every branch."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from vitbench.launch.state import JOB_FILE, STATE_UNKNOWN, local_job, process_start, run_state
from vitbench.record.rundir import RunDir, atomic_write_json


def _run(tmp_path: Path, *, started: bool = False, job: dict | None = None) -> RunDir:
    rd = RunDir(tmp_path / "r")
    rd.create({"seed": 0})
    if started:
        rd.metric("train", step=1, loss=2.0)
    if job is not None:
        atomic_write_json(rd.file(JOB_FILE), job)
    return rd


SLURM_JOB = {"cluster": "slurm", "job_id": "7_3"}


def test_never_started_is_new(tmp_path: Path) -> None:
    assert run_state(_run(tmp_path), {}).state == "new"


@pytest.mark.parametrize("status,state", [("done", "done"), ("diverged", "diverged")])
def test_a_record_wins_over_any_slurm_state(tmp_path: Path, status: str, state: str) -> None:
    rd = _run(tmp_path, started=True, job=SLURM_JOB)
    rd.write_result({"status": status})
    assert run_state(rd, {"7_3": "NODE_FAIL"}).state == state  # finished data, whatever the job did after


@pytest.mark.parametrize("word,state", [("PENDING", "pending"), ("REQUEUED", "pending"), ("RUNNING", "running"),
                                        ("COMPLETING", "running")])
def test_live_jobs(tmp_path: Path, word: str, state: str) -> None:
    st = run_state(_run(tmp_path, started=True, job=SLURM_JOB), {"7_3": word})
    assert (st.state, st.detail) == (state, "7_3")


def test_node_fail_is_failed_with_slurms_word_and_the_last_log_line(tmp_path: Path) -> None:
    log = tmp_path / "7_3.err"
    log.write_text("step 10\nRuntimeError: the real reason\n\n")
    st = run_state(_run(tmp_path, started=True, job={**SLURM_JOB, "stderr": str(log)}), {"7_3": "NODE_FAIL"})
    assert st.state == "failed" and st.log == str(log)
    assert st.detail == "SLURM NODE_FAIL (job 7_3): RuntimeError: the real reason"


def test_failed_job_prefers_the_runs_own_error_record(tmp_path: Path) -> None:
    rd = _run(tmp_path, started=True, job=SLURM_JOB)
    rd.write_error("data root missing")
    assert run_state(rd, {"7_3": "FAILED"}).detail == "SLURM FAILED (job 7_3): data root missing"
    assert run_state(rd, {"7_3": "TIMEOUT"}).detail.startswith("SLURM TIMEOUT (job 7_3): ")


def test_completed_job_without_a_record_is_incomplete(tmp_path: Path) -> None:
    st = run_state(_run(tmp_path, started=True, job=SLURM_JOB), {"7_3": "COMPLETED"})
    assert (st.state, st.detail) == ("incomplete", "job 7_3 ended without writing a result")


def test_without_slurm(tmp_path: Path) -> None:
    rd = _run(tmp_path, started=True)
    assert run_state(rd, {}).state == "incomplete"
    rd.write_error("boom")
    st = run_state(rd, {})
    assert (st.state, st.detail) == ("failed", "boom")


def test_sacct_silent_about_a_submitted_job_is_pending_unknown(tmp_path: Path) -> None:
    # sacct did not answer (slurmdbd down): a submitted, unstarted job may still be queued; never "new"
    st = run_state(_run(tmp_path, job=SLURM_JOB), {})
    assert st.state == "pending" and STATE_UNKNOWN in st.detail
    assert run_state(_run(tmp_path / "l", job={"cluster": "local", "job_id": "1"}), {}).state == "new"


def _local(proc: subprocess.Popen, **over: object) -> dict:
    return {"cluster": "local", "job_id": str(proc.pid), **local_job(proc.pid), **over}


def test_a_live_local_job_is_running_and_only_while_it_is_the_same_process(tmp_path: Path) -> None:
    # a second `vitbench run --cluster local` must see the first one's jobs (it would start a second writer)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        st = run_state(_run(tmp_path, started=True, job=_local(proc)), {})
        assert (st.state, st.detail) == ("running", f"local process {proc.pid}")
        assert run_state(_run(tmp_path / "reused", started=True, job=_local(proc, pid_start="1")), {}).state \
            == "incomplete"  # the pid now belongs to another process
        assert run_state(_run(tmp_path / "host", started=True, job=_local(proc, host="elsewhere")), {}).state \
            == "incomplete"  # another machine's pid says nothing
        assert run_state(_run(tmp_path / "old", started=True, job=_local(proc, pid_start=None)), {}).state \
            == "incomplete"  # job.json from before the start time was kept
        job = _local(proc)
    finally:
        proc.kill()
        proc.wait()
    assert process_start(proc.pid) is None
    assert run_state(_run(tmp_path / "gone", started=True, job=job), {}).state == "incomplete"


def test_an_unreaped_local_job_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = None
    for _ in range(200):  # ended but not waited for: a zombie, whose pid is still taken
        start = process_start(proc.pid)
        if start is None:
            break
        time.sleep(0.02)
    assert start is None
    proc.wait()
