"""Masked patch prediction (MPP): the pure-tensor core of the paper's self-supervised pretraining objective.

Source: Dosovitskiy et al. 2020 (arXiv 2010.11929), section 4.6 ("a preliminary exploration on masked patch
prediction for self-supervision, mimicking the masked language modeling task used in BERT") and Appendix B.1.2
("We employ the masked patch prediction objective for preliminary self-supervision experiments. To do so we
corrupt 50% of patch embeddings by either replacing their embeddings with a learnable [mask] embedding ...");
quoted from the paper text as stored at
https://anilkeshwani.github.io/garden/Papers/An-Image-is-Worth-16x16-Words-Transformers-for-Image-Recognition-at-Scale
(the excerpt found stops there). The rest follows our reading of B.1.2:

* corruption: 50 % of each image's patch embeddings; of those 80 % -> the learnable [mask] embedding, 10 % ->
  the embedding of another random patch, 10 % kept as is (BERT's 80/10/10). The loss is on corrupted patches.
* targets: (i) the 3-bit mean colour of the patch (512 classes); (ii) the patch downsampled to 4x4 with 3-bit
  colour per pixel (16 predictions of 512 classes); (iii) L2 regression of the full patch pixels.

Conventions (the code base's): images are float (B, 3, H, W) in [-1, 1]; patch tokens are timm ``PatchEmbed``'s,
row-major over the (H/p, W/p) grid; a patch of pixels is flattened (C, ph, pw), the order a Conv2d kernel sees.

Randomness comes ONLY from the ``torch.Generator`` passed in, so a step's draw is a function of that generator's
state: ``step_generator(seed, step)`` re-creates step t's draw after a resume without replaying steps 0..t-1.

Choices the paper leaves open (ours):

* corrupted count per image = ``round(MASK_RATIO * n)`` rounded half UP (``num_corrupted``), not Python's
  banker's ``round`` (which gives 2 for n=5 but 4 for n=7): the same rule for every odd n.
* "another random patch" = another patch of the SAME image, uniform over its other n - 1 positions, taken from the
  UNcorrupted embeddings (so a source never passes on a [mask] embedding or another swap).
* the 3-bit quantisation of a channel value c in [0, 1] is ``clamp(floor(c * 8), 0, 7)``; a colour index is
  ``r * 64 + g * 8 + b``; the 4x4 colours come from average pooling (``patch`` must be a multiple of 4).
* the loss averages over corrupted patches only (and the 16 sub-pixels for ``color_4x4``; all values for
  ``pixels``), computed in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch import Tensor

TARGETS = ("mean_color", "color_4x4", "pixels")  # the paper's (i), (ii), (iii)
MASK_RATIO, P_MASK, P_RANDOM = 0.5, 0.8, 0.1  # the paper's corruption rates (P_KEEP = 0.1 is the rest)
MODE_KEEP, MODE_MASK, MODE_RANDOM = 0, 1, 2  # Corruption.mode values (MODE_KEEP also marks untouched patches)
COLOR_BITS = 3  # bits per channel of the colour targets
COLOR_LEVELS = 1 << COLOR_BITS  # 8 levels per channel
NUM_COLORS = COLOR_LEVELS**3  # 512 classes
SUBGRID = 4  # color_4x4: the patch is pooled to SUBGRID x SUBGRID
SEED_STRIDE = 1_000_003  # step_generator: seed * SEED_STRIDE + step (a prime > any realistic step count)


def _check_kind(kind: str) -> None:
    """Unknown target kinds fail loudly, naming the allowed ones."""
    if kind not in TARGETS:
        raise ValueError(f"unknown masked-patch-prediction target {kind!r}; allowed: {', '.join(TARGETS)}")


# ---- randomness ---------------------------------------------------------------------------------------------


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded with ``seed * 1_000_003 + step`` (mod 2**64, torch's seed range).

    Distinct (seed, step) pairs get distinct seeds while step < 1_000_003, and a resumed run rebuilds step t's
    generator from (seed, t) alone.
    """
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be >= 0, got seed={seed}, step={step}")
    return torch.Generator(device="cpu").manual_seed((seed * SEED_STRIDE + step) % (1 << 64))


# ---- corruption ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corruption:
    """One batch's corruption draw; all tensors (B, N).

    corrupted: bool, the patches the loss is on. mode: int8, MODE_KEEP / MODE_MASK / MODE_RANDOM. source: long,
    for MODE_RANDOM the index of the patch whose (uncorrupted) embedding replaces this one; elsewhere its own index.
    """

    corrupted: Tensor
    mode: Tensor
    source: Tensor

    def to(self, device: torch.device | str) -> "Corruption":
        """The same draw on ``device`` (drawn on CPU so the draw does not depend on the accelerator)."""
        return Corruption(self.corrupted.to(device), self.mode.to(device), self.source.to(device))


def num_corrupted(n: int) -> int:
    """Patches corrupted per image: MASK_RATIO * n rounded half up (consistent for every odd n)."""
    return int(math.floor(MASK_RATIO * n + 0.5))


