"""``vitbench analyze``: the Figure 6/7 analyses on constructed cases with known answers, then end to end.

Sample images are replaced by random ones (``load_images`` is monkeypatched) so the end-to-end tests do
not spend seconds generating a dataset; everything else (config, checkpoint, model rebuild, figures) is real.
"""

from __future__ import annotations

import argparse
import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from vitbench.analyze import cli as analyze_cli
from vitbench.analyze import metrics, runs
from vitbench.errors import UserError
from vitbench.models import create_model
from vitbench.plan.planner import make_plan
from vitbench.record.rundir import RunDir, run_dir
from vitbench.spec.schema import default_config
from vitbench.train.checkpoint import save_checkpoint
from vitbench.models import config_kwargs as model_kwargs

FIGS = ("embedding_filters", "pos_embed_similarity", "attention_distance", "attention_maps")


# ---- metrics: constructed cases ------------------------------------------------------------------------------


def brute_mean_distance(gh: int, gw: int, py: float, px: float) -> float:
    pts = [(i * py, j * px) for i in range(gh) for j in range(gw)]
    return float(np.mean([np.hypot(a[0] - b[0], a[1] - b[1]) for a in pts for b in pts]))


@pytest.mark.parametrize("grid,patch,prefix", [((4, 4), 4, 1), ((3, 5), (2, 3), 0), ((2, 7), 16, 1)])
def test_uniform_attention_gives_mean_pairwise_distance(grid, patch, prefix) -> None:
    gh, gw = grid
    n = prefix + gh * gw
    heads = 3
    attn = torch.full((2, heads, n, n), 1.0 / n)  # uniform over all tokens, class token included
    d = metrics.mean_attention_distance(attn, grid, patch, prefix)
    py, px = patch if isinstance(patch, tuple) else (patch, patch)
    expected = brute_mean_distance(gh, gw, py, px)
    assert d.shape == (heads,)
    assert torch.allclose(d, torch.full((heads,), expected, dtype=torch.float64), rtol=1e-12)
    assert metrics.uniform_attention_distance(grid, patch) == pytest.approx(expected, rel=1e-12)


def test_identity_and_single_key_attention() -> None:
    grid, patch, prefix = (4, 5), 8, 1
    n = prefix + 20
    eye = torch.eye(n).expand(3, 2, n, n)
    d = metrics.mean_attention_distance(eye, grid, patch, prefix, per_image=True)
    assert d.shape == (3, 2) and torch.equal(d, torch.zeros(3, 2, dtype=torch.float64))
    # every patch query attends only to patch (0, 0) (plus some class-token weight, which is dropped)
    attn = torch.zeros(1, 1, n, n)
    attn[..., 0] = 0.5
    attn[..., prefix] = 0.5
    expected = np.mean([8 * np.hypot(i, j) for i in range(4) for j in range(5)])
    assert float(metrics.mean_attention_distance(attn, grid, patch, prefix)[0]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="does not match"):
        metrics.mean_attention_distance(attn, (3, 3), patch, prefix)


def test_rollout_identity_is_identity_and_layers_compose_in_order() -> None:
    n = 6
    eye = torch.eye(n).expand(2, 4, n, n)
    r = metrics.attention_rollout([eye, eye, eye])
    assert r.shape == (2, n, n) and torch.allclose(r, torch.eye(n, dtype=torch.float64).expand(2, n, n))
    g = torch.Generator().manual_seed(0)
    a1, a2 = (torch.rand(1, 3, n, n, generator=g).softmax(-1) for _ in range(2))

    def hat(a: torch.Tensor) -> torch.Tensor:
        m = a.double().mean(1) + torch.eye(n, dtype=torch.float64)
        return m / m.sum(-1, keepdim=True)

    r = metrics.attention_rollout([a1, a2])
    assert torch.allclose(r, hat(a2) @ hat(a1))
    assert torch.allclose(r.sum(-1), torch.ones(1, n, dtype=torch.float64))
    # uniform single layer: (U + I) / 2
    u = torch.full((1, 1, n, n), 1.0 / n)
    assert torch.allclose(metrics.attention_rollout([u])[0],
                          (torch.full((n, n), 1.0 / n) + torch.eye(n)).double() / 2)


