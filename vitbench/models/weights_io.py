"""The one place where a weights file from outside (a published checkpoint) is read, safely.

``read_weights(path)`` returns a flat ``{name: torch.Tensor}`` mapping from

* ``.safetensors`` (timm / Hugging Face): ``safetensors.torch.load_file``, no pickle involved;
* ``.npz`` / ``.npy`` (the paper's flax checkpoints from google-research/vision_transformer, flattened
  with ``/`` keys, returned as stored): ``np.load(path, allow_pickle=False)``;
* ``.pt`` / ``.pth`` / ``.pth.tar`` / ``.bin`` (``torch.save``): ``torch.load(path, map_location="cpu",
  weights_only=True)``; a top-level ``{"state_dict" | "model" | "state_dict_ema" | "model_ema": {...}}``
  wrapper is unwrapped when that value is a dict of tensors.

Why tensors, not numpy arrays: the consumer is ``nn.Module.load_state_dict``; safetensors and torch
files hold dtypes numpy has no type for (bfloat16, float8), while every numeric numpy array converts to a
tensor without a copy (``torch.from_numpy``). One return type, so callers never branch.

Nothing here runs code from the file: no reader is ever asked to unpickle an arbitrary object (torch's
weights-only unpickler refuses every global outside its allowlist, numpy refuses object arrays, and
safetensors is pickle-free). The explicit ``weights_only=True`` also wins over the environment variable
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``. Every failure (forbidden pickle global, object array, corrupt
header, a zip that is not a torch archive, a non-tensor value, an unknown extension, a missing file, a
directory) is one :class:`~vitbench.errors.UserError` line naming the file and what is allowed.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitbench.errors import UserError

SAFETENSORS = (".safetensors",)
NUMPY = (".npz", ".npy")
TORCH = (".pt", ".pth", ".pth.tar", ".bin")
EXTENSIONS = SAFETENSORS + NUMPY + TORCH

# Top-level keys of a training checkpoint whose value is the state dict (timm, DeiT, torchvision refs).
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")

ALLOWED = ("allowed: .safetensors; .npz/.npy of numeric arrays (no pickled objects); "
           ".pt/.pth/.pth.tar/.bin from torch.save of a dict of tensors (read with weights_only=True)")

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty zip
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_PROTO = 0x80  # torch's legacy (pre-1.6, non-zip) format is a bare pickle stream


def _fail(path: Path, reason: str) -> UserError:
    return UserError(f"{reason}; {ALLOWED}", file=str(path))


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return detail if len(detail) <= limit else detail[: limit - 3] + "..."


def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in sorted(EXTENSIONS, key=len, reverse=True):  # ".pth.tar" before a bare ".tar"
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def read_weights(path: str | os.PathLike[str], *, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a published weights file into a flat ``{name: tensor}`` dict (CPU), executing nothing.

    ``key`` picks the state dict inside a torch training checkpoint (e.g. ``"state_dict_ema"``); by
    default the file must be a dict of tensors itself or hold exactly one of :data:`WRAPPER_KEYS`
    whose value is one. Raises :class:`~vitbench.errors.UserError` (one line) for anything else.
    """
    path = Path(path)
    ext = _extension(path)
    if ext not in EXTENSIONS:
        raise _fail(path, f"unknown weights file extension {ext or '(none)'!r}")
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except OSError as exc:
        raise _fail(path, f"cannot stat ({_first_line(exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _fail(path, "is a directory, not a weights file")
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise _fail(path, "is not a regular file")
    if st.st_size == 0:
        raise _fail(path, "is empty (0 bytes)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise _fail(path, f"cannot open ({_first_line(exc)})") from None

    if ext in SAFETENSORS:
        weights = _read_safetensors(path)
    elif ext == ".npz":
        if not head.startswith(_ZIP_MAGIC):
            raise _fail(path, "is not an .npz (zip) archive")
        weights = _read_npz(path)
    elif ext == ".npy":
        if not head.startswith(_NPY_MAGIC):
            raise _fail(path, "is not an .npy array file (bad magic)")
        weights = _read_npy(path)
    else:
        if not (head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTO):
            raise _fail(path, "is not a torch.save file (neither a zip archive nor a pickle)")
        weights = _read_torch(path, key)
    if not weights:
        raise _fail(path, "holds no tensors")
    return weights


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError: truncated/corrupt header, bad offsets, unknown dtype
        raise _fail(path, f"not a readable safetensors file ({_first_line(exc)})") from None
    return dict(tensors)


def _to_tensor(path: Path, name: str, arr: Any) -> torch.Tensor:
    if not isinstance(arr, np.ndarray):
        raise _fail(path, f"member {name!r} is not a .npy array ({type(arr).__name__})")
    if arr.dtype.byteorder not in ("=", "|"):  # big-endian data: torch only takes native byte order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(np.ascontiguousarray(arr))
    except TypeError:
        raise _fail(path, f"array {name!r} has dtype {arr.dtype}, not a numeric/bool dtype") from None


def _read_npz(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise _fail(path, "is not an .npz archive")
            for name in archive.files:
                out[name] = _to_tensor(path, name, archive[name])  # members are read lazily, here
    except UserError:
        raise
    except Exception as exc:  # object arrays (pickle), corrupt zip, bad .npy header, truncation
        raise _fail(path, f"not a readable .npz archive ({_first_line(exc)})") from None
    return out


def _read_npy(path: Path) -> dict[str, torch.Tensor]:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise _fail(path, f"not a readable .npy array ({_first_line(exc)})") from None
    # One array, no name stored in the file: it is keyed by the file's stem.
    return {path.name[: -len(".npy")]: _to_tensor(path, path.name, arr)}


_FORBIDDEN_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _weights_only_reason(text: str) -> str:
    """The unpickler's reason inside torch's multi-paragraph "Weights only load failed" message."""
    glob = _FORBIDDEN_GLOBAL.search(text)
    if glob:
        return f"the global {glob.group(1)}"
    for marker in ("WeightsUnpickler error:", "trusted source."):  # the boilerplate ends with these
        if marker in text:
            text = text.split(marker)[-1]
            break
    reason = text.split("Check the documentation")[0].strip().replace("Unsupported operand", "unsupported pickle opcode")
    return reason or "a pickle instruction outside the allowlist"


def _read_torch(path: Path, key: str | None) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the refusal below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = " ".join(str(exc).split())
        if "Weights only load failed" in text:
            detail = _weights_only_reason(text)
            if len(detail) > 160:
                detail = detail[:157] + "..."
            raise _fail(path, f"refused: the pickle asks for something weights-only loading forbids "
                              f"(it could run code): {detail}") from None
        raise _fail(path, f"not a readable torch.save file ({_first_line(exc)})") from None
    return _state_dict(path, obj, key)


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _state_dict(path: Path, obj: Any, key: str | None) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise _fail(path, f"holds a {type(obj).__name__}, not a dict of tensors")
    if key is not None:
        if key not in obj:
            raise _fail(path, f"has no key {key!r} (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
        obj = obj[key]
        if not isinstance(obj, dict):
            raise _fail(path, f"{key!r} holds a {type(obj).__name__}, not a dict of tensors")
    elif not _is_tensor_dict(obj):
        wrapped = [k for k in WRAPPER_KEYS if _is_tensor_dict(obj.get(k))]
        if len(wrapped) > 1:
            raise _fail(path, f"holds several state dicts ({', '.join(wrapped)}); pick one with key=")
        if wrapped:
            obj = obj[wrapped[0]]
        else:  # a wrapper whose value is not all tensors: check inside it, to name the offending value
            dicts = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)]
            if len(dicts) == 1:
                obj = obj[dicts[0]]
    for name, value in obj.items():
        if not isinstance(name, str):
            raise _fail(path, f"has a non-string key {name!r}")
        if not isinstance(value, torch.Tensor):
            raise _fail(path, f"value {name!r} is a {type(value).__name__}, not a tensor")
    return dict(obj)