def draw_corruption(batch: int, n: int, generator: torch.Generator) -> Corruption:
    """Draw which patches are corrupted and how; every random number comes from ``generator`` (a CPU one).

    The three draws always consume the same amount of randomness, in a fixed order, so the result is a pure
    function of (batch, n, generator state).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if n < 2:  # "another patch" needs at least two patches
        raise ValueError(f"need at least 2 patches per image, got {n}")
    k = num_corrupted(n)
    # A uniform subset of size k without replacement: the first k of a uniform random permutation (float64 keys
    # make ties, which argsort would break by position, practically impossible).
    keys = torch.rand(batch, n, generator=generator, dtype=torch.float64)
    chosen = keys.argsort(dim=1)[:, :k]
    corrupted = torch.zeros(batch, n, dtype=torch.bool).scatter_(1, chosen, True)
    # Each corrupted patch independently: [mask] with P_MASK, another patch with P_RANDOM, kept otherwise.
    u = torch.rand(batch, n, generator=generator, dtype=torch.float64)
    mode = torch.full((batch, n), MODE_KEEP, dtype=torch.int8)
    mode[corrupted & (u < P_MASK)] = MODE_MASK
    mode[corrupted & (u >= P_MASK) & (u < P_MASK + P_RANDOM)] = MODE_RANDOM
    # Another patch of the same image: own index + a uniform offset in [1, n-1], mod n -> never itself, uniform
    # over the other n - 1.
    own = torch.arange(n).expand(batch, n)
    offset = torch.randint(1, n, (batch, n), generator=generator)
    source = torch.where(mode == MODE_RANDOM, (own + offset) % n, own)
    return Corruption(corrupted=corrupted, mode=mode, source=source.contiguous())


def apply_corruption(tokens: Tensor, mask_token: Tensor, c: Corruption) -> Tensor:
    """Corrupt patch embeddings ``tokens`` (B, N, D; no [class] token) with the learnable ``mask_token`` (D,).

    Returns new tokens; gradients flow to ``mask_token`` (through MODE_MASK rows) and to ``tokens`` (kept rows and
    the sources of MODE_RANDOM rows). Sources are read from the uncorrupted ``tokens``.
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (B, N, D), got {tuple(tokens.shape)}")
    b, n, d = tokens.shape
    if mask_token.shape != (d,):
        raise ValueError(f"mask_token must be ({d},), got {tuple(mask_token.shape)}")
    if c.mode.shape != (b, n) or c.source.shape != (b, n):
        raise ValueError(f"corruption is for {tuple(c.mode.shape)}, tokens are ({b}, {n}, {d})")
    c = c.to(tokens.device)
    # One gather does both "kept" (source = self) and "another patch" rows, from the original tokens.
    swapped = torch.gather(tokens, 1, c.source.unsqueeze(-1).expand(b, n, d))
    # Cast so an autocast / bf16 stream keeps its dtype; the cast is differentiable, so mask_token still learns.
    masked = mask_token.to(tokens.dtype).expand(b, n, d)
    return torch.where((c.mode == MODE_MASK).unsqueeze(-1), masked, swapped)


# ---- targets ------------------------------------------------------------------------------------------------


def _quantise(x: Tensor) -> Tensor:
    """(B, 3, h, w) values in [-1, 1] -> (B, h, w) 3-bit colour index r * 64 + g * 8 + b in [0, 512)."""
    q = torch.clamp(torch.floor((x + 1.0) / 2.0 * COLOR_LEVELS), 0, COLOR_LEVELS - 1).long()
    return q[:, 0] * COLOR_LEVELS**2 + q[:, 1] * COLOR_LEVELS + q[:, 2]


