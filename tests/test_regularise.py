"""Regularisation for small data (AugReg, Steiner et al. 2021): RandAugment, Mixup/CutMix, stochastic depth."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from vitbench.data import get_dataset, make_loader, ops, parse_augment
from vitbench.data.loader import AUGMENT_KEYS, Augment, RandAugmentBatch, make_mixer
from vitbench.data.registry import DatasetSpec
from vitbench.models import create_model
from vitbench.plan.ids import run_id
from vitbench.record.rundir import RunDir
from vitbench.spec.runconfig import resolve_run_config
from vitbench.spec.schema import AUGMENT
from vitbench.models import config_kwargs as model_kwargs
from vitbench.train.run import Run

REG = {"crop": "pad_crop", "flip": True, "randaugment": "rand-m15-n2", "mixup": 0.8, "cutmix": 1.0}


@pytest.fixture(scope="module")
def synth() -> DatasetSpec:
    return get_dataset("synthetic", "train", img_size=16, size=100)


def _global_rng() -> tuple[object, np.ndarray]:
    return random.getstate(), np.random.get_state()[1].copy()


def _same_rng(a: tuple[object, np.ndarray], b: tuple[object, np.ndarray]) -> bool:
    return a[0] == b[0] and bool((a[1] == b[1]).all())


# -- config -------------------------------------------------------------------------------------------
def test_augment_keys_come_from_the_schema_and_validate() -> None:
    assert AUGMENT_KEYS == tuple(AUGMENT)
    aug = parse_augment(REG)
    assert aug == Augment("pad_crop", True, "rand-m15-n2", 0.8, 1.0) and aug.active and aug.mixing
    assert not parse_augment({"mixup": 0.2}).active and parse_augment({"mixup": 0.2}).mixing
    assert parse_augment({"randaugment": None, "mixup": None}) == Augment()
    for bad, match in [({"randaugment": "rand-q5"}, "augment.randaugment"),
                       ({"randaugment": "autoaug-m9"}, "augment.randaugment"),
                       ({"randaugment": "rand-m1.5"}, "augment.randaugment"),
                       ({"randaugment": 9}, "augment.randaugment"),
                       ({"mixup": -0.1}, "augment.mixup"), ({"cutmix": True}, "augment.cutmix"),
                       ({"cutmix": "1"}, "augment.cutmix"), ({"mix": 1.0}, "unknown augment key")]:
        with pytest.raises(ValueError, match=match) as exc:
            parse_augment(bad)
        assert "\n" not in str(exc.value)


# -- Mixup / CutMix -----------------------------------------------------------------------------------
def _mix(aug: dict, n: int = 16, step: int = 3, smoothing: float = 0.0) -> tuple[torch.Tensor, ...]:
    x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n)  # all labels distinct: both mixing weights can be read off the target
    mixer = make_mixer(aug, num_classes=n, label_smoothing=smoothing, seed=5)
    assert mixer is not None
    xm, t = mixer(x.clone(), y, step)
    return x, y, xm, t


def test_mixup_mixes_images_and_labels_with_the_same_lambda() -> None:
    x, y, xm, t = _mix({"mixup": 1.0})
    n = len(y)
    assert t.shape == (n, n) and t.dtype == torch.float32
    assert torch.allclose(t.sum(1), torch.ones(n))
    lams = []
    for i in range(n):
        j = n - 1 - i  # timm's "elem" partner
        lam = float(t[i, i]) if i != j else 1.0
        assert math.isclose(float(t[i, i]) + float(t[i, j]), 1.0, abs_tol=1e-6)  # convex combination of 2 one-hots
        assert torch.allclose(xm[i], lam * x[i] + (1 - lam) * x[j], atol=1e-5)
        lams.append(lam)
    assert len({round(v, 6) for v in lams}) > n // 2  # per-sample lambdas
    # with label smoothing the soft target is smoothed once (by Mixup) and still sums to 1
    _, _, _, ts = _mix({"mixup": 1.0}, smoothing=0.1)
    assert torch.allclose(ts.sum(1), torch.ones(n)) and float(ts.min()) >= 0.1 / n - 1e-7


def test_cutmix_target_weight_is_the_pasted_area() -> None:
    x, y, xm, t = _mix({"cutmix": 1.0})
    n, hw = len(y), x.shape[-1] * x.shape[-2]
    assert torch.allclose(t.sum(1), torch.ones(n))
    pasted_any = False
    for i in range(n // 2):  # i != n-1-i
        j = n - 1 - i
        pasted = (xm[i] != x[i]).any(0)  # (H, W)
        assert torch.equal(xm[i][:, pasted], x[j][:, pasted]) and torch.equal(xm[i][:, ~pasted], x[i][:, ~pasted])
        rows, cols = pasted.any(1).nonzero(), pasted.any(0).nonzero()
        if len(rows):  # a rectangle
            assert int(pasted.sum()) == (int(rows.max()) - int(rows.min()) + 1) * (int(cols.max()) - int(cols.min()) + 1)
            pasted_any = True
        assert math.isclose(float(t[i, j]), float(pasted.sum()) / hw, abs_tol=1e-6)
        assert math.isclose(float(t[i, i]), 1 - float(pasted.sum()) / hw, abs_tol=1e-6)
    assert pasted_any


def test_mixing_is_deterministic_per_step_and_leaves_global_rng_alone() -> None:
    before = _global_rng()
    a = _mix({"mixup": 0.8, "cutmix": 1.0}, step=7)
    b = _mix({"mixup": 0.8, "cutmix": 1.0}, step=7)
    c = _mix({"mixup": 0.8, "cutmix": 1.0}, step=8)
    assert _same_rng(before, _global_rng())
    assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    assert not torch.equal(a[3], c[3])
    assert make_mixer({"crop": "pad_crop"}, num_classes=4, seed=0) is None
    with pytest.raises(ValueError, match="even batch size"):
        make_mixer({"mixup": 1.0}, num_classes=4, seed=0)(torch.zeros(3, 3, 4, 4), torch.zeros(3, dtype=torch.long), 0)


def test_loader_batches_are_deterministic_resumable_and_rng_neutral(synth: DatasetSpec) -> None:
    def batch(loader, step: int) -> tuple[torch.Tensor, torch.Tensor]:  # what train_loop feeds the model
        x, y = loader.get_batch(step)
        return loader.mixer(0.1)(x, y, step)

    seq = make_loader(synth, batch_size=32, device="cpu", train=True, seed=1, augment=REG)
    before = _global_rng()
    batches = [batch(seq, s) for s in range(5)]
    assert _same_rng(before, _global_rng())
    fresh = make_loader(synth, batch_size=32, device="cpu", train=True, seed=1, augment=REG)  # a resumed run
    for s in (4, 2):
        x, t = batch(fresh, s)
        assert torch.equal(x, batches[s][0]) and torch.equal(t, batches[s][1])
    assert not torch.equal(batches[3][0], batches[4][0])
    x, t = batches[0]
    assert x.shape == (32, 3, 16, 16) and t.shape == (32, synth.num_classes)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0 and torch.allclose(t.sum(1), torch.ones(32))
    assert make_loader(synth, batch_size=32, device="cpu", train=False, seed=1, augment=REG).mixer() is None


# -- RandAugment --------------------------------------------------------------------------------------
def test_randaugment_is_per_sample_and_deterministic(synth: DatasetSpec) -> None:
    ra = RandAugmentBatch("rand-m15-n2", 16, seed=0)
    x = synth.images[:1].repeat(16, 1, 1, 1)  # one image 16 times: differences come from the ops alone
    before = _global_rng()
    out = ra(x, 0)
    assert _same_rng(before, _global_rng())
    assert out.shape == x.shape and out.dtype == torch.uint8
    changed = [i for i in range(16) if not torch.equal(out[i], x[i])]
    assert len(changed) >= 2
    assert len({out[i].numpy().tobytes() for i in changed}) >= 2  # changed differently
    assert torch.equal(ra(x, 0), out) and not torch.equal(ra(x, 1), out)
    assert torch.equal(RandAugmentBatch("rand-m15-n2", 16, seed=0)(x, 0), out)


def test_randaugment_only_on_train_batches(synth: DatasetSpec) -> None:
    aug = {"randaugment": "rand-m9-n2"}
    plain = make_loader(synth, batch_size=32, device="cpu", train=True, seed=0)
    ra = make_loader(synth, batch_size=32, device="cpu", train=True, seed=0, augment=aug)
    (xp, yp), (xr, yr) = plain.get_batch(2), ra.get_batch(2)
    assert torch.equal(yp, yr) and not torch.equal(xp, xr)
    assert float(xr.min()) >= -1.0 and float(xr.max()) <= 1.0
    ev = make_loader(synth, batch_size=40, device="cpu", train=False, seed=0, augment=aug)
    xs, _ = zip(*ev.iter_eval(40))
    assert torch.equal(torch.cat(xs), ops.to_unit_range(synth.images))
    assert torch.equal(ev.get_batch(0)[0], ops.to_unit_range(synth.images[:40]))
    # with crop + flip: all of them run (order: crop, flip, RandAugment, scale) and stay deterministic
    for crop in ("pad_crop", "random_resized"):
        full = {"crop": crop, "flip": True, **aug}
        a = make_loader(synth, batch_size=32, device="cpu", train=True, seed=0, augment=full).get_batch(5)
        b = make_loader(synth, batch_size=32, device="cpu", train=True, seed=0, augment=full).get_batch(5)
        assert torch.equal(a[0], b[0])
    with pytest.raises(ValueError, match="augment.randaugment") as exc:
        make_loader(synth, batch_size=8, device="cpu", train=True, seed=0, augment={"randaugment": "rand-zz-n2"})
    assert "\n" not in str(exc.value)


# -- stochastic depth ---------------------------------------------------------------------------------
def test_stochastic_depth_in_vit() -> None:
    torch.manual_seed(0)
    net = create_model("ViT-nano/4", num_classes=10, img_size=16, drop_path=0.5)
    ref = create_model("ViT-nano/4", num_classes=10, img_size=16, drop_path=0.0)
    ref.load_state_dict(net.state_dict())
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in net.blocks]
    depth = len(net.blocks)
    assert rates == pytest.approx([0.5 * i / (depth - 1) for i in range(depth)])  # timm's linear rule
    assert rates[0] == 0.0 and rates[-1] == 0.5 and isinstance(net.blocks[0].drop_path, torch.nn.Identity)

    x = torch.randn(32, 3, 16, 16)
    seen: list[torch.Tensor] = []
    hook = net.blocks[-1].drop_path.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    net.train()
    torch.manual_seed(1)
    a = net(x)
    torch.manual_seed(2)
    b = net(x)
    hook.remove()
    assert not torch.allclose(a, b)
    dropped = (seen[0].flatten(1) == 0).all(1)  # per sample: the residual branch is zeroed or kept (scaled)
    assert 0 < int(dropped.sum()) < 32
    net.eval()
    ref.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x)) and torch.allclose(net(x), ref(x), atol=1e-6)


def test_drop_path_reaches_every_family() -> None:
    for name in ("ViT-nano/4", "Rmicro+micro", "BiT-nano"):
        m = {"name": name, "dropout": 0.0, "drop_path": 0.2, "pos_embed": "learned_1d", "pos_placement": "stem",
             "pool": "cls", "pre_logits": True}
        assert model_kwargs(m)["drop_path"] == 0.2
        net = create_model(name, num_classes=4, img_size=16, **model_kwargs(m))
        rates = [mod.drop_prob for mod in net.modules() if type(mod).__name__ == "DropPath"]
        assert rates and max(rates) == pytest.approx(0.2), name
    with pytest.raises(ValueError, match="drop_path"):
        create_model("BiT-nano", num_classes=4, img_size=16, drop_path=1.5)


# -- end to end ---------------------------------------------------------------------------------------
def test_run_with_all_regularisers_trains(tmp_path: Path) -> None:
    cfg = resolve_run_config({
        "model": {"name": "ViT-nano/4", "drop_path": 0.1},
        "pretrain": {"dataset": "synthetic", "size": 128, "img_size": 16, "steps": 6, "batch_size": 16,
                     "warmup_steps": 1, "label_smoothing": 0.1, "augment": REG},
        "eval": {"fewshot": {"datasets": ["digits"], "shots": [1], "seeds": 1},
                 "finetune": {"dataset": "digits", "steps": 2, "batch_size": 16, "lrs": [0.01],
                              "warmup_steps": 0, "augment": {"randaugment": "rand-m9-n2", "mixup": 0.2}}},
        "runtime": {"device": "cpu", "checkpoint_every": 3, "log_every": 2, "progress": "off"},
    })
    rec = Run(cfg, RunDir(tmp_path / run_id(cfg))).execute()
    assert rec["status"] == "done" and rec["pretrain"]["steps_done"] == 6
    assert math.isfinite(rec["pretrain"]["final_loss"])
    assert math.isfinite(rec["finetune"]["per_lr"]["0.01"]["final_loss"])
    assert RunDir(tmp_path / run_id(cfg)).read_result()["status"] == "done"


def test_train_loop_mixes_before_the_shard_and_smooths_once() -> None:
    from vitbench.train.loop import train_loop

    class Data:
        def get_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.Generator().manual_seed(step)
            return torch.randn(8, 3, 4, 4, generator=g), torch.randint(0, 5, (8,), generator=g)

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5))
    mixer = make_mixer({"mixup": 1.0}, num_classes=5, label_smoothing=0.1, seed=0)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def shard(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append((x.clone(), y.clone()))
        return x, y

    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    res = train_loop(net, Data(), opt, sched, start_step=0, total_steps=1, device=torch.device("cpu"),
                     label_smoothing=0.1, log_every=1, mix=mixer, batch_transform=shard)
    x, t = seen[0]  # the shard saw the mixed global batch and its (already smoothed) soft targets
    ex, et = mixer(*Data().get_batch(0), 0)
    assert torch.equal(x, ex) and torch.equal(t, et)
    with torch.no_grad():
        want = torch.nn.functional.cross_entropy(net(x), t)  # no second smoothing
    assert res.last_loss == pytest.approx(float(want), rel=1e-5)
