"""Schedules, checkpoints and the run directory."""

import os
from pathlib import Path

import pytest
import torch

from vitbench.record.rundir import RunDir, atomic_write_json, read_json
from vitbench.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from vitbench.train.optim import lr_factor


def test_lr_schedule_shapes() -> None:
    f = [lr_factor(s, total=100, warmup=10, decay="linear") for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[99] == pytest.approx(1 - 89 / 90)
    c = [lr_factor(s, total=100, warmup=0, decay="cosine") for s in (0, 50, 100)]
    assert c == pytest.approx([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="allowed"):
        lr_factor(0, total=1, warmup=0, decay="step")


def _payload(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}, "rng": rng_state()}


@pytest.mark.parametrize("corruption", ["truncate", "empty", "random"])
def test_corrupt_checkpoint_falls_back_to_previous(tmp_path: Path, corruption: str) -> None:
    save_checkpoint(tmp_path, _payload(10))
    save_checkpoint(tmp_path, _payload(20))
    last = tmp_path / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "random": os.urandom(len(data))}[corruption])
    messages: list[str] = []
    ckpt = load_checkpoint(tmp_path, log=messages.append)
    assert ckpt is not None and ckpt["step"] == 10
    assert any("unreadable" in m for m in messages) and any("previous checkpoint" in m for m in messages)


def test_checkpoint_keeps_last_two(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, _payload(step))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "prev.pt"]
    assert load_checkpoint(tmp_path)["step"] == 3
    assert torch.load(tmp_path / "prev.pt", weights_only=True)["step"] == 2


def test_rng_roundtrip() -> None:
    # torch, numpy and python streams all continue where they were: augmentation draws from all three
    import random

    import numpy as np

    state = rng_state()
    a, b, c = torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)]
    set_rng_state(state)
    assert torch.equal(a, torch.rand(5))
    assert np.array_equal(b, np.random.rand(5)) and c == [random.random() for _ in range(5)]


class _Exec:
    """A pickle that would run code on load: touches ``marker`` through ``Path.touch``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_load_checkpoint_refuses_a_non_tensor_pickle(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _payload(10))
    save_checkpoint(tmp_path, _payload(15))  # step 10 is now prev.pt; last.pt is replaced below
    marker = tmp_path.parent / f"{tmp_path.name}-executed"
    torch.save({"step": 20, "model": {}, "extra": _Exec(marker)}, tmp_path / "last.pt")
    messages: list[str] = []
    ckpt = load_checkpoint(tmp_path, log=messages.append)
    assert not marker.exists()  # weights_only loading never called Path.touch
    assert ckpt is not None and ckpt["step"] == 10  # fell back to the previous (tensor-only) checkpoint
    assert any("last.pt is unreadable (UnpicklingError" in m for m in messages), messages


def test_no_checkpoint_is_none(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "nothing") is None


def test_atomic_json_and_rundir_state(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "abc")
    assert rd.local_state() == "new"
    rd.create({"seed": 1})
    rd.metric("train", step=1, loss=2.0)
    assert rd.local_state() == "incomplete"
    rd.write_error("boom")
    assert rd.local_state() == "failed"
    rd.write_result({"status": "done"})
    assert rd.local_state() == "done" and rd.read_error() is None
    (tmp_path / "abc" / "result.json").write_text('{"status": "do')  # torn record
    assert rd.read_result() is None
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert read_json(tmp_path / "x.json") == {"a": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("die_at", [1, 2, 3])
def test_a_kill_between_the_checkpoint_renames_leaves_a_loadable_last(tmp_path, monkeypatch, die_at) -> None:
    """Whichever filesystem operation of save_checkpoint a kill interrupts, last.pt stays loadable, and
    the next load removes the temporary files the dead writer left."""
    import os as _os

    from vitbench.train import checkpoint as ck

    ck.save_checkpoint(tmp_path, {"step": 1, "model": {}})
    ck.save_checkpoint(tmp_path, {"step": 2, "model": {}})
    calls = {"n": 0}
    real_link, real_replace = _os.link, _os.replace

    def dying(real):
        def op(*a, **k):
            calls["n"] += 1
            if calls["n"] == die_at:
                raise KeyboardInterrupt  # stands in for SIGKILL: nothing after this runs
            return real(*a, **k)
        return op

    monkeypatch.setattr(ck.os, "link", dying(real_link))
    monkeypatch.setattr(ck.os, "replace", dying(real_replace))
    monkeypatch.setattr(ck.os, "unlink", lambda *a, **k: None)  # a killed process cleans nothing up
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path, {"step": 3, "model": {}})
    monkeypatch.undo()
    assert (tmp_path / "last.pt").exists() and list(tmp_path.glob(".*.tmp"))
    payload = ck.load_checkpoint(tmp_path, log=lambda m: None)
    assert payload is not None and payload["step"] in (2, 3)
    assert not list(tmp_path.glob(".*.tmp"))  # no litter after the next start


def test_extract_runs_without_autograd_and_at_resolution_keeps_the_trained_model() -> None:
    from vitbench.models import create_model
    from vitbench.train.loop import at_resolution, extract

    model = create_model("ViT-nano/4", num_classes=3, img_size=16)
    x, y = torch.rand(4, 3, 16, 16), torch.arange(4)
    feats, labels = extract(model, [(x, y)], device=torch.device("cpu"))
    assert feats.shape == (4, 32) and torch.equal(labels, y)
    assert torch.is_inference(feats) and not feats.requires_grad  # no graph kept for evaluation features
    assert at_resolution(model, 16) is model
    other = at_resolution(model, 32)
    assert other is not model and model.img_size == 16 and other.img_size == 32
    assert not torch.is_inference(next(other.parameters()))  # a normal model, not inference tensors
