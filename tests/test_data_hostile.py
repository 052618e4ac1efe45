"""Data roots never execute code and never crash a run mid-way: hostile pickles, bad image files."""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from vitbench.cli import main
from vitbench.data import DataRootError, get_dataset
from vitbench.data import imagefolder
from vitbench.data.folders import POOL_CACHE


@pytest.fixture(autouse=True)
def _no_env_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITBENCH_DATA", raising=False)
    POOL_CACHE.clear()
    imagefolder._scan.cache_clear()


# -- CIFAR pickles -----------------------------------------------------------------------------------
class _Exec:
    """Unpickling this runs code: what a crafted batch in a shared data root would do."""

    def __init__(self, marker: Path, via: str) -> None:
        self.marker, self.via = marker, via

    def __reduce__(self):  # noqa: ANN204
        if self.via == "system":
            return os.system, (f"touch '{self.marker}'",)
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _s(b: bytes) -> bytes:  # a Python 2 str: SHORT_BINSTRING / BINSTRING
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _i(v: int) -> bytes:  # BININT
    return b"J" + struct.pack("<i", v)


def _py2_batch(path: Path, n: int, start: int) -> np.ndarray:
    """A batch byte for byte as CIFAR's own files are: Python 2 cPickle, protocol 2, str keys and pixel
    data as BINSTRING, numpy.core.multiarray._reconstruct (the name numpy 2 moved to numpy._core)."""
    data = ((np.arange(n * 3072).reshape(n, 3072) + start) % 251).astype(np.uint8)
    arr = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _i(0) + b"\x85" + _s(b"b") + b"\x87R"
           + b"(" + _i(1) + _i(n) + _i(3072) + b"\x86cnumpy\ndtype\n" + _s(b"u1") + _i(0) + _i(1) + b"\x87R"
           + b"(" + _i(3) + _s(b"|") + b"NNN" + _i(-1) + _i(-1) + _i(0) + b"tb\x89" + _s(data.tobytes()) + b"tb")
    labels = b"](" + b"".join(_i((start + k) % 10) for k in range(n)) + b"e"
    names = b"](" + b"".join(_s(f"img{start + k}.png".encode()) for k in range(n)) + b"e"
    path.write_bytes(b"\x80\x02}(" + _s(b"batch_label") + _s(b"training batch") + _s(b"data") + arr
                     + _s(b"labels") + labels + _s(b"filenames") + names + b"u.")
    return data


def _fake_cifar10(root: Path, per_batch: int = 10) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for k, f in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        _py2_batch(d / f, per_batch, k * per_batch)
    (d / "batches.meta").write_bytes(b"\x80\x02}(" + _s(b"label_names") + b"](" +
                                     b"".join(_s(f"c{k}".encode()) for k in range(10)) + b"eu.")
    return root


def test_real_format_cifar_batches_load(tmp_path: Path) -> None:
    root = _fake_cifar10(tmp_path)
    data = _py2_batch(root / "cifar-10-batches-py" / "data_batch_1", 10, 0)
    tr = get_dataset("cifar10", "train", img_size=32, root=root)
    assert tr.classes == [f"c{k}" for k in range(10)] and len(tr) == 49
    k = int(tr.indices[0])
    assert k >= 10 or np.array_equal(tr.images[0].numpy(), data[k].reshape(3, 32, 32))
    # numpy 2 re-pickles of it (bytes via _codecs.encode under protocol 2; _frombuffer under 5; numpy ints)
    for proto in (2, 5):
        POOL_CACHE.clear()
        with open(root / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
            pickle.dump({"data": data, "labels": [np.int64(v % 10) for v in range(10)], "batch_label": b"b2",
                         "filenames": [b"x.png"] * 10}, f, protocol=proto)
        assert len(get_dataset("cifar10", "train", img_size=32, root=root)) == 49


@pytest.mark.parametrize("via", ["exec", "system"])
@pytest.mark.parametrize("victim", ["data_batch_2", "batches.meta"])
def test_cifar_pickle_that_runs_code_is_refused(tmp_path: Path, via: str, victim: str) -> None:
    root = _fake_cifar10(tmp_path / "root")
    marker = tmp_path / "PWNED"
    path = root / "cifar-10-batches-py" / victim
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((10, 3072), np.uint8), "labels": [0] * 10, "label_names": _Exec(marker, via)}, f,
                    protocol=2)
    with pytest.raises(DataRootError) as exc:
        get_dataset("cifar10", "train", img_size=32, root=root)
    msg = str(exc.value)
    assert "\n" not in msg and f"cifar10: '{path}' is refused: it asks to load " in msg
    assert ("builtins.exec" if via == "exec" else "posix.system") in msg and "never contains" in msg
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the payload is live: plain pickle runs it
    assert marker.exists()


