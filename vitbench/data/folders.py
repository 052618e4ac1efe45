"""Real in-memory datasets read from a data root, never downloaded: CIFAR-10/100, Pets, Flowers-102.

Layouts are torchvision's (so a root prepared with torchvision's ``download=True`` works). The
readers are our own few lines rather than torchvision's dataset classes because those verify MD5
sums of the files (CIFAR, Flowers), which rejects the small fake roots the tests build and costs
a full read of every file per load.

These sets fit in memory: they are decoded once, resized to img_size and cached per
(dataset, root, part, img_size) for the process, so the several splits and fine-tuning
learning rates of one run decode them once. ImageNet/21k stream instead (``imagefolder``).

A data root is not trusted: CIFAR pickles go through ``safe_pickle`` (a batch that names any other
global is refused, never run), and image files that do not decode are skipped by ``decode_all``
within its threshold; a skipped file leaves every split, the others keep theirs (a nested subset
of N then holds N minus the skipped files among its N).
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vitbench.data import safe_pickle, splits
from vitbench.data.decode import decode_all
from vitbench.data.ops import resize_uint8
from vitbench.data.registry import DatasetBuilder, DatasetInfo, DatasetSpec, register_dataset


class _PoolCache:
    """LRU of decoded (images, labels, classes) pools, bounded in bytes ($VITBENCH_DATA_CACHE_GB, default 4)."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor, list[str]]] = OrderedDict()

    @staticmethod
    def budget() -> int:
        return int(float(os.environ.get("VITBENCH_DATA_CACHE_GB", "4")) * (1 << 30))

    def get(self, key: tuple[Any, ...], load: Callable[[], tuple[torch.Tensor, torch.Tensor, list[str]]]
            ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        nbytes = value[0].numel()
        if nbytes <= self.budget():
            self._items[key] = value
            while sum(v[0].numel() for v in self._items.values()) > self.budget():
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()


POOL_CACHE = _PoolCache()


class InMemoryPoolDataset(DatasetBuilder):
    """An official train pool and test pool, decoded into memory; dev carved from the train pool."""

    def load_part(self, root: Path, part: str, img_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(uint8 (N, 3, S, S), int64 labels, class names) of the "train" or "test" pool."""
        raise NotImplementedError

    def build(self, split: str, *, img_size: int, root: Path | None, size: int | None) -> DatasetSpec:
        assert root is not None
        part = "test" if split == "test" else "train"
        images, labels, classes = POOL_CACHE.get((self.info.name, str(root.resolve()), part, img_size),
                                                 lambda: self.load_part(root, part, img_size))
        n = len(labels)
        idx = splits.pool_split(self.info.name, split, train_pool=n, test_pool=n,
                                dev_fraction=self.info.dev_fraction, size=size)
        if bool((labels < 0).any()):  # files decode_all skipped: out of every split, the others' splits unchanged
            idx = idx[labels[idx] >= 0]
        return DatasetSpec(name=self.info.name, split=split, num_classes=self.info.num_classes, img_size=img_size,
                           in_memory=True, images=images[idx], labels=labels[idx], indices=idx, classes=classes)

    def malformed(self, path: Path, exc: BaseException) -> Exception:
        from vitbench.data.registry import DataRootError

        return DataRootError(f"{self.info.name}: '{path}' is malformed ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]}) (expected {self.info.layout})")

    def refused(self, path: Path, exc: safe_pickle.ForbiddenGlobal) -> Exception:
        from vitbench.data.registry import DataRootError

        return DataRootError(f"{self.info.name}: '{path}' is refused: {exc}")

    def decode(self, paths: list[str], labels: torch.Tensor, part: str, img_size: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """decode_all, with the label of each file it skipped set to -1 (``build`` leaves those out)."""
        images, bad = decode_all(paths, img_size, name=f"{self.info.name} {part}")
        labels = labels.clone()
        labels[bad] = -1
        return images, labels


class _Cifar(InMemoryPoolDataset):
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    meta_file: str
    names_key: str

    def check_root(self, root: Path) -> None:
        self.require(root, f"{self.folder}/", *(f"{self.folder}/{f}" for f in self.train_files + self.test_files))

    def load_part(self, root: Path, part: str, img_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        xs, ys = [], []
        for f in self.train_files if part == "train" else self.test_files:
            path = root / self.folder / f
            try:
                d = safe_pickle.load(path)
                x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(d[self.label_key], dtype=np.int64)
                if len(x) != len(y):
                    raise ValueError(f"{len(x)} images but {len(y)} labels")
            except safe_pickle.ForbiddenGlobal as exc:
                raise self.refused(path, exc) from None
            except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
                raise self.malformed(path, exc) from None
            xs.append(torch.from_numpy(x))
            ys.append(torch.from_numpy(y))
        labels = torch.cat(ys)
        if int(labels.min()) < 0 or int(labels.max()) >= self.info.num_classes:
            raise self.malformed(root / self.folder, ValueError(f"labels outside 0..{self.info.num_classes - 1}"))
        classes = [str(k) for k in range(self.info.num_classes)]
        meta = root / self.folder / self.meta_file
        if meta.is_file():
            try:
                classes = list(safe_pickle.load(meta)[self.names_key])
            except safe_pickle.ForbiddenGlobal as exc:  # not a bad file but an attack: stop
                raise self.refused(meta, exc) from None
            except Exception:  # names are cosmetic; a bad meta file must not block training
                pass
        return resize_uint8(torch.cat(xs), img_size), labels, classes


@register_dataset("cifar10")
class Cifar10(_Cifar):
    folder, label_key, meta_file, names_key = "cifar-10-batches-py", "labels", "batches.meta", "label_names"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    info = DatasetInfo(name="cifar10", train_pool=50000,  # official train images
                       num_classes=10, dev_fraction=0.02, needs_root=True, in_memory=True,
                       layout="ROOT/cifar-10-batches-py/data_batch_1..5, test_batch",
                       description="CIFAR-10, torchvision's python-pickle layout; dev = 2% of train")


@register_dataset("cifar100")
class Cifar100(_Cifar):
    folder, label_key, meta_file, names_key = "cifar-100-python", "fine_labels", "meta", "fine_label_names"
    train_files = ("train",)
    test_files = ("test",)
    info = DatasetInfo(name="cifar100", train_pool=50000,  # official train images
                       num_classes=100, dev_fraction=0.02, needs_root=True, in_memory=True,
                       layout="ROOT/cifar-100-python/train, test",
                       description="CIFAR-100 (fine labels), torchvision's python-pickle layout; dev = 2% of train")


@register_dataset("pets")
class Pets(InMemoryPoolDataset):
    info = DatasetInfo(name="pets", train_pool=3680,  # official train images
                       num_classes=37, dev_fraction=0.1, needs_root=True, in_memory=True,
                       layout="ROOT/oxford-iiit-pet/images/*.jpg, annotations/trainval.txt, annotations/test.txt",
                       description="Oxford-IIIT Pet (torchvision layout); train = trainval minus 10% dev")
    base = "oxford-iiit-pet"

    def check_root(self, root: Path) -> None:
        self.require(root, f"{self.base}/", f"{self.base}/images/", f"{self.base}/annotations/trainval.txt",
                     f"{self.base}/annotations/test.txt")

    def load_part(self, root: Path, part: str, img_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        ann = root / self.base / "annotations" / ("trainval.txt" if part == "train" else "test.txt")
        ids, labels = [], []
        try:
            for line in ann.read_text().splitlines():
                if not line.strip() or line.startswith("#"):
                    continue
                image_id, class_id, *_ = line.split()
                ids.append(image_id)
                labels.append(int(class_id) - 1)
            if not ids:
                raise ValueError("no entries")
        except (OSError, ValueError) as exc:
            raise self.malformed(ann, exc) from None
        names = {lab: image_id.rsplit("_", 1)[0] for image_id, lab in zip(ids, labels)}
        classes = [names.get(k, str(k)) for k in range(self.info.num_classes)]
        paths = [str(root / self.base / "images" / f"{i}.jpg") for i in ids]
        y = torch.tensor(labels, dtype=torch.int64)
        if int(y.min()) < 0 or int(y.max()) >= self.info.num_classes:
            raise self.malformed(ann, ValueError(f"class ids outside 1..{self.info.num_classes}"))
        return (*self.decode(paths, y, part, img_size), classes)


@register_dataset("flowers102")
class Flowers102(InMemoryPoolDataset):
    info = DatasetInfo(name="flowers102", train_pool=2040,  # official train images
                       num_classes=102, dev_fraction=0.1, needs_root=True, in_memory=True,
                       layout="ROOT/flowers-102/jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat",
                       description="Oxford Flowers-102 (torchvision layout); train = train+val minus 10% dev")
    base = "flowers-102"

    def check_root(self, root: Path) -> None:
        self.require(root, f"{self.base}/", f"{self.base}/jpg/", f"{self.base}/imagelabels.mat",
                     f"{self.base}/setid.mat")

    def load_part(self, root: Path, part: str, img_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        from scipy.io import loadmat

        base = root / self.base
        try:
            all_labels = np.asarray(loadmat(str(base / "imagelabels.mat"))["labels"]).ravel().astype(np.int64) - 1
        except Exception as exc:  # scipy raises a zoo of types for bad .mat files
            raise self.malformed(base / "imagelabels.mat", exc) from None
        try:
            setid = loadmat(str(base / "setid.mat"))
            keys = ("trnid", "valid") if part == "train" else ("tstid",)
            ids = np.sort(np.concatenate([np.asarray(setid[k]).ravel() for k in keys]).astype(np.int64))
            if len(ids) == 0 or ids.min() < 1 or ids.max() > len(all_labels):
                raise ValueError(f"image ids outside 1..{len(all_labels)}")
        except Exception as exc:
            raise self.malformed(base / "setid.mat", exc) from None
        paths = [str(base / "jpg" / f"image_{i:05d}.jpg") for i in ids]
        y = torch.from_numpy(all_labels[ids - 1])
        return (*self.decode(paths, y, part, img_size), [str(k) for k in range(102)])
