"""Pure tensor functions behind the paper's analyses of a trained ViT (Figures 6 and 7).

Nothing here touches files, models or plotting: inputs are tensors, outputs are tensors (float64 where
the value is a reported number, so tests can check them against brute-force answers).

* :func:`patch_embed_pcs` — principal components of the patch-embedding filters (Fig. 7 left).
* :func:`pos_embed_similarity` — cosine similarity between position embeddings (Fig. 7 centre).
* :func:`mean_attention_distance` — attention-weighted query-key distance in pixels (Fig. 7 right).
* :func:`attention_rollout` / :func:`rollout_to_patches` — Abnar & Zuidema's rollout (Fig. 6).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

GridHW = tuple[int, int]
Pixels = int | float | tuple[float, float]


# ---- embedding filters ------------------------------------------------------------------------------------


def patch_embed_pcs(weight: torch.Tensor, k: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal components of the D patch-embedding filters.

    ``weight``: the patch-embedding conv weight (D, C, p, p) — each output channel is one filter, a
    C×p×p image patch. PCA treats the D filters as samples of a C·p·p-dimensional variable (centred by
    the mean filter) and returns ``(components, explained_variance_ratio)``: components (k', C, p, p),
    unit-norm, in decreasing order of variance, with k' = min(k, D, C·p·p); the ratio is (k',) of the
    total variance. The sign of a component is arbitrary; it is fixed so that its largest-magnitude
    entry is positive (deterministic output for the same weights).
    """
    if weight.ndim != 4:
        raise ValueError(f"expected a conv weight (D, C, p, p), got shape {tuple(weight.shape)}")
    d = weight.shape[0]
    x = weight.detach().to(torch.float64).reshape(d, -1)
    x = x - x.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(k, vh.shape[0])
    comps = vh[:k]
    idx = comps.abs().argmax(dim=1)
    sign = torch.sign(comps.gather(1, idx[:, None]))
    sign[sign == 0] = 1.0
    comps = comps * sign
    var = s ** 2
    total = var.sum()
    ratio = var[:k] / total if total > 0 else torch.zeros(k, dtype=torch.float64)
    return comps.reshape(k, *weight.shape[1:]), ratio


def normalize01(x: torch.Tensor, dims: Sequence[int] | None = None) -> torch.Tensor:
    """Min-max scale to [0, 1] over ``dims`` (default: all but the first, i.e. per item); constant → 0.5."""
    if dims is None:
        dims = tuple(range(1, x.ndim))
    lo = x.amin(dim=tuple(dims), keepdim=True)
    hi = x.amax(dim=tuple(dims), keepdim=True)
    span = hi - lo
    out = (x - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, out, torch.full_like(out, 0.5))


# ---- position embeddings -----------------------------------------------------------------------------------


