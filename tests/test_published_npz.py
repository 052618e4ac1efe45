"""The paper's .npz layouts into vitbench models: timm's logits (from timm's own loaders) at the file's resolution, and
at 384 timm's model with the table resized as the paper's code does (scipy zoom, order 1: timm's loader interpolates
differently), for vision_transformer / AugReg, big_vision (scanned too), hybrids and BiT; one-line refusals.
Nothing is downloaded: tests/npz_export.py writes random timm models in each layout."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import timm.models.resnetv2 as timm_resnetv2
import timm.models.vision_transformer as timm_vit_mod
from npz_export import export_npz, paper_resize, timm_bit, timm_hybrid, timm_vit

from vitbench.errors import UserError
from vitbench.models import create_model

X224, X384 = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)), \
    torch.rand(2, 3, 384, 384, generator=torch.Generator().manual_seed(1))


def _timm_loaded(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """``model`` with the file's weights as timm's own loader puts them (the reference)."""
    with torch.no_grad():
        loader = timm_resnetv2._load_weights if isinstance(model, timm_resnetv2.ResNetV2) else timm_vit_mod._load_weights
        loader(model, str(path))
    return model.eval()


def _close(ours: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("layout,pool,prefix", [
    ("vit", "cls", ""), ("vit", "cls", "opt/target/"), ("vit", "gap", ""),
    ("big_vision", "cls", ""), ("big_vision", "gap", ""), ("big_vision_scan", "cls", ""),
])
def test_vit_layouts_give_timms_logits_at_224_and_384(tmp_path: Path, layout: str, pool: str, prefix: str) -> None:
    src = timm_vit(224, 16, 10, layout=layout, pool=pool, seed=1)
    f = export_npz(src, tmp_path / "ViT.npz", layout, prefix=prefix)
    for img, x in ((224, X224), (384, X384)):
        ref = _timm_loaded(timm_vit(img, 16, 10, layout=layout, pool=pool, seed=2), f)
        if img != 224:  # the paper's resize (vit_jax zoom, order 1), not timm's align_corners=False interpolation
            prefix_tokens = 0 if pool == "gap" or layout != "vit" else 1  # big_vision's table has no [class] entry
            with torch.no_grad():
                ref.pos_embed.copy_(paper_resize(src.pos_embed.detach(), prefix_tokens, img // 16))
        ours = create_model("ViT-nano/16", num_classes=10, img_size=img, pool=pool, pre_logits=False, init=f)
        _close(ours, ref, x)


def test_hybrid_and_bit_give_timms_logits(tmp_path: Path) -> None:
    f = export_npz(timm_hybrid(32, 10, seed=1), tmp_path / "R50+ViT.npz", "vit")  # (src below: the same model)
    src = timm_hybrid(32, 10, seed=1)
    for img in (32, 48):
        x = torch.rand(2, 3, img, img, generator=torch.Generator().manual_seed(img))
        ref = _timm_loaded(timm_hybrid(img, 10, seed=2), f)
        if img != 32:
            with torch.no_grad():
                ref.pos_embed.copy_(paper_resize(src.pos_embed.detach(), 1, img // 4))
        _close(create_model("Rmicro+nano", num_classes=10, img_size=img, pre_logits=False, init=f), ref, x)
    g = export_npz(timm_bit(10, seed=1), tmp_path / "BiT-M.npz", "bit")
    ref = _timm_loaded(timm_bit(10, seed=2), g)
    for img in (32, 64):
        x = torch.rand(2, 3, img, img, generator=torch.Generator().manual_seed(img))
        _close(create_model("BiT-nano", num_classes=10, img_size=img, init=g), ref, x)


def test_the_pre_logits_layer_is_kept_and_another_class_count_gets_the_papers_zero_head(tmp_path: Path) -> None:
    ref = timm_vit(224, 16, 10, seed=1)
    gen = torch.Generator().manual_seed(3)
    kernel, bias = torch.randn(32, 32, generator=gen) * 0.2, torch.randn(32, generator=gen) * 0.2
    f = export_npz(ref, tmp_path / "ViT-B_16.npz", "vit",
                   extra={"pre_logits/kernel": kernel.numpy(), "pre_logits/bias": bias.numpy()})
    ours = create_model("ViT-nano/16", num_classes=10, img_size=224, init=f).eval()  # pre_logits: true
    with torch.no_grad():
        rep = torch.tanh(ref.forward_head(ref.forward_features(X224), pre_logits=True) @ kernel + bias)
        torch.testing.assert_close(ours.forward_features(X224), rep, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours(X224), ref.head(rep), rtol=0, atol=1e-4)
    other = create_model("ViT-nano/16", num_classes=7, img_size=224, init=f)
    assert not other.head.weight.any() and not other.head.bias.any()
    torch.testing.assert_close(other.pre_logits.fc.weight.detach(), kernel.T)


def _one_line(exc: pytest.ExceptionInfo[UserError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_options_the_file_contradicts_are_one_line_naming_the_key(tmp_path: Path) -> None:
    cls = export_npz(timm_vit(224, 16, 10, seed=1), tmp_path / "cls.npz", "vit")
    gap = export_npz(timm_vit(224, 16, 10, pool="gap", seed=1), tmp_path / "gap.npz", "vit")
    cases = [
        (gap, dict(pre_logits=False), "model.pool: the checkpoint has no [class] token (it pools by GAP); set model.pool: gap"),
        (cls, dict(pre_logits=False, pool="gap"), "model.pool: the checkpoint has a [class] token; set model.pool: cls"),
        (cls, dict(pre_logits=False, pos_embed="learned_2d"),
         "model.pos_embed: the checkpoint has a learned 1D position table; set model.pos_embed: learned_1d and "
         "model.pos_placement: stem"),
        (cls, {}, "model.pre_logits: the checkpoint has no pre-logits layer; set model.pre_logits: false"),
    ]
    for f, opts, want in cases:
        with pytest.raises(UserError) as exc:
            create_model("ViT-nano/16", num_classes=10, img_size=224, init=f, **opts)
        assert _one_line(exc) == f"{f}: {want}"


def test_a_missing_array_a_foreign_file_and_a_map_head_are_one_line(tmp_path: Path) -> None:
    f = export_npz(timm_vit(224, 16, 10, seed=1), tmp_path / "ViT.npz", "vit")
    arrays = dict(np.load(f))
    del arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"]
    np.savez(tmp_path / "partial.npz", **arrays)
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3, np.float32))
    np.savez(tmp_path / "map.npz", **dict(np.load(f)), **{"MAPHead_0/probe": np.zeros((1, 1, 32), np.float32)})
    wants = {
        "partial.npz": "model.init: the checkpoint has no array 'Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias' "
                       "(vision_transformer layout)",
        "foreign.npz": "model.init: not a checkpoint vitbench reads (first key 'weights'); allowed: timm state dicts "
                       "(.safetensors, .pth, .bin) and the vision_transformer / AugReg, big_vision and BiT .npz layouts",
        "map.npz": "model.pool: the checkpoint pools with a MAP head (attention pooling); vitbench's models pool by "
                   "[class] token or GAP",
    }
    for name, want in wants.items():
        with pytest.raises(UserError) as exc:
            create_model("ViT-nano/16", num_classes=10, img_size=224, pre_logits=False, init=tmp_path / name)
        assert _one_line(exc) == f"{tmp_path / name}: {want}"


class _Boom:
    def __reduce__(self):  # noqa: ANN204 - a pickle that would create a file if it were ever run
        return (Path.touch, (Path("/tmp/vitbench-npz-pickle-ran"),))


def test_truncated_and_pickle_carrying_files_run_nothing_and_are_one_line(tmp_path: Path) -> None:
    f = export_npz(timm_vit(224, 16, 10, seed=1), tmp_path / "ViT.npz", "vit")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    evil = tmp_path / "evil.npz"
    np.savez(evil, **{"embedding/kernel": np.array([_Boom()], dtype=object)})
    marker = Path("/tmp/vitbench-npz-pickle-ran")
    marker.unlink(missing_ok=True)
    pth = tmp_path / "evil.pth"
    pth.write_bytes(pickle.dumps({"x": _Boom()}))
    for bad in (cut, evil, pth):
        with pytest.raises(UserError) as exc:
            create_model("ViT-nano/16", num_classes=10, img_size=224, pre_logits=False, init=bad)
        assert _one_line(exc).startswith(f"{bad}: ")
    assert not marker.exists()
