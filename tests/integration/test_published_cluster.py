"""experiments/published.yaml end to end through the local SLURM cluster: generated checkpoints in the
vision_transformer and BiT .npz layouts under a data root, evaluated (few-shot and fine-tuning, no pretraining),
their records naming the file and its sha256, the table built from them; a changed file is a new run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurm_helpers import REPO, vitbench
from npz_export import write_stand_ins

from vitbench.models.published import file_sha256
from vitbench.plan.planner import make_plan

pytestmark = pytest.mark.slurm
EXP = str(REPO / "experiments" / "published.yaml")


@pytest.mark.timeout(600)
def test_published_models_evaluated_through_the_cluster(slurm_cluster: object, tmp_path: Path) -> None:
    root, results = tmp_path / "data root", tmp_path / "results"
    files = write_stand_ins(root)
    args = ("--scale", "smoke", "--results", str(results), "--data-root", str(root))
    out = vitbench("run", EXP, *args, "--cluster", "slurm", "--wait").stdout
    assert "submitted 2 runs as array" in out and "2/2 jobs finished" in out, out
    plan = make_plan(EXP, scale="smoke", overrides=[f"runtime.data_root={root}"], check_data=False)
    for run in plan.runs:
        rec = json.loads((results / "runs" / run.run_id / "result.json").read_text())
        f = files[rec["model"]["name"]]
        assert rec["status"] == "done" and rec["model"]["init"]["file"] == str(f)
        assert rec["model"]["init"]["sha256"] == file_sha256(f) == run.config["model"]["init_sha256"]
        assert rec["pretrain"]["steps"] == 0 and rec["summary"]["pretrain/top1"] is None
        assert rec["summary"]["fewshot/digits/5shot"] > 0.1 and rec["summary"]["finetune/digits/top1"] is not None
    table = vitbench("table", EXP, *args).stdout
    assert "ViT-nano/4" in table and "BiT-nano" in table and "missing" not in table, table

    write_stand_ins(root, seed=2)  # other weights under the same names: other runs, the old records stay
    status = vitbench("status", EXP, *args).stdout
    assert status.splitlines()[0].count("new") == 1 and "2 new" in status.splitlines()[0], status
