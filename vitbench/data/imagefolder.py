"""Streaming ImageFolder datasets read from a data root: ImageNet and ImageNet-21k.

Layout ``ROOT/<name>/{train,val}/CLASS/*.JPEG`` (val sorted into class folders). Class ids come
from the sorted class folders of train/ (val is mapped with them). Images are decoded per sample
by DataLoader workers (``FolderDataset``); only the file list is held in memory.

Files are not checked at scan time (opening 1.2M headers costs minutes): broken symlinks (dangling,
loops) are left out of the scan, and a file that fails to decode in a worker is replaced by the next
file of the split that decodes (see ``FolderDataset``), so one bad file never stops a run.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from vitbench.data import splits
from vitbench.data.decode import bad_image_kind, load_random_resized, load_resized
from vitbench.data.registry import DataRootError, DatasetBuilder, DatasetInfo, DatasetSpec, register_dataset

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MAX_REPLACED_IN_A_ROW = 100  # consecutive undecodable files: the root is damaged, not one file


class FolderDataset(torch.utils.data.Dataset):
    """Files of an ImageFolder split as (uint8 CHW at img_size, label).

    ``ds[i]`` squashes image i to img_size (evaluation); ``ds[(i, sample_seed)]`` with
    sample_seed >= 0 takes a random-resized (Inception) crop drawn from ``sample_seed``, so the
    crop is a pure function of (image, seed) whichever worker decodes it. Paths are kept as one
    numpy bytes array rather than a list of str: forked workers then share them without the
    copy-on-read growth Python object lists cause.

    A file that cannot be decoded (corrupt, truncated, a decompression bomb, gone) is replaced by
    the next file of the split that decodes, with that file's label and the same sample_seed: still
    a pure function of the key. Each replaced file is reported once per process on stderr and
    counted in ``replaced``; MAX_REPLACED_IN_A_ROW in a row is a DataRootError.
    """

    def __init__(self, base: str, rel_paths: np.ndarray, labels: torch.Tensor, img_size: int,
                 name: str = "imagefolder") -> None:
        self.base = base
        self.rel_paths = rel_paths
        self.labels = labels
        self.img_size = img_size
        self.name = name
        self.replaced: set[int] = set()  # in this process (each DataLoader worker has its own)

    def __len__(self) -> int:
        return len(self.rel_paths)

    def path(self, i: int) -> str:
        return os.path.join(self.base, self.rel_paths[i].decode())

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, sample_seed = (key, -1) if isinstance(key, (int, np.integer)) else key
        tries = min(MAX_REPLACED_IN_A_ROW, len(self))
        for j in range(int(i), int(i) + tries):
            j %= len(self)
            path = self.path(j)
            try:
                x = (load_random_resized(path, self.img_size, sample_seed) if sample_seed >= 0
                     else load_resized(path, self.img_size))
            except Exception as exc:
                kind = bad_image_kind(exc, path)
                if kind is None:
                    raise
                if j not in self.replaced:
                    self.replaced.add(j)
                    print(f"{self.name}: cannot decode '{path}' ({kind}: {' '.join(str(exc).split())[:160]}); "
                          f"serving the next file of the split instead ({len(self.replaced)} so far in this "
                          f"process)", file=sys.stderr, flush=True)
                continue
            return x, int(self.labels[j])
        raise DataRootError(f"{self.name}: {tries} files in a row from '{self.path(int(i))}' cannot be decoded; "
                            "the data root is damaged")


def _kind(e: os.DirEntry[str]) -> str:
    """"dir", "file", "broken" (a dangling symlink or a loop, whose is_dir() raises ELOOP) or "other"."""
    try:
        if e.is_dir():
            return "dir"
        if e.is_file():
            return "file"
        return "broken" if e.is_symlink() else "other"
    except OSError:
        return "broken"


@lru_cache(maxsize=8)
def _scan(root: str, folder: str, part: str) -> tuple[tuple[str, ...], np.ndarray, torch.Tensor]:
    """(classes from train/, relative paths, labels) of ROOT/folder/part, sorted; cached per process.

    Not torchvision's ``find_classes``/``make_dataset``: they list a broken symlink as an image, which then
    fails at load time in the middle of a run; here it is skipped and counted before anything starts."""
    base = Path(root) / folder
    with os.scandir(base / "train") as it:
        classes = tuple(sorted(e.name for e in it if _kind(e) == "dir"))
    index = {c: k for k, c in enumerate(classes)}
    rel: list[str] = []
    labels: list[int] = []
    broken: list[str] = []
    with os.scandir(base / part) as it:
        kinds = {e.name: _kind(e) for e in it}
    dirs = sorted(n for n, k in kinds.items() if k == "dir")
    broken += sorted(f"{part}/{n}" for n, k in kinds.items() if k == "broken")
    for c in dirs:
        if c not in index:
            raise FolderClassError(f"{part}/{c}/ is not a class of train/")
        with os.scandir(base / part / c) as it:
            kinds = {e.name: _kind(e) for e in it if e.name.lower().endswith(IMG_EXTENSIONS)}
        files = sorted(n for n, k in kinds.items() if k == "file")
        broken += sorted(f"{part}/{c}/{n}" for n, k in kinds.items() if k == "broken")
        rel.extend(f"{c}/{f}" for f in files)
        labels.extend([index[c]] * len(files))
    if broken:
        print(f"{folder} {part}: skipped {len(broken):,} broken symlinks; first: '{base / broken[0]}'",
              file=sys.stderr, flush=True)
    return classes, np.array(rel, dtype=np.bytes_), torch.tensor(labels, dtype=torch.int64)


class FolderClassError(ValueError):
    pass


class _ImageFolderSet(DatasetBuilder):
    folder: str

    def check_root(self, root: Path) -> None:
        self.require(root, f"{self.folder}/", f"{self.folder}/train/", f"{self.folder}/val/")
        for part in ("train", "val"):
            with os.scandir(root / self.folder / part) as it:
                if not any(_kind(e) == "dir" for e in it):
                    raise self.root_error(root, f"has no class folders in {self.folder}/{part}/")

    def build(self, split: str, *, img_size: int, root: Path | None, size: int | None) -> DatasetSpec:
        assert root is not None
        key = str(root.resolve())
        try:
            classes, rel_tr, lab_tr = _scan(key, self.folder, "train")
            classes, rel_te, lab_te = _scan(key, self.folder, "val") if split == "test" else (classes, rel_tr, lab_tr)
        except FolderClassError as exc:
            raise self.root_error(root, f"is malformed: {self.folder}/{exc}") from None
        if len(rel_tr) == 0 or (split == "test" and len(rel_te) == 0):
            part = "val" if split == "test" else "train"
            raise self.root_error(root, f"has no image files under {self.folder}/{part}/")
        rel, labels = (rel_te, lab_te) if split == "test" else (rel_tr, lab_tr)
        idx = splits.pool_split(self.info.name, split, train_pool=len(rel_tr), test_pool=len(rel_te),
                                dev_fraction=self.info.dev_fraction, size=size)
        labels = labels[idx]
        ds = FolderDataset(str(root / self.folder / ("val" if split == "test" else "train")),
                           rel[idx.numpy()], labels, img_size, name=self.info.name)
        return DatasetSpec(name=self.info.name, split=split, num_classes=len(classes), img_size=img_size,
                           in_memory=False, labels=labels, torch_dataset=ds, indices=idx, classes=list(classes))


@register_dataset("imagenet")
class ImageNet(_ImageFolderSet):
    folder = "imagenet"
    info = DatasetInfo(name="imagenet", train_pool=1_281_167,  # official train images
                       num_classes=1000, dev_fraction=0.01, needs_root=True, in_memory=False,
                       layout="ROOT/imagenet/{train,val}/CLASS/*.JPEG",
                       description="ILSVRC-2012 as an ImageFolder tree (val sorted into class folders); dev = 1% of train")


@register_dataset("imagenet21k")
class ImageNet21k(_ImageFolderSet):
    folder = "imagenet21k"
    info = DatasetInfo(name="imagenet21k", train_pool=14_197_122,  # official train images
                       num_classes=21843, dev_fraction=0.01, needs_root=True, in_memory=False,
                       layout="ROOT/imagenet21k/{train,val}/CLASS/*.JPEG",
                       description="ImageNet-21k as an ImageFolder tree; num_classes = class folders in train/")
