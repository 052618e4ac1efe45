"""Batched image ops on uint8/float tensors (N, 3, H, W): resizing, cropping, flipping, scaling.

Every augmentation takes its per-sample random parameters as tensors, so a whole batch is
transformed by a handful of kernels on whatever device it lives on, with no Python loop over
samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RRC_SCALE = (0.08, 1.0)  # Inception crop area range (torchvision/timm default, the paper's "inception crop")
RRC_RATIO = (3 / 4, 4 / 3)


def resize_uint8(images: torch.Tensor, size: int, *, chunk: int = 2048) -> torch.Tensor:
    """Bilinear resize of uint8 (N, C, H, W) to (N, C, size, size); antialiased when shrinking."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    out = torch.empty((n, c, size, size), dtype=torch.uint8, device=images.device)
    shrink = size < h or size < w
    for s in range(0, n, chunk):  # chunked: the float copy of a large set would not fit
        x = images[s:s + chunk].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        out[s:s + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1] (the paper's / big_vision's value range)."""
    return images.to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)


def pad_padding(img_size: int) -> int:
    """Padding of pad-and-crop: 4 px at 32 px (the CIFAR recipe), scaled with resolution."""
    return max(1, round(img_size / 8))


def pad_crop(images: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back to the input size at per-sample (dy, dx) ``offsets``.

    ``offsets`` is int64 (N, 2) in [0, 2·pad]. Works on any dtype (done on uint8, before scaling).
    """
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = offsets[:, 0:1] + torch.arange(h, device=images.device)  # (N, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=images.device)  # (N, W)
    b = torch.arange(n, device=images.device)[:, None, None]
    # advanced indices around a slice: the result is (N, H, W, C)
    out = padded[b, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def rrc_boxes(u: torch.Tensor, scale: tuple[float, float] = RRC_SCALE,
              ratio: tuple[float, float] = RRC_RATIO) -> torch.Tensor:
    """Random-resized-crop boxes from uniforms ``u`` (N, 4): (cx, cy, half_w, half_h) in [-1, 1] units.

    Area fraction ~ U(scale), log aspect ~ U(log ratio) as torchvision; where the box would not
    fit, its sides are clamped to the image (torchvision retries instead; the clamp keeps this
    one batched draw and only matters for extreme aspect draws at large areas).
    """
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = torch.exp(logr)
    hw = torch.sqrt(area * r).clamp(max=1.0)  # half-width in normalised units = width fraction
    hh = torch.sqrt(area / r).clamp(max=1.0)
    cx = (1.0 - hw) * (2.0 * u[:, 2] - 1.0)
    cy = (1.0 - hh) * (2.0 * u[:, 3] - 1.0)
    return torch.stack([cx, cy, hw, hh], dim=1)


def crop_resize_flip(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Crop float (N, C, H, W) to ``boxes`` (see rrc_boxes), resize back to (H, W), mirror where ``flip``.

    One affine grid_sample for the whole batch; the crop is never larger than the image, so the
    resampling only magnifies and needs no antialiasing. Border padding keeps values in range.
    """
    n, c, h, w = images.shape
    sx = boxes[:, 2] * torch.where(flip, -1.0, 1.0).to(boxes.dtype)
    zeros = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zeros, boxes[:, 0]], 1),
                         torch.stack([zeros, boxes[:, 3], boxes[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), [n, c, h, w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def hflip_where(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the samples where the bool (N,) ``flip`` is set."""
    return torch.where(flip[:, None, None, None], images.flip(-1), images)
