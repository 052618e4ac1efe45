"""2D axial rotary position embedding ("RoPE-Axial"): the worked example of vitbench's plugin API.

Source: Heo et al. 2024, "Rotary Position Embedding for Vision Transformer" (ECCV 2024, arXiv 2403.13298),
reference code naver-ai/rope-vit ``models/vit_rope.py`` (``init_t_xy``, ``compute_axial_cis``,
``apply_rotary_emb``; ``theta=100.0`` for ViT). With d = head_dim and patch n = y * gw + x (row-major)::

    f_j     = 1 / theta ** (4j / d),  j = 0 .. d/4 - 1     # 1/theta**(arange(0, d, 4)[:d//4] / d)
    phi_n   = [x * f_0 .. x * f_{d/4-1},  y * f_0 .. y * f_{d/4-1}]   # d/2 angles
    z_n,m   = q_n[2m] + i q_n[2m+1]  ->  z_n,m * exp(i phi_n[m])       # adjacent channel pairs

so channels [0, d/2) rotate by the column x, channels [d/2, d) by the row y, and (R_p q).(R_r k) depends only on
p - r. Prefix ([class]) tokens are left unrotated. No learned parameters: ``set_grid_size`` recomputes the angle
table (non-persistent buffers, so state dicts are unaffected). Register it by naming this file as a plugin.
"""

from __future__ import annotations

import torch
from torch import nn


class Rope2d(nn.Module):
    theta = 100.0

    def __init__(self, grid_size: tuple[int, int], head_dim: int, num_prefix_tokens: int) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"rope_2d needs a head_dim divisible by 4, got {head_dim}")
        self.head_dim, self.num_prefix_tokens = head_dim, num_prefix_tokens
        self.set_grid_size(grid_size)

    def set_grid_size(self, grid_size: tuple[int, int]) -> None:
        gh, gw = grid_size
        d = self.head_dim
        old = getattr(self, "cos", None)
        freqs = 1.0 / self.theta ** (torch.arange(0, d, 4)[: d // 4].double() / d)
        t = torch.arange(gh * gw)
        t_x, t_y = (t % gw).double(), torch.div(t, gw, rounding_mode="floor").double()
        angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)  # (gh*gw, d/2), float64
        device = old.device if old is not None else None
        self.register_buffer("cos", angles.cos().float().to(device), persistent=False)
        self.register_buffer("sin", angles.sin().float().to(device), persistent=False)
        self.grid_size = (gh, gw)

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        p = self.num_prefix_tokens
        if x.shape[-2] != p + self.cos.shape[0] or x.shape[-1] != self.head_dim:
            raise ValueError(f"rope_2d: expected (..., {p + self.cos.shape[0]}, {self.head_dim}) tokens for grid "
                             f"{self.grid_size}, got {tuple(x.shape)}")
        dt = torch.promote_types(x.dtype, torch.float32)  # half precision is rotated in float32
        re, im = x[..., p:, :].to(dt).unflatten(-1, (-1, 2)).unbind(-1)  # (..., gh*gw, d/2) each
        cos, sin = self.cos.to(dt), self.sin.to(dt)
        rotated = torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(-2)
        return torch.cat([x[..., :p, :], rotated.to(x.dtype)], dim=-2)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._rotate(q), self._rotate(k)


from vitbench import plugins  # noqa: E402
plugins.pos_embed("rope_2d", kind="attention")(Rope2d)