def test_rollout_to_patches_cls_and_gap() -> None:
    grid = (2, 3)
    n = 1 + 6
    r = torch.zeros(1, n, n, dtype=torch.float64)
    r[0, 0, 0] = 0.5  # class token keeps half for itself; the rest goes to patch (1, 2)
    r[0, 0, 6] = 0.5
    m = metrics.rollout_to_patches(r, 1, grid)
    assert m.shape == (1, 2, 3) and m[0, 1, 2] == 1.0 and float(m.sum()) == pytest.approx(1.0)
    # GAP: the output is the mean of all tokens, so the map is the mean of the rows
    r = torch.eye(6, dtype=torch.float64)[None]
    assert torch.allclose(metrics.rollout_to_patches(r, 0, grid), torch.full((1, 2, 3), 1 / 6, dtype=torch.float64))


def onehot_grid(gh: int, gw: int, dim: int) -> torch.Tensor:
    """Position (i, j) → one-hot(i) ⊕ one-hot(j), zero-padded to ``dim``."""
    pos = torch.zeros(gh, gw, dim)
    for i, j in itertools.product(range(gh), range(gw)):
        pos[i, j, i] = 1.0
        pos[i, j, gh + j] = 1.0
    return pos


def expected_separable(gh: int, gw: int) -> torch.Tensor:
    exp = torch.zeros(gh, gw, gh, gw, dtype=torch.float64)
    for i, j, k, l in itertools.product(range(gh), range(gw), range(gh), range(gw)):
        exp[i, j, k, l] = 0.5 * (i == k) + 0.5 * (j == l)
    return exp


def test_pos_similarity_of_separable_pattern() -> None:
    sim = metrics.pos_embed_similarity(onehot_grid(3, 4, 10))
    assert sim.shape == (3, 4, 3, 4)
    assert torch.allclose(sim, expected_separable(3, 4))


def test_patch_embed_pcs_recovers_constructed_components() -> None:
    g = torch.Generator().manual_seed(1)
    d, c, p = 40, 3, 4
    v, _ = torch.linalg.qr(torch.randn(c * p * p, c * p * p, generator=g, dtype=torch.float64))
    coef = torch.randn(d, 2, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(coef - coef.mean(0))  # centred, orthonormal columns
    x = q @ torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64)) @ v[:, :2].T + v[:, 5] * 7.0  # + a mean
    comps, ratio = metrics.patch_embed_pcs(x.reshape(d, c, p, p).float(), k=28)
    assert comps.shape == (28, c, p, p) and ratio.shape == (28,)
    assert ratio[:2].tolist() == pytest.approx([0.9, 0.1], abs=1e-6)
    flat = comps.reshape(28, -1)
    assert abs(float(flat[0] @ v[:, 0])) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(flat[1] @ v[:, 1])) == pytest.approx(1.0, abs=1e-5)
    assert (flat.abs().argmax(1) == flat.argmax(1)).all()  # sign rule: largest entry positive
    assert metrics.patch_embed_pcs(torch.randn(10, 3, 2, 2), k=28)[0].shape[0] == 10  # k ≤ D
    n01 = metrics.normalize01(comps)
    assert float(n01.amin()) == 0.0 and float(n01.amax()) == 1.0


# ---- adapters to the models ---------------------------------------------------------------------------------


def tiny(name: str = "ViT-nano/4", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=5, img_size=16, **kw).eval()


def test_position_grid_learned_1d_set_to_separable_pattern() -> None:
    m = tiny(pos_embed="learned_1d")
    with torch.no_grad():
        m.pos_embed[0].pos[0, 1:] = onehot_grid(4, 4, 32).reshape(16, 32)
        m.pos_embed[0].pos[0, 0] = 5.0  # the class token's entry must be left out
    pos, desc = runs.position_grid(m)
    assert pos.shape == (4, 4, 32) and desc == "learned_1d"
    assert torch.allclose(metrics.pos_embed_similarity(pos), expected_separable(4, 4))


