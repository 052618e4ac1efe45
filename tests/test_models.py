"""Models: parameter counts against timm, position-embedding variants, the common interface, FLOPs.

Big models are only ever built on the ``meta`` device (no memory, no weights); never pretrained=True.
"""

from __future__ import annotations


import pytest
import timm
import torch
from torch import nn

from vitbench.models import (
    PLACEMENTS,
    POS_EMBEDS,
    count_flops,
    count_params,
    create_model,
    list_models,
    model_family,
    validate_model_kwargs,
)
from vitbench.models.pos_embed import _resize_axis, resize_grid
from vitbench.models.vit import VIT_SIZES

TINY = [n for n in list_models() if "micro" in n or "nano" in n]
D, DEPTH, HEADS, MLP = VIT_SIZES["micro"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _pos_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith("pos_embed.") or ".rel_pos." in n)


def _micro(**kw) -> nn.Module:
    kw.setdefault("img_size", 16)
    return create_model("ViT-micro/4", num_classes=10, **kw).eval()


# ---- registry ------------------------------------------------------------------------------------------


def test_list_models_and_families() -> None:
    names = list_models()
    for n in ("ViT-B/16", "ViT-micro/4", "ViT-nano/4", "BiT-R50x1", "BiT-R200x3", "BiT-micro", "BiT-nano",
              "R50+B/16", "R50+B/32", "R50+L/16", "Rmicro+micro"):
        assert n in names
    assert model_family("ViT-B/16") == "vit" and model_family("ViT-L/7") == "vit"
    assert model_family("BiT-R152x2") == "bit" and model_family("R50+B/32") == "hybrid"
    assert {model_family(n) for n in names} == {"vit", "bit", "hybrid"}
    for n in names:  # every canonical name validates with its defaults
        validate_model_kwargs(n, {"num_classes": 10, "img_size": 224 if "micro" not in n and "nano" not in n else 16})


@pytest.mark.parametrize("name,kwargs,match", [
    ("ViT-X/16", {}, "unknown model"),
    ("vit-b/16", {}, "unknown model"),
    ("ViT-micro/4", {"pos_embed": "rope"}, "pos_embed"),
    ("ViT-micro/4", {"pos_embed": "relative", "pos_placement": "every_layer"}, "only works with"),
    ("ViT-micro/4", {"pos_embed": "none", "pos_placement": "every_layer_shared"}, "only works with"),
    ("ViT-micro/4", {"pos_placement": "everywhere"}, "pos_placement"),
    ("ViT-micro/4", {"pool": "max"}, "pool"),
    ("ViT-micro/4", {"pre_logits": "yes"}, "pre_logits"),
    ("ViT-micro/4", {"dropout": 1.5}, "dropout"),
    ("ViT-micro/4", {"colour": "red"}, "unknown option"),
    ("ViT-micro/4", {"img_size": 18}, "multiple of the patch size"),
    ("ViT-micro/4", {"num_classes": -1}, "num_classes"),
    ("BiT-micro", {"pos_embed": "relative"}, "ViT/hybrid models only"),
    ("BiT-micro", {"drop_path": -0.1}, "drop_path"),
    ("Rmicro+micro", {"pos_embed": "relative", "pos_placement": "every_layer"}, "only works with"),
])
def test_invalid_options_raise_one_line(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as e:
        validate_model_kwargs(name, kwargs)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(name if "unknown model" not in msg else "unknown model")
    kw = dict(kwargs)
    common = {"num_classes": kw.pop("num_classes", 10), "img_size": kw.pop("img_size", 16)}
    with pytest.raises(ValueError, match=match):  # create_model runs the same checks
        create_model(name, **common, **kw)


def test_no_weight_decay_names_position_tables() -> None:
    names = _micro(pos_embed="relative").no_weight_decay()
    assert "cls_token" in names and "blocks.0.attn.rel_pos.table" in names and len(names) == 1 + DEPTH
    assert _micro(pos_embed="learned_2d", pool="gap").no_weight_decay() == {"pos_embed.0.pos_y", "pos_embed.0.pos_x"}


def test_bit_tolerates_vit_options_at_defaults() -> None:
    validate_model_kwargs("BiT-micro", {"pos_embed": "learned_1d", "pool": "cls", "pre_logits": True})
    m = create_model("BiT-micro", num_classes=10, img_size=16, pos_embed="learned_1d", dropout=0.1)
    assert m.family == "bit"


# ---- parameter counts against timm ---------------------------------------------------------------------------


def _build(fn):
    """Build on ``meta`` (no memory); older timm (< ~1.0.20) cannot build ResNetV2/timm-ViT there: use CPU."""
    try:
        with torch.device("meta"):
            return fn()
    except (RuntimeError, NotImplementedError):
        return fn()


def test_vit_b16_matches_timm() -> None:
    ours = _build(lambda: create_model("ViT-B/16", num_classes=1000, img_size=224, pre_logits=False))
    ref = _build(lambda: timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=1000))
    with_pre = _build(lambda: create_model("ViT-B/16", num_classes=1000, img_size=224))
    assert count_params(ours) == count_params(ref) == 86_567_656
    assert count_params(with_pre) == 86_567_656 + 768 * 768 + 768  # the paper's pretraining head


