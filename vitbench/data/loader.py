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

RandAugment (timm, PIL) runs per sample on the host after crop and flip, seeded per sample from
(seed, step, i); Mixup/CutMix (timm) is a separate ``Mixer`` applied by ``train_loop`` to the
whole global batch, seeded from (seed, step). Both restore the global RNG states they borrow.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from vitbench.data import ops
from vitbench.data.registry import DatasetSpec
from vitbench.data.rng import M32, derive_seed, keyed_hash, permutation, uniforms
from vitbench.spec.schema import AUGMENT as _AUGMENT_SCHEMA

AUGMENT_KEYS = tuple(_AUGMENT_SCHEMA)  # the one list of augment keys: the schema's
CROPS = tuple(_AUGMENT_SCHEMA["crop"].choices or ())
_RA_SECTION = re.compile(r"t.+|(mstd|mmax|inc|m|n|p)\d.*")  # what timm's config parser understands


@dataclass(frozen=True)
class Augment:
    crop: str = "none"
    flip: bool = False
    randaugment: str | None = None  # timm config string, e.g. "rand-m15-n2"
    mixup: float = 0.0  # Mixup alpha (0 = off)
    cutmix: float = 0.0  # CutMix alpha (0 = off)

    @property
    def active(self) -> bool:
        """Any per-image op of the loader (crop, flip, RandAugment); mixing is separate (``mixing``)."""
        return self.crop != "none" or self.flip or self.randaugment is not None

    @property
    def mixing(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def randaugment_transform(config: str, img_size: int = 224) -> Callable[[Any], Any]:
    """timm's RandAugment (PIL in, PIL out) for ``config``, with hparams as timm's create_transform sets them.

    Fill colour mid-grey (the mean of the [-1, 1] value range), absolute translations 45% of the side.
    ValueError (one line) when timm cannot parse ``config``.
    """
    from timm.data.auto_augment import rand_augment_transform

    bad = ValueError(f"augment.randaugment={config!r} is not a timm RandAugment config "
                     "(rand-<sections>, e.g. rand-m15-n2, rand-m9-n3-mstd0.5)")
    if not isinstance(config, str):
        raise ValueError(f"augment.randaugment must be a string such as 'rand-m15-n2' or null, got {config!r}")
    parts = config.split("-")
    if parts[0] != "rand" or not all(_RA_SECTION.fullmatch(s) for s in parts[1:]):
        raise bad  # timm asserts on some of these and silently skips others
    hparams = {"translate_const": max(1, int(img_size * 0.45)), "img_mean": (128, 128, 128)}
    try:
        return rand_augment_transform(config, hparams)
    except Exception as exc:  # timm raises AssertionError/ValueError/KeyError on bad sections
        raise ValueError(f"{bad} ({_one_line(exc)})") from None


def _alpha(augment: dict[str, Any], key: str) -> float:
    value = augment.get(key, 0.0)
    if value is None:
        value = 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0.0 or value == float("inf"):
        raise ValueError(f"augment.{key} must be a finite number >= 0 (a Beta alpha; 0 = off), got {value!r}")
    return float(value)


def parse_augment(augment: dict[str, Any] | None) -> Augment:
    """Validate an ``augment`` mapping (keys: those of ``vitbench.spec.schema.AUGMENT``).

    ValueError (one line) on anything else; a RandAugment string is checked by building timm's transform.
    """
    if augment is None:
        return Augment()
    if isinstance(augment, Augment):
        return augment
    allowed = ", ".join(AUGMENT_KEYS)
    if not isinstance(augment, dict):
        raise ValueError(f"augment must be a mapping with keys {allowed}; got {type(augment).__name__}")
    unknown = sorted(set(augment) - set(AUGMENT_KEYS))
    if unknown:
        raise ValueError(f"unknown augment key(s) {', '.join(map(repr, unknown))}; allowed: {allowed}")
    crop = augment.get("crop", "none")
    if crop is None:
        crop = "none"
    if crop not in CROPS:
        raise ValueError(f"augment.crop must be one of {', '.join(CROPS)}, got {crop!r}")
    flip = augment.get("flip", False)
    if not isinstance(flip, bool):
        raise ValueError(f"augment.flip must be true or false, got {flip!r}")
    ra = augment.get("randaugment")
    if ra is not None:
        randaugment_transform(ra)  # validate once; the loader builds its own at the image size
    return Augment(crop=crop, flip=flip, randaugment=ra, mixup=_alpha(augment, "mixup"),
                   cutmix=_alpha(augment, "cutmix"))


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

def _aug_uniforms(seed: int, step: int, batch: int, device: torch.device) -> torch.Tensor:
    """(B, 8) uniforms for step ``step``: 0 flip, 1-2 pad-crop offsets, 3-6 random-resized box."""
    return uniforms(torch.arange(batch), derive_seed("augment", seed, step), 8).to(device, non_blocking=True)


def sample_seeds(seed: int, step: int, batch: int) -> list[int]:
    """Per-sample seeds of the worker-side random-resized crops of step ``step``."""
    return (keyed_hash(torch.arange(batch), derive_seed("rrc", seed, step)) & M32).tolist()


class _GlobalRNG:
    """Seeds python ``random`` and ``numpy.random`` (what timm draws from) and restores both on exit."""

    def __enter__(self) -> "_GlobalRNG":
        self._py, self._np = random.getstate(), np.random.get_state()
        return self

    @staticmethod
    def seed(s: int) -> None:
        random.seed(s)
        np.random.seed(s)

    def __exit__(self, *exc: object) -> None:
        random.setstate(self._py)
        np.random.set_state(self._np)


class RandAugmentBatch:
    """timm RandAugment on a uint8 (N, C, H, W) batch, per sample, a pure function of (seed, step, i).

    timm's ops are PIL ops, so this is CPU work: the batch is copied to the host, each image goes
    through PIL with the global ``random``/``numpy.random`` seeded from its own key (the states are
    restored afterwards), and the result goes back to the batch's device.
    """

    def __init__(self, config: str, img_size: int, seed: int) -> None:
        self.transform = randaugment_transform(config, img_size)
        self.config, self.seed = config, seed

    def sample_seeds(self, step: int, batch: int) -> list[int]:
        return (keyed_hash(torch.arange(batch), derive_seed("randaugment", self.seed, step)) & M32).tolist()

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        from PIL import Image

        if x.dtype != torch.uint8:
            raise TypeError(f"RandAugment works on uint8 images, got {x.dtype}")
        n, c = x.shape[:2]
        arr = x.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # (N, H, W, C)
        out = np.empty_like(arr)
        with _GlobalRNG() as rng:
            for i, s in enumerate(self.sample_seeds(step, n)):
                rng.seed(s)
                img = Image.fromarray(arr[i, :, :, 0] if c == 1 else arr[i])
                res = np.asarray(self.transform(img), dtype=np.uint8)
                out[i] = res[:, :, None] if c == 1 else res
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(x.device, non_blocking=True)


def _to_uint8(xf: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] → uint8 [0, 255] (inverse of ops.to_unit_range, rounded)."""
    return xf.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


class _DeviceAugment:
    """uint8 batch on the device → augmented float32 in [-1, 1], randomness keyed by (seed, step).

    Order (AugReg / big_vision ``inception_crop|flip_lr|randaug|value_range``): crop, flip, RandAugment,
    scale to [-1, 1] -- RandAugment sees the image the model sees, as in the paper being reproduced.
    Without RandAugment the crop/flip path is unchanged (flip and scaling commute exactly).
    """

    def __init__(self, aug: Augment, img_size: int, seed: int, device: torch.device, crop_in_workers: bool) -> None:
        self.aug, self.seed, self.device = aug, seed, device
        self.pad = ops.pad_padding(img_size)
        self.crop_in_workers = crop_in_workers
        self.randaug = RandAugmentBatch(aug.randaugment, img_size, seed) if aug.randaugment is not None else None

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        if not self.aug.active:
            return ops.to_unit_range(x)
        u = _aug_uniforms(self.seed, step, x.shape[0], x.device)
        flip = (u[:, 0] < 0.5) if self.aug.flip else torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        if self.aug.crop == "pad_crop":
            offsets = (u[:, 1:3] * (2 * self.pad + 1)).long().clamp_(max=2 * self.pad)
            x = ops.pad_crop(x, offsets, self.pad)
        if self.aug.crop == "random_resized" and not self.crop_in_workers:
            xf = ops.crop_resize_flip(ops.to_unit_range(x), ops.rrc_boxes(u[:, 3:7]), flip)
            if self.randaug is None:
                return xf
            x = _to_uint8(xf)  # PIL ops need uint8
        elif self.randaug is None:
            xf = ops.to_unit_range(x)
            return ops.hflip_where(xf, flip) if self.aug.flip else xf
        elif self.aug.flip:
            x = ops.hflip_where(x, flip)
        return ops.to_unit_range(self.randaug(x, step))


class Mixer:
    """timm ``Mixup`` (Mixup and/or CutMix, per-sample lambda: ``mode="elem"``) keyed by (seed, step).

    ``mix(x, y, step)`` takes the normalised float batch and integer labels and returns the mixed
    batch (mixed in place, as timm does) and soft targets (N, num_classes) that already carry the
    label smoothing. Sample i is mixed with sample N-1-i. timm draws from ``numpy.random``: it is
    seeded from ``derive_seed("mixup", seed, step)`` for the call and the global states restored.
    """

    def __init__(self, aug: Augment, *, num_classes: int, label_smoothing: float, seed: int) -> None:
        from timm.data import Mixup

        if not aug.mixing:
            raise ValueError("Mixer needs augment.mixup > 0 or augment.cutmix > 0")
        self.seed = seed
        self.mixup = Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, mode="elem",
                           label_smoothing=label_smoothing, num_classes=num_classes)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2:
            raise ValueError(f"augment.mixup/cutmix need an even batch size, got {x.shape[0]}")
        with _GlobalRNG() as rng:
            rng.seed(derive_seed("mixup", self.seed, step))
            return self.mixup(x, y)


def make_mixer(augment: dict[str, Any] | Augment | None, *, num_classes: int, label_smoothing: float = 0.0,
               seed: int) -> Mixer | None:
    """The Mixup/CutMix of ``augment`` (None when both alphas are 0)."""
    aug = parse_augment(augment)
    if not aug.mixing:
        return None
    return Mixer(aug, num_classes=num_classes, label_smoothing=label_smoothing, seed=seed)


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

    def mixer(self, label_smoothing: float = 0.0) -> Mixer | None:
        """This train loader's Mixup/CutMix (for ``train_loop(mix=...)``); None if off or not training."""
        return _mixer_of(self, label_smoothing)

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

    def mixer(self, label_smoothing: float = 0.0) -> Mixer | None:
        """This train loader's Mixup/CutMix (for ``train_loop(mix=...)``); None if off or not training."""
        return _mixer_of(self, label_smoothing)

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


def _mixer_of(loader: InMemoryLoader | StreamingLoader, label_smoothing: float) -> Mixer | None:
    aug = loader._augment.aug
    if not loader.train or not aug.mixing:
        return None
    return Mixer(aug, num_classes=loader.spec.num_classes, label_smoothing=label_smoothing, seed=loader._augment.seed)


def make_loader(spec: DatasetSpec, *, batch_size: int, device: torch.device | str, train: bool, seed: int,
                augment: dict[str, Any] | None = None, num_workers: int = 4) -> InMemoryLoader | StreamingLoader:
    """A loader over ``spec``: ``get_batch(step)`` and ``iter_eval(batch_size)``.

    ``train=True``: a seeded per-epoch shuffle and the ``augment`` ops ({"crop": none|pad_crop|
    random_resized, "flip": bool, "randaugment": timm config | None}, applied in ``get_batch``;
    "mixup"/"cutmix" alphas via ``loader.mixer(label_smoothing)`` for ``train_loop(mix=...)``);
    ``train=False``: sequential order, no augmentation (``augment`` is still validated).
    ``num_workers`` only matters for streaming datasets.
    """
    aug = parse_augment(augment)
    dev = torch.device(device)
    if spec.in_memory:
        return InMemoryLoader(spec, batch_size=batch_size, device=dev, train=train, seed=seed, augment=aug)
    return StreamingLoader(spec, batch_size=batch_size, device=dev, train=train, seed=seed, augment=aug,
                           num_workers=num_workers)
