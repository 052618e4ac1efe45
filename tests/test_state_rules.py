"""``launch.state``: what ``sacct`` is asked and how its answer is read, the failure reason quoted
from a job's log, and submitit's log paths. A fake ``sacct`` on PATH behaves like SLURM's: it
accepts only its real options, prints ``--parsable2`` rows for the jobs of the arrays asked about,
and records every call."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from vitbench.launch import state
from vitbench.launch.state import JOB_FILE, log_paths, run_state, sacct_states
from vitbench.record.rundir import RunDir, atomic_write_json

# what the accounting database knows: JobID, State, NodeList (steps such as 7_1.batch, as sacct prints them)
_DB = [
    ("7_1", "COMPLETED", "n1"), ("7_1.batch", "COMPLETED", "n1"), ("7_2", "CANCELLED by 1000", "n2"),
    ("7_[3-4]", "PENDING", "None assigned"), ("8", "RUNNING", "n3"), ("9_0", "", "n1"),
]

_FAKE = r'''#!{python}
import json, sys, time
args = sys.argv[1:]
with open({calls!r}, "a") as fh:
    fh.write(json.dumps(args) + "\n")
if {hang!r}:
    time.sleep(30)
if {down!r}:
    sys.exit("sacct: error: Problem talking to the database: Connection refused")
db = {db!r}
known = {{"jobid": "JobID", "state": "State", "nodelist": "NodeList"}}
fields, jobs, parsable = None, [], False
i = 0
while i < len(args):
    a = args[i]
    if a == "-o":
        names = args[i + 1].split(",")
        if any(n.lower() not in known for n in names):
            sys.exit("sacct: error: Invalid field requested: " + args[i + 1])
        fields = [known[n.lower()] for n in names]
        i += 2
    elif a == "-j":
        jobs.append(args[i + 1])
        i += 2
    elif a == "--parsable2":
        parsable = True
        i += 1
    else:
        sys.exit("sacct: unrecognized option " + repr(a))
fields = fields or ["JobID", "State"]
rows = [r for r in db if not jobs or r[0].split(".")[0].split("_")[0] in jobs or r[0].split(".")[0] in jobs]
col = {{"JobID": 0, "State": 1, "NodeList": 2}}
if parsable:
    print("|".join(fields))
    for r in rows:
        print("|".join(r[col[f]] for f in fields))
else:
    print(" ".join(f"{{f:>16}}" for f in fields))
    for r in rows:
        print(" ".join(f"{{r[col[f]]:>16}}" for f in fields))
'''


def _fake_sacct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, hang: bool = False, down: bool = False) -> Path:
    """Put a fake ``sacct`` first on PATH; returns the file its calls (argv lists) are recorded in."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "sacct-calls.jsonl"
    exe = bindir / "sacct"
    exe.write_text(_FAKE.format(python=sys.executable, calls=str(calls), hang=hang, down=down, db=_DB))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return calls


