"""Initialising a model from a published checkpoint.

``init_from_file(model, path)`` reads the file with the safe reader (:func:`~vitbench.models.weights_io.read_weights`)
and loads it into a vitbench model, adapting it as the paper's fine-tuning does (Table 4):

* the paper's flax ``.npz`` files (vision_transformer / AugReg, big_vision, BiT) are first put under timm's names
  (:mod:`vitbench.models.flax_layouts`); timm state dicts (``.safetensors``, ``.pth``/``.bin``) are read as they are:
  vitbench's ViT, hybrid and BiT models use timm's parameter names, except that the learned 1D table lives in a
  module (``pos_embed.0.pos`` for timm's ``pos_embed``);
* a position table for another grid is resized bilinearly on the grid, the [class] entry kept, by the models' own
  resize (:func:`vitbench.models.pos_embed.resize_grid`: the paper's code, ``vit_jax/checkpoint.py``'s
  ``scipy.ndimage.zoom(order=1)``, which maps corner to corner; timm's .npz loader interpolates with
  ``align_corners=False`` instead, so at another resolution vitbench follows the paper, not timm);
* the checkpoint's head when its shape matches the model's classes, otherwise the paper's zero-initialised head;
* a model option the file contradicts (``pre_logits: true`` for a file without pre-logits, ``pool: gap`` for a
  file with a [class] token, a position embedding other than the file's learned 1D table) and a missing or
  mis-shaped tensor are one-line errors naming the key.

``file_sha256(path)`` is the file's content hash, computed once per (path, size, modification time).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitbench.errors import UserError
from vitbench.models.flax_layouts import to_timm
from vitbench.models.pos_embed import LearnedPosEmbed1d
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


def _check_options(target: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], file: str) -> None:
    """A model option the file contradicts is the user's to change: one line naming the key and the fix."""
    has_pos = TIMM_POS in weights or OURS_POS in weights
    if has_pos and OURS_POS not in target and any(k.startswith("blocks.") for k in target):  # a ViT, another table
        raise UserError("the checkpoint has a learned 1D position table; set model.pos_embed: learned_1d and "
                        "model.pos_placement: stem", file=file, key="model.pos_embed")
    if "cls_token" in weights and "cls_token" not in target and has_pos:
        raise UserError("the checkpoint has a [class] token; set model.pool: cls", file=file, key="model.pool")
    if "cls_token" in target and "cls_token" not in weights and has_pos:
        raise UserError("the checkpoint has no [class] token (it pools by GAP); set model.pool: gap", file=file,
                        key="model.pool")
    if any(k.startswith("pre_logits.") for k in target) and not any(k.startswith("pre_logits.") for k in weights):
        raise UserError("the checkpoint has no pre-logits layer; set model.pre_logits: false", file=file,
                        key="model.pre_logits")


def _resized_table(model: nn.Module, old: torch.Tensor, new: torch.Tensor, file: str) -> torch.Tensor:
    """The file's learned 1D table on the model's grid, by the model's own resize (vit_jax's ``zoom(order=1)``)."""
    prefix = getattr(model, "num_prefix_tokens", 1)
    side = math.isqrt(max(old.shape[1] - prefix, 0)) if old.ndim == 3 else 0
    if old.ndim != 3 or old.shape[-1] != new.shape[-1] or side * side != old.shape[1] - prefix:
        raise UserError(f"{OURS_POS}: shape {tuple(old.shape)} cannot become {tuple(new.shape)}", file=file,
                        key="model.init")
    table = LearnedPosEmbed1d((side, side), old.shape[-1], prefix)
    with torch.no_grad():
        table.pos.copy_(old)
    table.set_grid_size(tuple(model.grid_size))
    return table.pos.detach()


def adapt_state(model: nn.Module, weights: dict[str, torch.Tensor], *, file: str) -> tuple[dict[str, torch.Tensor],
                                                                                            list[str]]:
    """The file's tensors under the model's names and shapes, and what was adapted (for the run's log)."""
    target = model.state_dict()
    weights = dict(weights)
    notes: list[str] = []
    _check_options(target, weights, file)
    if TIMM_POS in weights and OURS_POS in target:
        weights[OURS_POS] = weights.pop(TIMM_POS)
    if OURS_POS in weights and OURS_POS in target and weights[OURS_POS].shape != target[OURS_POS].shape:
        shape = tuple(weights[OURS_POS].shape)
        weights[OURS_POS] = _resized_table(model, weights[OURS_POS], target[OURS_POS], file)
        notes.append(f"position table resized {shape} -> {tuple(target[OURS_POS].shape)} (bilinear on the grid, "
                     "as vit_jax)")
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
        converted = to_timm(weights, file=str(path))
        if converted is None:
            first = next(iter(weights), "nothing")
            raise UserError(f"not a checkpoint vitbench reads (first key {first!r}); allowed: timm state dicts "
                            "(.safetensors, .pth, .bin) and the vision_transformer / AugReg, big_vision and BiT .npz "
                            "layouts", file=str(path), key="model.init")
        weights = converted
    state, notes = adapt_state(model, weights, file=str(path))
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    return notes


def init_path(cfg: dict[str, Any], *, file: str | None = None) -> Path | None:
    """Where a run config's ``model.init`` lies: absolute, or under the data root (runtime.data_root / $VITBENCH_DATA)."""
    init = cfg["model"].get("init")
    if init is None:
        return None
    path = Path(init).expanduser()
    if not path.is_absolute():
        root = cfg["runtime"].get("data_root") or os.environ.get("VITBENCH_DATA")
        if not root:
            raise UserError(f"{init!r} is relative to the data root, and none is set (runtime.data_root, --data-root "
                            "or $VITBENCH_DATA)", file=file, key="model.init")
        path = Path(root).expanduser() / path
    if not path.is_file():
        raise UserError(f"no checkpoint file at {path}", file=file, key="model.init")
    return path


def stamp_init(cfg: dict[str, Any], *, file: str | None = None) -> dict[str, Any]:
    """The config with ``model.init_sha256`` filled in from the file (the run id uses it); a pinned one is checked."""
    path = init_path(cfg, file=file)
    if path is None:
        if cfg["model"].get("init_sha256") is not None:
            raise UserError("is set but model.init is not", file=file, key="model.init_sha256")
        return cfg
    digest, pinned = file_sha256(path), cfg["model"].get("init_sha256")
    if pinned is not None and pinned != digest:
        raise UserError(f"{path} has sha256 {digest}, not the {pinned} given", file=file, key="model.init_sha256")
    if pinned == digest:
        return cfg
    return {**cfg, "model": {**cfg["model"], "init_sha256": digest}}


def init_for_run(cfg: dict[str, Any]) -> Path | None:
    """At run start: the checkpoint file, if it still has the bytes the run was planned with."""
    path = init_path(cfg)
    if path is not None and file_sha256(path) != cfg["model"].get("init_sha256"):
        raise UserError(f"{path} changed after the run was planned (sha256 {file_sha256(path)[:12]}, planned "
                        f"{str(cfg['model'].get('init_sha256'))[:12]}); plan it again", key="model.init")
    return path
