"""The flax .npz exporter used by offline tests of published-checkpoint import (issue 16), checked against timm's loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import timm.models.resnetv2 as timm_resnetv2
import timm.models.vision_transformer as timm_vit_mod
from npz_export import export_npz, timm_bit, timm_hybrid, timm_vit
from timm.models.vision_transformer import VisionTransformer

from vitbench.models import create_model


class _Recorder:
    """Wraps the NpzFile timm's loader opens and records every key it reads (``in`` tests are not reads)."""

    def __init__(self, npz: np.lib.npyio.NpzFile) -> None:
        self._npz, self.files, self.read = npz, npz.files, set()

    def __contains__(self, key: str) -> bool:
        return key in self.files

    def __getitem__(self, key: str) -> np.ndarray:
        self.read.add(key)
        return self._npz[key]

    def close(self) -> None:
        self._npz.close()


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[_Recorder]:
    seen: list[_Recorder] = []
    for mod in (timm_vit_mod, timm_resnetv2):
        orig = mod._load_npz_checkpoint

        def wrapped(*a, _orig=orig, **kw):
            seen.append(_Recorder(_orig(*a, **kw)))
            return seen[-1]
        monkeypatch.setattr(mod, "_load_npz_checkpoint", wrapped)
    return seen


# name: (builder(seed), layout, prefix, image size, expected key count, key prefix the loader detects)
CASES = {
    "vit": (lambda s: timm_vit(224, 16, 7, seed=s), "vit", "", 224, 40, ""),
    "vit-opt-target": (lambda s: timm_vit(224, 16, 7, seed=s), "vit", "opt/target/", 224, 40, "opt/target/"),
    "vit-gap": (lambda s: timm_vit(224, 16, 7, pool="gap", seed=s), "vit", "", 224, 39, ""),
    "big_vision-tok": (lambda s: timm_vit(224, 16, 7, layout="big_vision", seed=s), "big_vision", "", 224, 40,
                       "params/"),
    "big_vision-gap": (lambda s: timm_vit(224, 16, 7, layout="big_vision", pool="gap", seed=s), "big_vision", "",
                       224, 39, "params/"),
    "big_vision_scan-tok": (lambda s: timm_vit(224, 16, 7, layout="big_vision", seed=s), "big_vision_scan", "", 224,
                            24, "params/"),
    "hybrid": (lambda s: timm_hybrid(32, 7, seed=s), "vit", "", 32, 55, ""),
    "bit": (lambda s: timm_bit(7, seed=s), "bit", "", 32, 25, "resnet/"),
}


