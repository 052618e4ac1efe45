"""`run --wait` waits for every run of the plan, including runs an earlier command queued; without
accounting (no sacct answer) it says it cannot wait instead of looping for ever."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from vitbench.launch import launcher, state
from vitbench.launch.state import JOB_FILE
from vitbench.plan.planner import make_plan
from vitbench.record.rundir import RunDir, run_dir

POS = "ablations/pos_embed.yaml"


def _queue(results: Path, plan, cluster: str = "slurm") -> None:  # noqa: ANN001
    for i, r in enumerate(plan.runs):
        rd = RunDir(run_dir(results, r.run_id))
        rd.create(r.config)
        (rd.path / JOB_FILE).write_text(json.dumps({"job_id": f"77_{i}", "cluster": cluster}))


def test_waits_until_no_run_is_queued_or_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = make_plan(POS, scale="smoke", check_data=False)
    _queue(tmp_path, plan)
    polls = {"n": 0}

    def fake_sacct(ids):  # noqa: ANN001, ANN202 - SLURM's answer: running for two polls, then completed
        polls["n"] += 1
        word = "RUNNING" if polls["n"] <= 2 else "COMPLETED"
        if polls["n"] == 3:
            for r in plan.runs:
                RunDir(run_dir(tmp_path, r.run_id)).write_result({"status": "done", "config": r.config})
        return {j: word for j in ids}

    monkeypatch.setattr(state, "sacct_states", fake_sacct)
    out = io.StringIO()
    n = len(plan.runs)
    launcher.wait_for_plan(plan, tmp_path, out=out, poll_s=0.0)
    assert polls["n"] == 3
    assert out.getvalue().splitlines() == [f"0/{n} runs no longer queued or running",
                                           f"{n}/{n} runs no longer queued or running"]


def test_without_accounting_it_says_it_cannot_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = make_plan(POS, scale="smoke", check_data=False)
    _queue(tmp_path, plan)
    monkeypatch.setattr(state, "sacct_states", lambda ids: {})
    out = io.StringIO()
    launcher.wait_for_plan(plan, tmp_path, out=out, poll_s=0.0)
    assert "cannot wait: sacct does not answer" in out.getvalue()