def pos_embed_similarity(pos: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every patch position's embedding with every other's.

    ``pos``: (gh, gw, D) position vectors on the patch grid. Returns (gh, gw, gh, gw): ``out[i, j]`` is the
    (gh, gw) similarity map of query position (i, j) — one small heatmap per position, as Fig. 7 centre.
    A zero vector has similarity 0 with everything.
    """
    if pos.ndim != 3:
        raise ValueError(f"expected position vectors (gh, gw, D), got shape {tuple(pos.shape)}")
    gh, gw, d = pos.shape
    v = F.normalize(pos.detach().to(torch.float64).reshape(gh * gw, d), dim=-1)
    return (v @ v.T).reshape(gh, gw, gh, gw)


# ---- attention distance ------------------------------------------------------------------------------------


def _pair(p: Pixels) -> tuple[float, float]:
    if isinstance(p, (tuple, list)):
        return float(p[0]), float(p[1])
    return float(p), float(p)


def patch_distances(grid_hw: GridHW, patch_px: Pixels) -> torch.Tensor:
    """(N, N) Euclidean distances in pixels between the centres of the N = gh·gw patch tokens (row-major).

    ``patch_px``: pixels per token step (the patch size for a ViT; backbone stride × patch for a hybrid),
    an int or (py, px).
    """
    gh, gw = grid_hw
    py, px = _pair(patch_px)
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                            indexing="ij")
    coords = torch.stack([ys.flatten() * py, xs.flatten() * px], dim=1)
    return torch.cdist(coords, coords)


def mean_attention_distance(attn: torch.Tensor, grid_hw: GridHW, patch_px: Pixels, num_prefix: int = 0, *,
                            per_image: bool = False) -> torch.Tensor:
    """Attention-weighted mean distance in pixels between query and key patches, per head.

    ``attn``: softmax attention (B, heads, N, N) or (heads, N, N), N = num_prefix + gh·gw (class token
    first). Only patch tokens count: prefix rows and columns are dropped and each query's remaining
    weights are renormalised to sum to 1, so the value is a proper weighted average over patch keys
    (a query that attends mostly to the class token still gets the distance of the rest). For each head:
    Σ_k a(q, k)·dist(q, k), averaged over the query patches — and over the images unless ``per_image``.

    Returns float64 (heads,), or (B, heads) with ``per_image=True``.
    """
    gh, gw = grid_hw
    n = gh * gw
    if attn.shape[-1] != num_prefix + n or attn.shape[-2] != num_prefix + n:
        raise ValueError(f"attention over {attn.shape[-1]} tokens does not match {num_prefix} prefix + "
                         f"{gh}x{gw} patches")
    a = attn.detach().to(torch.float64)[..., num_prefix:, num_prefix:]
    a = a / a.sum(dim=-1, keepdim=True).clamp_min(1e-300)
    dist = patch_distances(grid_hw, patch_px).to(a.device)
    per_query = (a * dist).sum(dim=-1)  # (..., heads, N)
    out = per_query.mean(dim=-1)  # (..., heads)
    if out.ndim == 2 and not per_image:
        out = out.mean(dim=0)
    return out.cpu()


def uniform_attention_distance(grid_hw: GridHW, patch_px: Pixels) -> float:
    """The mean distance of uniform attention over all patches (reference line: no locality at all)."""
    return float(patch_distances(grid_hw, patch_px).mean())


# ---- attention rollout -------------------------------------------------------------------------------------


def attention_rollout(attns: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) through all layers.

    Each layer's attention (B, heads, N, N) or (heads, N, N) is averaged over heads, the identity is added
    (the residual connection) and rows are renormalised; the layers are multiplied, last on the left:
    R = Â_L ··· Â_1. Returns float64 (B, N, N) (or (N, N)): row t is how much each input token flows into
    token t at the output.
    """
    if not attns:
        raise ValueError("attention rollout needs at least one layer")
    rollout = None
    for a in attns:
        a = a.detach().to(torch.float64).mean(dim=-3)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    assert rollout is not None
    return rollout.cpu()


def rollout_to_patches(rollout: torch.Tensor, num_prefix: int, grid_hw: GridHW) -> torch.Tensor:
    """The output token's rollout over the input patches, as a (B, gh, gw) map summing to 1 per image.

    With a class token (``num_prefix`` > 0) the output token is the class token (row 0); with global
    average pooling (no prefix) the output is the mean of all tokens, so the rows are averaged. Columns of
    prefix tokens are dropped and the map renormalised over the patches.
    """
    gh, gw = grid_hw
    r = rollout if rollout.ndim == 3 else rollout[None]
    row = r[:, 0] if num_prefix > 0 else r.mean(dim=1)
    m = row[:, num_prefix:]
    if m.shape[-1] != gh * gw:
        raise ValueError(f"rollout over {r.shape[-1]} tokens does not match {num_prefix} prefix + {gh}x{gw} patches")
    m = m / m.sum(dim=-1, keepdim=True).clamp_min(1e-300)
    return m.reshape(-1, gh, gw)
