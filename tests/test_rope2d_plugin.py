"""The worked plugin example ablations/plugins/rope2d.py: 2D axial RoPE (Heo et al. 2024, naver-ai/rope-vit)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

PLUGIN = Path(__file__).resolve().parents[1] / "ablations" / "plugins" / "rope2d.py"
MARKER = "from vitbench import plugins"


def _load_class() -> type:
    # Exec only the part above the registration: plugins.pos_embed() is meant to run while vitbench imports the
    # file as a plugin (it refuses calls outside one, and a second registration would clash), not at test import.
    source = PLUGIN.read_text()
    assert MARKER in source, "the plugin no longer registers itself at the end"
    namespace: dict = {"__name__": "rope2d_under_test"}
    exec(compile(source.split(MARKER)[0], str(PLUGIN), "exec"), namespace)
    return namespace["Rope2d"]


Rope2d = _load_class()


def _reference(x: torch.Tensor, gh: int, gw: int, theta: float = 100.0) -> torch.Tensor:
    """Patch tokens only, rotated as naver-ai/rope-vit does it (compute_axial_cis + complex multiplication)."""
    d = x.shape[-1]
    freqs = 1.0 / (theta ** (torch.arange(0, d, 4)[: d // 4].double() / d))
    t = torch.arange(gh * gw, dtype=torch.float64)
    t_x, t_y = t % gw, torch.div(t, gw, rounding_mode="floor")
    cis = torch.cat([torch.polar(torch.ones(gh * gw, d // 4, dtype=torch.float64), torch.outer(t_x, freqs)),
                     torch.polar(torch.ones(gh * gw, d // 4, dtype=torch.float64), torch.outer(t_y, freqs))], -1)
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(z * cis).flatten(-2)


def _tokens_everywhere(vec: torch.Tensor, n_prefix: int, n_patches: int) -> torch.Tensor:
    return vec.expand(1, 1, n_prefix + n_patches, vec.shape[-1]).clone()


def test_matches_the_reference_formula_and_leaves_prefix_tokens_alone():
    gh, gw, hd, p = 3, 5, 16, 1
    rope = Rope2d((gh, gw), hd, p)
    q, k = torch.randn(2, 3, p + gh * gw, hd), torch.randn(2, 3, p + gh * gw, hd)
    q2, k2 = rope(q, k)
    for before, after in ((q, q2), (k, k2)):
        assert after.shape == before.shape and after.dtype == before.dtype
        assert torch.equal(after[:, :, :p], before[:, :, :p])
        torch.testing.assert_close(after[:, :, p:].double(), _reference(before[:, :, p:], gh, gw),
                                   atol=1e-5, rtol=1e-5)
    assert not torch.allclose(q2[:, :, p + 1:], q[:, :, p + 1:])  # patches other than (0, 0) do rotate


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_dtype_shape_and_norms_preserved(dtype):
    rope = Rope2d((4, 4), 8, 2)
    q, k = torch.randn(2, 2, 18, 8, dtype=dtype), torch.randn(2, 2, 18, 8, dtype=dtype)
    q2, k2 = rope(q, k)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    for before, after in ((q, q2), (k, k2)):
        assert after.shape == before.shape and after.dtype == dtype
        assert torch.equal(after[:, :, :2], before[:, :, :2])
        torch.testing.assert_close(after.double().norm(dim=-1), before.double().norm(dim=-1), atol=tol, rtol=tol)


def test_logits_depend_only_on_the_offset():
    gh, gw, hd, p = 4, 5, 16, 1
    rope = Rope2d((gh, gw), hd, p)
    torch.manual_seed(0)
    qv, kv = torch.randn(hd), torch.randn(hd)  # q != k: with q == k offsets d and -d would tie
    q, k = rope(_tokens_everywhere(qv, p, gh * gw), _tokens_everywhere(kv, p, gh * gw))
    logits = (q[0, 0, p:] @ k[0, 0, p:].T)  # (N, N): query patch n = y*gw + x, key patch m
    groups: dict[tuple[int, int], list[float]] = {}
    for n in range(gh * gw):
        for m in range(gh * gw):
            groups.setdefault((n // gw - m // gw, n % gw - m % gw), []).append(logits[n, m].item())
    assert len(groups) == (2 * gh - 1) * (2 * gw - 1)
    for values in groups.values():
        assert max(values) - min(values) < 1e-5  # float32 rounding; the gaps below are ~5e-3
    means = sorted(sum(v) / len(v) for v in groups.values())
    assert min(b - a for a, b in zip(means, means[1:])) > 1e-4  # different offsets, different logits


def test_x_half_follows_columns_and_y_half_follows_rows():
    gh, gw, hd = 3, 4, 8
    rope = Rope2d((gh, gw), hd, 0)
    x_only, y_only = torch.zeros(hd), torch.zeros(hd)
    x_only[: hd // 2], y_only[hd // 2:] = torch.randn(hd // 2), torch.randn(hd // 2)
    xo, yo = (rope(_tokens_everywhere(v, 0, gh * gw), _tokens_everywhere(v, 0, gh * gw))[0][0, 0]
              .view(gh, gw, hd) for v in (x_only, y_only))
    assert torch.equal(xo[..., hd // 2:], torch.zeros(gh, gw, hd // 2))  # halves do not mix
    assert torch.equal(yo[..., : hd // 2], torch.zeros(gh, gw, hd // 2))
    for row in range(1, gh):
        assert torch.equal(xo[row], xo[0])  # same column: identical x-half rotation
    for col in range(1, gw):
        assert torch.equal(yo[:, col], yo[:, 0])  # same row: identical y-half rotation
    assert not torch.allclose(xo[0, 1], xo[0, 0]) and not torch.allclose(yo[1, 0], yo[0, 0])


def test_set_grid_size_recomputes_angles_without_state():
    rope = Rope2d((2, 3), 8, 1)
    small_cos, small_sin = rope.cos.clone(), rope.sin.clone()
    assert rope.state_dict() == {} and list(rope.parameters()) == []
    rope.set_grid_size((4, 6))
    big = Rope2d((4, 6), 8, 1)
    assert rope.grid_size == (4, 6)
    assert torch.equal(rope.cos, big.cos) and torch.equal(rope.sin, big.sin)
    assert torch.equal(rope.cos[:3], small_cos[:3]) and torch.equal(rope.sin[:3], small_sin[:3])  # row 0, x < 3
    assert rope.state_dict() == {}
    q = torch.randn(1, 2, 1 + 24, 8)
    assert rope(q, q)[0].shape == q.shape
    with pytest.raises(ValueError, match="rope_2d"):
        rope(q[:, :, :7], q[:, :, :7])  # the old grid's token count


@pytest.mark.parametrize("head_dim", [6, 10, 2])
def test_head_dim_not_divisible_by_4(head_dim):
    with pytest.raises(ValueError, match="divisible by 4"):
        Rope2d((2, 2), head_dim, 1)
