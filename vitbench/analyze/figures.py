"""Drawing the analyses (matplotlib, object-oriented API: no pyplot state, no GUI backend needed).

Each ``draw_*`` function draws one panel on a given axes, so the single-run figures and the side-by-side
experiment figures share one code path. The ``*_figure`` functions build whole figures; :func:`save`
writes PNG and PDF.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from vitbench.analyze.metrics import normalize01

FILTER_COLS = 7  # Figure 7 left: 4 x 7 components
SIM_CMAP = "viridis"
MAP_CMAP = "inferno"
RC = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9}


def style() -> "contextlib.AbstractContextManager[None]":
    """The rc settings figures are built and saved under (use as ``with style(): ...``)."""
    import matplotlib

    return matplotlib.rc_context(RC)


def save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    with style():
        fig.savefig(paths[0], dpi=150)
        fig.savefig(paths[1])
    return paths


def _new_figure(w: float, h: float) -> Figure:
    return Figure(figsize=(w, h), layout="constrained")


def wrap(label: str, width: int = 34) -> str:
    return "\n".join(textwrap.wrap(label, width)) or label


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def message_panel(ax: Axes, text: str) -> None:
    """An empty panel saying why there is nothing to show."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, wrap(text, 30), ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.3")


# ---- embedding filters ------------------------------------------------------------------------------------------


def _mosaic(tiles: np.ndarray, ncols: int, gap: int, fill: float) -> np.ndarray:
    """Tiles (n, h, w[, c]) → one image with ``gap``-pixel separators filled with ``fill``, row-major."""
    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / ncols)
    shape = (rows * (h + gap) - gap, ncols * (w + gap) - gap, *tiles.shape[3:])
    out = np.full(shape, fill, dtype=np.float64)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tiles[i]
    return out


def filter_tiles(components: torch.Tensor) -> np.ndarray:
    """Components (k, C, p, p) → displayable tiles (k, p, p, 3) in [0, 1], each normalised on its own."""
    x = normalize01(components.to(torch.float64))
    if x.shape[1] == 3:
        x = x.permute(0, 2, 3, 1)
    else:  # not RGB: show the channel mean in grey
        x = normalize01(x.mean(dim=1))[..., None].expand(-1, -1, -1, 3)
    return x.numpy()


