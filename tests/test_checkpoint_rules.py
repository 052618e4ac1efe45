"""``train.checkpoint``: the RNG streams a checkpoint restores (numpy's normals, the CUDA generators),
checkpoints written on a GPU loading on a CPU-only machine, weights-only loading whatever the
environment says, and what counts as a vitbench checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vitbench.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state

NOT_OURS = "ValueError: not a vitbench checkpoint (missing step/model)"


def _payload(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}}


class _FakeCudaRNG:
    """Stands in for the CUDA generators of a one-GPU machine: their states, read and written whole."""

    def __init__(self) -> None:
        self.states = [torch.tensor([1, 2, 3], dtype=torch.uint8)]

    def get_rng_state_all(self) -> list[torch.Tensor]:
        return [s.clone() for s in self.states]

    def set_rng_state_all(self, states) -> None:  # noqa: ANN001
        self.states = [s.clone() for s in states]


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> _FakeCudaRNG:
    rng = _FakeCudaRNG()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", rng.get_rng_state_all)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", rng.set_rng_state_all)
    return rng


# -- RNG state ------------------------------------------------------------------------------------

def test_numpy_normal_draws_repeat_after_a_restore() -> None:
    """After restoring, numpy's Gaussian draws (not just its uniform ones) continue as they were."""
    np.random.seed(1234)  # no cached Gaussian pending, so the state is fully described by the stream
    state = rng_state()
    first = np.random.standard_normal(5)
    set_rng_state(state)
    assert np.array_equal(first, np.random.standard_normal(5))


def test_cuda_generators_are_saved_and_restored(fake_cuda: _FakeCudaRNG) -> None:
    """On a machine with CUDA the GPU generators' states travel in the checkpoint and come back."""
    state = rng_state()
    assert [s.tolist() for s in state["cuda"]] == [[1, 2, 3]]
    fake_cuda.states = [torch.tensor([9, 9, 9], dtype=torch.uint8)]  # the generators moved on
    set_rng_state(state)
    assert [s.tolist() for s in fake_cuda.states] == [[1, 2, 3]]


def test_a_cpu_written_rng_state_restores_on_a_cuda_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A state saved without CUDA (no GPU generators in it) resumes on a GPU machine, leaving them alone."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = rng_state()
    assert "cuda" not in state
    rng = _FakeCudaRNG()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", rng.set_rng_state_all)
    a = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(a, torch.rand(3)) and [s.tolist() for s in rng.states] == [[1, 2, 3]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_cuda_draws_repeat_after_a_restore() -> None:
    """On a real GPU, CUDA random draws continue where the saved state left them."""
    state = rng_state()
    a = torch.rand(4, device="cuda")
    set_rng_state(state)
    assert torch.equal(a, torch.rand(4, device="cuda"))



def test_a_pending_numpy_gaussian_survives_a_checkpoint(tmp_path: Path) -> None:
    """numpy draws normals in pairs and caches the second: saved after an odd number of draws, the resumed
    run still hands out that cached value first, so its normals continue exactly (through torch.save/load)."""
    np.random.seed(77)
    np.random.standard_normal(3)  # the 4th normal is now cached, not yet drawn
    assert np.random.get_state()[3] == 1
    save_checkpoint(tmp_path, {"step": 1, "model": {}, "rng": rng_state()})
    expected = np.random.standard_normal(5)
    np.random.seed(0)
    np.random.standard_normal(1)  # a different stream, with a different value pending
    set_rng_state(load_checkpoint(tmp_path, log=lambda m: None)["rng"])
    assert np.array_equal(np.random.standard_normal(5), expected)


def test_a_state_saved_without_the_pending_gaussian_restores_with_none_pending() -> None:
    """States written before the cached Gaussian was recorded (no numpy_has_gauss / numpy_gauss) still
    restore: the uniform stream continues, and no Gaussian left pending by the current stream leaks in."""
    np.random.seed(5)
    state = rng_state()
    del state["numpy_has_gauss"], state["numpy_gauss"]
    expected_uniform = np.random.rand(4)
    np.random.seed(9)
    np.random.standard_normal(1)  # now a Gaussian is pending
    set_rng_state(state)
    assert np.random.get_state()[3] == 0
    assert np.array_equal(np.random.rand(4), expected_uniform)


def test_the_numpy_state_is_stored_as_its_exact_integer_words() -> None:
    """The checkpoint holds numpy's MT19937 key as an int64 tensor of the 624 words (weights-only loading
    refuses ndarrays; int64 holds every uint32 exactly), with the position and pending Gaussian as numbers."""
    np.random.seed(2024)
    np.random.standard_normal(1)
    _, key, pos, has_gauss, gauss = np.random.get_state()
    state = rng_state()
    assert state["numpy_keys"].dtype == torch.int64
    assert state["numpy_keys"].tolist() == key.tolist() and max(key.tolist()) > 2**31
    assert (state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]) == (pos, 1, gauss)
    assert type(state["numpy_pos"]) is int and type(state["numpy_has_gauss"]) is int
    assert type(state["numpy_gauss"]) is float


