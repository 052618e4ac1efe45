"""Reading CIFAR's python-pickle batches without letting a data root run code.

``pickle.load`` calls whatever global a file names (``os.system``, ``builtins.exec``, ...), so a
crafted ``data_batch_1`` in a data root would run arbitrary code. The unpickler here resolves
only the globals a CIFAR batch needs; any other is :class:`ForbiddenGlobal`, before it is loaded.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import os
import pickle
from typing import Any

import numpy as np
from numpy._core import multiarray, numeric

# Only what CIFAR's own batches (Py2 cPickle, numpy.core names) and numpy>=2 re-pickles name; dict/list/str: opcodes
_ALLOWED: dict[tuple[str, str], Any] = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): multiarray._reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): multiarray.scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): numeric._frombuffer for core in ("core", "_core")},
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # protocols <= 2 from Python 3 write bytes as encode(str, 'latin1')
    ("builtins", "bytes"): bytes, ("__builtin__", "bytes"): bytes,  # ... and b'' as bytes()
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allowlist (the file is an attack or not a CIFAR batch)."""

    def __init__(self, module: str, name: str) -> None:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)  # named as Python 3 has it: __builtin__ -> builtins
        super().__init__(f"it asks to load {f'{module}.{name}'[:120]}, which a CIFAR batch never contains")


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(module, name) from None


def load(path: str | os.PathLike[str]) -> Any:
    """Unpickle a CIFAR batch or meta file (latin1, as its Python 2 strings need); ForbiddenGlobal if it asks
    for any other global."""
    with open(path, "rb") as f:
        return _CifarUnpickler(f, encoding="latin1").load()