def test_position_grid_variants() -> None:
    m = tiny(pos_embed="learned_2d", pos_placement="every_layer")
    with torch.no_grad():
        for pe in m.pos_embed[1:]:
            pe.pos_y.fill_(9.0)  # later layers must not be used
        m.pos_embed[0].pos_y.copy_(torch.eye(4, 16)[None])
        m.pos_embed[0].pos_x.copy_(torch.roll(torch.eye(4, 16), 4, dims=1)[None])
    pos, desc = runs.position_grid(m)
    assert "every_layer" in desc
    assert torch.allclose(pos[2, 3], torch.cat([torch.eye(4, 16)[2], torch.roll(torch.eye(4, 16), 4, 1)[3]]))
    assert torch.allclose(metrics.pos_embed_similarity(pos), expected_separable(4, 4))
    pos, _ = runs.position_grid(tiny(pos_embed="sincos_2d", pool="gap"))
    assert pos.shape == (4, 4, 32) and float(pos.abs().sum()) > 0
    for kind in ("none", "relative"):
        pos, why = runs.position_grid(tiny(pos_embed=kind))
        assert pos is None and kind in why


def test_token_stride_vit_and_hybrid() -> None:
    assert runs.token_stride(tiny()) == (4, 4)
    h = tiny("Rmicro+micro")
    assert runs.token_stride(h) == (4, 4) and tuple(h.grid_size) == (4, 4)  # 16 px / 4 tokens
    assert runs.filter_weight(h)[0] is None


def brute_local_distance(gh: int, gw: int, patch: float, alpha: float) -> float:
    """Mean distance of attention ∝ exp(-alpha · grid distance) over the patch keys, by brute force."""
    pts = [(i, j) for i in range(gh) for j in range(gw)]
    out = []
    for q in pts:
        d = np.array([np.hypot(q[0] - k[0], q[1] - k[1]) for k in pts])
        w = np.exp(-alpha * d)
        out.append(float((w / w.sum() * d * patch).sum()))
    return float(np.mean(out))


def test_attention_distance_through_a_model_with_known_attention(tmp_path: Path) -> None:
    """Relative-bias ViT with zero q/k: attention is softmax(bias), so each head's locality is set by hand."""
    rd = make_run(tmp_path / "rel", run_config(pos_embed="relative"))
    run = runs.load_run(rd)
    gh, gw = run.model.grid_size
    dy = torch.arange(-(gh - 1), gh, dtype=torch.float64)[:, None]
    dx = torch.arange(-(gw - 1), gw, dtype=torch.float64)[None]
    grid_dist = (dy ** 2 + dx ** 2).sqrt()
    alphas = [[0.0, 60.0], [1.0, 0.3]]  # (layer, head)
    with torch.no_grad():
        for blk, layer_alphas in zip(run.model.blocks, alphas):
            blk.attn.qkv.weight.zero_()
            blk.attn.qkv.bias.zero_()
            for h, a in enumerate(layer_alphas):
                blk.attn.rel_pos.table[h] = (-a * grid_dist).float()
    res = runs.analyze_run(run, images=4, parts=("distance",))
    got = res.distance.mean(dim=0)
    expected = torch.tensor([[brute_local_distance(gh, gw, 4, a) for a in la] for la in alphas], dtype=torch.float64)
    assert got.shape == (2, 2)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert float(got[0, 0]) == pytest.approx(brute_mean_distance(gh, gw, 4, 4), rel=1e-5)  # alpha 0: uniform
    assert float(got[0, 1]) < 1e-6  # very local: attends to itself


# ---- end to end ---------------------------------------------------------------------------------------------


def fake_images(cfg, n, data_root=None):
    g = torch.Generator().manual_seed(0)
    size = int(cfg["pretrain"]["img_size"])
    n = min(n, 20)
    return (torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
            torch.arange(n) % 3, torch.arange(n))