@pytest.mark.parametrize("num_classes", [1000, 10])
def test_bit_r50x1_matches_timm(num_classes: int) -> None:
    ours = _build(lambda: create_model("BiT-R50x1", num_classes=num_classes, img_size=224))
    ref = _build(lambda: timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=num_classes))
    assert count_params(ours) == count_params(ref)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]


def test_r50_b16_matches_timm() -> None:
    # timm's hybrids have no pre-logits layer (its in21k R50+B/16 checkpoint drops it): compare without.
    ours = _build(lambda: create_model("R50+B/16", num_classes=1000, img_size=224, pre_logits=False))
    ref = _build(lambda: timm.create_model("vit_base_r50_s16_224", pretrained=False, num_classes=1000))
    assert count_params(ours) == count_params(ref)
    assert ours.grid_size == (14, 14) and ours.patch_embed.feature_dim == 1024


def test_r50_stride32_hybrids() -> None:
    try:
        with torch.device("meta"):
            ref = timm.create_model("vit_large_r50_s32_224", pretrained=False, num_classes=1000)
            ours = create_model("R50+L/32", num_classes=1000, img_size=224, pre_logits=False)
            b32 = create_model("R50+B/32", num_classes=1000, img_size=224)
    except (RuntimeError, NotImplementedError):
        pytest.skip("this timm cannot build on meta; R50+L/32 is too big to build on CPU in a unit test")
    assert count_params(ours) == count_params(ref)
    assert ours.grid_size == (7, 7) and b32.grid_size == (7, 7) and b32.patch_embed.feature_dim == 2048


# ---- position embeddings ----------------------------------------------------------------------------------


def test_position_parameter_counts() -> None:
    g = 8  # ViT-micro/4 at 32 px
    kw = dict(img_size=32)
    assert _pos_params(_micro(pos_embed="none", **kw)) == 0
    assert _pos_params(_micro(pos_embed="sincos_2d", **kw)) == 0  # fixed buffer, not a parameter
    assert _pos_params(_micro(pos_embed="learned_1d", **kw)) == (g * g + 1) * D  # class token has an entry
    assert _pos_params(_micro(pos_embed="learned_1d", pool="gap", **kw)) == g * g * D
    assert _pos_params(_micro(pos_embed="learned_2d", **kw)) == 2 * g * D // 2
    assert _pos_params(_micro(pos_embed="relative", **kw)) == DEPTH * HEADS * (2 * g - 1) ** 2
    for pe in ("learned_1d", "learned_2d"):
        stem = _pos_params(_micro(pos_embed=pe, **kw))
        assert _pos_params(_micro(pos_embed=pe, pos_placement="every_layer", **kw)) == DEPTH * stem
        assert _pos_params(_micro(pos_embed=pe, pos_placement="every_layer_shared", **kw)) == stem
    # no parameter is left out of the accounting
    base = count_params(_micro(pos_embed="none", **kw))
    assert count_params(_micro(pos_embed="relative", **kw)) == base + DEPTH * HEADS * (2 * g - 1) ** 2


