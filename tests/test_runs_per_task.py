"""runs_per_task without a cluster: `--cluster debug` runs the grouped task in this process, one record
per run, and a second command finds them done (the grouping changes how runs are started, not what
they record)."""

from __future__ import annotations

import json
from pathlib import Path

from vitbench.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_a_grouped_task_writes_one_record_per_run(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    exp = tmp_path / "g.yaml"
    exp.write_text(f"extends: {REPO / 'experiments' / '_scales.yaml'}\nseeds: [0, 1, 2]\n"
                   "scales:\n  smoke:\n    seeds: [0, 1, 2]\n    base: {pretrain: {steps: 3}}\n")
    prof = tmp_path / "p.yaml"
    prof.write_text("runs_per_task: 2\n")
    results = tmp_path / "r"
    args = ["run", str(exp), "--scale", "smoke", "--cluster", "debug", "--profile", str(prof), "--results", str(results)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "submitted 3 runs as debug jobs, 2 runs per task" in out, out
    jobs = {d.name: json.loads((d / "job.json").read_text()) for d in (results / "runs").iterdir()}
    assert sorted(j["runs_in_task"] for j in jobs.values()) == [1, 2, 2]
    for d in (results / "runs").iterdir():
        assert json.loads((d / "result.json").read_text())["run_id"] == d.name
    assert main(args) == 0 and "nothing to submit" in capsys.readouterr().out
