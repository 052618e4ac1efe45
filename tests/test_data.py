"""vitbench.data: registry, splits, synthetic/digits/real datasets, deterministic loaders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vitbench.data import (DataRootError, DatasetSpec, check_data_root, dataset_info, get_dataset, list_datasets,
                           make_loader, nested_subset)
from vitbench.data import ops, splits, synthetic
from vitbench.data.folders import POOL_CACHE
from vitbench.errors import UserError

REAL = ["cifar10", "cifar100", "pets", "flowers102", "imagenet", "imagenet21k"]


@pytest.fixture(autouse=True)
def _no_env_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITBENCH_DATA", raising=False)
    POOL_CACHE.clear()


def _ids(spec: DatasetSpec) -> set[int]:
    assert spec.indices is not None
    return set(spec.indices.tolist())


# -- registry --------------------------------------------------------------------------------------
def test_registry_lists_all_datasets_and_info() -> None:
    assert set(list_datasets()) >= {"synthetic", "digits", *REAL}
    info = dataset_info("cifar10")
    assert (info.num_classes, info.dev_fraction, info.needs_root) == (10, 0.02, True)
    assert "cifar-10-batches-py" in info.layout
    assert dataset_info("pets").dev_fraction == 0.1 and dataset_info("imagenet").dev_fraction == 0.01
    assert not dataset_info("synthetic").needs_root and not dataset_info("digits").needs_root
    assert not dataset_info("imagenet").in_memory
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        get_dataset("nope", "train", img_size=8)
    with pytest.raises(ValueError, match="split"):
        get_dataset("digits", "val", img_size=8)


# -- splits ----------------------------------------------------------------------------------------
def test_nested_subset_is_nested_deterministic_and_bounded() -> None:
    a, b, c = (nested_subset(1000, n, salt="x") for n in (10, 100, 1000))
    assert set(a.tolist()) <= set(b.tolist()) <= set(c.tolist())
    assert sorted(c.tolist()) == list(range(1000))
    assert torch.equal(b, nested_subset(1000, 100, salt="x"))
    assert not torch.equal(b, nested_subset(1000, 100, salt="y"))
    with pytest.raises(ValueError, match="exceeds") as exc:
        nested_subset(10, 11, salt="x")
    assert "\n" not in str(exc.value)


def test_carve_dev_and_stratified_holdout_partition() -> None:
    train, dev = splits.carve_dev(500, 0.02, salt="d")
    assert len(dev) == 10 and len(train) == 490
    assert set(train.tolist()).isdisjoint(dev.tolist()) and len(set(train.tolist()) | set(dev.tolist())) == 500
    labels = torch.arange(300) % 3
    rest, held = splits.stratified_holdout(labels, 0.3, salt="s")
    assert torch.bincount(labels[held]).tolist() == [30, 30, 30]
    assert set(rest.tolist()).isdisjoint(held.tolist()) and len(rest) + len(held) == 300


# -- synthetic -------------------------------------------------------------------------------------
def test_synthetic_deterministic_per_index_and_batch_independent() -> None:
    idx = torch.tensor([5, 17, 123_456, 999_999])
    x1, y1 = synthetic.render(idx, 16)
    x2, y2 = synthetic.render(idx, 16)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # image i does not depend on which other images are rendered with it
    xb, yb = synthetic.render(torch.arange(200), 16)
    xs, ys = synthetic.render(torch.tensor([3, 150]), 16)
    assert torch.equal(xs, xb[[3, 150]]) and torch.equal(ys, yb[[3, 150]])
    assert torch.equal(synthetic.labels_of(torch.arange(200)), yb)
    # a different data seed is a different dataset
    assert not torch.equal(synthetic.render(idx, 16, seed=1)[0], x1)


def test_synthetic_same_scene_at_any_img_size() -> None:
    idx = torch.arange(64)
    x16, y16 = synthetic.render(idx, 16)
    x32, y32 = synthetic.render(idx, 32)
    x20, y20 = synthetic.render(idx, 20)  # not a multiple of the grid: rendered at 20 then resized
    assert torch.equal(y16, y32) and torch.equal(y16, y20)
    assert x32.shape == (64, 3, 32, 32) and x20.shape == (64, 3, 20, 20) and x16.dtype == torch.uint8
    down = ops.resize_uint8(x32, 16).float().flatten()
    corr = torch.corrcoef(torch.stack([down, x16.float().flatten()]))[0, 1]
    assert corr > 0.8


def test_synthetic_layouts_groups_share_a_multiset() -> None:
    """Classes of one group hold the same primitives, only arranged differently (position is needed to
    tell them apart); groups differ in content (a bag of patches can tell the group)."""
    lay = synthetic.LAYOUTS
    assert lay.shape == (synthetic.NUM_CLASSES, synthetic.GRID ** 2)
    counts = torch.stack([torch.bincount(r, minlength=synthetic.NUM_TYPES) for r in lay])
    groups = counts.reshape(synthetic.NUM_GROUPS, synthetic.PER_GROUP, -1)
    assert (groups == groups[:, :1]).all()
    assert len({tuple(g[0].tolist()) for g in groups}) == synthetic.NUM_GROUPS
    for g in lay.reshape(synthetic.NUM_GROUPS, synthetic.PER_GROUP, -1):
        eye = 100 * torch.eye(len(g), dtype=torch.int64)
        assert int(((g[:, None] != g[None]).sum(-1) + eye).min()) >= synthetic.MIN_LAYOUT_DIST
        assert int(((synthetic.mirror_layout(g)[:, None] != g[None]).sum(-1)).min()) >= synthetic.MIN_LAYOUT_DIST


def test_synthetic_splits_disjoint_nested_and_sized() -> None:
    tr = get_dataset("synthetic", "train", img_size=8, size=300)
    tr_small = get_dataset("synthetic", "train", img_size=8, size=100, seed=7)  # run seed: same data
    dev, test = (get_dataset("synthetic", s, img_size=8, size=n) for s, n in (("dev", 50), ("test", 400)))
    assert len(tr) == 300 and len(tr_small) == 100 and len(test) == 400
    assert _ids(tr_small) <= _ids(tr)
    assert _ids(tr).isdisjoint(_ids(dev)) and _ids(tr).isdisjoint(_ids(test)) and _ids(dev).isdisjoint(_ids(test))
    assert tr.images.shape == (300, 3, 8, 8) and tr.labels.dtype == torch.int64 and tr.num_classes == 32
    assert tr.in_memory and tr.images.dtype == torch.uint8
    pos = {i: k for k, i in enumerate(tr.indices.tolist())}
    for k, i in enumerate(tr_small.indices.tolist()):
        assert torch.equal(tr_small.images[k], tr.images[pos[i]])
    with pytest.raises(ValueError, match="exceeds"):
        get_dataset("synthetic", "train", img_size=8, size=synthetic.TRAIN_POOL + 1)


# -- digits ----------------------------------------------------------------------------------------
def test_digits_splits() -> None:
    specs = {s: get_dataset("digits", s, img_size=12) for s in ("train", "dev", "test")}
    ids = {s: _ids(v) for s, v in specs.items()}
    assert ids["train"].isdisjoint(ids["dev"]) and ids["train"].isdisjoint(ids["test"])
    assert ids["dev"].isdisjoint(ids["test"])
    assert len(ids["train"] | ids["dev"] | ids["test"]) == 1797
    all_labels = torch.cat([v.labels for v in specs.values()])
    assert torch.bincount(all_labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert abs(len(ids["test"]) - 0.3 * 1797) <= 10 and abs(len(ids["dev"]) - 0.1 * 0.7 * 1797) <= 10
    te = specs["test"]
    assert te.images.shape == (len(te), 3, 12, 12) and te.images.dtype == torch.uint8 and te.num_classes == 10
    assert torch.equal(te.images[:, 0], te.images[:, 2])  # grey replicated
    assert torch.bincount(te.labels).min() >= 50  # stratified
    small, big = get_dataset("digits", "train", img_size=8, size=50), get_dataset("digits", "train", img_size=8, size=500)
    assert _ids(small) <= _ids(big) <= ids["train"]


# -- real datasets: missing / malformed roots ------------------------------------------------------
@pytest.mark.parametrize("name", REAL)
def test_missing_root_is_one_line_data_root_error(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for root in (None, tmp_path / "absent", tmp_path):
        with pytest.raises(DataRootError) as exc:
            get_dataset(name, "train", img_size=8, root=root)
        msg = str(exc.value)
        assert "\n" not in msg and msg.startswith(f"{name}: ") and dataset_info(name).layout in msg
        if root is not None:
            assert str(root) in msg
        with pytest.raises(DataRootError, match=f"^{name}: "):
            check_data_root(name, root)
    assert issubclass(DataRootError, ValueError) and issubclass(DataRootError, UserError)
    monkeypatch.setenv("VITBENCH_DATA", str(tmp_path / "from-env"))
    with pytest.raises(DataRootError, match="from-env"):
        check_data_root(name, None)


def test_bundled_datasets_need_no_root() -> None:
    check_data_root("synthetic", None)
    check_data_root("digits", "/definitely/not/there")


# -- real datasets: fake roots in the real formats -------------------------------------------------
def _cifar_batch(path: Path, n: int, start: int, label_key: str = "labels", classes: int = 10) -> None:
    data = ((np.arange(n * 3072).reshape(n, 3072) + start) % 251).astype(np.uint8)
    with open(path, "wb") as f:
        pickle.dump({"data": data, label_key: [(start + i) % classes for i in range(n)],
                     "filenames": [f"img{start + i}.png" for i in range(n)]}, f)


def _fake_cifar10(root: Path, per_batch: int = 20) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(1, 6):
        _cifar_batch(d / f"data_batch_{i}", per_batch, (i - 1) * per_batch)
    _cifar_batch(d / "test_batch", per_batch, 1000)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{k}" for k in range(10)]}, f)
    return root


def test_fake_cifar10_root_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_cifar10(tmp_path)
    check_data_root("cifar10", root)
    tr, dev, te = (get_dataset("cifar10", s, img_size=32, root=root) for s in ("train", "dev", "test"))
    assert (len(tr), len(dev), len(te)) == (98, 2, 20)  # dev = 2% of the 100 training images
    assert _ids(tr).isdisjoint(_ids(dev)) and len(_ids(tr) | _ids(dev)) == 100
    assert tr.classes == [f"c{k}" for k in range(10)] and tr.num_classes == 10 and tr.in_memory
    # pixels are the pickled ones, in CHW order
    k = int(tr.indices[0])
    expect = ((np.arange(3072) + k * 3072 + k) % 251).astype(np.uint8).reshape(3, 32, 32)
    assert np.array_equal(tr.images[0].numpy(), expect) and int(tr.labels[0]) == k % 10
    monkeypatch.setenv("VITBENCH_DATA", str(root))  # the root can come from the environment
    small = get_dataset("cifar10", "train", img_size=16, size=10)
    assert small.images.shape == (10, 3, 16, 16) and _ids(small) <= _ids(tr)
    with pytest.raises(ValueError, match="exceeds"):
        get_dataset("cifar10", "train", img_size=16, size=99)


def test_fake_cifar_malformed_and_incomplete(tmp_path: Path) -> None:
    root = _fake_cifar10(tmp_path)
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataRootError, match="data_batch_3' is malformed") as exc:
        get_dataset("cifar10", "train", img_size=32, root=root)
    assert "\n" not in str(exc.value)
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataRootError, match="has no cifar-10-batches-py/test_batch"):
        check_data_root("cifar10", root)


def test_fake_cifar100_root_loads(tmp_path: Path) -> None:
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    _cifar_batch(d / "train", 200, 0, "fine_labels", 100)
    _cifar_batch(d / "test", 30, 7, "fine_labels", 100)
    tr, dev, te = (get_dataset("cifar100", s, img_size=8, root=tmp_path) for s in ("train", "dev", "test"))
    assert (len(tr), len(dev), len(te), tr.num_classes) == (196, 4, 30, 100)


def _write_jpegs(paths: list[Path], rng: np.random.Generator) -> None:
    from PIL import Image

    for p in paths:
        h, w = rng.integers(20, 40, size=2)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)


def test_fake_pets_and_flowers_roots_load(tmp_path: Path) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    pets = tmp_path / "oxford-iiit-pet"
    (pets / "images").mkdir(parents=True)
    (pets / "annotations").mkdir()
    names = ["Abyssinian", "beagle", "Bengal"]
    lines = {"trainval": [], "test": []}
    for k in range(30):
        part = "test" if k % 5 == 0 else "trainval"
        lines[part].append(f"{names[k % 3]}_{k} {k % 3 + 1} 1 1")
    for part, ls in lines.items():
        (pets / "annotations" / f"{part}.txt").write_text("\n".join(ls) + "\n")
    _write_jpegs([pets / "images" / f"{ln.split()[0]}.jpg" for ls in lines.values() for ln in ls], rng)
    tr, dev, te = (get_dataset("pets", s, img_size=16, root=tmp_path) for s in ("train", "dev", "test"))
    assert (len(tr), len(dev), len(te)) == (22, 2, 6) and tr.num_classes == 37
    assert tr.images.shape == (22, 3, 16, 16) and tr.classes[:3] == names

    fl = tmp_path / "flowers-102"
    (fl / "jpg").mkdir(parents=True)
    _write_jpegs([fl / "jpg" / f"image_{i:05d}.jpg" for i in range(1, 21)], rng)
    savemat(str(fl / "imagelabels.mat"), {"labels": (np.arange(20) % 102 + 1)[None]})
    savemat(str(fl / "setid.mat"), {"trnid": np.arange(1, 6)[None], "valid": np.arange(6, 11)[None],
                                    "tstid": np.arange(11, 21)[None]})
    tr, dev, te = (get_dataset("flowers102", s, img_size=8, root=tmp_path) for s in ("train", "dev", "test"))
    assert (len(tr), len(dev), len(te)) == (9, 1, 10)
    assert sorted(te.labels.tolist()) == list(range(10, 20))
    (fl / "jpg" / "image_00015.jpg").unlink()
    POOL_CACHE.clear()
    with pytest.raises(DataRootError, match="image_00015.jpg' is missing"):
        get_dataset("flowers102", "test", img_size=8, root=tmp_path)


def _fake_imagefolder(root: Path, name: str = "imagenet", classes: int = 3, per_class: int = 12) -> Path:
    rng = np.random.default_rng(1)
    for part, n in (("train", per_class), ("val", 2)):
        for c in range(classes):
            d = root / name / part / f"n{c:08d}"
            d.mkdir(parents=True)
            _write_jpegs([d / f"{part}_{c}_{i}.JPEG" for i in range(n)], rng)
    return root


def test_tiny_imagefolder_loads_for_imagenet(tmp_path: Path) -> None:
    root = _fake_imagefolder(tmp_path)
    check_data_root("imagenet", root)
    tr, dev, te = (get_dataset("imagenet", s, img_size=16, root=root) for s in ("train", "dev", "test"))
    assert not tr.in_memory and tr.images is None
    assert (len(tr), len(dev), len(te), tr.num_classes) == (35, 1, 6, 3)
    assert _ids(tr).isdisjoint(_ids(dev))
    x, y = tr.torch_dataset[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y == int(tr.labels[0])
    assert sorted(te.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    small = get_dataset("imagenet", "train", img_size=16, root=root, size=5)
    assert len(small) == 5 and _ids(small) <= _ids(tr)
    # the streaming loader: deterministic per step, resumable, augmented on the device
    aug = {"crop": "random_resized", "flip": True}
    seq = make_loader(tr, batch_size=8, device="cpu", train=True, seed=3, augment=aug, num_workers=0)
    batches = [seq.get_batch(s) for s in range(6)]  # 48 > 35: crosses an epoch boundary
    fresh = make_loader(tr, batch_size=8, device="cpu", train=True, seed=3, augment=aug, num_workers=0)
    for s in (5, 2):  # random access (re)starts the stream there
        x5, y5 = fresh.get_batch(s)
        assert torch.equal(x5, batches[s][0]) and torch.equal(y5, batches[s][1])
    x, y = batches[0]
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    xs, ys = zip(*make_loader(te, batch_size=4, device="cpu", train=False, seed=0, num_workers=0).iter_eval(4))
    assert torch.equal(torch.cat(ys), te.labels) and torch.cat(xs).shape == (6, 3, 16, 16)


def test_streaming_loader_with_worker_matches_in_process(tmp_path: Path) -> None:
    tr = get_dataset("imagenet", "train", img_size=8, root=_fake_imagefolder(tmp_path, classes=2, per_class=6))
    aug = {"crop": "pad_crop", "flip": True}
    a = make_loader(tr, batch_size=4, device="cpu", train=True, seed=0, augment=aug, num_workers=1)
    b = make_loader(tr, batch_size=4, device="cpu", train=True, seed=0, augment=aug, num_workers=0)
    for s in (0, 1, 4):
        xa, ya = a.get_batch(s)
        xb, yb = b.get_batch(s)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    a.close()


def test_imagefolder_malformed(tmp_path: Path) -> None:
    root = _fake_imagefolder(tmp_path, name="imagenet21k", classes=2, per_class=2)
    (root / "imagenet21k" / "val" / "stray").mkdir()
    with pytest.raises(DataRootError, match="val/stray/ is not a class of train/"):
        get_dataset("imagenet21k", "test", img_size=8, root=root)
    empty = tmp_path / "e"
    (empty / "imagenet" / "train").mkdir(parents=True)
    (empty / "imagenet" / "val").mkdir()
    with pytest.raises(DataRootError, match="no class folders in imagenet/train/"):
        check_data_root("imagenet", empty)


# -- loaders (in memory) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth() -> DatasetSpec:
    return get_dataset("synthetic", "train", img_size=16, size=100)


@pytest.mark.parametrize("crop", ["none", "pad_crop", "random_resized"])
def test_get_batch_is_a_pure_function_of_seed_and_step(synth: DatasetSpec, crop: str) -> None:
    aug = {"crop": crop, "flip": True}
    seq = make_loader(synth, batch_size=32, device="cpu", train=True, seed=1, augment=aug)
    batches = [seq.get_batch(s) for s in range(8)]  # 256 samples: crosses epoch boundaries
    fresh = make_loader(synth, batch_size=32, device="cpu", train=True, seed=1, augment=aug)
    x7, y7 = fresh.get_batch(7)
    assert torch.equal(x7, batches[7][0]) and torch.equal(y7, batches[7][1])
    other = make_loader(synth, batch_size=32, device="cpu", train=True, seed=2, augment=aug).get_batch(7)
    assert not torch.equal(other[0], x7)
    for x, y in batches:
        assert x.shape == (32, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_epochs_are_permutations(synth: DatasetSpec) -> None:
    from vitbench.data.loader import BatchOrder

    order = BatchOrder(100, 32, seed=0, shuffle=True)
    stream = torch.cat([order.batch(s) for s in range(25)])  # 800 = 8 epochs
    for e in range(8):
        assert sorted(stream[e * 100:(e + 1) * 100].tolist()) == list(range(100))
    assert not torch.equal(stream[:100], stream[100:200])
    tiny = BatchOrder(3, 8, seed=0, shuffle=False)  # batch larger than the dataset wraps around
    assert tiny.batch(0).tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_no_augmentation_and_eval_are_exact(synth: DatasetSpec) -> None:
    loader = make_loader(synth, batch_size=40, device="cpu", train=False, seed=0, augment={"crop": "pad_crop"})
    xs, ys = zip(*loader.iter_eval(40))
    assert [len(y) for y in ys] == [40, 40, 20]
    assert torch.equal(torch.cat(xs), synth.images.float() * (2 / 255) - 1)
    assert torch.equal(torch.cat(ys), synth.labels)
    x, y = loader.get_batch(1)  # train=False: sequential, unaugmented
    assert torch.equal(y, synth.labels[40:80]) and torch.equal(x, xs[1])


def test_augment_ops_are_correct() -> None:
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(ops.pad_crop(x, torch.full((4, 2), 1), 1), x)  # centred crop = identity
    shifted = ops.pad_crop(x, torch.tensor([[0, 1]] * 4), 1)  # one row down: top row is padding
    assert (shifted[:, :, 0] == 0).all() and torch.equal(shifted[:, :, 1:], x[:, :, :-1])
    xf = ops.to_unit_range(x)
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 4)
    assert torch.allclose(ops.crop_resize_flip(xf, full, torch.zeros(4, dtype=torch.bool)), xf, atol=1e-5)
    flipped = ops.crop_resize_flip(xf, full, torch.tensor([True, False, True, False]))
    assert torch.allclose(flipped[0], xf[0].flip(-1), atol=1e-5) and torch.allclose(flipped[1], xf[1], atol=1e-5)


def test_augment_validation(synth: DatasetSpec) -> None:
    with pytest.raises(ValueError, match="unknown augment key") as exc:
        make_loader(synth, batch_size=8, device="cpu", train=True, seed=0, augment={"crop": "none", "autoaugment": 0.2})
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="augment.crop"):
        make_loader(synth, batch_size=8, device="cpu", train=True, seed=0, augment={"crop": "center"})
