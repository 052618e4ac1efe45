"""One run end to end: record contents, resume equivalence, divergence, failure records."""

from pathlib import Path

import pytest
import torch

from vitbench.cli import main
from vitbench.plan.ids import run_id
from vitbench.record.rundir import RunDir
from vitbench.spec.runconfig import resolve_run_config
from vitbench.train.loop import StopRequested
from vitbench.train.run import Run


def smoke_config(**pretrain: object) -> dict:
    return resolve_run_config({
        "model": {"name": "ViT-nano/4"},
        "pretrain": {"dataset": "synthetic", "size": 256, "img_size": 16, "steps": 12, "batch_size": 16,
                     "warmup_steps": 2, **pretrain},
        "eval": {"fewshot": {"datasets": ["digits"], "shots": [1, 5], "seeds": 2},
                 "finetune": {"dataset": "digits", "steps": 4, "batch_size": 16, "lrs": [0.01, 0.03],
                              "warmup_steps": 1}},
        "runtime": {"device": "cpu", "checkpoint_every": 4, "log_every": 2, "progress": "off"},
    })


@pytest.mark.parametrize("model", ["ViT-nano/4", "BiT-nano", "Rmicro+micro"])
def test_one_step_smoke_per_family(tmp_path: Path, model: str) -> None:
    cfg = smoke_config(steps=1, warmup_steps=0)
    cfg["model"]["name"] = model
    rec = Run(cfg, RunDir(tmp_path / run_id(cfg))).execute()
    assert rec["status"] == "done" and rec["pretrain"]["steps_done"] == 1
    assert 0.0 <= rec["summary"]["fewshot/digits/5shot"] <= 1.0
    assert rec["model"]["params"] > 0 and rec["model"]["flops_per_image"] > 0


def test_run_one_cli_writes_documented_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("model: {name: ViT-nano/4}\npretrain: {size: 256, steps: 8, batch_size: 16, warmup_steps: 1}\n"
                        "eval: {fewshot: {shots: [1, 5], seeds: 1}, finetune: {steps: 3, lrs: [0.01]}}\n"
                        "runtime: {checkpoint_every: 4, device: cpu}\n")
    assert main(["run-one", str(cfg_file), "--results", str(tmp_path / "res")]) == 0
    out = capsys.readouterr().out
    assert "\ndone: " in out and "fewshot/digits/5shot" in out and "finetune/digits/top1" in out
    (rd,) = (tmp_path / "res" / "runs").iterdir()
    names = {p.name for p in rd.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "log.txt", "ckpt", "progress.json", "result.json"} <= names
    rec = RunDir(rd).read_result()
    assert rec["run_id"] == rd.name and rec["finetune"]["best_lr"] == 0.01
    assert rec["pretrain"]["top1"] is not None


def test_resume_after_stop_matches_uninterrupted_run(tmp_path: Path) -> None:
    cfg = smoke_config()
    full = Run(cfg, RunDir(tmp_path / "full")).execute()

    stops = iter([False] * 5 + [True])  # stop at the boundary after step 6
    with pytest.raises(StopRequested) as info:
        Run(cfg, RunDir(tmp_path / "cut"), should_stop=lambda: next(stops, False)).execute()
    assert info.value.step == 6
    assert not (tmp_path / "cut" / "result.json").exists()
    resumed = Run(cfg, RunDir(tmp_path / "cut")).execute()
    assert "resuming from checkpoint at step 6/12" in (tmp_path / "cut" / "log.txt").read_text()
    assert resumed["summary"] == full["summary"]
    assert resumed["pretrain"]["final_loss"] == full["pretrain"]["final_loss"]
    a = torch.load(tmp_path / "full" / "ckpt" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "ckpt" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_is_recorded_as_diverged(tmp_path: Path) -> None:
    cfg = smoke_config(lr=1e6, warmup_steps=0, grad_clip=0.0, optimizer="adam", weight_decay=0.0)
    rec = Run(cfg, RunDir(tmp_path / "d")).execute()
    assert rec["status"] == "diverged"
    assert 1 <= rec["pretrain"]["diverged_at"] <= 12
    assert "fewshot" not in rec
    # resuming a diverged run does not train again: the record stays as it is
    again = Run(cfg, RunDir(tmp_path / "d")).execute()
    assert again["status"] == "diverged" and again["pretrain"]["diverged_at"] == rec["pretrain"]["diverged_at"]