# -- loading --------------------------------------------------------------------------------------

def test_a_gpu_written_checkpoint_loads_onto_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors saved from a GPU (storage tagged cuda:0) load onto the CPU, on a machine with or without CUDA."""
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")  # as torch.save tags GPU tensors
        save_checkpoint(tmp_path, _payload(5))
    messages: list[str] = []
    ckpt = load_checkpoint(tmp_path, log=messages.append)
    assert messages == []
    assert ckpt is not None and ckpt["step"] == 5
    assert ckpt["model"]["w"].device.type == "cpu" and ckpt["model"]["w"].tolist() == [5.0, 5.0, 5.0]


def test_without_last_the_previous_checkpoint_is_used(tmp_path: Path) -> None:
    """If last.pt is gone but prev.pt is there, the run resumes from prev.pt and says so."""
    save_checkpoint(tmp_path, _payload(1))
    save_checkpoint(tmp_path, _payload(2))
    (tmp_path / "last.pt").unlink()
    messages: list[str] = []
    ckpt = load_checkpoint(tmp_path, log=messages.append)
    assert ckpt is not None and ckpt["step"] == 1
    assert messages == [f"using previous checkpoint {tmp_path / 'prev.pt'} (step 1)"]


def test_an_empty_last_is_reported_by_its_error_type_alone(tmp_path: Path) -> None:
    """A zero-byte last.pt (killed mid-write on a filesystem without atomic rename) is named by its error type."""
    save_checkpoint(tmp_path, _payload(1))
    save_checkpoint(tmp_path, _payload(2))
    (tmp_path / "last.pt").write_bytes(b"")
    messages: list[str] = []
    assert load_checkpoint(tmp_path, log=messages.append)["step"] == 1
    assert messages[0] == f"checkpoint {tmp_path / 'last.pt'} is unreadable (EOFError: ); falling back to the previous one"


class _Touch:
    """A pickle that would run code on load: it touches ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_loading_stays_weights_only_when_the_environment_disables_it(tmp_path, monkeypatch) -> None:
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD does not make load_checkpoint unpickle code: it falls back instead."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    save_checkpoint(tmp_path, _payload(10))
    save_checkpoint(tmp_path, _payload(15))
    marker = tmp_path.parent / f"{tmp_path.name}-ran"
    torch.save({"step": 20, "model": {}, "x": _Touch(marker)}, tmp_path / "last.pt")
    messages: list[str] = []
    ckpt = load_checkpoint(tmp_path, log=messages.append)
    assert not marker.exists()
    assert ckpt is not None and ckpt["step"] == 10
    assert any("last.pt is unreadable (UnpicklingError" in m for m in messages), messages


def test_a_long_error_is_quoted_by_the_first_120_characters_of_its_first_line(tmp_path: Path) -> None:
    """The log line quotes at most 120 characters of the error's first line (torch's weights-only errors run long)."""
    save_checkpoint(tmp_path, _payload(10))
    save_checkpoint(tmp_path, _payload(15))
    torch.save({"step": 20, "model": {}, "x": _Touch(tmp_path / "never")}, tmp_path / "last.pt")
    with pytest.raises(Exception) as info:
        torch.load(tmp_path / "last.pt", weights_only=True)
    first = str(info.value).splitlines()[0]
    assert len(first) > 121
    messages: list[str] = []
    assert load_checkpoint(tmp_path, log=messages.append)["step"] == 10
    assert messages[0] == (f"checkpoint {tmp_path / 'last.pt'} is unreadable "
                           f"({type(info.value).__name__}: {first[:120]}); falling back to the previous one")


@pytest.mark.parametrize("bad", [{"step": 20}, {"model": {"w": torch.zeros(3)}}, {}, [1, 2], torch.zeros(2)],
                         ids=["no-model", "no-step", "empty", "list", "tensor"])
def test_a_file_without_step_and_model_is_not_a_checkpoint(tmp_path: Path, bad) -> None:  # noqa: ANN001
    """A loadable file lacking the step or the model is reported as not ours, and the previous one is used."""
    save_checkpoint(tmp_path, _payload(10))
    save_checkpoint(tmp_path, _payload(15))
    torch.save(bad, tmp_path / "last.pt")
    messages: list[str] = []
    ckpt = load_checkpoint(tmp_path, log=messages.append)
    assert ckpt is not None and ckpt["step"] == 10
    assert messages[0] == f"checkpoint {tmp_path / 'last.pt'} is unreadable ({NOT_OURS}); falling back to the previous one"
    assert messages[1] == f"using previous checkpoint {tmp_path / 'prev.pt'} (step 10)"


