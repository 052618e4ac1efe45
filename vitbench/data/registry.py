"""Dataset registry, the dataset object the trainer consumes, and data-root errors.

A dataset is a :class:`DatasetBuilder` subclass registered by name with
``@register_dataset("name")``; :func:`get_dataset` resolves the name, the data root and the
split and returns a :class:`DatasetSpec`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import torch

from vitbench.errors import UserError

SPLITS = ("train", "dev", "test")
ENV_ROOT = "VITBENCH_DATA"


class DataRootError(UserError, ValueError):
    """A real dataset's root is missing or malformed. One line: the path checked, the layout expected.

    A :class:`~vitbench.errors.UserError` too, so the CLI prints it as ``vitbench: error: ...``.
    """


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset without touching its files."""

    name: str
    num_classes: int  # nominal; a streaming folder dataset reports what its root holds
    dev_fraction: float  # of the official training set, held out for learning-rate selection
    needs_root: bool
    layout: str  # expected layout under the data root ("" when generated/bundled)
    in_memory: bool
    default_size: int | None = None  # train images when size=None (None: the whole train split)
    description: str = ""
    train_pool: int | None = None  # official training images (before the dev split), for planning epochs


@dataclass(eq=False)
class DatasetSpec:
    """One split of one dataset at one resolution.

    In memory: ``images`` uint8 (N, 3, img_size, img_size) and ``labels`` int64 (N,) on the CPU.
    Streaming: ``torch_dataset`` maps an index to (uint8 CHW tensor at img_size, label);
    ``labels`` is still filled (file lists carry them) and ``images`` is None.
    """

    name: str
    split: str
    num_classes: int
    img_size: int
    in_memory: bool
    labels: torch.Tensor
    images: torch.Tensor | None = None
    torch_dataset: Any = None
    indices: torch.Tensor | None = None  # positions in the dataset's official pool (provenance)
    classes: list[str] | None = None
    _device_cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def device_images(self, device: torch.device | str) -> torch.Tensor:
        """The uint8 images on ``device``, copied there once per spec and reused by every loader."""
        if self.images is None:
            raise TypeError(f"{self.name}/{self.split} is a streaming dataset; it has no in-memory images")
        key = str(torch.device(device))
        if key not in self._device_cache:
            self._device_cache[key] = self.images if key == "cpu" else self.images.to(device)
        return self._device_cache[key]

    def device_labels(self, device: torch.device | str) -> torch.Tensor:
        key = "labels@" + str(torch.device(device))
        if key not in self._device_cache:
            self._device_cache[key] = self.labels.to(device)
        return self._device_cache[key]


class DatasetBuilder:
    """Base of registered datasets. Subclasses set ``info`` and implement ``build``."""

    info: ClassVar[DatasetInfo]

    def check_root(self, root: Path) -> None:
        """Validate the layout under ``root`` without loading; raise DataRootError."""

    def build(self, split: str, *, img_size: int, root: Path | None, size: int | None) -> DatasetSpec:
        raise NotImplementedError

    def train_size(self, size: int | None) -> int | None:
        """Nominal images in the train split (after the dev split, then the nested subset), or None."""
        if size is not None:
            return size
        if self.info.default_size is not None:
            return self.info.default_size
        if self.info.train_pool is None:
            return None
        from vitbench.data.splits import dev_count

        return self.info.train_pool - dev_count(self.info.train_pool, self.info.dev_fraction)

    # -- helpers for subclasses ------------------------------------------------------------
    def root_error(self, root: Path | None, problem: str) -> DataRootError:
        where = f"data root '{root}' {problem}" if root is not None else problem
        return DataRootError(f"{self.info.name}: {where} (expected {self.info.layout}; "
                             f"set --data-root or {ENV_ROOT})")

    def require(self, root: Path, *rel: str) -> None:
        """Raise DataRootError naming the first of ``rel`` (paths under root; '/' suffix = dir) missing."""
        for r in rel:
            p = root / r.rstrip("/")
            ok = p.is_dir() if r.endswith("/") else p.is_file()
            if not ok:
                raise self.root_error(root, f"has no {r}")


_REGISTRY: dict[str, type[DatasetBuilder]] = {}
B = TypeVar("B", bound=type[DatasetBuilder])


def register_dataset(name: str) -> Callable[[B], B]:
    """Class decorator: make a DatasetBuilder available under ``name``."""

    def deco(cls: B) -> B:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        if cls.info.name != name:
            raise ValueError(f"dataset class {cls.__name__} has info.name {cls.info.name!r}, registered as {name!r}")
        _REGISTRY[name] = cls
        return cls

    return deco


def unregister_dataset(name: str) -> None:
    """Forget a dataset (a plugin whose import failed after registering it)."""
    _REGISTRY.pop(name, None)


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def _builder(name: str) -> DatasetBuilder:
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(list_datasets())}")
    return _REGISTRY[name]()


def dataset_info(name: str) -> DatasetInfo:
    return _builder(name).info


def train_size(name: str, size: int | None = None) -> int | None:
    """Images in ``name``'s train split as planned (no files read); the run counts what it loads."""
    return _builder(name).train_size(size)


def resolve_root(root: str | os.PathLike[str] | None) -> Path | None:
    """The explicit root, else $VITBENCH_DATA, else None."""
    chosen = root if root not in (None, "") else os.environ.get(ENV_ROOT) or None
    return Path(chosen).expanduser() if chosen is not None else None


def _checked_root(b: DatasetBuilder, root: str | os.PathLike[str] | None) -> Path | None:
    if not b.info.needs_root:
        return None
    path = resolve_root(root)
    if path is None:
        raise b.root_error(None, "no data root given")
    if not path.exists():
        raise b.root_error(path, "does not exist")
    if not path.is_dir():
        raise b.root_error(path, "is not a directory")
    b.check_root(path)
    return path


def check_data_root(name: str, root: str | os.PathLike[str] | None) -> None:
    """Validate that ``name`` can be loaded from ``root`` (or $VITBENCH_DATA) without loading it.

    A no-op for generated/bundled datasets; DataRootError (one line) for a missing or malformed root.
    """
    _checked_root(_builder(name), root)


def get_dataset(name: str, split: str, *, img_size: int, root: str | os.PathLike[str] | None = None,
                size: int | None = None, seed: int = 0) -> DatasetSpec:
    """One split ("train", "dev" or "test") of a registered dataset at ``img_size`` pixels.

    ``size`` takes a nested subset (the first N of a fixed permutation of the split; for "train"
    that is after the dev images are carved out). ``seed`` is the run seed; it does NOT change
    which images a split holds (splits and subsets use constant per-dataset salts, so runs that
    differ in seed are compared on identical data) and is accepted for a stable signature.
    """
    del seed  # see docstring: data content is independent of the run seed on purpose
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not isinstance(img_size, int) or img_size < 1:
        raise ValueError(f"img_size must be a positive int, got {img_size!r}")
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    b = _builder(name)
    path = _checked_root(b, root)
    return b.build(split, img_size=img_size, root=path, size=size)
