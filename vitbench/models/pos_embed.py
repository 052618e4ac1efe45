"""Position embeddings of the paper's Table 8 ablation, each resizable to a new patch grid.

Absolute variants (added to the tokens): ``learned_1d`` (one vector per token, class token included, as
timm/the paper), ``learned_2d`` (X and Y tables of D/2 each, concatenated), ``sincos_2d`` (fixed, MoCo-v3 /
big_vision layout, a buffer, not a parameter). ``relative`` is a learned per-head attention-logit bias
indexed by the (dy, dx) offset between two patch tokens (``RelativePositionBias``, one per layer).

Prefix (class) token: learned_1d gives it its own learned entry (timm layout, so parameter counts match
timm). learned_2d, sincos_2d and relative give it *no* position signal (zero vector / zero bias): it has no
grid position, and a learned constant added to it at the stem would be redundant with the learned class
token itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import build_sincos2d_pos_embed, gen_relative_position_index, resample_abs_pos_embed, trunc_normal_
from torch import nn

POS_EMBEDS = ("none", "learned_1d", "learned_2d", "relative", "sincos_2d")
PLACEMENTS = ("stem", "every_layer", "every_layer_shared")
ABSOLUTE = ("learned_1d", "learned_2d", "sincos_2d")  # the variants added to the tokens

Grid = tuple[int, int]


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
    """One learned D-vector per token (timm's ``pos_embed``), resized by bicubic interpolation of the grid."""

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
        with torch.no_grad():
            new = resample_abs_pos_embed(self.pos.detach(), new_size=list(grid_size), old_size=list(self.grid_size),
                                         num_prefix_tokens=self.num_prefix_tokens)
        self.pos = nn.Parameter(new.contiguous(), requires_grad=self.pos.requires_grad)
        self.grid_size = grid_size


def _resize_axis(table: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic 1D resize of a (1, n, d) per-axis table to (1, size, d) (same kernel as the 1D grid)."""
    img = table.detach().float().permute(0, 2, 1).unsqueeze(-1)  # (1, d, n, 1)
    out = F.interpolate(img, size=(size, 1), mode="bicubic", align_corners=False)
    return out.squeeze(-1).permute(0, 2, 1).to(table.dtype).contiguous()


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


def create_abs_pos_embed(kind: str, grid_size: Grid, dim: int, num_prefix_tokens: int) -> AbsPosEmbed:
    cls = {"learned_1d": LearnedPosEmbed1d, "learned_2d": LearnedPosEmbed2d, "sincos_2d": SinCosPosEmbed2d}[kind]
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
        """Resize the table bicubically; align_corners keeps offset 0 and the extreme offsets in place."""
        grid_size = tuple(grid_size)
        if grid_size == self.grid_size:
            return
        size = (2 * grid_size[0] - 1, 2 * grid_size[1] - 1)
        with torch.no_grad():
            t = self.table.detach()
            new = F.interpolate(t.float().unsqueeze(0), size=size, mode="bicubic", align_corners=True)[0].to(t.dtype)
        self.table = nn.Parameter(new.contiguous(), requires_grad=self.table.requires_grad)
        self.index = self._index(grid_size, self.index.device)
        self.grid_size = grid_size
