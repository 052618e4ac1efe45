"""Decoding image files into uint8 CHW tensors: resize (evaluation, in-memory sets) and
Inception crops (training from full-resolution files), all with explicit randomness."""

from __future__ import annotations

import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from vitbench.data.ops import RRC_RATIO, RRC_SCALE


def _open_rgb(path: str, draft_size: tuple[int, int] | None = None) -> Any:
    from PIL import Image

    im = Image.open(path)
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

    im = Image.open(path)
    width, height = im.size
    left, top, w, h = rrc_box(width, height, random.Random(sample_seed))
    # decode at the smallest JPEG scale that still leaves the crop >= img_size
    im.draft("RGB", (max(1, math.ceil(width * img_size / w)), max(1, math.ceil(height * img_size / h))))
    sx, sy = im.size[0] / width, im.size[1] / height
    im = im.convert("RGB")
    box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    return _to_chw(im.resize((img_size, img_size), Image.BILINEAR, box=box))


def decode_all(paths: list[str], img_size: int, *, name: str) -> torch.Tensor:
    """Decode and resize a list of files in threads (PIL releases the GIL) into (N, 3, S, S) uint8."""
    from vitbench.data.registry import DataRootError

    out = torch.empty((len(paths), 3, img_size, img_size), dtype=torch.uint8)

    def one(i: int) -> None:
        try:
            out[i] = load_resized(paths[i], img_size)
        except FileNotFoundError:
            raise DataRootError(f"{name}: image file '{paths[i]}' is missing") from None
        except OSError as exc:  # PIL.UnidentifiedImageError is an OSError
            raise DataRootError(f"{name}: cannot decode '{paths[i]}': {' '.join(str(exc).split())}") from None

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        list(pool.map(one, range(len(paths))))
    return out