# -- saving ---------------------------------------------------------------------------------------

def test_saving_creates_the_checkpoint_directory_and_its_parents(tmp_path: Path) -> None:
    """The first save of a run creates ckpt/ even when the run directory itself does not exist yet."""
    ckpt = tmp_path / "runs" / "abc" / "ckpt"
    assert save_checkpoint(ckpt, _payload(1)) == ckpt / "last.pt"
    assert load_checkpoint(ckpt)["step"] == 1


def test_a_stale_prev_link_of_a_dead_writer_is_replaced(tmp_path: Path) -> None:
    """A leftover hard-link temp file with this process's name (a killed writer) does not block saving."""
    import os

    save_checkpoint(tmp_path, _payload(1))
    (tmp_path / f".prev.{os.getpid()}.tmp").write_bytes(b"left by a killed save")
    save_checkpoint(tmp_path, _payload(2))
    assert torch.load(tmp_path / "prev.pt", weights_only=True)["step"] == 1
    assert load_checkpoint(tmp_path)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "prev.pt"]


def test_without_hard_links_the_previous_checkpoint_is_copied(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """On a filesystem that refuses hard links, prev.pt is still the previous checkpoint (a copy)."""
    import errno

    from vitbench.train import checkpoint as ck

    def no_links(src, dst):  # noqa: ANN001, ANN202
        raise OSError(errno.EPERM, "Operation not permitted")

    save_checkpoint(tmp_path, _payload(1))
    monkeypatch.setattr(ck.os, "link", no_links)
    save_checkpoint(tmp_path, _payload(2))
    save_checkpoint(tmp_path, _payload(3))
    assert torch.load(tmp_path / "prev.pt", weights_only=True)["step"] == 2
    assert load_checkpoint(tmp_path)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "prev.pt"]


def _failing_save(inner: BaseException | None):  # noqa: ANN202
    """torch.save that fails as its zip writer does: a RuntimeError raised while handling ``inner``."""
    def save(payload, fh):  # noqa: ANN001, ANN202
        fh.write(b"partial")
        if inner is None:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0")
        try:
            raise inner
        except BaseException:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    return save


def test_a_full_disk_is_reported_as_the_oserror_underneath(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """A write failing for lack of space raises "No space left on device"; the old checkpoint and no litter remain."""
    import errno

    from vitbench.train import checkpoint as ck

    save_checkpoint(tmp_path, _payload(1))
    monkeypatch.setattr(ck.torch, "save", _failing_save(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError, match="No space left on device") as info:
        save_checkpoint(tmp_path, _payload(2))
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(tmp_path)["step"] == 1


@pytest.mark.parametrize("inner", [None, ValueError("bad value"), KeyboardInterrupt()], ids=["none", "value", "interrupt"])
def test_a_save_error_with_no_oserror_behind_it_is_raised_as_is(tmp_path, monkeypatch, inner) -> None:  # noqa: ANN001
    """A failure with no I/O error in its chain propagates unchanged, and the temporary file is removed."""
    from vitbench.train import checkpoint as ck

    monkeypatch.setattr(ck.torch, "save", _failing_save(inner))
    with pytest.raises(RuntimeError, match="^PytorchStreamWriter failed writing file data/0"):
        save_checkpoint(tmp_path, _payload(1))
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_while_saving_propagates_and_cleans_up(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Ctrl-C during a save is not turned into anything else; the old checkpoint stays and no temp file is left."""
    from vitbench.train import checkpoint as ck

    def interrupted(payload, fh):  # noqa: ANN001, ANN202
        raise KeyboardInterrupt

    save_checkpoint(tmp_path, _payload(1))
    monkeypatch.setattr(ck.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, _payload(2))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(tmp_path)["step"] == 1


def test_stale_temp_files_removed_by_another_rank_first_do_not_fail_the_load(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Every DDP rank loads the same checkpoint directory at start-up: a stale temp file the other rank
    deletes between this rank's listing and its unlink is not an error."""
    save_checkpoint(tmp_path, _payload(4))
    (tmp_path / ".ckpt.dead.tmp").write_bytes(b"left by a killed save")
    real_glob = Path.glob

    def racing_glob(self, pattern):  # noqa: ANN001, ANN202
        for p in list(real_glob(self, pattern)):
            p.unlink()  # the other rank got there first
            yield p

    monkeypatch.setattr(Path, "glob", racing_glob)
    assert load_checkpoint(tmp_path, log=lambda m: None)["step"] == 4
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
