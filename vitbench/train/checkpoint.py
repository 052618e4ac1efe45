"""Checkpoints: atomic writes, the last two kept, loaded with ``weights_only=True``.

A checkpoint holds everything a resumed run needs to continue bit-for-bit on CPU: model,
optimiser, schedule, the step (the data position: batches are a pure function of
(seed, step)) and the RNG states. A truncated or corrupt ``last.pt`` is detected at load time
and the run falls back to ``prev.pt``, saying so in its log.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vitbench.record.rundir import atomic_write

LAST = "last.pt"
PREV = "prev.pt"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # numpy's state tuple holds an ndarray, which weights_only loading refuses: store tensors.
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        # the second Gaussian of the last polar-method pair, drawn but not yet handed out
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    # a state saved before the pending Gaussian was recorded restores with none pending
    gauss = (state["numpy_has_gauss"], state["numpy_gauss"]) if "numpy_has_gauss" in state else ()
    np.random.set_state(("MT19937", keys, state["numpy_pos"], *gauss))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(ckpt_dir: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``last.pt`` atomically, keeping the previous one as ``prev.pt``.

    ``last.pt`` is only ever replaced by a rename, never moved away: the old one is hard-linked to
    ``prev.pt`` first, so a kill at any instant leaves a loadable ``last.pt`` (old or new); the
    temporary files a kill leaves are removed by the next ``load_checkpoint``.
    """
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / LAST

    def keep_previous() -> None:
        if last.exists():
            link = ckpt_dir / f".prev.{os.getpid()}.tmp"
            try:
                os.link(last, link)
            except FileExistsError:
                os.unlink(link)
                os.link(last, link)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(last, link)
            os.replace(link, ckpt_dir / PREV)

    try:
        atomic_write(last, lambda fh: torch.save(payload, fh), before_replace=keep_previous)
    except BaseException as exc:
        # torch.save reports a failed write (disk full) as a RuntimeError from its zip writer;
        # surface the OSError underneath so callers see "No space left on device".
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__ or cause.__cause__
        if cause is not None and cause is not exc:
            raise cause from None
        raise
    return ckpt_dir / LAST


def _load(path: Path) -> dict[str, Any]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "step" not in payload or "model" not in payload:
        raise ValueError("not a vitbench checkpoint (missing step/model)")
    return payload


def load_checkpoint(ckpt_dir: str | os.PathLike[str], log: Callable[[str], None] = print
                    ) -> dict[str, Any] | None:
    """The newest readable checkpoint, or None if there is none.

    Tries ``last.pt`` then ``prev.pt``; every unreadable file is reported through ``log``.
    """
    ckpt_dir = Path(ckpt_dir)
    for stale in ckpt_dir.glob(".*.tmp"):  # left by a process killed while saving
        stale.unlink(missing_ok=True)
    for name in (LAST, PREV):
        path = ckpt_dir / name
        if not path.exists():
            continue
        try:
            payload = _load(path)
        except Exception as exc:  # truncated, zero bytes, random bytes, foreign pickle
            log(f"checkpoint {path} is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); "
                f"falling back to the previous one")
            continue
        if name == PREV:
            log(f"using previous checkpoint {path} (step {payload['step']})")
        return payload
    return None
