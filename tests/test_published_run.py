"""Published checkpoints as runs: the sha256 in the run id (not the path), evaluation-only runs, a file changed after
planning, and experiments/published.yaml's paper scale (Table 4 recipes, Tables 2 / 5 beside the measured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from npz_export import write_stand_ins

from vitbench.aggregate.records import load_frame
from vitbench.aggregate.tables import build_tables
from vitbench.errors import UserError
from vitbench.models.published import file_sha256
from vitbench.plan.planner import make_plan
from vitbench.record.rundir import RunDir
from vitbench.spec.runconfig import load_run_config
from vitbench.train.run import Run

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "experiments" / "published.yaml"
PAPER_FILES = ("vit_models/imagenet21k/ViT-B_16.npz", "vit_models/imagenet21k/ViT-L_16.npz",
               "vit_models/imagenet21k/R50+ViT-B_16.npz", "bit_models/BiT-M-R50x1.npz")


def _config(tmp_path: Path, init: str, **model: object) -> Path:
    f = tmp_path / "run.yaml"
    f.write_text(json.dumps({
        "model": {"name": "ViT-nano/4", "init": init, **model}, "pretrain": {"steps": 0, "warmup_steps": 0},
        "eval": {"fewshot": {"datasets": ["digits"], "shots": [1, 5], "seeds": 1},
                 "finetune": {"dataset": "digits", "steps": 4, "batch_size": 32, "lrs": [0.01], "warmup_steps": 1}},
        "runtime": {"device": "cpu", "threads": 1, "log_every": 2}}))
    return f


def test_an_evaluation_only_run_names_the_file_and_its_hash(tmp_path: Path) -> None:
    files = write_stand_ins(tmp_path / "root")
    cfg = load_run_config(_config(tmp_path, str(files["ViT-nano/4"])))
    assert cfg["model"]["init_sha256"] == file_sha256(files["ViT-nano/4"])
    rd = RunDir(tmp_path / "run")
    rec = Run(cfg, rd).execute()
    assert rec is not None and rec["status"] == "done"
    assert rec["model"]["init"] == {"file": str(files["ViT-nano/4"]), "sha256": file_sha256(files["ViT-nano/4"]),
                                    "notes": ["2 checkpoint tensors unused, first head.bias"]}  # no head to evaluate
    assert rec["pretrain"]["steps"] == rec["pretrain"]["images_seen"] == 0 and rec["pretrain"]["top1"] is None
    assert rec["pretrain"]["convergence"]["reason"] == "not pretrained here: the weights are model.init's"
    assert sorted(rec["fewshot"]["digits"]) == ["1", "5"]
    assert rec["finetune"]["dev_top1"] is not None
    assert "pretraining converged" not in rd.file("log.txt").read_text()


def test_the_run_id_follows_the_bytes_not_the_path(tmp_path: Path) -> None:
    a, b = write_stand_ins(tmp_path / "a"), write_stand_ins(tmp_path / "b")  # same bytes, two places
    ids = {}
    for name, f in (("a", a["ViT-nano/4"]), ("b", b["ViT-nano/4"])):
        ids[name] = make_plan(PUBLISHED, scale="smoke", overrides=[f"runtime.data_root={f.parents[1]}"],
                              check_data=False).runs[0].run_id
    assert ids["a"] == ids["b"]
    write_stand_ins(tmp_path / "b", seed=2)  # other bytes at the same path: another run
    changed = make_plan(PUBLISHED, scale="smoke", overrides=[f"runtime.data_root={tmp_path / 'b'}"], check_data=False)
    assert changed.runs[0].run_id != ids["a"]
    assert {r.config["model"]["init"] for r in changed.runs} == {"published-smoke/ViT-nano_4.npz",
                                                                  "published-smoke/BiT-nano.npz"}


def test_a_file_changed_after_planning_fails_the_run_with_one_line(tmp_path: Path) -> None:
    files = write_stand_ins(tmp_path / "root")
    cfg = load_run_config(_config(tmp_path, str(files["ViT-nano/4"])))
    write_stand_ins(tmp_path / "root", seed=3)
    rd = RunDir(tmp_path / "run")
    with pytest.raises(UserError) as exc:
        Run(cfg, rd).execute()
    want = f"{files['ViT-nano/4']} changed after the run was planned"
    assert str(exc.value).startswith(f"model.init: {want}") and "\n" not in str(exc.value)
    assert json.loads(rd.file("error.json").read_text())["reason"] == str(exc.value)
    assert not rd.file("result.json").exists()


@pytest.mark.parametrize("init,extra,env,want", [
    ("published-smoke/ViT-nano_4.npz", [], {}, "model.init: 'published-smoke/ViT-nano_4.npz' is relative to the "
     "data root, and none is set (runtime.data_root, --data-root or $VITBENCH_DATA)"),
    ("published-smoke/nothing.npz", ["--data-root", "{root}"], {}, "model.init: no checkpoint file at "
     "{root}/published-smoke/nothing.npz"),
    ("published-smoke/ViT-nano_4.npz", ["--data-root", "{root}", "--set", "model.init_sha256=abc"], {},
     "model.init_sha256: {root}/published-smoke/ViT-nano_4.npz has sha256 {sha}, not the abc given"),
])
def test_bad_init_settings_are_one_line_and_exit_2(tmp_path: Path, init: str, extra: list[str], env: dict[str, str],
                                                   want: str) -> None:
    root = tmp_path / "root"
    files = write_stand_ins(root)
    fill = {"root": str(root), "sha": file_sha256(files["ViT-nano/4"])}
    environ = {k: v for k, v in os.environ.items() if k != "VITBENCH_DATA"}
    proc = subprocess.run([sys.executable, "-m", "vitbench.cli", "run-one", str(_config(tmp_path, init)),
                           "--run-dir", str(tmp_path / "run"), *(a.format(**fill) for a in extra)],
                          capture_output=True, text=True, env=environ, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"vitbench: error: {tmp_path / 'run.yaml'}: {want.format(**fill)}"]
    assert not (tmp_path / "run").exists()


def test_published_paper_scale_follows_table_4_and_sets_the_papers_numbers_beside(tmp_path: Path) -> None:
    _paper_root(tmp_path)  # planning hashes the files; their contents do not matter here
    write_stand_ins(tmp_path)
    plan = make_plan(PUBLISHED, scale="paper", overrides=[f"runtime.data_root={tmp_path}"], check_data=False)
    assert len(plan.runs) == 16
    by = {(r.config["model"]["name"], r.config["eval"]["finetune"]["dataset"]): r.config for r in plan.runs}
    for (model, ft), cfg in by.items():
        assert cfg["pretrain"]["epochs"] == 0 and cfg["model"]["init_sha256"] == file_sha256(
            tmp_path / cfg["model"]["init"])
        steps, lrs = {"imagenet": (20000, [0.003, 0.01, 0.03, 0.06]), "cifar100": (10000, [0.001, 0.003, 0.01, 0.03]),
                      "pets": (500, [0.001, 0.003, 0.01, 0.03]), "flowers102": (500, [0.001, 0.003, 0.01, 0.03])}[ft]
        f = cfg["eval"]["finetune"]
        assert (f["steps"], f["lrs"], f["batch_size"], f["img_size"]) == (steps, lrs, 512, 384)  # Table 4
        assert cfg["eval"]["fewshot"]["datasets"] == (["imagenet", "cifar100", "pets", "flowers102"]
                                                      if ft == "imagenet" else [])
        assert cfg["model"]["dropout"] == (0.1 if model == "ViT-L/16" else 0.0)  # vit_jax configs/models.py
    assert by[("BiT-R50x1", "pets")]["model"]["init"] == "bit_models/BiT-M-R50x1.npz"
    tables = {t.title: t for t in build_tables(plan, load_frame(plan, tmp_path / "no-results"))}
    t5 = tables["Fine-tuned ImageNet top-1 at 384 px (Table 5, ImageNet-21k row; Table 2 ViT-L/16 I21k: 0.8530)"].text
    assert list(t5["paper (Table 5)"]) == ["0.8397", "0.8515", "–", "–"]  # B/16, L/16, R50+B/16, BiT-M R50x1
    assert all(c.startswith("missing (0/1)") for c in t5["finetune/imagenet/top1"])
    # few-shot runs only with the ImageNet fine-tuning: one planned run per model, not four
    assert list(tables["Few-shot linear, 25 shots, per dataset"].text.iloc[:, 0]) == ["missing (0/1)"] * 4
    smoke = make_plan(PUBLISHED, scale="smoke", overrides=[f"runtime.data_root={tmp_path}"], check_data=False)
    assert [t.title for t in build_tables(smoke, load_frame(smoke, tmp_path / "none"))] == [
        "Few-shot linear accuracy of the published models"] * 2 + ["Fine-tuned top-1 on digits"]
    assert list(tables["Fine-tuned CIFAR-100 top-1 (Table 2, ViT-L/16 I21k)"].text["paper (Table 2)"]) == [
        "–", "0.9325", "–", "–"]


def test_a_paper_value_for_a_row_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    write_stand_ins(tmp_path)
    exp = tmp_path / "p.yaml"
    exp.write_text(PUBLISHED.read_text().replace("extends: ../experiments/_scales.yaml",
                                                 f"extends: {REPO / 'experiments' / '_scales.yaml'}")
                   .replace("values: {ViT-L/16: 0.9325}", "values: {ViT-X/16: 0.9325}"))
    plan = make_plan(exp, scale="paper", overrides=[f"runtime.data_root={_paper_root(tmp_path)}"], check_data=False)
    with pytest.raises(UserError) as exc:
        build_tables(plan, load_frame(plan, tmp_path / "none"))
    assert str(exc.value).startswith(f"{exp}: report.tables[4].paper.values: 'ViT-X/16' is not a row of the table; "
                                     "rows: ViT-B/16, ViT-L/16, R50+B/16, BiT-R50x1")


def _paper_root(root: Path) -> Path:
    for name in PAPER_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
    return root
