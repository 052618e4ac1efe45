"""Position-table resizing is the paper's operation: ``scipy.ndimage.zoom(grid, (new/old, new/old, 1), order=1)``
(google-research/vision_transformer, vit_jax/checkpoint.py::load_pretrained), for every resizable table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from vitbench.models import create_model
from vitbench.models.pos_embed import LearnedPosEmbed1d, LearnedPosEmbed2d, RelativePositionBias, resize_grid

D = 32  # ViT-nano width
# (old grid, new grid): up, down, and non-square (the modules take any grid; models are square)
GRIDS = [((4, 4), (6, 6)), ((6, 6), (4, 4)), ((4, 6), (6, 3)), ((3, 5), (7, 2))]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _zoom(grid_hwc: np.ndarray, new: tuple[int, int]) -> np.ndarray:
    """The paper's code, verbatim up to variable names (float64 here)."""
    h, w = grid_hwc.shape[:2]
    out = ndimage.zoom(grid_hwc.astype(np.float64), (new[0] / h, new[1] / w, 1), order=1)
    assert out.shape[:2] == tuple(new)
    return out


@pytest.mark.parametrize("old,new", GRIDS)
@pytest.mark.parametrize("prefix", [1, 0])
def test_learned_1d_resize_is_scipy_zoom_order1(old: tuple[int, int], new: tuple[int, int], prefix: int) -> None:
    pe = LearnedPosEmbed1d(old, D, prefix)
    with torch.no_grad():
        pe.pos.normal_()
    pos = pe.pos.detach().clone()
    pe.set_grid_size(new)
    assert pe.pos.shape == (1, prefix + new[0] * new[1], D) and pe.grid_size == new
    want = _zoom(pos[0, prefix:].reshape(*old, D).numpy(), new).reshape(-1, D)
    np.testing.assert_allclose(pe.pos[0, prefix:].detach().numpy(), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(pe.pos[:, :prefix], pos[:, :prefix], atol=0, rtol=0)  # class entry unchanged


@pytest.mark.parametrize("old,new", [((4, 4), (6, 6)), ((6, 6), (4, 4))])
def test_model_resize_is_scipy_zoom_order1(old: tuple[int, int], new: tuple[int, int]) -> None:
    model = create_model("ViT-nano/4", num_classes=10, img_size=4 * old[0])
    pos = model.pos_embed[0].pos.detach().clone()
    model.set_img_size(4 * new[0])
    want = _zoom(pos[0, 1:].reshape(*old, D).numpy(), new).reshape(-1, D)
    np.testing.assert_allclose(model.pos_embed[0].pos[0, 1:].detach().numpy(), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.pos_embed[0].pos[:, :1], pos[:, :1], atol=0, rtol=0)


@pytest.mark.parametrize("old,new", GRIDS)
def test_learned_2d_resize_is_the_same_operation(old: tuple[int, int], new: tuple[int, int]) -> None:
    """Per-axis linear resize == scipy zoom (order 1) of the materialised 2D embedding grid."""
    pe = LearnedPosEmbed2d(old, D, 1)
    with torch.no_grad():
        pe.pos_y.normal_()
        pe.pos_x.normal_()
    emb = pe.embedding().detach().clone()
    pe.set_grid_size(new)
    assert pe.pos_y.shape == (1, new[0], D // 2) and pe.pos_x.shape == (1, new[1], D // 2)
    got = pe.embedding().detach()
    want = _zoom(emb[0, 1:].reshape(*old, D).numpy(), new).reshape(-1, D)
    np.testing.assert_allclose(got[0, 1:].numpy(), want, atol=1e-6, rtol=0)
    assert got[0, 0].abs().max() == 0  # the class token still gets no position


@pytest.mark.parametrize("old,new", GRIDS)
def test_relative_table_resize_is_scipy_zoom_order1(old: tuple[int, int], new: tuple[int, int]) -> None:
    heads = 3
    rel = RelativePositionBias(old, heads, 1)
    with torch.no_grad():
        rel.table.normal_()
    table = rel.table.detach().clone()  # (heads, 2gh-1, 2gw-1)
    rel.set_grid_size(new)
    size = (2 * new[0] - 1, 2 * new[1] - 1)
    assert rel.table.shape == (heads, *size)
    want = _zoom(table.permute(1, 2, 0).numpy(), size).transpose(2, 0, 1)  # per head = the head as channel
    np.testing.assert_allclose(rel.table.detach().numpy(), want, atol=1e-6, rtol=0)
    centre_old, centre_new = (old[0] - 1, old[1] - 1), (new[0] - 1, new[1] - 1)
    torch.testing.assert_close(rel.table[:, centre_new[0], centre_new[1]], table[:, centre_old[0], centre_old[1]],
                               atol=1e-6, rtol=0)  # offset (0, 0) stays in place
    n = 1 + new[0] * new[1]
    assert rel().shape == (1, heads, n, n)


def test_resize_grid_same_size_and_corners() -> None:
    grid = torch.randn(5, 4, 6)
    torch.testing.assert_close(resize_grid(grid, (4, 6)), grid, atol=0, rtol=0)
    out = resize_grid(grid, (7, 3))
    for (i, j), (k, m) in {((0, 0), (0, 0)), ((3, 5), (6, 2)), ((0, 5), (0, 2)), ((3, 0), (6, 0))}:
        torch.testing.assert_close(out[:, k, m], grid[:, i, j], atol=1e-6, rtol=0)  # corners onto corners
    half = resize_grid(grid.half(), (7, 3))
    assert half.dtype == torch.float16 and half.shape == (5, 7, 3)
