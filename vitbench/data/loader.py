"""Batch loaders: ``get_batch(step)`` is a pure function of (seed, step); ``iter_eval`` walks a split.

Determinism is by construction, not by replaying state: the samples of step s are positions
[s·B, (s+1)·B) of an endless stream of epoch permutations (epoch e's permutation keyed by
(seed, e)), and the augmentation parameters of step s are counter-based uniforms keyed by
(seed, step). A run resumed at step s therefore sees exactly the batches an uninterrupted run
sees, on any device and any number of workers.

In-memory data lives on the device as uint8 once; a batch is an index into it, then crop, flip
and scaling to [-1, 1] are a few batched kernels there. Streaming (ImageFolder) data goes through
a DataLoader whose batch sampler starts at any step and whose workers decode, resize and (for
``random_resized``) Inception-crop each image with a per-sample seed; pad-crop, flip and scaling
then run batched on the device, exactly as for in-memory data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from vitbench.data import ops
from vitbench.data.registry import DatasetSpec
from vitbench.data.rng import M32, derive_seed, keyed_hash, permutation, uniforms

CROPS = ("none", "pad_crop", "random_resized")


@dataclass(frozen=True)
class Augment:
    crop: str = "none"
    flip: bool = False

    @property
    def active(self) -> bool:
        return self.crop != "none" or self.flip


def parse_augment(augment: dict[str, Any] | None) -> Augment:
    """Validate an ``augment`` mapping (keys: crop, flip); ValueError (one line) on anything else."""
    if augment is None:
        return Augment()
    if not isinstance(augment, dict):
        raise ValueError(f"augment must be a mapping with keys crop, flip; got {type(augment).__name__}")
    unknown = sorted(set(augment) - {"crop", "flip"})
    if unknown:
        raise ValueError(f"unknown augment key(s) {', '.join(map(repr, unknown))}; allowed: crop, flip")
    crop = augment.get("crop", "none")
    if crop is None:
        crop = "none"
    if crop not in CROPS:
        raise ValueError(f"augment.crop must be one of {', '.join(CROPS)}, got {crop!r}")
    flip = augment.get("flip", False)
    if not isinstance(flip, bool):
        raise ValueError(f"augment.flip must be true or false, got {flip!r}")
    return Augment(crop=crop, flip=flip)


class BatchOrder:
    """Dataset positions of the batch at each step (CPU int64), shuffled per epoch or sequential."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool) -> None:
        if n < 1:
            raise ValueError("cannot draw batches from an empty dataset")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self._perms: dict[int, torch.Tensor] = {}

    def epoch_perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) >= 4:  # a batch spans at most a few epochs; keep memory flat
                self._perms.pop(next(iter(self._perms)))
            self._perms[epoch] = (permutation(self.n, derive_seed("epoch", self.seed, epoch)) if self.shuffle
                                  else torch.arange(self.n))
        return self._perms[epoch]

    def batch(self, step: int) -> torch.Tensor:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        pos = torch.arange(step * self.batch_size, (step + 1) * self.batch_size, dtype=torch.int64)
        epoch, offset = pos // self.n, pos % self.n
        first, last = int(epoch[0]), int(epoch[-1])
        if first == last:
            return self.epoch_perm(first)[offset]
        out = torch.empty_like(pos)
        for e in range(first, last + 1):  # the batch wraps into the next epoch(s)
            m = epoch == e
            out[m] = self.epoch_perm(e)[offset[m]]
        return out

    @property
    def steps_per_epoch(self) -> float:
        return self.n / self.batch_size


def _aug_uniforms(seed: int, step: int, batch: int, device: torch.device) -> torch.Tensor:
    """(B, 8) uniforms for step ``step``: 0 flip, 1-2 pad-crop offsets, 3-6 random-resized box."""
    return uniforms(torch.arange(batch), derive_seed("augment", seed, step), 8).to(device, non_blocking=True)


def sample_seeds(seed: int, step: int, batch: int) -> list[int]:
    """Per-sample seeds of the worker-side random-resized crops of step ``step``."""
    return (keyed_hash(torch.arange(batch), derive_seed("rrc", seed, step)) & M32).tolist()


class _DeviceAugment:
    """uint8 batch on the device → augmented float32 in [-1, 1], randomness keyed by (seed, step)."""

    def __init__(self, aug: Augment, img_size: int, seed: int, device: torch.device, crop_in_workers: bool) -> None:
        self.aug, self.seed, self.device = aug, seed, device
        self.pad = ops.pad_padding(img_size)
        self.crop_in_workers = crop_in_workers

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        if not self.aug.active:
            return ops.to_unit_range(x)
        u = _aug_uniforms(self.seed, step, x.shape[0], x.device)
        flip = (u[:, 0] < 0.5) if self.aug.flip else torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        if self.aug.crop == "pad_crop":
            offsets = (u[:, 1:3] * (2 * self.pad + 1)).long().clamp_(max=2 * self.pad)
            x = ops.pad_crop(x, offsets, self.pad)
        xf = ops.to_unit_range(x)
        if self.aug.crop == "random_resized" and not self.crop_in_workers:
            return ops.crop_resize_flip(xf, ops.rrc_boxes(u[:, 3:7]), flip)
        return ops.hflip_where(xf, flip) if self.aug.flip else xf