def _load(model: torch.nn.Module, path: Path) -> None:
    if isinstance(model, VisionTransformer):
        timm_vit_mod._load_weights(model, str(path))  # prefix auto-detected, as for a downloaded checkpoint
    else:
        timm_resnetv2._load_weights(model, str(path))


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_through_timm_loader(case: str, tmp_path: Path, recorded: list[_Recorder]) -> None:
    build, layout, prefix, img, n_keys, key_prefix = CASES[case]
    original, fresh = build(0), build(1)
    x = torch.randn(2, 3, img, img, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = original(x)
        assert not torch.allclose(fresh(x), want, atol=1e-3)  # the load below has something to do
        f = export_npz(original, tmp_path / "w.npz", layout, prefix=prefix)
        _load(fresh, f)
        torch.testing.assert_close(fresh(x), want, rtol=0, atol=1e-5)
    with np.load(f) as npz:
        written = {k: npz[k] for k in npz.files}
    assert len(written) == n_keys
    assert all(k.startswith(key_prefix) for k in written)
    assert all(v.dtype == np.float32 for v in written.values())
    (rec,) = recorded
    assert rec.read == set(written)  # every key written is read by timm, nothing else is needed


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with np.load(path) as npz:
        return {k: npz[k].shape for k in npz.files}


def test_vit_flax_shapes(tmp_path: Path) -> None:
    """The round trip alone cannot tell (D, heads, hd) kernels from flattened ones: pin the flax shapes."""
    s = _shapes(export_npz(timm_vit(224, 16, 7), tmp_path / "v.npz", "vit"))
    b = "Transformer/encoderblock_1/"
    assert s["embedding/kernel"] == (16, 16, 3, 32) and s["embedding/bias"] == (32,)
    assert s["cls"] == (1, 1, 32) and s["Transformer/posembed_input/pos_embedding"] == (1, 197, 32)
    for n in ("query", "key", "value"):
        assert s[f"{b}MultiHeadDotProductAttention_1/{n}/kernel"] == (32, 2, 16)
        assert s[f"{b}MultiHeadDotProductAttention_1/{n}/bias"] == (2, 16)
    assert s[f"{b}MultiHeadDotProductAttention_1/out/kernel"] == (2, 16, 32)
    assert s[f"{b}MultiHeadDotProductAttention_1/out/bias"] == (32,)
    assert s[f"{b}LayerNorm_0/scale"] == s[f"{b}LayerNorm_2/bias"] == (32,)
    assert s[f"{b}MlpBlock_3/Dense_0/kernel"] == (32, 64) and s[f"{b}MlpBlock_3/Dense_1/kernel"] == (64, 32)
    assert s["Transformer/encoder_norm/scale"] == (32,)
    assert s["head/kernel"] == (32, 7) and s["head/bias"] == (7,)


def test_big_vision_shapes(tmp_path: Path) -> None:
    s = _shapes(export_npz(timm_vit(224, 16, 7, layout="big_vision"), tmp_path / "b.npz", "big_vision"))
    assert s["params/pos_embedding"] == (1, 196, 32) and s["params/cls"] == (1, 1, 32)  # no [class] position
    assert s["params/Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"] == (32, 2, 16)
    assert s["params/Transformer/encoderblock_0/LayerNorm_1/scale"] == (32,)
    assert s["params/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"] == (32, 64)
    gap = _shapes(export_npz(timm_vit(224, 16, 7, layout="big_vision", pool="gap"), tmp_path / "g.npz", "big_vision"))
    assert "params/cls" not in gap and gap["params/pos_embedding"] == (1, 196, 32)
    scan = _shapes(export_npz(timm_vit(224, 16, 7, layout="big_vision"), tmp_path / "s.npz", "big_vision_scan"))
    blk = "params/Transformer/encoderblock/"
    assert scan[f"{blk}MultiHeadDotProductAttention_0/query/kernel"] == (2, 32, 2, 16)  # leading layer axis
    assert scan[f"{blk}MultiHeadDotProductAttention_0/out/kernel"] == (2, 2, 16, 32)
    assert scan[f"{blk}LayerNorm_0/scale"] == (2, 32) and scan[f"{blk}MlpBlock_0/Dense_1/kernel"] == (2, 64, 32)


def test_hybrid_and_bit_shapes(tmp_path: Path) -> None:
    h = _shapes(export_npz(timm_hybrid(32, 7), tmp_path / "h.npz", "vit"))
    assert h["conv_root/kernel"] == (7, 7, 3, 32) and h["gn_root/scale"] == (32,)
    assert h["block1/unit1/conv1/kernel"] == (1, 1, 32, 16) and h["block1/unit1/conv2/kernel"] == (3, 3, 16, 16)
    assert h["block1/unit1/conv_proj/kernel"] == (1, 1, 32, 64) and h["block1/unit1/gn_proj/bias"] == (64,)
    assert h["embedding/kernel"] == (1, 1, 64, 32)
    assert h["Transformer/posembed_input/pos_embedding"] == (1, 65, 32)  # 8x8 feature map + [class]
    b = _shapes(export_npz(timm_bit(7), tmp_path / "b.npz", "bit"))
    assert b["resnet/root_block/standardized_conv2d/kernel"] == (7, 7, 3, 16)
    assert b["resnet/block2/unit01/a/standardized_conv2d/kernel"] == (1, 1, 32, 16)
    assert b["resnet/block2/unit01/b/standardized_conv2d/kernel"] == (3, 3, 16, 16)
    assert b["resnet/block2/unit01/a/proj/standardized_conv2d/kernel"] == (1, 1, 32, 64)
    assert b["resnet/block1/unit01/a/group_norm/gamma"] == (16,)  # pre-activation: norm of the block input
    assert b["resnet/group_norm/gamma"] == (64,)
    assert b["resnet/head/conv2d/kernel"] == (1, 1, 64, 7) and b["resnet/head/conv2d/bias"] == (7,)


def test_extra_keys_are_prefixed_and_ignored_by_timm(tmp_path: Path) -> None:
    original, fresh = timm_vit(224, 16, 7), timm_vit(224, 16, 7, seed=1)
    pre = np.arange(32 * 32, dtype=np.float64).reshape(32, 32)
    f = export_npz(original, tmp_path / "e.npz", "vit", prefix="opt/target/",
                   extra={"pre_logits/kernel": pre, "pre_logits/bias": np.zeros(32)})
    with np.load(f) as npz:
        assert npz["opt/target/pre_logits/kernel"].dtype == np.float32
        np.testing.assert_array_equal(npz["opt/target/pre_logits/kernel"], pre)
        assert "opt/target/pre_logits/bias" in npz.files and len(npz.files) == 42
    x = torch.randn(1, 3, 224, 224)
    _load(fresh, f)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), original(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="collides"):
        export_npz(original, tmp_path / "c.npz", "vit", extra={"head/bias": np.zeros(7)})


