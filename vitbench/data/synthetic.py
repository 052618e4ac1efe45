"""``synthetic``: procedural "arrangement" images, the micro-scale pretraining set.

Design (why position matters)
-----------------------------
The image is a 4×4 grid of cells. Each cell holds one stroke primitive out of 8 types
(horizontal bar, vertical bar, '/' bar, '\\' bar, '+', '×', disc, ring). A class is a fixed
*layout*: which type sits in which cell. The 32 classes are 8 multisets of primitives × 4
arrangements of each: the arrangements of one multiset contain the same primitives and differ
only in where they are. A bag-of-patches model (no position embedding, pooled) whose patches
tile the cells can at best tell the multiset, not the arrangement (a ceiling of 1/4 of the
task), while a model that knows where a patch is (position embeddings, or a CNN through the
relative arrangement and zero padding) can read the whole layout. Content is partly informative on
purpose: it gives a micro ViT, whose position embeddings start tiny, a way in (history in
results/README.md). Cells are rendered independently, so nothing bleeds across cell borders; with
img_size a multiple of 4·patch the patch grid refines the cell grid exactly.

Per-image nuisance (so the task is not a lookup): random dark background colour and brightness
gradient, random per-cell foreground colour (always brighter than the background), per-cell
position jitter, size, stroke width and rotation, additive noise, and with probability P_CORRUPT
each cell's primitive is replaced by a random one (class-independent corruption, which also
puts a ceiling below 100% on the close-relative classes).

Images are a pure function of (data seed, index): every random parameter is a counter-based
hash of the pair (see ``rng``), so image i is the same whichever batch it is generated in, and
the same scene at any ``img_size`` (rendered analytically in continuous cell coordinates).
Generation is vectorised over images, cells and pixels (no Python loop over samples).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch

from vitbench.data import splits
from vitbench.data.ops import resize_uint8
from vitbench.data.registry import DatasetBuilder, DatasetInfo, DatasetSpec, register_dataset
from vitbench.data.rng import derive_seed, permutation, uniforms

GRID = 4
NUM_TYPES = 8
NUM_GROUPS = 8  # multisets of primitives (what a bag of patches can tell apart)
PER_GROUP = 4  # arrangements of each multiset (what only position tells apart)
NUM_CLASSES = NUM_GROUPS * PER_GROUP
DATA_SEED = 0  # the dataset's content seed: a constant, not the run seed
P_CORRUPT = 0.1
MIN_LAYOUT_DIST = 8  # cells in which two arrangements of one multiset (or one and the other's mirror) differ
# foreground-background difference per channel, U(lo, hi); weaker (0.2) leaves a micro ViT on a long plateau
CONTRAST = (0.45, 0.65)
BG_MAX = 0.25  # background per channel U(0, BG_MAX): always darker than the foreground

# Virtual pools: disjoint index ranges, all < 2**32.
TRAIN_POOL = 1_000_000
DEV_OFFSET, DEV_POOL = 1 << 24, 10_000
TEST_OFFSET, TEST_POOL = 2 << 24, 10_000
DEFAULT_TRAIN_SIZE = 50_000

# Primitive geometry: angles of the two bars (equal for single bars), whether radial.
_H, _V, _D, _A = 0.0, math.pi / 2, math.pi / 4, 3 * math.pi / 4
_TH1 = torch.tensor([_H, _V, _D, _A, _H, _D, 0.0, 0.0])
_TH2 = torch.tensor([_H, _V, _D, _A, _V, _A, 0.0, 0.0])
TYPE_NAMES = ("hbar", "vbar", "slash", "backslash", "plus", "cross", "disc", "ring")
MIRROR_TYPE = torch.tensor([0, 1, 3, 2, 4, 5, 6, 7])  # what a horizontal flip makes of each type

_N_IMG = 16  # per-image streams (a few spare)
_N_CELL = 10  # per-cell streams
N_STREAMS = _N_IMG + GRID * GRID * _N_CELL

ROT_JITTER = 0.2  # radians
POS_JITTER = 0.07  # cell units; with half-length ≤ 0.42 a primitive stays inside its cell


def mirror_layout(layout: torch.Tensor) -> torch.Tensor:
    """The layout(s) (..., 16) a horizontal flip of the image shows."""
    grid = layout.reshape(*layout.shape[:-1], GRID, GRID).flip(-1)
    return MIRROR_TYPE[grid].reshape(layout.shape)


def _make_layouts(num_groups: int, per_group: int, min_dist: int) -> torch.Tensor:
    """``num_groups × per_group`` layouts: ``num_groups`` multisets of primitives, each shown in
    ``per_group`` arrangements.

    Content alone (which primitives, how many of each) tells the group; only position tells
    the arrangement within it. So a bag-of-patches model has a ceiling of 1/``per_group`` of the
    task while it still gets a learning signal from the start (a task where content carries no
    information at all leaves a ViT with tiny initial position embeddings at a saddle: every
    permutation-invariant feature is exactly uninformative). Arrangements of one group differ in
    ≥ ``min_dist`` cells from each other and from each one's mirror image, so flip augmentation
    cannot turn one class into another.
    """
    cells = GRID * GRID
    layouts = []
    attempt = 0
    for grp in range(num_groups):
        # a multiset: every type at least once, the rest of the cells drawn by a seeded hash
        extra = uniforms(torch.tensor([grp]), derive_seed("synthetic-multiset"), cells - NUM_TYPES)[0]
        base = torch.cat([torch.arange(NUM_TYPES), (extra * NUM_TYPES).long().clamp_(max=NUM_TYPES - 1)])
        group: list[torch.Tensor] = []
        while len(group) < per_group:
            cand = base[permutation(cells, derive_seed("synthetic-layout", attempt))]
            attempt += 1
            if all(int((cand != a).sum()) >= min_dist and int((mirror_layout(cand) != a).sum()) >= min_dist
                   for a in group) and int((mirror_layout(cand) != cand).sum()) >= min_dist:
                group.append(cand)
        layouts += group
    return torch.stack(layouts)


LAYOUTS = _make_layouts(NUM_GROUPS, PER_GROUP, MIN_LAYOUT_DIST)  # (NUM_CLASSES, 16) int64, row-major cells


@lru_cache(maxsize=4)
def _noise_bank(size: int) -> torch.Tensor:
    """A fixed bank of Gaussian noise fields at this resolution (images pick one by hash)."""
    k = max(8, min(256, (1 << 22) // (3 * size * size)))
    g = torch.Generator().manual_seed(derive_seed("synthetic-noise", size))
    return torch.randn((k, 3, size, size), generator=g)


def render(indices: torch.Tensor, img_size: int, *, seed: int = DATA_SEED
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 (N, 3, img_size, img_size), int64 labels (N,)) for pool ``indices``."""
    indices = indices.to(torch.int64).cpu()
    n = len(indices)
    size = -(-img_size // GRID) * GRID  # render at a multiple of the grid, resize after if needed
    images = torch.empty((n, 3, img_size, img_size), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    chunk = max(1, (1 << 21) // (size * size))  # ~2M pixels per chunk: temporaries stay small
    for s in range(0, n, chunk):
        x, y = _render_chunk(indices[s:s + chunk], size, seed)
        images[s:s + chunk] = x if size == img_size else resize_uint8(x, img_size)
        labels[s:s + chunk] = y
    return images, labels


def labels_of(indices: torch.Tensor, *, seed: int = DATA_SEED) -> torch.Tensor:
    """The class of each pool index without rendering (stream 0 of its parameters)."""
    u = uniforms(indices.to(torch.int64).cpu(), derive_seed("synthetic", seed), 1)
    return (u[:, 0] * NUM_CLASSES).long().clamp_(max=NUM_CLASSES - 1)


def _render_chunk(idx: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    m, g, c = len(idx), GRID, size // GRID
    u = uniforms(idx, derive_seed("synthetic", seed), N_STREAMS)
    labels = (u[:, 0] * NUM_CLASSES).long().clamp_(max=NUM_CLASSES - 1)
    cell = u[:, _N_IMG:].reshape(m, g * g, _N_CELL)

    # cell types: the class layout, each cell corrupted to a random type with prob P_CORRUPT
    types = LAYOUTS[labels]
    rand_t = (cell[..., 1] * NUM_TYPES).long().clamp_(max=NUM_TYPES - 1)
    types = torch.where(cell[..., 0] < P_CORRUPT, rand_t, types)

    # per-cell geometry, (M, G, G, 1, 1) to broadcast against the pixel grid of a cell
    def per_cell(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(m, g, g, 1, 1)

    rot = (cell[..., 6] - 0.5) * (2 * ROT_JITTER)
    th1, th2 = _TH1[types] + rot, _TH2[types] + rot
    cos1, sin1, cos2, sin2 = (per_cell(f(t)) for t in (th1, th2) for f in (torch.cos, torch.sin))
    # geometry in pixel units (cell units × c), so the antialiased edge needs no extra scaling
    half_len = per_cell((0.30 + 0.12 * cell[..., 4]) * c)
    half_w = per_cell((0.10 + 0.06 * cell[..., 5]) * c)
    cx = per_cell((cell[..., 2] - 0.5) * (2 * POS_JITTER * c))
    cy = per_cell((cell[..., 3] - 0.5) * (2 * POS_JITTER * c))
    radial, ring = per_cell(types >= 6), per_cell(types == 7)

    # pixel centres relative to the (jittered) primitive centre
    p = torch.arange(c, dtype=torch.float32) + 0.5 - 0.5 * c
    du = p.view(1, 1, 1, 1, c) - cx  # (M, G, G, 1, c)
    dv = p.view(1, 1, 1, c, 1) - cy  # (M, G, G, c, 1)

    def bar(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        along = du * cos - dv * sin  # image y points down: direction (cos, -sin)
        across = du * sin + dv * cos
        return torch.maximum(across.abs_().sub_(half_w), along.abs_().sub_(half_len))

    d = torch.minimum(bar(cos1, sin1), bar(cos2, sin2))  # signed distance (box SDF), pixels
    r = torch.sqrt(du * du + dv * dv)
    d_rad = torch.where(ring, (r - (half_len - half_w)).abs_().sub_(half_w), r.sub_(half_len))
    alpha = torch.where(radial, d_rad, d).neg_().add_(0.5).clamp_(0.0, 1.0)  # ~1-pixel antialiased edge

    # colours (in 0..255): a dark background per image, a brighter foreground per cell. One polarity
    # (bright strokes on dark, as digits' ink): with a per-image random polarity a primitive's pixels are
    # ± its shape, which a linear patch embedding cannot read, and a micro ViT stayed at chance.
    bg = BG_MAX * u[:, 1:4]  # (M, 3)
    lo, hi = CONTRAST
    fg = (bg[:, None, :] + (lo + (hi - lo) * cell[..., 7:10])).clamp_(0.0, 1.0)  # (M, 16, 3)
    delta = (fg - bg[:, None, :]).permute(0, 2, 1).reshape(m, 3, g, g, 1, 1) * 255.0
    cells = torch.addcmul((bg * 255.0 + 0.5).view(m, 3, 1, 1, 1, 1), delta, alpha[:, None])  # (M, 3, G, G, c, c)

    # noise and brightness gradient (class-independent), then the cells added through a
    # (M, 3, G, G, c, c) view of the image: the block-to-raster reorder costs no extra copy
    bank = _noise_bank(size)
    pick = (u[:, 6] * len(bank)).long().clamp_(max=len(bank) - 1)
    amp = 12.75 * u[:, 7] * torch.where(u[:, 8] < 0.5, -1.0, 1.0)  # noise std up to 0.05 of the range
    img = bank[pick].mul_(amp.view(m, 1, 1, 1))
    coord = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    gx, gy = (u[:, 4] - 0.5) * (0.3 * 255.0), (u[:, 5] - 0.5) * (0.3 * 255.0)
    img.add_((gx.view(m, 1, 1) * coord.view(1, 1, size) + gy.view(m, 1, 1) * coord.view(1, size, 1))[:, None])
    img.view(m, 3, g, c, g, c).permute(0, 1, 2, 4, 3, 5).add_(cells)
    out = img.clamp_(0.0, 255.0).to(torch.uint8)  # +0.5 was folded into bg: truncation rounds
    return out, labels


@register_dataset("synthetic")
class Synthetic(DatasetBuilder):
    info = DatasetInfo(
        name="synthetic", num_classes=NUM_CLASSES, dev_fraction=0.0, needs_root=False, layout="",
        in_memory=True, default_size=DEFAULT_TRAIN_SIZE,
        description=(f"procedural {GRID}x{GRID} arrangements of {NUM_TYPES} stroke primitives; "
                     f"{NUM_CLASSES} layout classes; train pool {TRAIN_POOL:,} (size=None: "
                     f"{DEFAULT_TRAIN_SIZE:,}), separate dev/test ranges of {DEV_POOL:,}/{TEST_POOL:,}"),
    )

    def build(self, split: str, *, img_size: int, root: Path | None, size: int | None) -> DatasetSpec:
        pool, offset = {"train": (TRAIN_POOL, 0), "dev": (DEV_POOL, DEV_OFFSET),
                        "test": (TEST_POOL, TEST_OFFSET)}[split]
        if split == "train" and size is None:
            size = DEFAULT_TRAIN_SIZE
        if size is not None and size > pool:
            raise ValueError(f"synthetic: size={size} exceeds the {pool:,} images of the {split} pool")
        if size is None:
            local = torch.arange(pool)
        else:
            local = torch.sort(splits.nested_subset(pool, size, salt=f"synthetic/{split}")).values
        indices = local + offset
        images, labels = render(indices, img_size)
        return DatasetSpec(name="synthetic", split=split, num_classes=NUM_CLASSES, img_size=img_size,
                           in_memory=True, images=images, labels=labels, indices=indices,
                           classes=[f"layout{k:02d}" for k in range(NUM_CLASSES)])
