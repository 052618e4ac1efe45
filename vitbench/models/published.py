"""Initialising a model from a published checkpoint (issue 16, first part: timm-layout state dicts).

``init_from_file(model, path)`` reads the file with the safe reader (:func:`~vitbench.models.weights_io.read_weights`)
and loads it into a vitbench model, adapting it as the paper's fine-tuning does (Table 4):

* timm key names (``.safetensors``, ``.pth``/``.bin`` state dicts): vitbench's ViT, hybrid and BiT models use timm's
  parameter names, except that the learned 1D table lives in a module (``pos_embed.0.pos`` for timm's ``pos_embed``);
* a position table for another grid is resampled bilinearly on the grid, the [class] entry kept (timm's
  ``resample_abs_pos_embed``, the operation of the paper's code and of timm's own .npz loader);
* the checkpoint's head when its shape matches the model's classes, otherwise the paper's zero-initialised head;
* a model option the file contradicts (``pre_logits: true`` for a file without pre-logits) and a missing or
  mis-shaped tensor are one-line errors naming the key.

``file_sha256(path)`` is the file's content hash, computed once per (path, size, modification time).
The original vision_transformer / big_vision / BiT ``.npz`` layouts are not read yet: such a file is refused with
one line saying so.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from vitbench.errors import UserError
from vitbench.models.weights_io import read_weights

_SHA_CACHE: dict[tuple[str, int, int], str] = {}
TIMM_POS = "pos_embed"  # timm's name of the learned 1D table ...
OURS_POS = "pos_embed.0.pos"  # ... and vitbench's (the stem's first position module)
HEAD = ("head.weight", "head.bias")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of the file's bytes, cached by (resolved path, size, mtime): a rewritten file is hashed again."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _timm_layout(weights: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("patch_embed.", "stem.", "blocks.", "stages.")) for k in weights)


def adapt_state(model: nn.Module, weights: dict[str, torch.Tensor], *, file: str) -> tuple[dict[str, torch.Tensor],
                                                                                            list[str]]:
    """The file's tensors under the model's names and shapes, and what was adapted (for the run's log)."""
    from timm.layers import resample_abs_pos_embed

    target = model.state_dict()
    weights = dict(weights)
    notes: list[str] = []
    if TIMM_POS in weights and OURS_POS in target:
        weights[OURS_POS] = weights.pop(TIMM_POS)
    if OURS_POS in weights and OURS_POS in target and weights[OURS_POS].shape != target[OURS_POS].shape:
        old, new = weights[OURS_POS], target[OURS_POS]
        if old.ndim != 3 or old.shape[-1] != new.shape[-1]:
            raise UserError(f"{OURS_POS}: shape {tuple(old.shape)} cannot become {tuple(new.shape)}", file=file,
                            key="model.init")
        grid = getattr(model, "grid_size", None)
        weights[OURS_POS] = resample_abs_pos_embed(old, new_size=list(grid), num_prefix_tokens=1)
        notes.append(f"position table resampled {tuple(old.shape)} -> {tuple(new.shape)} (bilinear on the grid)")
    if any(k.startswith("pre_logits.") for k in target) and not any(k.startswith("pre_logits.") for k in weights):
        raise UserError("the checkpoint has no pre-logits layer; set model.pre_logits: false", file=file,
                        key="model.pre_logits")
    heads = [k for k in HEAD if k in target]
    if heads and any(k not in weights or weights[k].shape != target[k].shape for k in heads):
        for k in heads:  # the paper's transfer head (Table 4): a fresh zero-initialised linear layer
            weights[k] = torch.zeros_like(target[k])
        notes.append("head zero-initialised (the checkpoint's head does not fit the classes)")
    for k in target:
        if k not in weights:
            raise UserError(f"the checkpoint has no tensor {k!r}", file=file, key="model.init")
        if weights[k].shape != target[k].shape:
            raise UserError(f"{k}: the checkpoint's shape {tuple(weights[k].shape)}, the model's "
                            f"{tuple(target[k].shape)}", file=file, key="model.init")
    unused = sorted(k for k in weights if k not in target)
    if unused:
        notes.append(f"{len(unused)} checkpoint tensors unused, first {unused[0]}")
    return {k: weights[k] for k in target}, notes


def init_from_file(model: nn.Module, path: str | os.PathLike[str]) -> list[str]:
    """Load the checkpoint at ``path`` into ``model`` (in place); returns what was adapted."""
    weights = read_weights(path)
    if not _timm_layout(weights):
        raise UserError("only timm-layout checkpoints (.safetensors, .pth, .bin with timm's key names) are read so "
                        "far; the vision_transformer / big_vision / BiT .npz layouts are not yet", file=str(path),
                        key="model.init")
    state, notes = adapt_state(model, weights, file=str(path))
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    return notes
