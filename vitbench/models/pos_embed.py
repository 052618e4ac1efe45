"""Position embeddings of the paper's Table 8 ablation, each resizable to a new patch grid.

Absolute variants (added to the tokens): ``learned_1d`` (one vector per token, class token included, as
timm/the paper), ``learned_2d`` (X and Y tables of D/2 each, concatenated), ``sincos_2d`` (fixed, MoCo-v3 /
big_vision layout, a buffer, not a parameter). ``relative`` is a learned per-head attention-logit bias
indexed by the (dy, dx) offset between two patch tokens (``RelativePositionBias``, one per layer).

Prefix (class) token: learned_1d gives it its own learned entry (timm layout, so parameter counts match
timm). learned_2d, sincos_2d and relative give it *no* position signal (zero vector / zero bias): it has no
grid position, and a learned constant added to it at the stem would be redundant with the learned class
token itself.

Resizing: every table uses ``resize_grid`` (bilinear, align_corners=True = vit_jax/checkpoint.py's zoom order=1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import build_sincos2d_pos_embed, gen_relative_position_index, trunc_normal_
from torch import nn

POS_EMBEDS = ("none", "learned_1d", "learned_2d", "relative", "sincos_2d")
PLACEMENTS = ("stem", "every_layer", "every_layer_shared")
ABSOLUTE = ("learned_1d", "learned_2d", "sincos_2d")  # the variants added to the tokens

Grid = tuple[int, int]
# Plugin position embeddings (vitbench.plugins.pos_embed): name -> (kind, class); kind "absolute" | "attention".
PLUGIN_POS: dict[str, tuple[str, type]] = {}


def pos_embed_names() -> tuple[str, ...]:
    """Every position embedding a model accepts: the built-ins, then those plugins registered."""
    return POS_EMBEDS + tuple(PLUGIN_POS)


def is_absolute(kind: str) -> bool:
    """Added to the tokens (placed by ``pos_placement``), as opposed to acting inside attention."""
    return kind in ABSOLUTE or PLUGIN_POS.get(kind, ("", None))[0] == "absolute"


def attention_kind(kind: str) -> bool:
    """Acts on queries and keys inside every block's attention (a plugin's rotary embedding)."""
    return PLUGIN_POS.get(kind, ("", None))[0] == "attention"


def attention_pos(kind: str, grid_size: Grid, head_dim: int, num_prefix_tokens: int) -> nn.Module | None:
    """A plugin's attention-kind position module (rotary embeddings), or None."""
    entry = PLUGIN_POS.get(kind)
    return entry[1](grid_size, head_dim, num_prefix_tokens) if entry and entry[0] == "attention" else None


def resize_grid(grid: torch.Tensor, new_size: Grid) -> torch.Tensor:
    """Resize a channels-first grid (C, h, w) to (C, *new_size): bilinear, ``align_corners=True``.

    The paper's code (google-research/vision_transformer, ``vit_jax/checkpoint.py::load_pretrained``) resizes
    the position grid with ``scipy.ndimage.zoom(grid, (new/old, new/old, 1), order=1)``: an order-1 spline
    (bilinear) whose default ``grid_mode=False`` maps the corner samples onto the corner samples, which is
    exactly ``F.interpolate(mode="bilinear", align_corners=True)``. Computed in float32, returned in the
    input dtype. Every resizable table (1D grid, 2D axis tables, relative bias) goes through here.
    """
    new_size = (int(new_size[0]), int(new_size[1]))
    if tuple(grid.shape[1:]) == new_size:
        return grid.detach().clone()
    out = F.interpolate(grid.detach().float().unsqueeze(0), size=new_size, mode="bilinear", align_corners=True)
    return out[0].to(grid.dtype).contiguous()


