"""A NaN loss is recorded as ``diverged`` at exactly its step (README reliability table).

The NaN is injected at a known step: the pretraining batch of that step is poisoned with NaN
pixels, so that step's loss is the first non-finite one. Steps count as everywhere else in a
run directory (metrics.jsonl ``train``/``checkpoint`` events, checkpoints, "resuming at step k"):
step k is the k-th optimisation step, the one whose loss metrics.jsonl would log as ``step: k``.
"""

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from vitbench.record.rundir import RunDir
from vitbench.spec.runconfig import resolve_run_config
from vitbench.train.run import Run

TOTAL, LOG_EVERY, CKPT_EVERY = 12, 2, 4


def _config() -> dict:
    return resolve_run_config({
        "model": {"name": "ViT-nano/4"},
        "pretrain": {"dataset": "synthetic", "size": 256, "img_size": 16, "steps": TOTAL, "batch_size": 16,
                     "warmup_steps": 2},
        "eval": {"fewshot": {"datasets": ["digits"], "shots": [1], "seeds": 1},
                 "finetune": {"dataset": "digits", "steps": 2, "batch_size": 16, "lrs": [0.01]}},
        "runtime": {"device": "cpu", "checkpoint_every": CKPT_EVERY, "log_every": LOG_EVERY, "progress": "off"},
    })


class _Poisoned:
    """The pretraining loader, except that the batch of one step is all NaN."""

    def __init__(self, inner: Any, nan_step: int) -> None:
        self.inner, self.nan_step = inner, nan_step

    def get_batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.inner.get_batch(index)  # index 0 is the batch of step 1
        if index + 1 == self.nan_step:
            x = torch.full_like(x, float("nan"))
        return x, y

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _poison(monkeypatch: pytest.MonkeyPatch, cfg: dict, nan_step: int) -> None:
    real = Run._loader

    def loader(self: Run, spec: Any, batch_size: int, *, train: bool, augment: Any, seed: int) -> Any:
        inner = real(self, spec, batch_size, train=train, augment=augment, seed=seed)
        pretraining = train and seed == cfg["seed"]  # fine-tuning loaders use seed + 1
        return _Poisoned(inner, nan_step) if pretraining else inner

    monkeypatch.setattr(Run, "_loader", loader)


def _train_steps(rd: RunDir) -> list[int]:
    path = rd.path / "metrics.jsonl"  # absent when nothing was logged before the NaN
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [m["step"] for m in lines if m.get("event") == "train" and m.get("phase") == "pretrain"]


@pytest.mark.parametrize("nan_step", [1, 5, 6, 11])  # first step; first/second of a log window; late
def test_nan_loss_is_recorded_at_exactly_its_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  nan_step: int) -> None:
    cfg = _config()
    _poison(monkeypatch, cfg, nan_step)
    rd = RunDir(tmp_path / "d")
    rec = Run(cfg, rd).execute()

    assert rec["status"] == "diverged"
    assert rec["pretrain"]["diverged_at"] == nan_step
    # every loss before the NaN step was finite and logged at its step; nothing from that step on
    steps = _train_steps(rd)
    assert steps == list(range(LOG_EVERY, nan_step, LOG_EVERY))
    # training stopped at the first check point at or after the NaN step
    assert rec["pretrain"]["steps_done"] == -(-nan_step // LOG_EVERY) * LOG_EVERY
    assert "fewshot" not in rec and "finetune" not in rec
    assert f"non-finite loss at step {nan_step}" in (rd.path / "log.txt").read_text()

    # resuming keeps the step (read back from the checkpoint, no training again)
    again = Run(cfg, rd).execute()
    assert again["status"] == "diverged" and again["pretrain"]["diverged_at"] == nan_step


def test_a_clean_run_has_no_divergence_step(tmp_path: Path) -> None:
    cfg = _config()
    cfg["eval"]["finetune"]["dataset"] = None
    cfg["eval"]["fewshot"]["datasets"] = []
    rec = Run(cfg, RunDir(tmp_path / "ok")).execute()
    assert rec["status"] == "done" and rec["pretrain"]["diverged_at"] is None
    assert rec["pretrain"]["steps_done"] == TOTAL
