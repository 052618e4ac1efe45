"""Initialising from timm-layout checkpoints written from random timm models (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from npz_export import paper_resize
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from vitbench.errors import UserError
from vitbench.models import create_model
from vitbench.models.published import file_sha256, init_from_file


def _timm_nano(num_classes: int = 10) -> VisionTransformer:
    torch.manual_seed(0)  # the dims of vitbench's ViT-nano/4
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2,
                             num_classes=num_classes).eval()


def _save(tmp_path: Path, model: torch.nn.Module, suffix: str) -> Path:
    f = tmp_path / f"timm{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(f)) if suffix == ".safetensors" else torch.save(state, f)
    return f


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_timm_checkpoint_gives_timms_outputs(tmp_path: Path, suffix: str) -> None:
    ref = _timm_nano()
    ours = create_model("ViT-nano/4", num_classes=10, img_size=16, pre_logits=False).eval()
    assert init_from_file(ours, _save(tmp_path, ref, suffix)) == []
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)


def test_other_resolution_resamples_the_table_and_other_classes_get_a_zero_head(tmp_path: Path) -> None:
    ref = _timm_nano(num_classes=7)
    ours = create_model("ViT-nano/4", num_classes=10, img_size=32, pre_logits=False)
    notes = init_from_file(ours, _save(tmp_path, ref, ".safetensors"))
    assert notes == ["position table resized (1, 17, 32) -> (1, 65, 32) (bilinear on the grid, as vit_jax)",
                     "head zero-initialised (the checkpoint's head does not fit the classes)"]
    want = paper_resize(ref.pos_embed.detach(), 1, 8)
    torch.testing.assert_close(ours.state_dict()["pos_embed.0.pos"], want, rtol=0, atol=1e-6)  # scipy vs torch
    assert not ours.head.weight.any() and not ours.head.bias.any()
    torch.testing.assert_close(ours.state_dict()["blocks.1.mlp.fc2.weight"], ref.blocks[1].mlp.fc2.weight.detach())


def test_contradictions_and_missing_tensors_are_one_line(tmp_path: Path) -> None:
    f = _save(tmp_path, _timm_nano(), ".safetensors")
    with pytest.raises(UserError) as exc:
        init_from_file(create_model("ViT-nano/4", num_classes=10, img_size=16), f)  # pre_logits: true
    assert str(exc.value) == f"{f}: model.pre_logits: the checkpoint has no pre-logits layer; set model.pre_logits: false"
    state = _timm_nano().state_dict()
    del state["blocks.0.attn.qkv.weight"]
    g = tmp_path / "partial.pth"
    torch.save(state, g)
    with pytest.raises(UserError) as exc:
        init_from_file(create_model("ViT-nano/4", num_classes=10, img_size=16, pre_logits=False), g)
    assert str(exc.value) == f"{g}: model.init: the checkpoint has no tensor 'blocks.0.attn.qkv.weight'"


def test_sha256_is_the_contents_and_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    import hashlib
    import os

    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert file_sha256(f) == hashlib.sha256(b"abc").hexdigest()
    st = f.stat()
    f.write_bytes(b"abd")  # same size; the mtime is put back, so the cached digest stands
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_sha256(f) == hashlib.sha256(b"abc").hexdigest()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert file_sha256(f) == hashlib.sha256(b"abd").hexdigest()
