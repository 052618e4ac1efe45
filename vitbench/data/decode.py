"""Decoding image files into uint8 CHW tensors: resize (evaluation, in-memory sets) and
Inception crops (training from full-resolution files), all with explicit randomness.

A data root's files are not trusted to be images: a file with more than ``PIL.Image.MAX_IMAGE_PIXELS``
pixels is a decompression bomb (refused where PIL would only warn), and :func:`bad_image_kind` sorts
what one bad file raises (bomb, broken symlink, corrupt) from what is a bug. :func:`decode_all`
skips bad files, up to ``MAX_BAD_FRACTION`` of a split and at most ``MAX_BAD_FILES``; above that the
root is damaged and it is a one-line DataRootError before training starts.
"""

from __future__ import annotations

import math
import os
import random
import struct
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from vitbench.data.ops import RRC_RATIO, RRC_SCALE


# Real Pets/Flowers/ImageNet downloads hold no file PIL cannot decode, so a skip is damage: a few are
# tolerated (a run is not lost to one bad file), more than 1% of a split (below every dev split, 1-10%)
# or 100 files means the root is not the dataset the paper's numbers were measured on.
MAX_BAD_FRACTION, MAX_BAD_FILES = 0.01, 100


def _open(path: str) -> Any:
    from PIL import Image

    im = Image.open(path)
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and im.size[0] * im.size[1] > limit:  # PIL only warns up to 2x the limit
        im.close()
        raise Image.DecompressionBombError(f"{im.size[0]}x{im.size[1]} pixels exceed the {limit} allowed")
    return im


def bad_image_kind(exc: BaseException, path: str) -> str | None:
    """What a bad image file is, from what decoding it raised; None when ``exc`` is not about the file."""
    from PIL import Image

    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return "decompression bomb"
    if isinstance(exc, OSError) and os.path.islink(path) and not os.path.exists(path):
        return "broken symlink"  # dangling, or a loop (ELOOP)
    if isinstance(exc, FileNotFoundError):
        return "missing"
    # truncated, not an image (UnidentifiedImageError), unreadable: OSError; bad data deeper in a decoder
    if isinstance(exc, (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)):
        return "corrupt"
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


def _open_rgb(path: str, draft_size: tuple[int, int] | None = None) -> Any:
    im = _open(path)
    if draft_size is not None:
        # JPEG DCT-domain downscaling to >= the size we need: several times faster decoding
        im.draft("RGB", draft_size)
    return im.convert("RGB")


def _to_chw(im: Any) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def load_resized(path: str, img_size: int) -> torch.Tensor:
    """Decode an image file, resize (squash) to img_size × img_size, uint8 CHW."""
    from PIL import Image

    im = _open_rgb(path, (img_size, img_size))
    return _to_chw(im.resize((img_size, img_size), Image.BILINEAR))


def rrc_box(width: int, height: int, rnd: random.Random, scale: tuple[float, float] = RRC_SCALE,
            ratio: tuple[float, float] = RRC_RATIO) -> tuple[int, int, int, int]:
    """(left, top, w, h) of an Inception crop, torchvision's algorithm with an explicit RNG."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rnd.uniform(*scale)
        ar = math.exp(rnd.uniform(*log_ratio))
        w = int(round(math.sqrt(target * ar)))
        h = int(round(math.sqrt(target / ar)))
        if 0 < w <= width and 0 < h <= height:
            return rnd.randint(0, width - w), rnd.randint(0, height - h), w, h
    in_ratio = width / height  # fallback: central crop at the clamped aspect ratio
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def load_random_resized(path: str, img_size: int, sample_seed: int) -> torch.Tensor:
    """Inception crop of an image file at img_size, a pure function of (file, sample_seed)."""
    from PIL import Image

    im = _open(path)
    width, height = im.size
    left, top, w, h = rrc_box(width, height, random.Random(sample_seed))
    # decode at the smallest JPEG scale that still leaves the crop >= img_size
    im.draft("RGB", (max(1, math.ceil(width * img_size / w)), max(1, math.ceil(height * img_size / h))))
    sx, sy = im.size[0] / width, im.size[1] / height
    im = im.convert("RGB")
    box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    return _to_chw(im.resize((img_size, img_size), Image.BILINEAR, box=box))


def decode_all(paths: list[str], img_size: int, *, name: str) -> tuple[torch.Tensor, list[int]]:
    """Decode and resize files in threads (PIL releases the GIL): (uint8 (N, 3, S, S), indices skipped).

    ``name`` ("pets train") starts the messages. A bad file (see :func:`bad_image_kind`) is skipped,
    its image left black, and one summary line goes to stderr; more than MAX_BAD_FRACTION of the
    files (or MAX_BAD_FILES) bad, or any file missing, is a DataRootError.
    """
    from vitbench.data.registry import DataRootError

    out = torch.empty((len(paths), 3, img_size, img_size), dtype=torch.uint8)

    def one(i: int) -> tuple[str, str] | None:
        try:
            out[i] = load_resized(paths[i], img_size)
            return None
        except Exception as exc:
            kind = bad_image_kind(exc, paths[i])
            if kind is None:
                raise
            if kind == "missing":  # not damage but an incomplete root
                raise DataRootError(f"{name}: image file '{paths[i]}' is missing") from None
            out[i] = 0
            return kind, _one_line(exc)

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        bad = [(i, *r) for i, r in enumerate(pool.map(one, range(len(paths)))) if r is not None]
    if bad:
        kinds = Counter(kind for _, kind, _ in bad)
        what = ", ".join(f"{c} {k}" for k, c in sorted(kinds.items()))
        first = f"first: '{paths[bad[0][0]]}' ({bad[0][2]})"
        allowed = min(MAX_BAD_FILES, int(len(paths) * MAX_BAD_FRACTION))
        if len(bad) > allowed:
            raise DataRootError(f"{name}: {len(bad):,} of {len(paths):,} image files cannot be decoded ({what}), "
                                f"more than the {allowed} a split may skip ({MAX_BAD_FRACTION:.0%}, at most "
                                f"{MAX_BAD_FILES}); {first}")
        print(f"{name}: skipped {len(bad):,} of {len(paths):,} image files ({what}); {first}",
              file=sys.stderr, flush=True)
    return out, [i for i, _, _ in bad]
