"""`vitbench bench`: it runs and writes a well-formed record; the CUDA-only logic is checked on CPU."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from vitbench.bench import child as child_proc, machine, planning, report
from vitbench.bench.cli import main, model_setup, register
from vitbench.bench.reference import build_reference_model, reference_transforms
from vitbench.models import count_params, create_model


def test_find_max_batch_doubles_until_it_does_not_fit():
    calls = []

    def fits(b):
        calls.append(b)
        return b <= 300

    assert machine.find_max_batch(fits, start=8) == 256
    assert calls == [8, 16, 32, 64, 128, 256, 512]
    assert machine.find_max_batch(lambda b: True, start=16, limit=100) == 64
    assert machine.find_max_batch(lambda b: False, start=16) == 0
    with pytest.raises(ValueError, match="start"):
        machine.find_max_batch(lambda b: True, start=0)


def test_mfu_arithmetic():
    # 1 MFLOP forward/image, 1000 img/s -> 3 GFLOP/s of training; on a 6 GFLOP/s device: 50 %
    assert machine.mfu(1e6, 1000.0, 6e9) == pytest.approx(0.5)


def test_peak_matmul_flops_on_cpu():
    p = machine.peak_matmul_flops(torch.device("cpu"), n=128, repeats=2, trials=2)
    assert p["dtype"] == "float32" and p["n"] == 128 and p["flops_per_s"] > 1e6
    assert p["flops_per_s"] == pytest.approx(2 * 128 ** 3 * 2 / p["best_seconds"])


def test_peak_memory_on_cpu():
    with machine.PeakMemory(torch.device("cpu")) as pm:
        x = torch.ones(4 << 20)  # 16 MiB, touched
        del x
    assert isinstance(pm.bytes, int) and pm.kind.startswith("cpu")
    if "VmHWM" in pm.kind:  # the resettable high-water mark sees the 16 MiB; ru_maxrss is a lifetime peak
        assert pm.bytes >= 15 << 20, pm.bytes


def test_model_setup_scales():
    assert model_setup("ViT-micro/4", "cpu", img_size=None, batch=None, dataset_size=None) == {
        "img_size": 16, "batch": 128, "augment": {"crop": "pad_crop", "flip": True}, "dataset_size": 20000}
    big = model_setup("ViT-B/16", "cuda", img_size=None, batch=None, dataset_size=None)
    assert big["img_size"] == 224 and big["batch"] is None and big["augment"]["crop"] == "random_resized"
    small = model_setup("ViT-S/4", "cuda", img_size=None, batch=None, dataset_size=None)
    assert (small["img_size"], small["batch"]) == (32, 512)


def test_reference_models_match_vitbench_architectures():
    vit = create_model("ViT-micro/4", num_classes=16, img_size=16)
    ref, how = build_reference_model("ViT-micro/4", num_classes=16, img_size=16)
    assert "vit_base_patch16_224" in how
    assert count_params(ref) == count_params(vit) - (64 * 64 + 64)  # vitbench's pre-logits layer
    assert ref(torch.zeros(2, 3, 16, 16)).shape == (2, 16)
    bit = create_model("BiT-micro", num_classes=16, img_size=16)
    ref, how = build_reference_model("BiT-micro", num_classes=16, img_size=16)
    assert "ResNetV2" in how and count_params(ref) == count_params(bit)


def test_reference_transforms_give_normalised_tensors():
    from PIL import Image

    t = reference_transforms(16, {"crop": "pad_crop", "flip": True})
    x = t(Image.new("RGB", (16, 16), (255, 0, 128)))
    assert x.shape == (3, 16, 16) and x.min() >= -1.0 and x.max() <= 1.0


def test_planning_benchmark_small():
    out = planning.bench_planning((100,), trials=1)
    assert out["runs_100"]["runs"] == 100
    assert set(out["runs_100"]["varying"]) == {"pretrain.lr", "seed"}


def test_register_adds_bench_subcommand():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--model", "ViT-nano/4", "--steps", "3"])
    assert args.model == ["ViT-nano/4"] and args.steps == 3 and callable(args.func)


def test_bad_ablation_is_a_user_error(capsys, tmp_path):
    assert main(["--ablations", "warp", "--out", str(tmp_path)]) == 2
    assert "unknown ablation 'warp'" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_runs_and_writes_record(tmp_path, capsys):
    rc = main(["--model", "ViT-nano/4", "--model", "BiT-nano", "--steps", "2", "--warmup", "1", "--repeats", "2",
               "--batch", "8", "--dataset-size", "64", "--ref-workers", "0", "--ablations", "optimizer,channels_last",
               "--peak-n", "128", "--planning-runs", "100", "--threads", "1", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    files = list(tmp_path.glob("bench-cpu-*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert report.check_record(rec) == []
    assert rec["command"].startswith("vitbench bench --model ViT-nano/4")
    assert rec["machine"]["device"] == "cpu" and rec["versions"]["torch"] == torch.__version__
    vit, bit = rec["models"]
    for r in (vit, bit):
        assert r["ratio"] > 0 and len(r["ratio_repeats"]) == 2
        assert r["vitbench"]["images_per_s"] > 0 and r["reference"]["workers"] == 0
        assert set(r["vitbench"]["split_ms"]) == {"data", "fwd_bwd", "optimizer"}
        # MFU is the recorded FLOPs x 3 x images/s over the recorded peak, and a step cannot beat the peak
        assert r["vitbench"]["mfu"] == pytest.approx(
            machine.mfu(r["flops_per_image"], r["vitbench"]["images_per_s"], rec["peak"]["flops_per_s"]))
        assert 0 < r["vitbench"]["mfu"] < 1
        assert "optimizer=foreach" in r["ablations"] and "default" in r["ablations"]
        assert "compile" in r["ablations"]["skipped"]
    assert "channels_last" in bit["ablations"] and "channels_last" not in vit["ablations"]
    assert rec["planning"]["runs_100"]["runs"] == 100
    out = capsys.readouterr().out
    assert "ViT-nano/4" in out and "record:" in out


def test_child_trainer_runs_with_its_own_environment():
    # The OMP_WAIT_POLICY ablation: a vitbench trainer in a child interpreter started with the variable set.
    from vitbench.data import get_dataset

    ds = get_dataset("synthetic", "train", img_size=16, size=32)
    child = child_proc.ChildTrainer({"OMP_WAIT_POLICY": "PASSIVE"}, 1, name="ViT-nano/4", dataset=ds,
                                 device=torch.device("cpu"), batch_size=8, augment=None)
    try:
        assert child.run(2) > 0
        split, nbytes, kind = child.split_memory(2)
        assert set(split) == {"data", "fwd_bwd", "optimizer"} and nbytes >= 0 and kind.startswith("cpu")
        assert "OMP_WAIT_POLICY" in child.describe()["process"]
    finally:
        child.close()
    assert child.proc.returncode == 0