class AbsPosEmbed(nn.Module):
    """Base: ``forward(x)`` adds a (1, prefix + gh*gw, D) embedding to tokens x (B, prefix + gh*gw, D)."""

    def __init__(self, grid_size: Grid, dim: int, num_prefix_tokens: int) -> None:
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.dim = dim
        self.num_prefix_tokens = num_prefix_tokens

    def embedding(self) -> torch.Tensor:
        raise NotImplementedError

    def set_grid_size(self, grid_size: Grid) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.embedding()


class LearnedPosEmbed1d(AbsPosEmbed):
    """One learned D-vector per token (timm's ``pos_embed``); resizing interpolates the patch grid
    (``resize_grid``) and keeps the prefix (class) entries unchanged, as ``vit_jax/checkpoint.py``."""

    def __init__(self, grid_size: Grid, dim: int, num_prefix_tokens: int) -> None:
        super().__init__(grid_size, dim, num_prefix_tokens)
        n = num_prefix_tokens + grid_size[0] * grid_size[1]
        self.pos = nn.Parameter(torch.zeros(1, n, dim))
        trunc_normal_(self.pos, std=0.02)

    def embedding(self) -> torch.Tensor:
        return self.pos

    def set_grid_size(self, grid_size: Grid) -> None:
        grid_size = tuple(grid_size)
        if grid_size == self.grid_size:
            return
        p, (gh, gw), pos = self.num_prefix_tokens, self.grid_size, self.pos.detach()
        grid = pos[0, p:].reshape(gh, gw, self.dim).permute(2, 0, 1)  # (D, gh, gw)
        grid = resize_grid(grid, grid_size).permute(1, 2, 0).reshape(1, grid_size[0] * grid_size[1], self.dim)
        new = torch.cat([pos[:, :p], grid], dim=1)
        self.pos = nn.Parameter(new.contiguous(), requires_grad=self.pos.requires_grad)
        self.grid_size = grid_size


