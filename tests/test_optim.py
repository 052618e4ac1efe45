"""Pretraining optimiser: the weight-decay rule (kernels only; model-owned exclusions) and AdamW semantics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitbench.models import PLACEMENTS, POS_EMBEDS, create_model
from vitbench.models.vit import VIT_SIZES
from vitbench.spec.schema import default_config
from vitbench.train.optim import build_pretrain_optimizer, decay_summary, describe_decay

DEPTH = VIT_SIZES["nano"][1]
VALID_COMBOS = [(pe, pl) for pe in POS_EMBEDS for pl in PLACEMENTS if pl == "stem" or pe not in ("none", "relative")]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _expected_matrices(pos_embed: str, placement: str, pool: str, depth: int) -> set[str]:
    """Not-decayed tensors with ndim >= 2: [class] token, learned position tables, relative-bias tables."""
    names = {"cls_token"} if pool == "cls" else set()
    n_abs = depth if placement == "every_layer" else 1
    if pos_embed == "learned_1d":
        names |= {f"pos_embed.{i}.pos" for i in range(n_abs)}
    elif pos_embed == "learned_2d":
        names |= {f"pos_embed.{i}.pos_{a}" for i in range(n_abs) for a in ("y", "x")}
    elif pos_embed == "relative":
        names |= {f"blocks.{i}.attn.rel_pos.table" for i in range(depth)}
    return names  # none: nothing; sincos_2d: a buffer, not a parameter


def _check_rule(model: nn.Module, expected: set[str]) -> dict:
    s = decay_summary(model)
    decayed, not_decayed = set(s["decayed"]), set(s["not_decayed"])
    params = dict(model.named_parameters())
    assert decayed | not_decayed == set(params) and not decayed & not_decayed
    assert set(s["not_decayed_matrices"]) == expected
    assert len(s["not_decayed_matrices"]) == len(expected)
    kernels, others = set(), set()
    for mname, m in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            kernels.add(prefix + "weight")
            if m.bias is not None:
                others.add(prefix + "bias")
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            others |= {prefix + n for n, _ in m.named_parameters(recurse=False)}
    assert kernels and kernels <= decayed, sorted(kernels - decayed)
    assert others and others <= not_decayed, sorted(others & decayed)
    assert decayed == kernels  # nothing but Linear / Conv kernels is decayed
    assert not_decayed == others | expected  # and everything else is a bias, a norm parameter or a named table
    assert s["decayed_tensors"] == len(decayed) and s["not_decayed_tensors"] == len(not_decayed)
    assert s["decayed_params"] == sum(params[n].numel() for n in decayed)
    assert s["not_decayed_params"] == sum(params[n].numel() for n in not_decayed)
    return s


@pytest.mark.parametrize("pos_embed,placement", VALID_COMBOS)
@pytest.mark.parametrize("pool", ["cls", "gap"])
def test_vit_decay_rule(pos_embed: str, placement: str, pool: str) -> None:
    model = create_model("ViT-nano/4", num_classes=10, img_size=16, pos_embed=pos_embed, pos_placement=placement,
                         pool=pool)
    expected = _expected_matrices(pos_embed, placement, pool, DEPTH)
    assert model.no_weight_decay() == expected
    _check_rule(model, expected)


@pytest.mark.parametrize("pos_embed", ["learned_1d", "relative"])
def test_hybrid_decay_rule(pos_embed: str) -> None:
    model = create_model("Rmicro+micro", num_classes=10, img_size=16, pos_embed=pos_embed)
    depth = VIT_SIZES["micro"][1]
    expected = _expected_matrices(pos_embed, "stem", "cls", depth)
    assert model.no_weight_decay() == expected  # inherited from VisionTransformer; the ResNet adds nothing
    s = _check_rule(model, expected)
    assert "patch_embed.backbone.stem.conv.weight" in s["decayed"] and "patch_embed.proj.weight" in s["decayed"]


def test_bit_decay_rule() -> None:
    model = create_model("BiT-micro", num_classes=10, img_size=16)
    assert model.no_weight_decay() == set()
    s = _check_rule(model, set())
    assert "head.fc.weight" in s["decayed"] and "head.fc.bias" in s["not_decayed"]


def test_optimizer_groups_follow_the_rule_and_log_line() -> None:
    model = create_model("ViT-nano/4", num_classes=10, img_size=16)
    cfg = {**default_config()["pretrain"], "weight_decay": 0.1}
    lines: list[str] = []
    opt = build_pretrain_optimizer(model, cfg, log=lines.append)
    assert type(opt) is torch.optim.AdamW
    names = {id(p): n for n, p in model.named_parameters()}
    by_wd = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in opt.param_groups}
    s = decay_summary(model)
    assert by_wd == {0.1: set(s["decayed"]), 0.0: set(s["not_decayed"])}
    assert lines == [describe_decay(s, 0.1)]
    assert lines[0].startswith(f"weight decay 0.1 on {s['decayed_tensors']} tensors ({s['decayed_params']:,} params)")
    assert lines[0].endswith("incl. cls_token, pos_embed.0.pos")
    long = describe_decay({**s, "not_decayed_matrices": [f"t{i}" for i in range(9)]}, 0.1)
    assert long.endswith("incl. t0, t1, t2, t3, t4, t5, …")


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_and_adamw_are_the_papers_decoupled_decay_times_lr(name: str) -> None:
    """flax.optim.Adam: ``new_param -= lr * weight_decay * param`` = torch AdamW; pos tables not decayed."""
    model = create_model("ViT-nano/4", num_classes=10, img_size=16)
    lr, wd = 1.0, 0.1
    cfg = {**default_config()["pretrain"], "optimizer": name, "lr": lr, "weight_decay": wd}
    opt = build_pretrain_optimizer(model, cfg)
    assert type(opt) is torch.optim.AdamW
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: the adaptive step is exactly 0, only the decay acts
    opt.step()
    s = decay_summary(model)
    for n, p in model.named_parameters():
        if n in s["decayed"]:
            torch.testing.assert_close(p.detach(), before[n] * (1 - lr * wd), atol=0, rtol=1e-6)
        else:
            torch.testing.assert_close(p.detach(), before[n], atol=0, rtol=0)
    assert "pos_embed.0.pos" in s["not_decayed"] and "blocks.0.attn.qkv.weight" in s["decayed"]
    assert before["blocks.0.attn.qkv.weight"].abs().max() > 0  # the check above is not vacuous
