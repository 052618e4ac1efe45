"""The four paper experiments end to end at smoke scale through the local SLURM cluster, into a
results directory whose path has spaces and quotes (nothing is pasted into a shell); their tables
are checked for shape, N/A cells and missing-run cells."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest

from conftest import SmokeStore
from slurm_helpers import REPO, vitbench

from vitbench.plan.planner import make_plan
from vitbench.plan.suite import PAPER_EXPERIMENTS

pytestmark = pytest.mark.slurm


def _table(exp: str, results: Path, fmt: str = "csv") -> str:
    return vitbench("table", exp, "--scale", "smoke", "--results", str(results), "--format", fmt).stdout


@pytest.mark.timeout(900)  # the first user of the session's smoke store trains it
def test_four_experiments_at_smoke_scale(smoke_store: SmokeStore, tmp_path: Path) -> None:
    for exp in PAPER_EXPERIMENTS:
        n = len(make_plan(REPO / exp, scale="smoke", check_data=False).runs)
        out = smoke_store.waited[exp]
        assert "nothing to submit" in out and f"{n}/{n} runs no longer queued or running" in out, out
        status = vitbench("status", exp, "--scale", "smoke", "--results", str(smoke_store.results)).stdout
        head = status.splitlines()[0]
        assert " done" in head and not any(w in head for w in ("failed", "running", "pending")), status
    results = tmp_path / "copy"  # this test removes a record below; the session's store stays whole
    shutil.copytree(smoke_store.results, results)

    t8 = _table("ablations/pos_embed.yaml", results, "md").split("\n\n")[1].splitlines()
    assert [c.strip() for c in t8[0].split("|")[1:-1]] == ["model.pos_embed", "stem", "every_layer",
                                                           "every_layer_shared"]
    body = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in t8[2:]}
    assert list(body) == ["learned_1d", "learned_2d", "sincos_2d", "none", "relative"]
    assert body["none"][1:] == ["N/A", "N/A"] and body["relative"][1:] == ["N/A", "N/A"]
    assert body["sincos_2d"][1] == "N/A"
    assert all(c != "N/A" and not c.startswith("missing") for c in body["learned_1d"])

    cvg = list(csv.reader(io.StringIO(_table("ablations/class_vs_gap.yaml", results))))
    rows = [r for r in cvg[1:] if r[1] == "fewshot/digits/5shot"]
    assert {r[2] for r in rows} == {"cls", "gap"} and len(rows) == 2 * 4  # 3 rates + the tuned column
    assert all(r[9] == "ok" for r in rows)
    scaling = _table("experiments/data_scaling.yaml", results, "md")
    assert "ViT-nano/4" in scaling and "BiT-nano" in scaling and "| 128 " in scaling and "| 512 " in scaling
    compute = _table("experiments/model_compute.yaml", results, "md")
    assert "exaFLOPs" in compute and "missing" not in compute

    # a run whose record is gone shows as missing, never as a number
    plan = make_plan(REPO / "ablations" / "pos_embed.yaml", scale="smoke", check_data=False)
    victim = next(r for r in plan.runs if r.config["model"]["pos_embed"] == "learned_2d")
    shutil.rmtree(results / "runs" / victim.run_id)
    t8 = _table("ablations/pos_embed.yaml", results, "md")
    assert "missing (0/1)" in t8.split("\n\n")[1]
