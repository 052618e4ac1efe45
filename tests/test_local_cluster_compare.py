"""`vitbench run --cluster local` (the README's quick start: submitit's local executor, one process per run)
and `compare` when it has to run the variant itself (`--cluster debug`: in this process), end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vitbench.cli import main
from vitbench.plan.planner import make_plan

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # six smoke runs, two of them in subprocesses


def test_local_cluster_then_compare_runs_the_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "pe.yaml"
    exp.write_text(f"extends: {REPO / 'experiments' / '_scales.yaml'}\n"
                   "grid: {model.pos_embed: [learned_1d, none]}\n"
                   "report: {tables: [{title: t, metric: fewshot/digits/5shot, rows: model.pos_embed}]}\n"
                   "scales:\n  smoke:\n    seeds: [0, 1]\n    base: {pretrain: {steps: 4}}\n")
    results = tmp_path / "res"
    assert main(["run", str(exp), "--scale", "smoke", "--cluster", "local", "--results", str(results), "--wait"]) == 0
    out = capsys.readouterr().out
    assert "submitted 4 runs" in out, out
    plan = make_plan(exp, scale="smoke", check_data=False)
    for r in plan.runs:
        rd = results / "runs" / r.run_id
        rec = json.loads((rd / "result.json").read_text())
        assert rec["status"] == "done" and json.loads((rd / "job.json").read_text())["cluster"] == "local"

    assert main(["compare", str(exp), "--scale", "smoke", "--results", str(results), "--cluster", "debug",
                 "--set", "model.pos_embed=sincos_2d"]) == 0
    report = capsys.readouterr().out
    variant = make_plan(exp, scale="smoke", overrides=["model.pos_embed=sincos_2d"], check_data=False).runs
    assert len(variant) == 2  # the variant's own runs at the baselines' seeds, trained by compare
    recs = [json.loads((results / "runs" / r.run_id / "result.json").read_text()) for r in variant]
    assert all(r["status"] == "done" and r["config"]["model"]["pos_embed"] == "sincos_2d" for r in recs)
    mean = sum(r["summary"]["fewshot/digits/5shot"] for r in recs) / 2
    assert f"{mean:.4f}" in report and "learned_1d" in report and "none" in report, report
    assert "Holm" in report


def test_a_second_local_run_leaves_the_first_ones_live_jobs_alone(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # two `vitbench run --cluster local` on one plan: the second must not start a second writer per run
    exp = tmp_path / "one.yaml"
    exp.write_text(f"extends: {REPO / 'experiments' / '_scales.yaml'}\n"
                   "scales:\n  smoke:\n    seeds: [0]\n    base: {pretrain: {steps: 400}}\n")
    results = tmp_path / "res"
    first = subprocess.Popen([sys.executable, "-m", "vitbench.cli", "run", str(exp), "--scale", "smoke",
                              "--cluster", "local", "--results", str(results)], start_new_session=True,
                             env={**os.environ, "VITBENCH_TEST_STEP_DELAY_S": "1"},  # outlasts the test
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (run,) = make_plan(exp, scale="smoke", check_data=False).runs
        job_file = results / "runs" / run.run_id / "job.json"
        deadline = time.time() + 120
        while not job_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        job = json.loads(job_file.read_text())
        assert main(["run", str(exp), "--scale", "smoke", "--cluster", "local", "--results", str(results)]) == 0
        assert "nothing to submit: 1 runs are done, queued or running" in capsys.readouterr().out
        assert json.loads(job_file.read_text()) == job  # not resubmitted
        assert main(["status", str(exp), "--scale", "smoke", "--results", str(results)]) == 0
        assert f"local process {job['job_id']}" in capsys.readouterr().out
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the launcher and its local jobs (one process group)
        first.wait()