REAL_LOAD_IMAGES = runs.load_images  # the fixture below swaps it for fake_images in every other test


def test_the_real_image_loader_gives_the_runs_test_split() -> None:
    from vitbench.data import get_dataset

    cfg = run_config()
    images, labels, idx = REAL_LOAD_IMAGES(cfg, 7)
    ds = get_dataset("synthetic", "test", img_size=16)
    assert images.dtype == torch.uint8 and images.shape == (7, 3, 16, 16)
    assert torch.equal(images, ds.images[:7]) and torch.equal(labels, ds.labels[:7]) and idx.tolist() == list(range(7))
    assert len(REAL_LOAD_IMAGES(cfg, 10 ** 9)[0]) == len(ds)  # capped at the split's size


@pytest.fixture(autouse=True)
def _fast_images(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "load_images", fake_images)
    monkeypatch.setattr(runs, "MAP_IMAGES", 3)  # fewer panels to draw


def run_config(**model) -> dict:
    cfg = default_config()
    cfg["model"].update({"name": "ViT-nano/4", **model})
    cfg["pretrain"].update({"dataset": "synthetic", "img_size": 16})
    return cfg


def make_run(path: Path, cfg: dict, *, step: int = 7) -> Path:
    torch.manual_seed(cfg["seed"])
    model = create_model(cfg["model"]["name"], num_classes=16, img_size=cfg["pretrain"]["img_size"],
                         **model_kwargs(cfg["model"]))
    rd = RunDir(path)
    rd.create(cfg)
    save_checkpoint(rd.ckpt_dir, {"step": step, "model": model.state_dict(), "optimizer": {}, "scheduler": {},
                                  "rng": {}})
    return path


def analyze(*argv: str) -> int:
    return analyze_cli.main([str(a) for a in argv])


def rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_end_to_end_vit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rd = make_run(tmp_path / "runs" / "abc", run_config(pos_embed="learned_2d"))
    assert analyze(rd, "--images", 12) == 0
    out = rd / "analysis"
    for stem in FIGS:
        for ext in ("png", "pdf", "csv"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0, f"{stem}.{ext}"
    assert (out / "embedding_filters.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "attention_maps.pdf").read_bytes()[:4] == b"%PDF"
    dist = rows(out / "attention_distance.csv")
    assert len(dist) == 2 * 2 and {r["images"] for r in dist} == {"12"}  # nano: 2 layers x 2 heads
    assert all(0 < float(r["mean_distance_px"]) < 16 * 2 ** 0.5 for r in dist)
    sim = rows(out / "pos_embed_similarity.csv")
    assert len(sim) == 16 * 16
    assert all(float(r["cosine_similarity"]) == pytest.approx(1.0) for r in sim
               if (r["query_row"], r["query_col"]) == (r["key_row"], r["key_col"]))
    maps = rows(out / "attention_maps.csv")
    assert len(maps) == 3 * 16
    assert sum(float(r["rollout"]) for r in maps if r["image"] == "1") == pytest.approx(1.0, abs=1e-4)
    assert len({r["component"] for r in rows(out / "embedding_filters.csv")}) == 28
    text = capsys.readouterr().out
    assert "step 7" in text and "note" not in text


def test_no_pos_embed_says_so_and_writes_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rd = make_run(tmp_path / "r", run_config(pos_embed="none", pool="gap"))
    assert analyze(rd, "--images", 4, "--out", tmp_path / "out") == 0
    out = tmp_path / "out"
    assert not list(out.glob("pos_embed_similarity.*"))
    for stem in ("embedding_filters", "attention_distance", "attention_maps"):
        assert (out / f"{stem}.png").exists() and (out / f"{stem}.pdf").exists() and (out / f"{stem}.csv").exists()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "note" in ln]
    assert len(lines) == 1 and "pos_embed_similarity" in lines[0] and "pos_embed: none" in lines[0]
    assert len(rows(out / "attention_maps.csv")) == 3 * 16  # GAP: rollout averaged over tokens


def test_hybrid_attention_distance_in_input_pixels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rd = make_run(tmp_path / "h", run_config(name="Rmicro+micro", pos_embed="sincos_2d"))
    assert analyze(rd, "--images", 3, "--only", "distance", "--only", "filters") == 0
    dist = rows(rd / "analysis" / "attention_distance.csv")
    assert len(dist) == 4 * 4 and {r["token_px"] for r in dist} == {"4x4"}  # micro: 4 layers x 4 heads
    uniform = brute_mean_distance(4, 4, 4, 4)
    assert float(dist[0]["uniform_distance_px"]) == pytest.approx(uniform, rel=1e-5)
    assert not (rd / "analysis" / "embedding_filters.png").exists()
    assert "1x1 projection" in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert analyze(tmp_path / "missing") == 2
    rd = RunDir(tmp_path / "nockpt")
    rd.create(run_config())
    assert analyze(rd.path) == 2
    (tmp_path / "plain").mkdir()
    assert analyze(tmp_path / "plain") == 2
    bit = run_config(name="BiT-micro")
    RunDir(tmp_path / "bit").create(bit)
    assert analyze(tmp_path / "bit") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(e.startswith("vitbench: error: ") for e in err)
    assert "no such run directory" in err[0] and "no checkpoint" in err[1] and "config.yaml" in err[2]
    assert "ResNet" in err[3]


def test_missing_images_keep_the_weight_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    def no_data(cfg, n, data_root=None):
        raise UserError("imagenet: no data root given (set --data-root or VITBENCH_DATA)")

    monkeypatch.setattr(runs, "load_images", no_data)
    rd = make_run(tmp_path / "r", run_config())
    assert analyze(rd) == 2
    out = rd / "analysis"
    assert (out / "embedding_filters.png").exists() and (out / "pos_embed_similarity.csv").exists()
    assert not (out / "attention_distance.png").exists()
    assert "no data root" in capsys.readouterr().err


EXPERIMENT = """\
description: analysis test (pos-emb variants)
base:
  model: {name: ViT-nano/4}
  pretrain: {dataset: synthetic, img_size: 16}
grid: {model.pos_embed: [learned_1d, none, sincos_2d]}
scales:
  smoke: {seeds: [0]}
default_scale: smoke
"""


def test_experiment_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    exp = tmp_path / "posemb.yaml"
    exp.write_text(EXPERIMENT)
    results = tmp_path / "results"
    plan = make_plan(exp, scale="smoke", check_data=False)
    assert len(plan.runs) == 3
    for r in plan.runs[:2]:  # the third run has no checkpoint
        make_run(run_dir(results, r.run_id), r.config)
    assert analyze(exp, "--results", results, "--images", 4) == 0
    out = results / "analysis" / "posemb-smoke"
    for stem in FIGS:
        assert (out / f"{stem}.png").exists() and (out / f"{stem}.pdf").exists()
    dist = rows(out / "attention_distance.csv")
    assert {r["label"] for r in dist} == {"pos_embed=learned_1d", "pos_embed=none"}
    assert {r["label"] for r in rows(out / "pos_embed_similarity.csv")} == {"pos_embed=learned_1d"}
    text = capsys.readouterr().out
    assert "analyzed 2 of 3 runs" in text
    assert f"skipped 1 run(s): {plan.runs[2].run_id} (pos_embed=sincos_2d: no checkpoint)" in text


def test_experiment_without_checkpoints_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    exp = tmp_path / "posemb.yaml"
    exp.write_text(EXPERIMENT)
    assert analyze(exp, "--results", tmp_path / "results") == 2
    assert analyze(tmp_path / "nope.yaml") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "none of its 3 runs has a checkpoint" in err[0] and "no such run directory" in err[1]


def test_register_adds_the_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="vitbench")
    sub = parser.add_subparsers(dest="command")
    analyze_cli.register(sub)
    args = parser.parse_args(["analyze", "runs/x", "--images", "5", "--only", "pos"])
    assert args.func is analyze_cli.cmd_analyze and args.images == 5 and args.only == ["pos"]
