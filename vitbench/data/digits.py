"""``digits``: scikit-learn's bundled handwritten digits (1,797 real 8×8 images, 10 classes).

The micro-scale transfer task: it ships inside scikit-learn, so nothing is downloaded. Images
are scaled 0..16 → 0..255, resized bilinearly to img_size and replicated to 3 channels.
Splits are fixed: test = a stratified 30%, dev = a stratified 10% of the rest, train = the remainder.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from vitbench.data import splits
from vitbench.data.ops import resize_uint8
from vitbench.data.registry import DatasetBuilder, DatasetInfo, DatasetSpec, register_dataset

TEST_FRACTION = 0.3
DEV_FRACTION = 0.1


def _read_bundled() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) 0..16, targets) from the CSV scikit-learn ships.

    Read directly: importing ``sklearn.datasets`` (what ``load_digits`` needs) pulls in most of
    scikit-learn and SciPy, seconds per process for a 60 kB file. Falls back to ``load_digits``
    if the file is not where scikit-learn has kept it.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int64)


@lru_cache(maxsize=1)
def _raw() -> tuple[torch.Tensor, torch.Tensor]:
    images, target = _read_bundled()
    x = torch.from_numpy(images).to(torch.float32)  # (1797, 8, 8), values 0..16 (ink = high)
    x = (x * (255.0 / 16.0)).round_().to(torch.uint8)
    return x[:, None].expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(target)


def split_indices(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fixed train/dev/test positions into the 1,797 images (sorted, disjoint, covering all)."""
    pool, test = splits.stratified_holdout(labels, TEST_FRACTION, salt="digits/test")
    train_local, dev_local = splits.stratified_holdout(labels[pool], DEV_FRACTION, salt="digits/dev")
    return {"train": pool[train_local], "dev": pool[dev_local], "test": test}


@register_dataset("digits")
class Digits(DatasetBuilder):
    info = DatasetInfo(
        name="digits", num_classes=10, dev_fraction=DEV_FRACTION, needs_root=False, layout="", in_memory=True,
        description="scikit-learn load_digits (1,797 8x8 handwritten digits); test = stratified 30%",
    )

    def train_size(self, size: int | None) -> int | None:
        return size if size is not None else len(split_indices(_raw()[1])["train"])

    def build(self, split: str, *, img_size: int, root: Path | None, size: int | None) -> DatasetSpec:
        images, labels = _raw()
        idx = split_indices(labels)[split]
        if size is not None and size > len(idx):
            raise ValueError(f"digits: size={size} exceeds the {len(idx)} images of the {split} split")
        idx = splits.take_size(idx, size, salt=f"digits/{split}/size")
        return DatasetSpec(name="digits", split=split, num_classes=10, img_size=img_size, in_memory=True,
                           images=resize_uint8(images[idx], img_size), labels=labels[idx].clone(), indices=idx,
                           classes=[str(k) for k in range(10)])