def draw_filters(ax: Axes, components: torch.Tensor, ratio: torch.Tensor) -> None:
    tiles = filter_tiles(components)
    p = tiles.shape[1]
    ax.imshow(_mosaic(tiles, FILTER_COLS, gap=max(1, p // 4), fill=1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    k = len(ratio)
    ax.set_xlabel(f"PC 1–{k}, row-major; together {100 * float(ratio.sum()):.0f}% of the filter variance",
                  fontsize=8)


def filters_figure(components: torch.Tensor, ratio: torch.Tensor, title: str) -> Figure:
    rows = math.ceil(len(ratio) / FILTER_COLS)
    fig = _new_figure(6.0, 1.0 + 0.85 * rows)
    ax = fig.add_subplot()
    draw_filters(ax, components, ratio)
    ax.set_title(f"RGB embedding filters: first {len(ratio)} principal components", fontsize=10)
    fig.suptitle(title, fontsize=8, color="0.35")
    return fig


# ---- position-embedding similarity ------------------------------------------------------------------------------


def draw_pos_similarity(ax: Axes, sim: torch.Tensor, *, tick_labels: bool = True):  # -> AxesImage
    """The (gh, gw, gh, gw) similarities as a gh x gw grid of gh x gw heatmaps (Fig. 7 centre)."""
    gh, gw = sim.shape[:2]
    gap = 1
    tiles = sim.reshape(gh * gw, gh, gw).numpy()
    img = _mosaic(tiles, gw, gap=gap, fill=np.nan)
    cmap = colormaps[SIM_CMAP].with_extremes(bad="white")
    im = ax.imshow(img, cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
    for s in ax.spines.values():
        s.set_visible(False)
    step_x, step_y = max(1, math.ceil(gw / 14)), max(1, math.ceil(gh / 14))
    ax.set_xticks([j * (gw + gap) + (gw - 1) / 2 for j in range(0, gw, step_x)])
    ax.set_yticks([i * (gh + gap) + (gh - 1) / 2 for i in range(0, gh, step_y)])
    ax.set_xticklabels([str(j + 1) for j in range(0, gw, step_x)] if tick_labels else [])
    ax.set_yticklabels([str(i + 1) for i in range(0, gh, step_y)] if tick_labels else [])
    ax.tick_params(length=0, labelsize=7)
    ax.set_xlabel("Input patch column")
    ax.set_ylabel("Input patch row")
    return im


def pos_similarity_figure(sim: torch.Tensor, desc: str, title: str) -> Figure:
    gh, gw = sim.shape[:2]
    side = min(7.5, max(3.5, 0.4 * max(gh, gw) + 2.5))
    fig = _new_figure(side + 0.9, side + 0.3)
    ax = fig.add_subplot()
    im = draw_pos_similarity(ax, sim)
    ax.set_title(f"Position embedding similarity ({desc})", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label="Cosine similarity")
    fig.suptitle(title, fontsize=8, color="0.35")
    return fig


# ---- attention distance -----------------------------------------------------------------------------------------


def head_colors(n: int) -> list[tuple[float, float, float, float]]:
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    return [cmap(i if n <= 20 else i / max(n - 1, 1)) for i in range(n)]


def draw_attention_distance(ax: Axes, dist: torch.Tensor, uniform: float | None, *, legend_heads: bool,
                            ymax: float | None = None) -> None:
    """``dist``: (layers, heads) mean distance in pixels; one dot per head at each layer (Fig. 7 right)."""
    layers, heads = dist.shape
    xs = np.arange(1, layers + 1)
    for h, color in enumerate(head_colors(heads)):
        ax.scatter(xs, dist[:, h].numpy(), s=16, color=color, label=f"head {h + 1}", zorder=3,
                   edgecolors="white", linewidths=0.3)
    if uniform is not None:
        ax.axhline(uniform, ls="--", lw=0.9, color="0.45", zorder=1, label="uniform attention")
    top = ymax if ymax is not None else 1.12 * max(float(dist.max()), uniform or 0.0, 1e-6)
    ax.set_ylim(0, top)
    ax.set_xlim(0.5, layers + 0.5)
    ax.set_xticks(xs if layers <= 16 else xs[::max(1, layers // 12)])
    ax.set_xlabel("Network depth (layer)")
    ax.set_ylabel("Mean attention distance (pixels)")
    ax.grid(True, axis="y", lw=0.4, alpha=0.5)
    if legend_heads:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                  ncol=1 if heads <= 12 else 2, handletextpad=0.2)


def attention_distance_figure(dist: torch.Tensor, uniform: float | None, n_images: int, title: str) -> Figure:
    fig = _new_figure(5.6, 3.6)
    ax = fig.add_subplot()
    draw_attention_distance(ax, dist, uniform, legend_heads=True)
    ax.set_title(f"Mean attention distance per head ({n_images} images)", fontsize=10)
    fig.suptitle(title, fontsize=8, color="0.35")
    return fig


# ---- attention maps ---------------------------------------------------------------------------------------------


def upsample_map(m: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """A (gh, gw) patch map → (H, W), bilinear, scaled to max 1."""
    up = F.interpolate(m[None, None].to(torch.float64), size=hw, mode="bilinear", align_corners=False)[0, 0]
    return (up / up.max().clamp_min(1e-300)).clamp(0, 1).numpy()


def _hwc(img: torch.Tensor) -> np.ndarray:
    return img.permute(1, 2, 0).numpy()


def draw_input(ax: Axes, img: torch.Tensor) -> None:
    ax.imshow(_hwc(img), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def draw_overlay(ax: Axes, img: torch.Tensor, m: torch.Tensor):  # -> AxesImage
    """The image in grey with the rollout map (max-normalised) on top."""
    grey = img.to(torch.float64).mean(dim=0).numpy() / 255.0
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    im = ax.imshow(upsample_map(m, tuple(img.shape[1:])), cmap=MAP_CMAP, vmin=0, vmax=1, alpha=0.6,
                   interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _map_scale() -> ScalarMappable:
    """An opaque colour scale for the (translucent) rollout overlays."""
    return ScalarMappable(norm=Normalize(0.0, 1.0), cmap=MAP_CMAP)


def draw_masked(ax: Axes, img: torch.Tensor, m: torch.Tensor) -> None:
    """Paper Figure 6 style: the image multiplied by the (max-normalised) rollout map."""
    mask = upsample_map(m, tuple(img.shape[1:]))
    ax.imshow(_hwc(img) / 255.0 * mask[..., None], interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def attention_maps_figure(images: torch.Tensor, maps: torch.Tensor, captions: Sequence[str], pool: str,
                          title: str) -> Figure:
    k = len(images)
    fig = _new_figure(1.25 * k + 1.6, 4.4)
    axes = fig.subplots(3, k, squeeze=False)
    for i in range(k):
        draw_input(axes[0, i], images[i])
        axes[0, i].set_title(captions[i], fontsize=7)
        draw_overlay(axes[1, i], images[i], maps[i])
        peak = float(maps[i].max()) * maps[i].numel()  # maps sum to 1: uniform = 1 / patches
        axes[1, i].set_title(f"peak {peak:.2g}× uniform", fontsize=6)
        draw_masked(axes[2, i], images[i], maps[i])
    axes[0, 0].set_ylabel("Input")
    axes[1, 0].set_ylabel("Rollout")
    axes[2, 0].set_ylabel("Input × rollout")
    src = "[class] token" if pool == "cls" else "mean of all tokens (GAP)"
    fig.colorbar(_map_scale(), ax=axes[1:, :].ravel().tolist(), shrink=0.85, label="Attention rollout (max = 1)")
    fig.suptitle(f"Attention rollout from the output ({src}) to the input patches\n{title}", fontsize=9)
    return fig


# ---- experiment comparisons -------------------------------------------------------------------------------------


def compare_filters_figure(panels: Sequence[tuple[str, tuple[torch.Tensor, torch.Tensor] | None, str]],
                           title: str) -> Figure:
    rows, cols = _grid(len(panels), 3)
    fig = _new_figure(3.6 * cols, 2.6 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (label, data, why) in zip(axes, panels):
        if data is None:
            message_panel(ax, why)
        else:
            draw_filters(ax, *data)
        ax.set_title(wrap(label), fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"Embedding filters (first principal components) — {title}", fontsize=10)
    return fig


def compare_pos_similarity_figure(panels: Sequence[tuple[str, torch.Tensor | None, str]], title: str) -> Figure:
    rows, cols = _grid(len(panels), 4)
    fig = _new_figure(3.3 * cols + 0.8, 3.4 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    im = None
    for ax, (label, sim, why) in zip(axes, panels):
        if sim is None:
            message_panel(ax, why)
        else:
            im = draw_pos_similarity(ax, sim)
        ax.set_title(wrap(label), fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=axes[:len(panels)].tolist(), shrink=0.7, label="Cosine similarity")
    fig.suptitle(f"Position embedding similarity — {title}", fontsize=10)
    return fig


def compare_attention_distance_figure(panels: Sequence[tuple[str, torch.Tensor | None, float | None, str]],
                                      title: str) -> Figure:
    rows, cols = _grid(len(panels), 4)
    fig = _new_figure(3.2 * cols, 2.8 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    vals = [max(float(d.max()), u or 0.0) for _, d, u, _ in panels if d is not None]
    ymax = 1.12 * max(vals) if vals else None
    first = True
    for ax, (label, dist, uniform, why) in zip(axes, panels):
        if dist is None:
            message_panel(ax, why)
        else:
            draw_attention_distance(ax, dist, uniform, legend_heads=False, ymax=ymax)
            if ax.get_subplotspec().colspan.start > 0:
                ax.set_ylabel("")
            if first and uniform is not None:
                ax.legend(handles=[ax.lines[-1]], fontsize=7, loc="lower right", frameon=False)
                first = False
        ax.set_title(wrap(label), fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"Mean attention distance (one dot per head) — {title}", fontsize=10)
    return fig


def compare_attention_maps_figure(rows_data: Sequence[tuple[str, torch.Tensor | None, torch.Tensor | None, str]],
                                  title: str, k: int) -> Figure:
    """One row per run: (label, images (k,3,H,W) or None, maps (k,gh,gw) or None, why missing).

    When every run has the same images, they are shown once in a first "Input" row."""
    have = [r for r in rows_data if r[1] is not None]
    shared = bool(have) and all(r[1].shape == have[0][1].shape and torch.equal(r[1], have[0][1]) for r in have)
    n_rows = len(rows_data) + (1 if shared else 0)
    fig = _new_figure(1.2 * k + 1.8, 1.25 * n_rows + 0.7)
    axes = fig.subplots(n_rows, k, squeeze=False)
    im = None
    r0 = 0
    if shared:
        for i in range(min(k, len(have[0][1]))):
            draw_input(axes[0, i], have[0][1][i])
        axes[0, 0].set_ylabel("Input", fontsize=7)
        r0 = 1
    for r, (label, images, maps, why) in enumerate(rows_data, start=r0):
        for i in range(k):
            ax = axes[r, i]
            if images is None or maps is None or i >= len(images):
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0 and images is None:
                    ax.text(0.02, 0.5, wrap(why, 60), transform=ax.transAxes, fontsize=6, va="center")
                continue
            im = draw_overlay(ax, images[i], maps[i])
        axes[r, 0].set_ylabel("\n".join(label.split(", ")), fontsize=6)
    for r in range(r0 if shared else 0):
        for i in range(len(have[0][1]), k):
            axes[r, i].set_visible(False)
    if im is not None:
        fig.colorbar(_map_scale(), ax=axes.ravel().tolist(), shrink=0.6, label="Attention rollout (max = 1)")
    fig.suptitle(f"Attention rollout to the input patches — {title}", fontsize=10)
    return fig
