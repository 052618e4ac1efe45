"""Masked patch prediction as a run's pretraining objective: the [mask] embedding and the head are learned, the
loss falls, a stopped run resumes to the uninterrupted one's weights, every position embedding and placement
works, and the objective's contradictions are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_run import smoke_config
from vitbench.errors import UserError
from vitbench.record.rundir import RunDir
from vitbench.spec.runconfig import resolve_run_config
from vitbench.train.loop import StopRequested
from vitbench.train.mpp import MaskedPatchPretraining, TARGETS
from vitbench.train.run import Run
from vitbench.models import create_model


def _mpp(target: str = "mean_color", **pretrain: object) -> dict:
    cfg = smoke_config(objective="masked_patch", mpp_target=target, **pretrain)
    cfg["model"]["pool"] = "gap"
    return cfg


@pytest.mark.parametrize("target", TARGETS)
def test_the_mask_embedding_and_head_learn_and_the_loss_falls(target: str) -> None:
    torch.manual_seed(0)
    m = MaskedPatchPretraining(create_model("ViT-nano/4", num_classes=0, img_size=16), target, seed=0)
    before = m.mask_token.detach().clone()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    x = torch.rand(32, 3, 16, 16) * 2 - 1  # one fixed batch: the loss must fall on it
    losses = []
    for step in range(30):
        loss = m(x, step % 2)  # two draws, alternating
        opt.zero_grad()
        loss.backward()
        assert m.mask_token.grad is not None and m.mask_token.grad.abs().sum() > 0
        opt.step()
        losses.append(float(loss.detach()))
    assert not torch.equal(m.mask_token.detach(), before)
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5


def test_a_stopped_masked_patch_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    cfg = _mpp("color_4x4")
    full = Run(cfg, RunDir(tmp_path / "full")).execute()
    assert full["status"] == "done" and full["summary"]["pretrain/top1"] is None  # no supervised head
    stops = iter([False] * 5 + [True])
    with pytest.raises(StopRequested):
        Run(cfg, RunDir(tmp_path / "cut"), should_stop=lambda: next(stops, False)).execute()
    resumed = Run(cfg, RunDir(tmp_path / "cut")).execute()
    assert resumed["summary"] == full["summary"]
    a = torch.load(tmp_path / "full" / "ckpt" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "ckpt" / "last.pt", weights_only=True)["model"]
    assert "mask_token" in a and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("pos_embed,placement", [("learned_2d", "every_layer"), ("sincos_2d", "every_layer_shared"),
                                                 ("relative", "stem"), ("none", "stem")])
def test_every_position_embedding_and_placement_pretrains(tmp_path: Path, pos_embed: str, placement: str) -> None:
    cfg = _mpp("pixels", steps=2, warmup_steps=0)
    cfg["model"].update(pos_embed=pos_embed, pos_placement=placement)
    rec = Run(cfg, RunDir(tmp_path / "r")).execute()
    assert rec["status"] == "done" and rec["pretrain"]["final_loss"] > 0


@pytest.mark.parametrize("change,key,message", [
    ({"model": {"name": "BiT-nano"}}, "pretrain.objective", "masked_patch corrupts a ViT's patch embeddings; "
     "BiT-nano is a bit model"),
    ({"model": {"name": "ViT-nano/2"}, "pretrain": {"mpp_target": "color_4x4"}}, "pretrain.mpp_target",
     "color_4x4 pools each patch to 4x4: the patch size (2) must be a multiple of 4"),
    ({"pretrain": {"augment": {"mixup": 0.2}}}, "pretrain.augment.mixup",
     "masked patch prediction predicts the image's own patches: Mixup/CutMix must be 0"),
    ({"pretrain": {"objective": "none"}}, "pretrain.objective",
     "none means no pretraining (a model trained from scratch): set pretrain.steps: 0"),
])
def test_contradictions_are_one_line_naming_the_key(change: dict, key: str, message: str) -> None:
    partial = {"pretrain": {"objective": "masked_patch", "steps": 10, "warmup_steps": 1}}
    for section, values in change.items():
        partial.setdefault(section, {}).update(values)
    with pytest.raises(UserError) as exc:
        resolve_run_config(partial, file="f.yaml")
    assert str(exc.value) == f"f.yaml: {key}: {message}"


def test_from_scratch_reads_no_pretraining_data_and_counts_as_converged_there(tmp_path: Path) -> None:
    # objective none: the fine-tuning budget alone; the pretraining set (here one that is not on disk) is not read
    from vitbench.record.result import converged
    from vitbench.spec.runconfig import check_semantics

    cfg = smoke_config(objective="none", steps=0, warmup_steps=0, dataset="imagenet")
    check_semantics(cfg, check_data=True)  # no data root: fine, nothing of ImageNet is needed
    rec = Run(cfg, RunDir(tmp_path / "r")).execute()
    assert rec["status"] == "done" and rec["pretrain"]["train_size"] == 0 and rec["pretrain"]["top1"] is None
    assert rec["pretrain"]["convergence"]["reason"] == "not pretrained: pretrain.objective is none"
    assert converged(rec)["pretrain"] is True and rec["finetune"]["best_lr"] in (0.01, 0.03)