def _permute_patches(x: torch.Tensor, patch: int, perm: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    t = x.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, patch, patch)
    t = t[:, perm].reshape(b, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return t.reshape(b, c, h, w)


@pytest.mark.parametrize("pos_embed", POS_EMBEDS)
def test_patch_permutation(pos_embed: str) -> None:
    model = _micro(pos_embed=pos_embed, pool="gap")
    with torch.no_grad():  # init is 0.02-scale; make the position signal as strong as a trained model's
        for n, p in model.named_parameters():
            if n.startswith("pos_embed.") or ".rel_pos." in n:
                p.normal_(std=1.0)
    x = torch.randn(2, 3, 16, 16)
    perm = torch.randperm(16)
    xp = _permute_patches(x, 4, perm)
    assert not torch.allclose(x, xp)
    with torch.no_grad():
        f, fp = model.forward_features(x), model.forward_features(xp)
    if pos_embed == "none":
        torch.testing.assert_close(f, fp, atol=1e-5, rtol=1e-5)  # a bag of patches
    else:
        assert (f - fp).abs().max() > 1e-3  # 100x the tolerance of the equality above


VALID_COMBOS = [(pe, pl) for pe in POS_EMBEDS for pl in PLACEMENTS if pl == "stem" or pe not in ("none", "relative")]


@pytest.mark.parametrize("pos_embed,placement", VALID_COMBOS)
@pytest.mark.parametrize("pool", ["cls", "gap"])
def test_all_variants_run_and_resize(pos_embed: str, placement: str, pool: str) -> None:
    model = _micro(pos_embed=pos_embed, pos_placement=placement, pool=pool, img_size=8)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    model.set_img_size(16)
    assert model.img_size == 16 and model.grid_size == (4, 4)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_resize_same_size_is_identity() -> None:
    model = _micro(pos_embed="learned_1d")
    pos = model.pos_embed[0].pos.detach().clone()
    model.set_img_size(16)
    torch.testing.assert_close(model.pos_embed[0].pos, pos, atol=0, rtol=0)
    # the interpolation itself (the paper's bilinear resize of the grid) and the per-axis 2D one
    grid = pos[0, 1:].T.reshape(D, 4, 4)
    torch.testing.assert_close(resize_grid(grid, (4, 4)), grid, atol=1e-6, rtol=0)
    table = torch.randn(1, 4, 16)
    torch.testing.assert_close(_resize_axis(table, 4), table, atol=1e-6, rtol=0)


def test_resize_keeps_class_entry_and_shapes() -> None:
    m1 = _micro(pos_embed="learned_1d")
    cls_pos = m1.pos_embed[0].pos[:, :1].detach().clone()
    m1.set_img_size(32)
    assert m1.pos_embed[0].pos.shape == (1, 65, D)
    torch.testing.assert_close(m1.pos_embed[0].pos[:, :1], cls_pos)
    m2 = _micro(pos_embed="learned_2d")
    m2.set_img_size(32)
    assert m2.pos_embed[0].pos_y.shape == (1, 8, D // 2) and m2.pos_embed[0].pos_x.shape == (1, 8, D // 2)
    m3 = _micro(pos_embed="relative")
    centre = m3.blocks[0].attn.rel_pos.table[:, 3, 3].detach().clone()  # offset (0, 0)
    m3.set_img_size(32)
    rel = m3.blocks[0].attn.rel_pos
    assert rel.table.shape == (HEADS, 15, 15) and rel().shape == (1, HEADS, 65, 65)
    torch.testing.assert_close(rel.table[:, 7, 7], centre)  # align_corners keeps offset 0 in place


@pytest.mark.parametrize("name", ["ViT-micro/4", "Rmicro+micro"])
def test_wrong_input_size_names_set_img_size(name: str) -> None:
    model = create_model(name, num_classes=10, img_size=16)
    with pytest.raises(ValueError, match="set_img_size"):
        model(torch.randn(1, 3, 32, 32))


def test_relative_bias_fused_matches_explicit() -> None:
    model = _micro(pos_embed="relative")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        fused = model(x)
        for blk in model.blocks:
            blk.attn.fused = False
        explicit = model(x)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


# ---- the common interface on every CPU-sized model -----------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
def test_tiny_model_interface(name: str) -> None:
    model = create_model(name, num_classes=7, img_size=16).eval()
    assert model.model_name == name and model.family == model_family(name)
    assert model.num_classes == 7 and model.img_size == 16
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert model(x).shape == (3, 7)
        assert model.forward_features(x).shape == (3, model.num_features)
    model.set_img_size(32)
    assert model.img_size == 32
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    model.reset_classifier(5)
    assert model.num_classes == 5
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5) and torch.count_nonzero(out) == 0
    if model.family != "bit":
        assert isinstance(model.pre_logits, nn.Identity)
    assert count_params(model) > 0


@pytest.mark.parametrize("name", TINY)
def test_tiny_model_trains(name: str) -> None:
    model = create_model(name, num_classes=4, img_size=16, dropout=0.1, drop_path=0.1).train()
    x = torch.randn(4, 3, 16, 16).to(memory_format=torch.channels_last)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", TINY)
def test_tiny_model_flops(name: str) -> None:
    model = create_model(name, num_classes=10, img_size=16)
    f16, f32 = count_flops(model, 16), count_flops(model, 32)
    assert 0 < f16 < f32
    assert model.img_size == 16  # counting at 32 px used a resized copy
    assert f32 == count_flops(create_model(name, num_classes=10, img_size=32), 32)


def _vit_flops(dim: int, depth: int, mlp: int, patch: int, img: int, classes: int, chans: int = 3,
               pre_logits: bool = True) -> int:
    n_patch = (img // patch) ** 2
    n = n_patch + 1
    per_block = 2 * n * (4 * dim * dim + 2 * dim * mlp) + 2 * 2 * n * n * dim  # linears + QK^T and AV
    return 2 * n_patch * patch * patch * chans * dim + depth * per_block + 2 * dim * classes + \
        (2 * dim * dim if pre_logits else 0)


@pytest.mark.parametrize("name,img", [("ViT-micro/4", 16), ("ViT-micro/4", 32), ("ViT-nano/4", 32),
                                      ("ViT-micro/2", 16), ("ViT-B/16", 224)])
def test_vit_flops_match_analytic(name: str, img: int) -> None:
    size, patch = name[4:].split("/")
    dim, depth, _, mlp = VIT_SIZES[size]
    with torch.device("meta" if size == "B" else "cpu"):
        model = create_model(name, num_classes=10, img_size=img)
    expected = _vit_flops(dim, depth, mlp, int(patch), img, 10)
    assert count_flops(model, img) == expected  # every counted op is in the formula: exact


@pytest.mark.parametrize("name", ["ViT-micro/4", "Rmicro+micro"])
@pytest.mark.parametrize("pos_embed", ["learned_1d", "relative"])
def test_forward_attention(name: str, pos_embed: str) -> None:
    model = create_model(name, num_classes=10, img_size=16, pos_embed=pos_embed).eval()
    with torch.no_grad():
        maps = model.forward_attention(torch.randn(2, 3, 16, 16))
    n = model.grid_size[0] * model.grid_size[1] + 1
    assert len(maps) == len(model.blocks)
    for a in maps:
        assert a.shape == (2, model.blocks[0].attn.num_heads, n, n)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, a.shape[1], n))


def test_bit_features_are_pooled_map() -> None:
    model = create_model("BiT-micro", num_classes=10, img_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fmap = timm.models.resnetv2.ResNetV2.forward_features(model, x)
        torch.testing.assert_close(model.forward_features(x), fmap.mean((2, 3)))
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, model(x), atol=1e-5, rtol=1e-5)


def test_micro_sizes_are_comparable() -> None:
    # CPU experiments compare families at similar size: keep the micro models within 25% of each other.
    counts = [count_params(create_model(n, num_classes=10, img_size=16)) for n in
              ("ViT-micro/4", "BiT-micro", "Rmicro+micro")]
    assert max(counts) < 1.25 * min(counts), counts
    assert count_params(create_model("BiT-nano", num_classes=10, img_size=16)) == 10_682
