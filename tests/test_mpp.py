"""Masked patch prediction core (paper 4.6 / B.1.2): corruption draw, its application, targets and loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from timm.layers import PatchEmbed
from torch import nn

from vitbench.train import mpp
from vitbench.train.mpp import (MODE_KEEP, MODE_MASK, MODE_RANDOM, P_MASK, P_RANDOM, TARGETS, Corruption,
                                apply_corruption, draw_corruption, loss, num_corrupted, output_size, step_generator,
                                targets)

SIGMAS = 5.0  # tolerance of the frequency checks, in binomial standard errors
P_MIN = 1e-4  # chi-square p-value below which a distribution is called non-uniform


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _same(a: Corruption, b: Corruption) -> bool:
    return all(torch.equal(x, y) for x, y in ((a.corrupted, b.corrupted), (a.mode, b.mode), (a.source, b.source)))


# ---- the draw -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, k", [(2, 1), (3, 2), (4, 2), (5, 3), (7, 4), (64, 32), (196, 98), (197, 99)])
def test_exactly_half_corrupted_per_image(n: int, k: int) -> None:
    assert num_corrupted(n) == k  # half up, for every odd n (Python's round would give 2 for 5 but 4 for 7)
    c = draw_corruption(50, n, _gen(1))
    assert c.corrupted.shape == c.mode.shape == c.source.shape == (50, n)
    assert (c.corrupted.dtype, c.mode.dtype, c.source.dtype) == (torch.bool, torch.int8, torch.long)
    assert (c.corrupted.sum(1) == k).all()
    assert ((c.mode != MODE_KEEP) <= c.corrupted).all()  # only corrupted patches are altered
    own = torch.arange(n).expand(50, n)
    assert torch.equal(c.source[c.mode != MODE_RANDOM], own[c.mode != MODE_RANDOM])
    assert (c.source[c.mode == MODE_RANDOM] != own[c.mode == MODE_RANDOM]).all()
    assert ((c.source >= 0) & (c.source < n)).all()


def test_draw_deterministic_under_generator_and_step_generator() -> None:
    assert _same(draw_corruption(8, 49, _gen(3)), draw_corruption(8, 49, _gen(3)))
    assert not _same(draw_corruption(8, 49, _gen(3)), draw_corruption(8, 49, _gen(4)))
    # Step t's draw re-created from (seed, t) alone; neighbouring steps and seeds differ.
    a = draw_corruption(8, 49, step_generator(7, 1000))
    assert _same(a, draw_corruption(8, 49, step_generator(7, 1000)))
    assert not _same(a, draw_corruption(8, 49, step_generator(7, 1001)))
    assert not _same(a, draw_corruption(8, 49, step_generator(8, 1000)))
    assert step_generator(7, 1000).initial_seed() == 7 * 1_000_003 + 1000
    assert step_generator(7, 1000).device.type == "cpu"
    # The global RNG is not touched: the draw does not depend on it and does not advance it.
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    b = draw_corruption(8, 49, step_generator(7, 1000))
    assert torch.equal(torch.random.get_rng_state(), before) and _same(a, b)


def test_draw_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        draw_corruption(4, 1, _gen(0))
    with pytest.raises(ValueError):
        draw_corruption(0, 16, _gen(0))
    with pytest.raises(ValueError):
        step_generator(-1, 0)


def test_draw_statistics() -> None:
    b, n = 2000, 64
    c = draw_corruption(b, n, _gen(11))
    # Each position is corrupted in about half of the images (positions are exchangeable).
    per_pos = c.corrupted.sum(0).double()
    sd = math.sqrt(b * 0.5 * 0.5)
    assert ((per_pos - b / 2).abs() < SIGMAS * sd).all(), per_pos
    assert stats.chisquare(per_pos.numpy()).pvalue > P_MIN
    # Mode fractions among corrupted patches: 0.8 / 0.1 / 0.1.
    modes = c.mode[c.corrupted]
    m = modes.numel()
    for value, p in ((MODE_MASK, P_MASK), (MODE_RANDOM, P_RANDOM), (MODE_KEEP, 1 - P_MASK - P_RANDOM)):
        frac = (modes == value).double().mean().item()
        assert abs(frac - p) < SIGMAS * math.sqrt(p * (1 - p) / m), (value, frac)
    # Mode-2 sources: never the patch itself, uniform over the other n - 1 (offset (source - pos) mod n).
    pos = torch.arange(n).expand(b, n)[c.mode == MODE_RANDOM]
    src = c.source[c.mode == MODE_RANDOM]
    assert (src != pos).all()
    offsets = torch.bincount((src - pos) % n, minlength=n)
    assert offsets[0] == 0
    assert stats.chisquare(offsets[1:].numpy()).pvalue > P_MIN


def test_sources_uniform_over_the_other_positions_for_each_position() -> None:
    n = 4
    c = draw_corruption(20000, n, _gen(12))
    pos = torch.arange(n).expand(20000, n)
    for i in range(n):
        src = c.source[(c.mode == MODE_RANDOM) & (pos == i)]
        counts = torch.bincount(src, minlength=n)
        assert counts[i] == 0
        others = counts[[j for j in range(n) if j != i]]
        assert others.sum() > 500
        assert stats.chisquare(others.numpy()).pvalue > P_MIN, (i, counts)


def test_corruption_to_device() -> None:
    c = draw_corruption(2, 8, _gen(0))
    d = c.to("cpu")
    assert isinstance(d, Corruption) and _same(c, d)
    if torch.cuda.is_available():
        g = c.to("cuda")
        assert g.mode.is_cuda and _same(c, g.to("cpu"))


# ---- applying it --------------------------------------------------------------------------------------------


def test_apply_corruption_rows_and_gradients() -> None:
    b, n, d = 6, 16, 5
    c = draw_corruption(b, n, _gen(5))
    assert (c.mode == MODE_RANDOM).any() and (c.mode == MODE_MASK).any()
    tokens = torch.randn(b, n, d, requires_grad=True)
    mask_token = nn.Parameter(torch.randn(d))
    out = apply_corruption(tokens, mask_token, c)
    assert out.shape == (b, n, d)
    orig = tokens.detach()
    for i in range(b):
        for j in range(n):
            mode = int(c.mode[i, j])
            if mode == MODE_MASK:
                assert torch.equal(out[i, j], mask_token.detach())
            elif mode == MODE_RANDOM:
                s = int(c.source[i, j])
                assert s != j and torch.equal(out[i, j], orig[i, s])  # the source's ORIGINAL token
            else:
                assert torch.equal(out[i, j], orig[i, j])
    out.sum().backward()
    n_mask = int((c.mode == MODE_MASK).sum())
    assert torch.equal(mask_token.grad, torch.full((d,), float(n_mask)))
    # Each token's gradient = how often it appears in the output (itself if not masked/swapped + as a source).
    uses = torch.zeros(b, n)
    keep = c.mode != MODE_MASK
    uses.scatter_add_(1, c.source, keep.float())
    assert torch.equal(tokens.grad, uses.unsqueeze(-1).expand(b, n, d))
    assert (tokens.grad[c.mode != MODE_KEEP] >= 0).all()


def test_sources_are_read_before_masking() -> None:
    # Patch 0 -> [mask], patch 1 <- patch 0: patch 1 gets patch 0's ORIGINAL embedding, not the [mask] one.
    c = Corruption(corrupted=torch.tensor([[True, True, False]]), mode=torch.tensor([[1, 2, 0]], dtype=torch.int8),
                   source=torch.tensor([[0, 0, 2]]))
    tokens = torch.arange(9.0).reshape(1, 3, 3)
    out = apply_corruption(tokens, torch.full((3,), -1.0), c)
    assert torch.equal(out, torch.tensor([[[-1.0, -1, -1], [0, 1, 2], [6, 7, 8]]]))


def test_apply_corruption_keeps_dtype_and_checks_shapes() -> None:
    c = draw_corruption(2, 4, _gen(0))
    mask_token = nn.Parameter(torch.zeros(3))
    out = apply_corruption(torch.randn(2, 4, 3, dtype=torch.bfloat16), mask_token, c)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert mask_token.grad is not None
    with pytest.raises(ValueError):
        apply_corruption(torch.randn(2, 4, 3), torch.zeros(4), c)
    with pytest.raises(ValueError):
        apply_corruption(torch.randn(2, 5, 3), torch.zeros(3), c)


# ---- targets ------------------------------------------------------------------------------------------------


def _uniform(rgb: tuple[float, float, float], size: int = 8) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


@pytest.mark.parametrize("rgb, index", [((1.0, -1.0, -1.0), 7 * 64), ((0.0, 0.0, 0.0), 4 * 64 + 4 * 8 + 4),
                                        ((-1.0, -1.0, -1.0), 0), ((1.0, 1.0, 1.0), 511), ((-1.0, -1.0, 1.0), 7),
                                        ((-1.0, 1.0, -1.0), 56)])
def test_mean_color_of_uniform_images(rgb: tuple[float, float, float], index: int) -> None:
    t = targets(_uniform(rgb), 4, "mean_color")
    assert t.dtype == torch.long and t.shape == (1, 4)
    assert (t == index).all()
    t4 = targets(_uniform(rgb), 4, "color_4x4")
    assert t4.shape == (1, 4, 16) and (t4 == index).all()


def test_mean_color_per_patch_row_major() -> None:
    # A 2x3 grid of 4x4 patches, patch (i, j) a uniform colour with 3-bit levels (i, j, i + j) -> known index.
    p, gh, gw = 4, 2, 3
    img = torch.empty(1, 3, gh * p, gw * p)
    expected = []
    for i in range(gh):
        for j in range(gw):
            levels = (i, j, i + j)
            for ch, q in enumerate(levels):  # the centre of bin q in [-1, 1]: c = (q + 0.5) / 8
                img[0, ch, i * p:(i + 1) * p, j * p:(j + 1) * p] = (q + 0.5) / 8 * 2 - 1
            expected.append(levels[0] * 64 + levels[1] * 8 + levels[2])
    assert targets(img, p, "mean_color").tolist() == [expected]
    # A mean, not a pixel: half of a patch red, half black -> red channel mean 0.5 -> level 4.
    half = _uniform((-1.0, -1.0, -1.0), 4)
    half[0, 0, :, :2] = 1.0
    assert targets(half, 4, "mean_color").item() == 4 * 64


def test_color_4x4_pattern_inside_a_patch() -> None:
    # One 8x8 patch whose 2x2 cells have grey levels 0..15 in row-major cell order (level q -> value in bin q//2).
    p = 8
    img = torch.empty(1, 3, p, p)
    expected = []
    for a in range(4):
        for b in range(4):
            cell = a * 4 + b
            r, g, bl = cell % 8, (cell // 2) % 8, 7 - cell % 8
            for ch, q in enumerate((r, g, bl)):
                img[0, ch, a * 2:(a + 1) * 2, b * 2:(b + 1) * 2] = (q + 0.5) / 8 * 2 - 1
            expected.append(r * 64 + g * 8 + bl)
    t = targets(img, p, "color_4x4")
    assert t.shape == (1, 1, 16) and t[0, 0].tolist() == expected
    # Two patches side by side: each patch gets its own 16 cells (not interleaved rows across patches).
    two = torch.cat([img, torch.flip(img, dims=[3])], dim=3)
    t2 = targets(two, p, "color_4x4")
    assert t2.shape == (1, 2, 16)
    assert t2[0, 0].tolist() == expected
    assert t2[0, 1].view(4, 4).tolist() == torch.tensor(expected).view(4, 4).flip(1).tolist()


def test_color_4x4_needs_multiple_of_4() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        targets(torch.zeros(1, 3, 12, 12), 6, "color_4x4")
    with pytest.raises(ValueError, match="multiple of 4"):
        output_size("color_4x4", 6)
    assert targets(torch.zeros(1, 3, 12, 12), 6, "mean_color").shape == (1, 4)  # fine for the other targets


def test_pixels_are_the_patch_slices_in_patch_embed_order() -> None:
    torch.manual_seed(0)
    p = 4
    img = torch.rand(2, 3, 8, 12) * 2 - 1
    t = targets(img, p, "pixels")
    assert t.shape == (2, 6, 3 * p * p) and t.dtype == img.dtype
    for i in range(2):
        for j in range(3):
            assert torch.equal(t[:, i * 3 + j], img[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(2, -1))
    # The same (C, ph, pw) flattening and row-major token order timm's PatchEmbed uses: its Conv2d kernel (with
    # no bias) applied to the image equals the kernel's flat weights dotted with our flat patches.
    pe = PatchEmbed(img_size=(8, 12), patch_size=p, in_chans=3, embed_dim=7, bias=False)
    tokens = pe(img)
    flat_w = pe.proj.weight.reshape(7, -1)
    assert torch.allclose(tokens, t @ flat_w.T, atol=1e-5)


def test_target_errors() -> None:
    img = torch.zeros(1, 3, 8, 8)
    for fn in (lambda: targets(img, 4, "rgb"), lambda: output_size("rgb", 4),
               lambda: loss(torch.zeros(1, 4, 512), torch.zeros(1, 4, dtype=torch.long),
                            torch.ones(1, 4, dtype=torch.bool), "rgb")):
        with pytest.raises(ValueError, match="mean_color, color_4x4, pixels"):
            fn()
    with pytest.raises(ValueError):
        targets(img, 3, "pixels")  # 3 does not tile 8
    with pytest.raises(TypeError):
        targets(img.to(torch.uint8), 4, "mean_color")


def test_output_sizes_match_targets() -> None:
    assert (output_size("mean_color", 16), output_size("color_4x4", 16), output_size("pixels", 16)) == \
        (512, 16 * 512, 768)
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    for kind in TARGETS:
        t = targets(img, 8, kind)
        assert t.shape[:2] == (2, 4)
        pred = torch.zeros(2, 4, output_size(kind, 8))
        assert torch.isfinite(loss(pred, t, torch.ones(2, 4, dtype=torch.bool), kind))


# ---- loss ---------------------------------------------------------------------------------------------------


def _corrupted() -> torch.Tensor:
    return torch.tensor([[True, False, True], [False, True, False]])


@pytest.mark.parametrize("kind", TARGETS)
def test_loss_zero_gradient_at_uncorrupted_patches(kind: str) -> None:
    torch.manual_seed(0)
    img = torch.rand(2, 3, 4, 12) * 2 - 1
    t = targets(img, 4, kind)
    pred = torch.randn(2, 3, output_size(kind, 4))
    pred[~_corrupted()] = float("nan")  # not even NaN leaks from an uncorrupted patch
    pred.requires_grad_(True)
    value = loss(pred, t, _corrupted(), kind)
    assert torch.isfinite(value)
    value.backward()
    assert (pred.grad[~_corrupted()] == 0).all()
    assert (pred.grad[_corrupted()].abs().sum(-1) > 0).all()


def test_loss_values_by_hand() -> None:
    torch.manual_seed(1)
    sel = _corrupted()
    rows = [(0, 0), (0, 2), (1, 1)]
    # mean_color: average over the 3 corrupted patches of -log softmax(pred)[target].
    pred = torch.randn(2, 3, 512)
    tgt = torch.randint(0, 512, (2, 3))
    by_hand = sum(-torch.log_softmax(pred[i, j], 0)[tgt[i, j]] for i, j in rows) / 3
    assert torch.allclose(loss(pred, tgt, sel, "mean_color"), by_hand, atol=1e-6)
    # color_4x4: average over 3 patches x 16 sub-pixels.
    pred = torch.randn(2, 3, 16 * 512)
    tgt = torch.randint(0, 512, (2, 3, 16))
    by_hand = sum(-torch.log_softmax(pred[i, j].view(16, 512), 1)[s, tgt[i, j, s]]
                  for i, j in rows for s in range(16)) / 48
    assert torch.allclose(loss(pred, tgt, sel, "color_4x4"), by_hand, atol=1e-6)
    # pixels: mean over every value of the corrupted patches.
    pred = torch.randn(2, 3, 48)
    tgt = torch.randn(2, 3, 48)
    by_hand = sum(((pred[i, j] - tgt[i, j]) ** 2).sum() for i, j in rows) / (3 * 48)
    assert torch.allclose(loss(pred, tgt, sel, "pixels"), by_hand, atol=1e-6)
    # A tiny exact case: 2 patches, 1 corrupted, 2-value pixels -> ((1-0)^2 + (3-1)^2) / 2 = 2.5.
    assert loss(torch.tensor([[[1.0, 3.0], [9.0, 9.0]]]), torch.tensor([[[0.0, 1.0], [0.0, 0.0]]]),
                torch.tensor([[True, False]]), "pixels").item() == 2.5


@pytest.mark.parametrize("kind", TARGETS)
def test_perfect_prediction_beats_uniform(kind: str) -> None:
    torch.manual_seed(2)
    img = torch.rand(2, 3, 8, 8) * 2 - 1
    t = targets(img, 4, kind)
    sel = draw_corruption(2, 4, _gen(0)).corrupted
    uniform = torch.zeros(2, 4, output_size(kind, 4))
    if kind == "pixels":
        perfect = t.clone()
        assert loss(perfect, t, sel, kind).item() == 0.0
    else:
        perfect = F.one_hot(t, 512).float().reshape(2, 4, -1) * 30.0
        assert loss(uniform, t, sel, kind).item() == pytest.approx(math.log(512), rel=1e-6)
    assert loss(perfect, t, sel, kind) < loss(uniform, t, sel, kind)


def test_loss_rejects_mismatches_and_empty_selection() -> None:
    with pytest.raises(ValueError):
        loss(torch.zeros(1, 4, 511), torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool),
             "mean_color")
    with pytest.raises(ValueError):
        loss(torch.zeros(1, 4, 512), torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.bool),
             "mean_color")
    with pytest.raises(ValueError):
        loss(torch.zeros(1, 4, 48), torch.zeros(1, 4, 47), torch.ones(1, 4, dtype=torch.bool), "pixels")


def test_constants() -> None:
    assert TARGETS == ("mean_color", "color_4x4", "pixels")
    assert (mpp.MASK_RATIO, P_MASK, P_RANDOM) == (0.5, 0.8, 0.1)
    assert mpp.NUM_COLORS == 512
