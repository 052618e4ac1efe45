"""Deterministic splits: nested pretraining subsets, dev carving, stratified hold-outs.

All orders come from :func:`vitbench.data.rng.permutation` keyed by a constant *salt* (the
dataset's name and the purpose), never by the run seed: runs that differ only in seed see the
same images, and ``size=N`` subsets are nested (the paper's 9M ⊂ 30M ⊂ 90M ⊂ 300M of JFT).
"""

from __future__ import annotations

import torch

from vitbench.data.rng import derive_seed, permutation


def nested_subset(pool_size: int, n: int, *, salt: str) -> torch.Tensor:
    """The first ``n`` of a fixed permutation of range(pool_size) (int64, permutation order).

    Prefixes of one permutation, so ``nested_subset(P, a) ⊂ nested_subset(P, b)`` for a ≤ b.
    """
    if n < 0:
        raise ValueError(f"subset size must be >= 0, got {n}")
    if n > pool_size:
        raise ValueError(f"{salt}: requested size {n} exceeds the {pool_size} images available")
    return permutation(pool_size, derive_seed("nested", salt), first=n)


def dev_count(pool_size: int, fraction: float) -> int:
    """How many images the dev split takes: round(fraction·pool), at least 1 when fraction > 0."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"dev fraction must be in [0, 1), got {fraction}")
    return 0 if fraction == 0 else max(1, round(fraction * pool_size))


def carve_dev(pool_size: int, fraction: float, *, salt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, dev) sorted index tensors partitioning range(pool_size); dev is a random fraction."""
    dev = nested_subset(pool_size, dev_count(pool_size, fraction), salt=f"{salt}/dev")
    return _complement(pool_size, dev), torch.sort(dev).values


def stratified_holdout(labels: torch.Tensor, fraction: float, *, salt: str
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(rest, held) sorted index tensors; ``held`` takes round(fraction·n_c) of every class c."""
    labels = labels.cpu()
    held = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        k = round(fraction * len(idx))
        held.append(idx[permutation(len(idx), derive_seed("strat", salt, c))[:k]])
    held_t = torch.sort(torch.cat(held)).values if held else torch.zeros(0, dtype=torch.int64)
    return _complement(len(labels), held_t), held_t


def take_size(indices: torch.Tensor, size: int | None, *, salt: str) -> torch.Tensor:
    """``indices`` restricted to a nested subset of ``size`` of them (sorted); all when None."""
    if size is None:
        return indices
    pick = nested_subset(len(indices), size, salt=salt)
    return torch.sort(indices[pick]).values


def _complement(n: int, idx: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[idx] = False
    return torch.nonzero(keep).flatten()


def pool_split(name: str, split: str, *, train_pool: int, test_pool: int, dev_fraction: float,
               size: int | None) -> torch.Tensor:
    """Sorted positions of ``split`` in its official pool (the train pool for train/dev, else test).

    dev = a fixed random ``dev_fraction`` of the train pool, train = the rest (never the test
    pool); ``size`` then takes a nested subset of the split.
    """
    if split == "test":
        idx = torch.arange(test_pool)
    else:
        train, dev = carve_dev(train_pool, dev_fraction, salt=name)
        idx = train if split == "train" else dev
    if size is not None and size > len(idx):
        extra = " (after carving the dev split)" if split == "train" else ""
        raise ValueError(f"{name}: size={size} exceeds the {len(idx):,} images of the {split} split{extra}")
    return take_size(idx, size, salt=f"{name}/{split}/size")