def test_cli_refuses_hostile_cifar_root_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _fake_cifar10(tmp_path / "root")
    marker = tmp_path / "PWNED"
    with open(root / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump(_Exec(marker, "exec"), f)
    cfg = _cli_config(tmp_path, "cifar10", 32)
    assert main(["run-one", str(cfg), "--data-root", str(root), "--results", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vitbench: error: cifar10: ") and "data_batch_1' is refused" in err
    assert not marker.exists() and not list((tmp_path / "res").rglob("*.pt"))


def _cli_config(tmp_path: Path, dataset: str, img_size: int) -> Path:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {{name: ViT-nano/4}}\npretrain: {{dataset: {dataset}, img_size: {img_size}, steps: 2, "
                   "batch_size: 8, warmup_steps: 0}\neval: {fewshot: {shots: [1], seeds: 1}, "
                   "finetune: {steps: 1, lrs: [0.01]}}\nruntime: {device: cpu, progress: 'off'}\n")
    return cfg


# -- image files -------------------------------------------------------------------------------------
def _write_jpegs(paths: list[Path], rng: np.random.Generator) -> None:
    from PIL import Image

    for p in paths:
        h, w = rng.integers(8, 16, size=2)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height pixels: PIL sizes it from the header alone."""
    from PIL import Image

    Image.new("RGB", (1, 1)).save(path, format="PNG")  # whatever the name says
    raw = bytearray(path.read_bytes())
    ihdr = raw[16:29]  # IHDR data: after the 8-byte signature, the chunk's length and type
    ihdr[0:8] = struct.pack(">II", width, height)
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    path.write_bytes(bytes(raw))


def _fake_pets(root: Path, trainval: int = 500, test: int = 100) -> Path:
    pets = root / "oxford-iiit-pet"
    (pets / "images").mkdir(parents=True)
    (pets / "annotations").mkdir()
    names = ["Abyssinian", "beagle", "Bengal"]
    for part, ks in (("trainval", range(trainval)), ("test", range(trainval, trainval + test))):
        lines = [f"{names[k % 3]}_{k} {k % 3 + 1} 1 1" for k in ks]
        (pets / "annotations" / f"{part}.txt").write_text("\n".join(lines) + "\n")
    _write_jpegs([pets / "images" / f"{names[k % 3]}_{k}.jpg" for k in range(trainval + test)],
                 np.random.default_rng(0))
    return root


def _break(img: Path, how: str) -> None:
    if how == "truncated":
        img.write_bytes(img.read_bytes()[:200])
    elif how == "text":
        img.write_text("not an image at all\n")
    elif how == "bomb":  # past 2x MAX_IMAGE_PIXELS: PIL raises DecompressionBombError itself
        _png_claiming(img, 100_000, 100_000)
    elif how == "bomb_warning":  # 1-2x MAX_IMAGE_PIXELS: PIL only warns; vitbench refuses it too
        _png_claiming(img, 10_000, 10_000)
    elif how == "loop":
        img.unlink()
        img.symlink_to(img.name)
    elif how == "dangling":
        img.unlink()
        img.symlink_to(img.parent / "nowhere.jpg")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # vitbench refuses, whatever the filter
def test_bad_pet_images_are_skipped_with_one_summary_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _fake_pets(tmp_path)
    clean = {s: get_dataset("pets", s, img_size=8, root=root) for s in ("train", "dev", "test")}
    assert capsys.readouterr().err == ""
    images = root / "oxford-iiit-pet" / "images"
    bad = {3: "truncated", 10: "text", 11: "bomb", 42: "bomb_warning", 499: "loop", 500 + 7: "dangling"}
    for k, how in bad.items():
        _break(images / f"{['Abyssinian', 'beagle', 'Bengal'][k % 3]}_{k}.jpg", how)
    POOL_CACHE.clear()
    for s, ref in clean.items():
        spec = get_dataset("pets", s, img_size=8, root=root)
        gone = {k if s != "test" else k - 500 for k in bad if (k >= 500) == (s == "test")}
        keep = [j for j, i in enumerate(ref.indices.tolist()) if i not in gone]
        # the skipped files leave every split; all other images keep their split, position and pixels
        assert spec.indices.tolist() == ref.indices[keep].tolist()
        assert torch.equal(spec.images, ref.images[keep]) and torch.equal(spec.labels, ref.labels[keep])
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("pets train: skipped 5 of 500 image files (1 broken symlink, 2 corrupt, "
                             "2 decompression bomb); first: '") and "Abyssinian_3.jpg" in err[0]
    assert err[1].startswith("pets test: skipped 1 of 100 image files (1 broken symlink); first: '")
    assert len(err) == 2  # once per pool, not per split


def test_too_many_bad_images_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _fake_pets(tmp_path)
    images = root / "oxford-iiit-pet" / "images"
    for k in range(6):  # 6 of 500 > 1%
        _break(images / f"{['Abyssinian', 'beagle', 'Bengal'][k % 3]}_{k}.jpg", "text")
    with pytest.raises(DataRootError) as exc:
        get_dataset("pets", "train", img_size=8, root=root)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("pets train: 6 of 500 image files cannot be decoded (6 corrupt), "
                                              "more than the 5 a split may skip (1%, at most 100); first: '")
    POOL_CACHE.clear()
    cfg = _cli_config(tmp_path, "pets", 8)
    assert main(["run-one", str(cfg), "--data-root", str(root), "--results", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vitbench: error: pets train: 6 of 500 image files")
    assert not list((tmp_path / "res").rglob("*.pt"))


# -- streaming ImageFolder ---------------------------------------------------------------------------
def _fake_imagefolder(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(1)
    for part, n in (("train", per_class), ("val", 2)):
        for c in range(2):
            d = root / "imagenet" / part / f"n{c:08d}"
            d.mkdir(parents=True)
            _write_jpegs([d / f"{part}_{c}_{i}.JPEG" for i in range(n)], rng)
    return root


def test_imagefolder_skips_broken_links_and_replaces_undecodable_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_imagefolder(tmp_path)
    train = root / "imagenet" / "train"
    (train / "n00000000" / "loop.JPEG").symlink_to("loop.JPEG")
    (train / "n00000001" / "gone.JPEG").symlink_to(train / "absent.JPEG")
    (train / "loopdir").symlink_to("loopdir")
    tr = get_dataset("imagenet", "test", img_size=8, root=root)  # scans train/ (classes) and val/
    tr = get_dataset("imagenet", "train", img_size=8, root=root)
    assert tr.num_classes == 2 and len(tr) == 12 - 1  # 1 % dev
    assert "imagenet train: skipped 3 broken symlinks; first: '" in capsys.readouterr().err
    ds = tr.torch_dataset
    order = [ds.path(j) for j in range(len(ds))]
    ref = [ds[j] for j in range(len(ds))], [ds[(j, 5)] for j in range(len(ds))]
    Path(order[2]).write_bytes(b"\xff\xd8\xff garbage")  # a JPEG header and nothing else
    x, y = ds[2]
    assert torch.equal(x, ref[0][3][0]) and y == ref[0][3][1]  # the next file, with its own label
    x, y = ds[(2, 5)]
    assert torch.equal(x, ref[1][3][0]) and y == ref[1][3][1]  # and the same crop seed
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"imagenet: cannot decode '{order[2]}' (corrupt: " in err
    assert ds.replaced == {2}
    Path(order[3]).write_text("text")
    monkeypatch.setattr(imagefolder, "MAX_REPLACED_IN_A_ROW", 2)
    with pytest.raises(DataRootError, match="imagenet: 2 files in a row from '.*' cannot be decoded"):
        ds[2]
