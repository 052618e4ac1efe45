"""Weights files from outside load without executing code (vitbench.models.weights_io.read_weights).

Every hostile file here runs ``touch MARKER`` when unpickled by an unsafe loader; each case first proves
that (the control), then that ``read_weights`` refuses it with a one-line UserError and no marker.
"""

from __future__ import annotations

import os
import pickle
import shlex
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vitbench.errors import UserError
from vitbench.models.weights_io import EXTENSIONS, read_weights
from vitbench.train.checkpoint import load_checkpoint, save_checkpoint


class RunsCode:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _state_dict() -> dict[str, torch.Tensor]:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def sd() -> dict[str, torch.Tensor]:
    return _state_dict()


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want) or sorted(got) == sorted(want)
    for k, v in want.items():
        assert isinstance(got[k], torch.Tensor) and got[k].dtype == v.dtype, k
        assert torch.equal(got[k], v), k


def _refused(path: Path, *, match: str | None = None) -> str:
    with pytest.raises(UserError) as info:
        read_weights(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    assert "allowed" in msg, msg
    if match is not None:
        assert match in msg, msg
    return msg


# (a) round trips -------------------------------------------------------------------------------------

def test_safetensors_round_trip(tmp_path: Path, sd) -> None:
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    _assert_same(read_weights(path), sd)


def test_safetensors_bfloat16_round_trip(tmp_path: Path) -> None:
    want = {"w": torch.randn(4, 3).to(torch.bfloat16), "b": torch.arange(5, dtype=torch.int64)}
    save_file(want, str(tmp_path / "w.safetensors"))
    _assert_same(read_weights(tmp_path / "w.safetensors"), want)


@pytest.mark.parametrize("ext", [".pth", ".pt", ".bin", ".pth.tar"])
@pytest.mark.parametrize("wrap", [None, "model", "state_dict", "state_dict_ema"])
def test_torch_round_trip(tmp_path: Path, sd, ext: str, wrap: str | None) -> None:
    path = tmp_path / f"model{ext}"
    torch.save(sd if wrap is None else {wrap: sd, "epoch": 3, "arch": "vit_tiny"}, path)
    _assert_same(read_weights(path), sd)


def test_torch_legacy_format_round_trip(tmp_path: Path, sd) -> None:
    path = tmp_path / "old.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    _assert_same(read_weights(path), sd)


def test_torch_several_state_dicts_need_a_key(tmp_path: Path, sd) -> None:
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    path = tmp_path / "train.pth.tar"
    torch.save({"state_dict": sd, "state_dict_ema": ema, "epoch": 1}, path)
    _refused(path, match="several state dicts")
    _assert_same(read_weights(path, key="state_dict_ema"), ema)
    _assert_same(read_weights(path, key="state_dict"), sd)


def test_npz_round_trip(tmp_path: Path, sd) -> None:
    path = tmp_path / "model.npz"
    np.savez(path, **{k: v.numpy() for k, v in sd.items()})
    _assert_same(read_weights(path), sd)


def test_npz_flax_keys_are_returned_as_stored(tmp_path: Path) -> None:
    flax = {"Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel": np.random.rand(4, 8).astype(np.float32),
            "embedding/bias": np.zeros(8, np.float32), "cls": np.ones((1, 1, 8), np.float32)}
    np.savez(tmp_path / "ViT-B_16.npz", **flax)
    got = read_weights(tmp_path / "ViT-B_16.npz")
    _assert_same(got, {k: torch.from_numpy(v) for k, v in flax.items()})


def test_npy_round_trip_big_endian_too(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=">f4").reshape(3, 4)
    np.save(tmp_path / "pos_embed.npy", arr)
    got = read_weights(tmp_path / "pos_embed.npy")
    assert list(got) == ["pos_embed"]
    assert torch.equal(got["pos_embed"], torch.arange(12, dtype=torch.float32).reshape(3, 4))


# (b) hostile files: would run code with an unsafe loader, are refused without running it ------------

def _pickle_dump(obj, path: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)


def _pickle_load(path: Path) -> None:
    with open(path, "rb") as fh:
        pickle.load(fh)


HOSTILE: dict[str, tuple[str, Callable[[Path, RunsCode], None], Callable[[Path], object]]] = {
    # name: (file name, writer, unsafe loader that proves the file runs code)
    "pth_torch_save": ("evil.pth", lambda p, e: torch.save({"w": torch.zeros(2), "x": e}, p),
                       lambda p: torch.load(p, weights_only=False)),
    "pth_wrapped": ("evil.pth", lambda p, e: torch.save({"model": {"w": torch.zeros(2)}, "cfg": e}, p),
                    lambda p: torch.load(p, weights_only=False)),
    "pth_plain_pickle": ("evil.pth", lambda p, e: _pickle_dump(e, p), _pickle_load),
    "pth_plain_pickle_protocol2": ("evil.pth", lambda p, e: _pickle_dump(e, p, protocol=2), _pickle_load),
    "pt_legacy_format": ("evil.pt", lambda p, e: torch.save({"x": e}, p, _use_new_zipfile_serialization=False),
                         lambda p: torch.load(p, weights_only=False)),
    "bin_torch_save": ("pytorch_model.bin", lambda p, e: torch.save(e, p),
                       lambda p: torch.load(p, weights_only=False)),
    "bin_plain_pickle": ("pytorch_model.bin", lambda p, e: _pickle_dump({"w": e}, p), _pickle_load),
    "npz_object_array": ("evil.npz", lambda p, e: np.savez(p, w=np.zeros(3), x=np.array([e], dtype=object)),
                         lambda p: np.load(p, allow_pickle=True)["x"]),
    "npy_pickled_object": ("evil.npy", lambda p, e: np.save(p, np.array(e, dtype=object)),
                           lambda p: np.load(p, allow_pickle=True)),
    "npy_bare_pickle": ("evil.npy", lambda p, e: _pickle_dump(e, p), _pickle_load),
    "npz_bare_pickle": ("evil.npz", lambda p, e: _pickle_dump(e, p), _pickle_load),
    "safetensors_bare_pickle": ("evil.safetensors", lambda p, e: _pickle_dump(e, p), _pickle_load),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_is_refused_without_running_code(tmp_path: Path, case: str) -> None:
    name, write, unsafe_load = HOSTILE[case]
    evil = RunsCode(tmp_path / "MARKER")
    control = tmp_path / "control" / name
    control.parent.mkdir()
    write(control, RunsCode(tmp_path / "CONTROL_MARKER"))
    unsafe_load(control)
    assert (tmp_path / "CONTROL_MARKER").exists(), "the hostile file does not run code: the test proves nothing"

    path = tmp_path / name
    write(path, evil)
    _refused(path)
    assert not (tmp_path / "MARKER").exists()


def test_forbidden_global_is_named(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"x": RunsCode(tmp_path / "MARKER")}, path)
    msg = _refused(path, match="forbids")
    assert "system" in msg and len(msg) < 600
    assert not (tmp_path / "MARKER").exists()


# (b) corrupt, foreign and missing files ------------------------------------------------------------

def test_truncated_safetensors(tmp_path: Path, sd) -> None:
    good = tmp_path / "good.safetensors"
    save_file(sd, str(good))
    data = good.read_bytes()
    for cut in (len(data) // 2, 10, 7):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        _refused(path, match="safetensors")
    bad_header = tmp_path / "bad_header.safetensors"
    bad_header.write_bytes(data[:8] + b"{not json" + data[17:])
    _refused(bad_header)


@pytest.mark.parametrize("ext", [".pth", ".npz"])
def test_truncated_archives(tmp_path: Path, sd, ext: str) -> None:
    path = tmp_path / f"m{ext}"
    if ext == ".pth":
        torch.save(sd, path)
    else:
        np.savez(path, **{k: v.numpy() for k, v in sd.items()})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(path)


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_random_bytes_and_empty_file(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / f"random{ext}"
    path.write_bytes(rng.bytes(4096))
    _refused(path)
    empty = tmp_path / f"empty{ext}"
    empty.write_bytes(b"")
    _refused(empty, match="empty")


@pytest.mark.parametrize("ext", [".pth", ".bin", ".npz"])
def test_zip_that_is_not_a_weights_archive(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"notes{ext}"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
        zf.writestr("archive/data.txt", "not a pickle")
    _refused(path)


def test_non_tensor_values_are_refused(tmp_path: Path) -> None:
    cases = {
        "extra.pth": {"w": torch.zeros(2), "note": "hi"},
        "nested.pth": {"model": {"w": torch.zeros(2), "n": 3}},
        "list.pth": [torch.zeros(2)],
        "tensor.pth": torch.zeros(2),
        "empty_dict.pth": {},
        "int_keys.pth": {0: torch.zeros(2)},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        _refused(tmp_path / name)
    assert "'n' is a int" in _refused(tmp_path / "nested.pth")
    np.savez(tmp_path / "strings.npz", w=np.zeros(2), names=np.array(["a", "b"]))
    _refused(tmp_path / "strings.npz", match="dtype")


def test_unknown_extension_missing_file_directory(tmp_path: Path, sd) -> None:
    path = tmp_path / "model.ckpt"
    torch.save(sd, path)
    _refused(path, match="unknown weights file extension '.ckpt'")
    _refused(tmp_path / "nowhere.safetensors", match="no such file")
    (tmp_path / "dir.pth").mkdir()
    _refused(tmp_path / "dir.pth", match="directory")
    os.mkfifo(tmp_path / "pipe.npz")
    _refused(tmp_path / "pipe.npz", match="not a regular file")  # and does not block reading it


def test_content_must_match_extension(tmp_path: Path, sd) -> None:
    torch.save(sd, tmp_path / "torch.safetensors")
    _refused(tmp_path / "torch.safetensors")
    save_file(sd, str(tmp_path / "st.pth"))
    _refused(tmp_path / "st.pth", match="not a torch.save file")
    with open(tmp_path / "arrays.npy", "wb") as fh:  # a path would get ".npz" appended
        np.savez(fh, w=np.zeros(2))
    _refused(tmp_path / "arrays.npy", match="not an .npy")


# (c) the training checkpoint loader ------------------------------------------------------------------

def _payload(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch_save", "plain_pickle"])
def test_training_checkpoint_loader_refuses_code_running_pickle(tmp_path: Path, how: str) -> None:
    """load_checkpoint reports the hostile last.pt as unreadable and falls back to prev.pt, running nothing."""
    ckpt = tmp_path / "run" / "ckpt"
    save_checkpoint(ckpt, _payload(10))
    save_checkpoint(ckpt, _payload(20))
    evil = {"step": 30, "model": {"w": torch.zeros(3)}, "x": RunsCode(tmp_path / "MARKER")}
    if how == "torch_save":
        torch.save(evil, ckpt / "last.pt")
    else:
        _pickle_dump(evil, ckpt / "last.pt")
    messages: list[str] = []
    payload = load_checkpoint(ckpt, log=messages.append)
    assert not (tmp_path / "MARKER").exists()
    assert payload is not None and payload["step"] == 10
    assert any("unreadable" in m and "last.pt" in m for m in messages)
    assert any("previous checkpoint" in m for m in messages)

    (ckpt / "prev.pt").unlink()  # nothing readable left: None, still without running the pickle
    messages.clear()
    assert load_checkpoint(ckpt, log=messages.append) is None
    assert not (tmp_path / "MARKER").exists()
    assert any("unreadable" in m for m in messages)