class InMemoryLoader:
    """Batches sliced from the device-resident uint8 tensor of an in-memory DatasetSpec."""

    def __init__(self, spec: DatasetSpec, *, batch_size: int, device: torch.device, train: bool, seed: int,
                 augment: Augment) -> None:
        self.spec, self.batch_size, self.device, self.train = spec, batch_size, device, train
        self.images = spec.device_images(device)
        self.labels = spec.device_labels(device)
        self.order = BatchOrder(len(spec), batch_size, seed, shuffle=train)
        self._augment = _DeviceAugment(augment if train else Augment(), spec.img_size, seed, device, False)

    def __len__(self) -> int:
        return len(self.spec)

    def get_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.order.batch(step).to(self.device, non_blocking=True)
        return self._augment(self.images[idx], step), self.labels[idx]

    def iter_eval(self, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs = batch_size or self.batch_size
        for s in range(0, len(self.spec), bs):
            yield ops.to_unit_range(self.images[s:s + bs]), self.labels[s:s + bs]

    def close(self) -> None:
        pass


class _StepBatchSampler:
    """Endless batch sampler starting at ``start``; yields (index, sample_seed) keys when cropping in workers."""

    def __init__(self, order: BatchOrder, seed: int, with_seeds: bool) -> None:
        self.order, self.seed, self.with_seeds = order, seed, with_seeds
        self.start = 0

    def __iter__(self) -> Iterator[list[Any]]:
        step = self.start
        while True:
            idx = self.order.batch(step).tolist()
            if self.with_seeds:
                yield list(zip(idx, sample_seeds(self.seed, step, len(idx))))
            else:
                yield idx
            step += 1


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is per-process; intra-op threads would only oversubscribe


class StreamingLoader:
    """Batches decoded by DataLoader workers from a streaming DatasetSpec (ImageFolder)."""

    def __init__(self, spec: DatasetSpec, *, batch_size: int, device: torch.device, train: bool, seed: int,
                 augment: Augment, num_workers: int) -> None:
        self.spec, self.batch_size, self.device, self.train = spec, batch_size, device, train
        self.num_workers = num_workers
        aug = augment if train else Augment()
        in_workers = aug.crop == "random_resized"  # crop from the full-resolution file, not the resized one
        self.order = BatchOrder(len(spec), batch_size, seed, shuffle=train)
        self.sampler = _StepBatchSampler(self.order, seed, with_seeds=in_workers)
        self.loader = torch.utils.data.DataLoader(spec.torch_dataset, batch_sampler=self.sampler,
                                                  **self._loader_kwargs(persistent=True))
        self._augment = _DeviceAugment(aug, spec.img_size, seed, device, crop_in_workers=in_workers)
        self._it: Iterator[Any] | None = None
        self._next_step = -1

    def _loader_kwargs(self, persistent: bool) -> dict[str, Any]:
        kw: dict[str, Any] = {"num_workers": self.num_workers, "pin_memory": self.device.type == "cuda"}
        if self.num_workers > 0:
            kw.update(persistent_workers=persistent, prefetch_factor=4, worker_init_fn=_worker_init)
        return kw

    def __len__(self) -> int:
        return len(self.spec)

    def get_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None or step != self._next_step:
            self.sampler.start = step  # (re)start the stream here: resume or random access
            self._it = iter(self.loader)
        x, y = next(self._it)
        self._next_step = step + 1
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        return self._augment(x, step), y

    def iter_eval(self, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs = batch_size or self.batch_size
        n = len(self.spec)
        batches = [list(range(s, min(s + bs, n))) for s in range(0, n, bs)]
        loader = torch.utils.data.DataLoader(self.spec.torch_dataset, batch_sampler=batches,
                                             **self._loader_kwargs(persistent=False))
        for x, y in loader:
            yield (ops.to_unit_range(x.to(self.device, non_blocking=True)),
                   y.to(self.device, non_blocking=True))

    def close(self) -> None:
        self._it = None
        self.loader = None  # type: ignore[assignment]  # drops the persistent workers


def make_loader(spec: DatasetSpec, *, batch_size: int, device: torch.device | str, train: bool, seed: int,
                augment: dict[str, Any] | None = None, num_workers: int = 4) -> InMemoryLoader | StreamingLoader:
    """A loader over ``spec``: ``get_batch(step)`` and ``iter_eval(batch_size)``.

    ``train=True``: a seeded per-epoch shuffle and the ``augment`` ops ({"crop": none|pad_crop|
    random_resized, "flip": bool}); ``train=False``: sequential order, no augmentation
    (``augment`` is still validated). ``num_workers`` only matters for streaming datasets.
    """
    aug = parse_augment(augment)
    dev = torch.device(device)
    if spec.in_memory:
        return InMemoryLoader(spec, batch_size=batch_size, device=dev, train=train, seed=seed, augment=aug)
    return StreamingLoader(spec, batch_size=batch_size, device=dev, train=train, seed=seed, augment=aug,
                           num_workers=num_workers)
