"""Few-shot probes during pretraining (paper Figure 9): schedule, no effect on training, resume, plot."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vitbench.cli import main
from vitbench.record.rundir import RunDir, run_dir
from vitbench.spec.runconfig import resolve_run_config
from vitbench.train import probe as probe_mod
from vitbench.train.probe import fewshot_curve
from vitbench.train.run import Run

REPO = Path(__file__).resolve().parents[1]
EXP = "ablations/class_vs_gap.yaml"


def curve_config(every: int, **fewshot: object) -> dict:
    """Smoke size, no fine-tuning (not what these tests are about); dropout so RNG use would show."""
    return resolve_run_config({
        "model": {"name": "ViT-nano/4", "dropout": 0.1},
        "pretrain": {"dataset": "synthetic", "size": 256, "img_size": 16, "steps": 12, "batch_size": 16,
                     "warmup_steps": 2, "augment": {"crop": "pad_crop", "flip": True}},
        "eval": {"fewshot": {"datasets": ["digits"], "shots": [1, 5], "seeds": 1, "every": every, **fewshot},
                 "finetune": {"dataset": None}},
        "runtime": {"device": "cpu", "checkpoint_every": 4, "log_every": 2, "progress": "off"},
    })


def probe_lines(rd: Path) -> list[dict]:
    return [m for m in RunDir(rd).read_metrics() if m.get("event") == "fewshot"]


def test_probes_at_every_k_steps_and_the_end(tmp_path: Path) -> None:
    rec = Run(curve_config(5), RunDir(tmp_path / "a")).execute()
    lines = probe_lines(tmp_path / "a")
    assert [m["step"] for m in lines] == [0, 5, 10, 12]  # step 0, every 5, and the last step
    for m in lines:
        assert m["epoch"] == pytest.approx(m["step"] * 16 / 256) and m["dataset"] == "digits"
        assert set(m["shots"]) == {"1", "5"} and all(0.0 <= v <= 1.0 for v in m["shots"].values())
        assert m["test_images"] == 539 and m["wall_s"] >= 0  # probe_size 1000 > the 539 digits test images
    curve = rec["fewshot_curve"]["digits"]
    assert [p["step"] for p in curve] == [0, 5, 10, 12]
    assert [p["epoch"] for p in curve] == [0.0, 0.3125, 0.625, 0.75]
    assert curve[-1]["5"] == lines[-1]["shots"]["5"]
    # the whole test split and the same shot draws: the last probe is the final few-shot evaluation
    for k in ("1", "5"):
        assert abs(curve[-1][k] - rec["fewshot"]["digits"][k]["mean"]) <= 2 / 539
    # probes are written before that step's checkpoint
    events = [(m["event"], m["step"]) for m in RunDir(tmp_path / "a").read_metrics()
              if m["event"] in ("fewshot", "checkpoint")]
    assert events.index(("fewshot", 12)) < events.index(("checkpoint", 12))


def test_probe_uses_a_fixed_test_subset(tmp_path: Path) -> None:
    Run(curve_config(6, probe_size=100, shots=[5]), RunDir(tmp_path / "s")).execute()
    lines = probe_lines(tmp_path / "s")
    assert [m["step"] for m in lines] == [0, 6, 12]
    assert all(m["test_images"] == 100 and set(m["shots"]) == {"5"} for m in lines)
    # 100 images: accuracies are multiples of 1/100
    assert all(abs(m["shots"]["5"] * 100 - round(m["shots"]["5"] * 100)) < 1e-9 for m in lines)


def test_probes_do_not_change_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = probe_mod.extract

    def greedy_extract(*args, **kw):  # noqa: ANN002, ANN003, ANN202 - a probe that uses every RNG
        torch.rand(3), np.random.rand(3), random.random()
        return real(*args, **kw)

    monkeypatch.setattr(probe_mod, "extract", greedy_extract)
    with_probes = Run(curve_config(3), RunDir(tmp_path / "p")).execute()
    without = Run(curve_config(0), RunDir(tmp_path / "n")).execute()
    assert [m["step"] for m in probe_lines(tmp_path / "p")] == [0, 3, 6, 9, 12]
    assert probe_lines(tmp_path / "n") == [] and "fewshot_curve" not in without
    assert with_probes["pretrain"]["final_loss"] == without["pretrain"]["final_loss"]
    assert with_probes["summary"] == without["summary"]
    a = torch.load(tmp_path / "p" / "ckpt" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "n" / "ckpt" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    train = lambda d: [(m["step"], m["loss"]) for m in RunDir(d).read_metrics() if m["event"] == "train"]  # noqa: E731
    assert train(tmp_path / "p") == train(tmp_path / "n")


def test_curve_reader_keeps_the_last_line_per_step() -> None:
    lines = [{"event": "fewshot", "step": 4, "epoch": 0.5, "dataset": "d", "shots": {"5": 0.1}},
             {"event": "train", "step": 4, "loss": 1.0},
             {"event": "fewshot", "step": 0, "epoch": 0.0, "dataset": "d", "shots": {"5": 0.0}},
             {"event": "fewshot", "step": 4, "epoch": 0.5, "dataset": "d", "shots": {"5": 0.2}}]
    assert fewshot_curve(lines) == {"d": [{"step": 0, "epoch": 0.0, "5": 0.0}, {"step": 4, "epoch": 0.5, "5": 0.2}]}


KILL_CONFIG = """\
model: {name: ViT-nano/4}
pretrain: {size: 256, steps: 12, batch_size: 16, warmup_steps: 2}
eval: {fewshot: {shots: [1, 5], seeds: 1, every: 2}, finetune: {dataset: null}}
runtime: {checkpoint_every: 4, log_every: 4, device: cpu, threads: 1}
"""


def _run_one(cfg: Path, results: Path, env: dict | None = None) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "vitbench.cli", "run-one", str(cfg), "--results", str(results)],
                       cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600)
    return p.returncode, p.stderr


def test_kill_between_probe_and_checkpoint_resumes_to_the_same_curve(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(KILL_CONFIG)
    code, err = _run_one(cfg, tmp_path / "ref")
    assert code == 0, err
    (ref_dir,) = (tmp_path / "ref" / "runs").iterdir()
    ref = RunDir(ref_dir).read_result()

    # SIGKILL right after the probe at step 6 is written: checkpoints exist for step 4 only
    code, _ = _run_one(cfg, tmp_path / "cut", env={"VITBENCH_FAULT": "after_fewshot_probe@6"})
    assert code == -signal.SIGKILL
    (rd,) = (tmp_path / "cut" / "runs").iterdir()
    assert [m["step"] for m in probe_lines(rd)] == [0, 2, 4, 6]
    assert [m["step"] for m in RunDir(rd).read_metrics() if m["event"] == "checkpoint"] == [4]

    code, err = _run_one(cfg, tmp_path / "cut")
    assert code == 0, err
    assert "resuming from checkpoint at step 4/12" in (rd / "log.txt").read_text()
    steps = [m["step"] for m in probe_lines(rd)]
    assert steps == [0, 2, 4, 6, 8, 10, 12]  # step 6 re-reached after the resume, not appended again
    rec = RunDir(rd).read_result()
    assert [p["step"] for p in rec["fewshot_curve"]["digits"]] == [0, 2, 4, 6, 8, 10, 12]
    assert rec["fewshot_curve"] == ref["fewshot_curve"]
    assert rec["pretrain"]["final_loss"] == ref["pretrain"]["final_loss"] and rec["summary"] == ref["summary"]


# -- the curve plot ----------------------------------------------------------------------------------


def _write_curve_records(results: Path, plan, skip=lambda r: False, diverge=lambda r: False) -> None:  # noqa: ANN001
    for i, r in enumerate(plan.runs):
        if skip(r):
            continue
        status = "diverged" if diverge(r) else "done"
        base = 0.3 + (0.2 if r.config["model"]["pool"] == "cls" else 0.0) + 0.01 * r.config["seed"]
        curve = {"digits": [{"step": s, "epoch": s * 128 / 20000, "1": base / 2 + s / 16000, "5": base + s / 8000}
                            for s in range(0, 1601, 100)]}
        rd = RunDir(run_dir(results, r.run_id))
        rd.create(r.config)
        rd.write_result({"status": status, "config": r.config,
                         "summary": {"fewshot/digits/5shot": base + 0.2} if status == "done" else {},
                         "fewshot_curve": curve,
                         "pretrain": {"train_flops": 1e12, "diverged_at": 7 if status == "diverged" else None}})


def test_curve_plot_draws_from_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitbench.aggregate.plots import _curve_points, _hue_column, plot_specs
    from vitbench.aggregate.records import load_frame
    from vitbench.aggregate.tables import placeholders
    from vitbench.plan.planner import make_plan

    monkeypatch.chdir(REPO)
    plan = make_plan(EXP, scale="micro", check_data=False)
    assert all(r.config["eval"]["fewshot"]["every"] == 100 for r in plan.runs)
    _write_curve_records(tmp_path, plan, skip=lambda r: r.config["seed"] == 2 and r.config["pretrain"]["lr"] == 1e-2,
                         diverge=lambda r: r.config["model"]["pool"] == "gap" and r.config["pretrain"]["lr"] == 1e-2)
    frame = load_frame(plan, tmp_path)
    (spec,) = [s for s in plot_specs(plan, placeholders(plan)) if s["kind"] == "curve"]
    assert spec["metric"] == "fewshot_curve/digits/5shot" and spec["file"] == "figure9-curve"
    frame["_hue"] = _hue_column(frame, plan, spec["hue"])
    assert set(frame["_hue"]) == {f"{p}, lr {lr:g}" for p in ("cls", "gap") for lr in (1e-3, 3e-3, 1e-2)}
    points = _curve_points(frame, "digits", "5", "epoch")
    # 18 planned: 2 missing (seed 2 at lr 1e-2), 2 more diverged (gap at 1e-2, seeds 0-1): 14 curves x 17 probes
    assert points["_run"].nunique() == 14 and len(points) == 14 * 17

    out = tmp_path / "plots"
    assert main(["plot", EXP, "--scale", "micro", "--results", str(tmp_path), "--out", str(out)]) == 0
    png = out / "class_vs_gap-micro-figure9-curve.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "class_vs_gap-micro-figure9.png").exists()  # the accuracy-vs-learning-rate panel stays
    first = png.read_bytes()
    assert main(["plot", EXP, "--scale", "micro", "--results", str(tmp_path), "--out", str(out)]) == 0
    assert png.read_bytes() == first  # the same records give the same bytes


@pytest.mark.parametrize("change,message", [
    ("hue: [model.pool, pretrain.lr]", "report.plots[1].hue: 'model.nope' is not a run-config key"),
    ("x: epoch", "report.plots[1].x: x must be one of epoch, step for a curve"),
    ("metric: fewshot_curve/{fewshot_dataset}/5shot", "report.plots[1].metric: metric must be fewshot_curve/"),
])
def test_curve_spec_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str,
                                        message: str) -> None:
    text = (REPO / EXP).read_text().replace("extends: ../experiments/_scales.yaml",
                                            f"extends: {REPO / 'experiments' / '_scales.yaml'}")
    bad = {"hue: [model.pool, pretrain.lr]": "hue: [model.pool, model.nope]", "x: epoch": "x: pretrain.lr",
           "metric: fewshot_curve/{fewshot_dataset}/5shot": "metric: fewshot/{fewshot_dataset}/5shot"}[change]
    assert text.count(change) == 1
    exp = tmp_path / "class_vs_gap.yaml"
    exp.write_text(text.replace(change, bad))
    assert main(["plot", str(exp), "--scale", "micro", "--results", str(tmp_path), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vitbench: error: ") and message in err[0], err