def _calls(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


SLURM_JOB = {"cluster": "slurm", "job_id": "7_3"}


# -- sacct_states ---------------------------------------------------------------------------------

def test_sacct_reports_the_state_word_of_every_task_asked_about(tmp_path, monkeypatch) -> None:
    """Array tasks, plain jobs and pending ranges come back as one SLURM state word per job id."""
    _fake_sacct(tmp_path, monkeypatch)
    got = sacct_states(["7_1", "7_2", "7_3", "8"])
    assert got["7_1"] == "COMPLETED" and got["8"] == "RUNNING"
    assert got["7_2"] == "CANCELLED"  # "CANCELLED by 1000" → its first word
    assert got["7_3"] == got["7_4"] == "PENDING"  # the pending range 7_[3-4], task by task
    assert "7_1.batch" not in got


def test_a_job_without_a_state_is_unknown(tmp_path, monkeypatch) -> None:
    """An empty State column is reported as UNKNOWN, never as an empty word."""
    _fake_sacct(tmp_path, monkeypatch)
    assert sacct_states(["9_0"]) == {"9_0": "UNKNOWN"}


def test_sacct_is_asked_once_per_array_in_a_single_call(tmp_path, monkeypatch) -> None:
    """Tasks of one array are asked about as the array: one sacct call, one ``-j`` per array, sorted."""
    calls = _fake_sacct(tmp_path, monkeypatch)
    sacct_states(["8", "7_2", "7_1", "", None])
    (argv,) = _calls(calls)
    jobs = [argv[i + 1] for i, a in enumerate(argv) if a == "-j"]
    assert jobs == ["7", "8"]


def test_no_job_ids_means_no_sacct_call(tmp_path, monkeypatch) -> None:
    """Without job ids sacct is not run at all (it would list every job of the user)."""
    calls = _fake_sacct(tmp_path, monkeypatch)
    assert sacct_states([]) == {} and sacct_states(["", None]) == {}
    assert _calls(calls) == []


def test_without_sacct_on_the_path_nothing_is_known(tmp_path, monkeypatch) -> None:
    """A machine without SLURM answers {} rather than failing."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert sacct_states(["7_1"]) == {}


def test_a_hung_sacct_is_given_up_on(tmp_path, monkeypatch) -> None:
    """sacct's call is bounded by a timeout: a hung slurmdbd yields {} instead of hanging the status."""
    _fake_sacct(tmp_path, monkeypatch, hang=True)
    real_run = state.subprocess.run

    def faster(*args, **kwargs):  # the same call with its timeout scaled down, so the test is quick
        kwargs["timeout"] = kwargs["timeout"] / 200
        return real_run(*args, **kwargs)

    monkeypatch.setattr(state.subprocess, "run", faster)
    assert sacct_states(["7_1"]) == {}


def test_a_failing_sacct_means_nothing_is_known(tmp_path, monkeypatch) -> None:
    """sacct exiting with an error (slurmdbd down) yields {}, not an exception."""
    calls = _fake_sacct(tmp_path, monkeypatch, down=True)
    assert sacct_states(["7_1"]) == {}
    assert len(_calls(calls)) == 1


# -- the job record -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ['["7_3"]', '"7_3"', "7", "{torn"])
def test_a_job_record_that_is_not_an_object_is_ignored(tmp_path: Path, text: str) -> None:
    """A job.json that is not a JSON object counts as no job: the state comes from the directory alone."""
    rd = RunDir(tmp_path / "r")
    rd.create({"seed": 0})
    rd.metric("train", step=1, loss=2.0)
    rd.file(JOB_FILE).write_text(text)
    assert state.read_job(rd) is None
    assert run_state(rd, {"7_3": "RUNNING"}).state == "incomplete"
    assert state.collect_states([rd])[rd.run_id].state == "incomplete"


@pytest.mark.parametrize("word,expected", [("PENDING", "pending"), ("RUNNING", "running"), ("COMPLETED", "incomplete"),
                                           ("NODE_FAIL", "failed")])
def test_every_slurm_state_points_at_the_jobs_log(tmp_path: Path, word: str, expected: str) -> None:
    """Whatever SLURM says about the job, the state names the job's stderr log to read."""
    rd = RunDir(tmp_path / "r")
    rd.create({"seed": 0})
    log = str(tmp_path / "7_3_0_log.err")
    atomic_write_json(rd.file(JOB_FILE), {**SLURM_JOB, "stderr": log})
    st = run_state(rd, {"7_3": word})
    assert (st.state, st.log) == (expected, log)


def _started(tmp_path: Path, job: dict | None = None) -> RunDir:
    rd = RunDir(tmp_path / "r")
    rd.create({"seed": 0})
    rd.metric("train", step=1, loss=2.0)
    if job is not None:
        atomic_write_json(rd.file(JOB_FILE), job)
    return rd


def test_a_run_that_failed_on_its_own_points_at_its_log(tmp_path: Path) -> None:
    """Without a live job, a run with an error record is failed with its reason, and its log.txt is the log."""
    rd = _started(tmp_path)
    rd.write_error("data root missing")
    st = run_state(rd, {})
    assert (st.state, st.detail, st.log) == ("failed", "data root missing", str(rd.path / "log.txt"))


def test_an_error_record_without_a_reason_gives_an_empty_reason(tmp_path: Path) -> None:
    """An error record missing its reason (foreign or older writer) still reads as failed, with reason ""."""
    rd = _started(tmp_path)
    atomic_write_json(rd.file("error.json"), {"status": "failed"})
    st = run_state(rd, {})
    assert (st.state, st.detail) == ("failed", "")


def test_a_started_run_without_a_job_is_incomplete_with_its_log(tmp_path: Path) -> None:
    """A started run with no result, no error and no live job is incomplete, pointing at its log.txt."""
    rd = _started(tmp_path)
    st = run_state(rd, {})
    assert (st.state, st.detail, st.log) == ("incomplete", "started, no result and no live job", str(rd.path / "log.txt"))


def test_an_unanswered_slurm_job_is_pending_with_its_id_and_log(tmp_path: Path) -> None:
    """With no sacct answer, a submitted SLURM job is pending-unknown, naming the job and its stderr log."""
    rd = RunDir(tmp_path / "r")
    rd.create({"seed": 0})
    atomic_write_json(rd.file(JOB_FILE), {**SLURM_JOB, "stderr": "/logs/7_3_0_log.err"})
    st = run_state(rd, {})
    assert (st.state, st.detail, st.log) == ("pending", f"job 7_3 {state.STATE_UNKNOWN}", "/logs/7_3_0_log.err")


def test_a_job_sacct_does_not_list_while_others_answer_is_new(tmp_path: Path) -> None:
    """When sacct answers but not about this (unstarted) job, it is not guessed pending: it is new."""
    rd = RunDir(tmp_path / "r")
    rd.create({"seed": 0})
    atomic_write_json(rd.file(JOB_FILE), SLURM_JOB)
    assert run_state(rd, {"99_1": "RUNNING"}).state == "new"


# -- the failure reason quoted from the job's log -------------------------------------------------

def _failed_detail(tmp_path: Path, log: bytes | None, *, stderr: str | None = "default") -> str:
    rd = RunDir(tmp_path / "r")
    rd.create({"seed": 0})
    rd.metric("train", step=1, loss=2.0)
    path = tmp_path / "7_3.err"
    if log is not None:
        path.write_bytes(log)
    job = dict(SLURM_JOB)
    if stderr is not None:
        job["stderr"] = str(path) if stderr == "default" else stderr
    atomic_write_json(rd.file(JOB_FILE), job)
    st = run_state(rd, {"7_3": "FAILED"})
    assert st.state == "failed"
    prefix = "SLURM FAILED (job 7_3): "
    assert st.detail.startswith(prefix)
    return st.detail[len(prefix):]


def test_reason_is_the_last_non_blank_line_of_a_one_line_log(tmp_path: Path) -> None:
    """A log of a single line is quoted whole, from its first character."""
    assert _failed_detail(tmp_path, b"Killed\n") == "Killed"


def test_reason_is_the_last_of_several_lines(tmp_path: Path) -> None:
    """Of several lines the last non-blank one is quoted, stripped."""
    assert _failed_detail(tmp_path, b"first\nsecond\n  third: boom  \n\n   \n") == "third: boom"


def test_reason_is_cut_to_300_characters(tmp_path: Path) -> None:
    """A long last line is quoted by its first 300 characters."""
    line = "".join(chr(65 + i % 26) for i in range(400))
    assert _failed_detail(tmp_path, (line + "\n").encode()) == line[:300]


def test_only_the_last_8_kib_of_a_log_are_read(tmp_path: Path) -> None:
    """A huge log is read from its final 8192 bytes: a last line longer than that is quoted from there."""
    line = "".join(chr(65 + (i * 7) % 26) for i in range(20000))
    data = ("x" * 5000 + "\n" + line + "\n").encode()
    tail = data[-8192:].decode().strip()
    assert _failed_detail(tmp_path, data) == tail[:300]


def test_undecodable_bytes_do_not_hide_the_reason(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 (a tail cut inside a character, binary output) are replaced, not fatal."""
    assert _failed_detail(tmp_path, b"ok\n\xff\xfe CUDA error\n") == "\ufffd\ufffd CUDA error"


@pytest.mark.parametrize("log", [b"", b"\n  \n\t\n"])
def test_a_blank_log_gives_the_placeholder_reason(tmp_path: Path, log: bytes) -> None:
    """An empty or all-blank log has no line to quote: the reason says so."""
    assert _failed_detail(tmp_path, log) == "no error line in the log"


def test_a_missing_log_gives_the_placeholder_reason(tmp_path: Path) -> None:
    """A log that was never written (or was cleaned away) is not an error: the reason says there is no line."""
    assert _failed_detail(tmp_path, None) == "no error line in the log"


def test_a_job_without_a_log_path_gives_the_placeholder_reason(tmp_path: Path) -> None:
    """A job record naming no stderr log still gets a readable reason."""
    assert _failed_detail(tmp_path, None, stderr=None) == "no error line in the log"
    assert _failed_detail(tmp_path / "b", None, stderr="") == "no error line in the log"


# -- submitit's log paths -------------------------------------------------------------------------

def test_log_paths_are_submitits_stdout_and_stderr_of_the_job(tmp_path: Path) -> None:
    """The paths name the job id and task 0, as submitit writes them."""
    out, err = log_paths(tmp_path / "jobs", "123_4")
    assert out == str((tmp_path / "jobs" / "123_4_0_log.out").absolute())
    assert err == str((tmp_path / "jobs" / "123_4_0_log.err").absolute())


# -- sacct's time bound and an error record cleared while the state is read -----------------------

def test_sacct_is_given_a_minute_to_answer(tmp_path, monkeypatch) -> None:
    """The sacct call is bounded by exactly 60 seconds (slurmdbd may be slow, but a status must not hang)."""
    _fake_sacct(tmp_path, monkeypatch)
    real_run = state.subprocess.run
    seen: list[float] = []

    def spy(*args, **kwargs):
        seen.append(kwargs["timeout"])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(state.subprocess, "run", spy)
    assert sacct_states(["8"]) == {"8": "RUNNING"}
    assert seen == [60]


class _RetriedWhileRead(RunDir):
    """A run directory whose error record is cleared (a retry starting) right after its local state was read."""

    def local_state(self) -> str:
        local = super().local_state()
        self.clear_error()
        return local


def test_an_error_cleared_by_a_retry_while_the_state_is_read_is_not_a_failure(tmp_path: Path) -> None:
    """If error.json vanishes between the two reads (the retry cleared it), the run is not reported failed and
    nothing crashes: a submitted SLURM job sacct has not answered about is pending, an unsubmitted run is new."""
    rd = _RetriedWhileRead(tmp_path / "r")
    rd.create({"seed": 0})
    rd.write_error("CUDA out of memory")
    assert rd.local_state() == "failed" and rd.read_error() is None
    rd.write_error("CUDA out of memory")
    assert run_state(rd, {}).state == "new"
    rd.write_error("CUDA out of memory")
    atomic_write_json(rd.file(JOB_FILE), {**SLURM_JOB, "stderr": "/logs/7_3_0_log.err"})
    st = run_state(rd, {})
    assert (st.state, st.detail, st.log) == ("pending", f"job 7_3 {state.STATE_UNKNOWN}", "/logs/7_3_0_log.err")