def test_helpers_match_vitbench_architectures() -> None:
    """Same tensors as vitbench's ViT-nano/16, Rmicro+nano (without pre-logits) and BiT-nano."""
    def shapes(m: torch.nn.Module) -> list[tuple[int, ...]]:
        return sorted(tuple(v.shape) for v in m.state_dict().values())
    assert shapes(timm_vit(224, 16, 7)) == shapes(
        create_model("ViT-nano/16", num_classes=7, img_size=224, pre_logits=False))
    assert shapes(timm_vit(224, 16, 7, pool="gap")) == shapes(
        create_model("ViT-nano/16", num_classes=7, img_size=224, pre_logits=False, pool="gap"))
    assert shapes(timm_hybrid(32, 7)) == shapes(create_model("Rmicro+nano", num_classes=7, img_size=32,
                                                             pre_logits=False))
    ours, bit = timm_bit(7).state_dict(), create_model("BiT-nano", num_classes=7, img_size=32).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in bit.items()}


def test_unsupported_models_and_layouts_raise(tmp_path: Path) -> None:
    f = tmp_path / "x.npz"
    vit = timm_vit(224, 16, 7)
    with pytest.raises(ValueError, match="unknown layout"):
        export_npz(vit, f, "flax")
    with pytest.raises(ValueError, match="ResNetV2"):
        export_npz(vit, f, "bit")
    with pytest.raises(ValueError, match="VisionTransformer"):
        export_npz(timm_bit(7), f, "vit")
    with pytest.raises(ValueError, match="VisionTransformer"):
        export_npz(create_model("ViT-nano/16", num_classes=7, img_size=224), f, "vit")  # vitbench's own ViT
    with pytest.raises(ValueError, match="no_embed_class=True"):
        export_npz(vit, f, "big_vision")  # its position table has a [class] entry
    with pytest.raises(ValueError, match="no_embed_class=False"):
        export_npz(timm_vit(224, 16, 7, layout="big_vision"), f, "vit")
    with pytest.raises(ValueError):  # fc_norm after pooling: no key in the layouts
        export_npz(VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                                     class_token=False, global_pool="avg"), f, "big_vision")
    with pytest.raises(ValueError, match="cannot hold"):  # layer scale
        export_npz(VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                                     init_values=0.1), f, "vit")
    with pytest.raises(ValueError, match="bias"):
        export_npz(VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                                     qkv_bias=False), f, "vit")
    assert not f.exists()