def _check_images(images: Tensor, patch: int) -> tuple[int, int]:
    """Validate (B, 3, H, W) float images tiled by ``patch``; return the patch grid (H/p, W/p)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be float in [-1, 1] (x / 127.5 - 1), got {images.dtype}")
    h, w = images.shape[2:]
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch {patch} must tile the {h}x{w} image")
    return h // patch, w // patch


def targets(images: Tensor, patch: int, kind: str) -> Tensor:
    """The prediction target per patch (row-major over the patch grid, as PatchEmbed's tokens).

    mean_color: (B, N) long in [0, 512). color_4x4: (B, N, 16) long, the 4x4 sub-pixels row-major.
    pixels: (B, N, 3 * patch * patch) float in [-1, 1], flattened (C, ph, pw). Targets carry no gradient.
    """
    _check_kind(kind)
    gh, gw = _check_images(images, patch)
    x = images.detach().float()  # float32: the quantisation floor must not see bf16 rounding
    bsz = x.shape[0]
    if kind == "mean_color":
        return _quantise(F.avg_pool2d(x, patch)).reshape(bsz, gh * gw)
    if kind == "color_4x4":
        if patch % SUBGRID:
            raise ValueError(f"color_4x4 needs a patch size that is a multiple of {SUBGRID}, got {patch}")
        idx = _quantise(F.avg_pool2d(x, patch // SUBGRID))  # (B, 4 gh, 4 gw)
        idx = idx.reshape(bsz, gh, SUBGRID, gw, SUBGRID).permute(0, 1, 3, 2, 4)
        return idx.reshape(bsz, gh * gw, SUBGRID * SUBGRID)
    # pixels: (B, C, gh, p, gw, p) -> (B, gh, gw, C, p, p) -> (B, N, C * p * p)
    pix = images.detach().reshape(bsz, 3, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5)
    return pix.reshape(bsz, gh * gw, 3 * patch * patch)


def output_size(kind: str, patch: int) -> int:
    """Width of the prediction head for ``kind``: 512, 16 * 512 or 3 * patch * patch."""
    _check_kind(kind)
    if kind == "mean_color":
        return NUM_COLORS
    if kind == "color_4x4":
        if patch % SUBGRID:
            raise ValueError(f"color_4x4 needs a patch size that is a multiple of {SUBGRID}, got {patch}")
        return SUBGRID * SUBGRID * NUM_COLORS
    return 3 * patch * patch


# ---- loss ---------------------------------------------------------------------------------------------------


def loss(pred: Tensor, target: Tensor, corrupted: Tensor, kind: str) -> Tensor:
    """The MPP loss over corrupted patches only (uncorrupted ones get exactly zero gradient).

    pred (B, N, output_size); target from ``targets``; corrupted (B, N) bool. Cross-entropy averaged over the
    corrupted patches (and their 16 sub-pixels for color_4x4); pixels: mean squared error over all values of the
    corrupted patches. Computed in float32 (bf16 logits would make the softmax coarse).
    """
    _check_kind(kind)
    if pred.ndim != 3 or corrupted.shape != pred.shape[:2] or target.shape[:2] != pred.shape[:2]:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and corrupted "
                         f"{tuple(corrupted.shape)} must share (B, N)")
    sel = corrupted.to(device=pred.device, dtype=torch.bool)
    # Boolean indexing (not a 0/1 weight): unselected rows are never used, so their gradient is exactly zero
    # even where a prediction is inf/nan.
    p, t = pred[sel].float(), target.to(pred.device)[sel]
    if p.shape[0] == 0:
        raise ValueError("no corrupted patches: the loss is undefined")
    if kind == "mean_color":
        if pred.shape[-1] != NUM_COLORS or target.ndim != 2:
            raise ValueError(f"mean_color wants pred (B, N, {NUM_COLORS}) and target (B, N)")
    elif kind == "color_4x4":
        cells = SUBGRID * SUBGRID
        if pred.shape[-1] != cells * NUM_COLORS or target.shape[2:] != (cells,):
            raise ValueError(f"color_4x4 wants pred (B, N, {cells * NUM_COLORS}) and target (B, N, {cells})")
    elif target.shape != pred.shape:
        raise ValueError(f"pixels wants pred and target of one shape, got {tuple(pred.shape)}, {tuple(target.shape)}")
    return selected_loss(p, t, kind)


def selected_loss(p: Tensor, t: Tensor, kind: str) -> Tensor:
    """The loss of the corrupted patches' predictions p (K, output_size) against their targets t (K, ...)."""
    p = p.float()
    if kind == "mean_color":
        return F.cross_entropy(p, t.long())
    if kind == "color_4x4":
        return F.cross_entropy(p.reshape(-1, NUM_COLORS), t.reshape(-1).long())
    return F.mse_loss(p, t.float())


class MaskedPatchPretraining(nn.Module):
    """A ViT pretrained by masked patch prediction: the [mask] embedding and a linear prediction head over the
    encoder's patch outputs. ``forward(images, step)`` is the step's loss; the draw is ``step_generator(seed,
    step)``'s, so a resumed run corrupts step t as the uninterrupted one did. The ViT itself is what transfers."""

    def __init__(self, vit: nn.Module, kind: str, seed: int) -> None:
        super().__init__()
        _check_kind(kind)
        self.vit, self.kind, self.seed = vit, kind, seed
        self.patch = int(vit.patch_embed.patch_size[0])
        self.mask_token = nn.Parameter(torch.zeros(vit.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)  # as BERT's / the class token's scale
        self.head = nn.Linear(vit.embed_dim, output_size(kind, self.patch))

    def forward(self, images: Tensor, step: int) -> Tensor:
        b, n = images.shape[0], self.vit.grid_size[0] * self.vit.grid_size[1]
        c = draw_corruption(b, n, step_generator(self.seed, step)).to(images.device)
        out = self.vit.encode_patches(images, corrupt=lambda t: apply_corruption(t, self.mask_token, c))
        # the head only where the loss is: color_4x4's 8,192 outputs per patch are most of a micro step's cost
        sel = c.corrupted
        return selected_loss(self.head(out[sel]), targets(images, self.patch, self.kind)[sel], self.kind)

    def no_weight_decay(self) -> set[str]:
        return {f"vit.{n}" for n in self.vit.no_weight_decay()} | {"mask_token"}


def pretraining_loss(model: nn.Module, x: Tensor, y: Tensor, step: int) -> Tensor:
    """train_loop's ``loss_fn`` for masked patch prediction: the labels are not used."""
    return model(x, step)