def _resize_axis(table: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a (1, n, d) per-axis table to (1, size, d) with ``resize_grid`` (linear along the axis).

    Patch (i, j) of learned_2d is concat(Y[i], X[j]): each half depends on one axis only, so linear
    interpolation of each axis table is exactly bilinear interpolation of the concatenated grid, i.e. the
    same operation as the learned_1d resize.
    """
    grid = table.detach()[0].t().unsqueeze(-1)  # (d, n, 1)
    return resize_grid(grid, (size, 1))[..., 0].t().unsqueeze(0).contiguous()


class LearnedPosEmbed2d(AbsPosEmbed):
    """Paper Table 8 "2-D": Y (gh, D/2) and X (gw, D/2) tables; patch (i, j) gets concat(Y[i], X[j])."""

    def __init__(self, grid_size: Grid, dim: int, num_prefix_tokens: int) -> None:
        super().__init__(grid_size, dim, num_prefix_tokens)
        if dim % 2:
            raise ValueError(f"learned_2d needs an even width, got {dim}")
        self.pos_y = nn.Parameter(torch.zeros(1, grid_size[0], dim // 2))
        self.pos_x = nn.Parameter(torch.zeros(1, grid_size[1], dim // 2))
        trunc_normal_(self.pos_y, std=0.02)
        trunc_normal_(self.pos_x, std=0.02)

    def embedding(self) -> torch.Tensor:
        gh, gw = self.grid_size
        half = self.dim // 2
        y = self.pos_y[:, :, None, :].expand(1, gh, gw, half)
        x = self.pos_x[:, None, :, :].expand(1, gh, gw, half)
        emb = torch.cat([y, x], dim=-1).reshape(1, gh * gw, self.dim)
        return F.pad(emb, (0, 0, self.num_prefix_tokens, 0))  # prefix tokens: no position

    def set_grid_size(self, grid_size: Grid) -> None:
        grid_size = tuple(grid_size)
        if grid_size == self.grid_size:
            return
        with torch.no_grad():
            self.pos_y = nn.Parameter(_resize_axis(self.pos_y, grid_size[0]), requires_grad=self.pos_y.requires_grad)
            self.pos_x = nn.Parameter(_resize_axis(self.pos_x, grid_size[1]), requires_grad=self.pos_x.requires_grad)
        self.grid_size = grid_size


class SinCosPosEmbed2d(AbsPosEmbed):
    """Fixed 2D sin-cos embedding (D/4 frequencies per axis, temperature 1e4); recomputed on resize."""

    def __init__(self, grid_size: Grid, dim: int, num_prefix_tokens: int) -> None:
        super().__init__(grid_size, dim, num_prefix_tokens)
        if dim % 4:
            raise ValueError(f"sincos_2d needs a width divisible by 4, got {dim}")
        # Not persistent: it is a function of the grid, so checkpoints stay valid across resolutions.
        self.register_buffer("pos", self._build(grid_size, None), persistent=False)

    def _build(self, grid_size: Grid, device: torch.device | None) -> torch.Tensor:
        emb = build_sincos2d_pos_embed(list(grid_size), dim=self.dim, temperature=10000.0, device=device)
        return F.pad(emb.unsqueeze(0), (0, 0, self.num_prefix_tokens, 0))

    def embedding(self) -> torch.Tensor:
        return self.pos

    def set_grid_size(self, grid_size: Grid) -> None:
        grid_size = tuple(grid_size)
        if grid_size != self.grid_size:
            self.pos = self._build(grid_size, self.pos.device)
            self.grid_size = grid_size


def create_abs_pos_embed(kind: str, grid_size: Grid, dim: int, num_prefix_tokens: int) -> nn.Module:
    builtin = {"learned_1d": LearnedPosEmbed1d, "learned_2d": LearnedPosEmbed2d, "sincos_2d": SinCosPosEmbed2d}
    cls = builtin[kind] if kind in builtin else PLUGIN_POS[kind][1]
    return cls(grid_size, dim, num_prefix_tokens)


class RelativePositionBias(nn.Module):
    """Learned attention-logit bias per head for each relative offset (dy, dx) between two patch tokens.

    Table: (heads, 2*gh-1, 2*gw-1). ``forward()`` returns the additive bias (1, heads, N, N) for the
    N = prefix + gh*gw tokens; rows/columns of prefix (class) tokens are zero.
    """

    def __init__(self, grid_size: Grid, num_heads: int, num_prefix_tokens: int) -> None:
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        self.table = nn.Parameter(torch.zeros(num_heads, 2 * grid_size[0] - 1, 2 * grid_size[1] - 1))
        trunc_normal_(self.table, std=0.02)
        self.register_buffer("index", self._index(self.grid_size, None), persistent=False)

    @staticmethod
    def _index(grid_size: Grid, device: torch.device | None) -> torch.Tensor:
        # timm's index is (dy + gh-1) * (2gw-1) + (dx + gw-1): row-major into the flattened table.
        idx = gen_relative_position_index(grid_size).view(-1)
        return idx.to(device) if device is not None else idx

    def forward(self) -> torch.Tensor:
        heads = self.table.shape[0]
        n = self.grid_size[0] * self.grid_size[1]
        bias = self.table.flatten(1)[:, self.index].view(1, heads, n, n)
        p = self.num_prefix_tokens
        return F.pad(bias, (p, 0, p, 0)) if p else bias

    def set_grid_size(self, grid_size: Grid) -> None:
        """Resize the table per head with ``resize_grid``; align_corners keeps offset 0 and the extreme offsets
        in place."""
        grid_size = tuple(grid_size)
        if grid_size == self.grid_size:
            return
        size = (2 * grid_size[0] - 1, 2 * grid_size[1] - 1)
        new = resize_grid(self.table, size)  # (heads, 2gh-1, 2gw-1): heads are the channels
        self.table = nn.Parameter(new.contiguous(), requires_grad=self.table.requires_grad)
        self.index = self._index(grid_size, self.index.device)
        self.grid_size = grid_size
