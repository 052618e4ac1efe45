"""Faults injected on purpose: nothing finished is lost, nothing is counted twice."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vitbench.record.rundir import RunDir, read_json
from vitbench.train.convergence import curve

pytestmark = pytest.mark.slow  # each fault is injected into real run-one processes (~20 s each)

REPO = Path(__file__).resolve().parents[1]
CONFIG = """\
model: {name: ViT-nano/4}
pretrain: {size: 256, steps: 40, batch_size: 16, warmup_steps: 2}
eval: {fewshot: {shots: [1, 5], seeds: 1}, finetune: {steps: 3, lrs: [0.01]}}
runtime: {checkpoint_every: 4, log_every: 4, device: cpu, threads: 1}
"""


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:  # noqa: ANN003
    return subprocess.Popen([sys.executable, "-m", "vitbench.cli", *args], cwd=REPO, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _run_one(cfg: Path, results: Path, env: dict | None = None) -> tuple[int, str, str]:
    p = _cli("run-one", str(cfg), "--results", str(results), env=env)
    out, err = p.communicate(timeout=600)
    return p.returncode, out, err


def _only_run(results: Path) -> Path:
    (rd,) = (results / "runs").iterdir()
    return rd


def _ckpt_steps(rd: Path) -> list[int]:
    try:
        return [json.loads(x)["step"] for x in (rd / "metrics.jsonl").read_text().splitlines() if '"checkpoint"' in x]
    except FileNotFoundError:
        return []


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("ref")
    cfg = d / "run.yaml"
    cfg.write_text(CONFIG)
    code, _, err = _run_one(cfg, d / "res")
    assert code == 0, err
    return cfg, RunDir(_only_run(d / "res")).read_result()  # the run itself is in cfg.parent / "res"


def _kill_after_checkpoint(cfg: Path, results: Path, step: int) -> Path:
    """run-one SIGKILLed right after its checkpoint at ``step`` (fault point, so on any CPU speed)."""
    code, _, err = _run_one(cfg, results, env={"VITBENCH_FAULT": f"after_checkpoint@{step}"})
    assert code == -signal.SIGKILL, err
    rd = _only_run(results)
    assert _ckpt_steps(rd)[-1] == step and not (rd / "result.json").exists()
    return rd


def _losses(rd: Path) -> list[tuple[int, float]]:
    metrics = [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines()]
    return curve(metrics, "pretrain")


def test_sigkill_mid_run_resumes_to_identical_metrics(reference: tuple[Path, dict], tmp_path: Path) -> None:
    cfg, ref = reference
    rd = _kill_after_checkpoint(cfg, tmp_path, 8)
    code, _, err = _run_one(cfg, tmp_path)
    assert code == 0, err
    log = (rd / "log.txt").read_text()
    assert "resuming from checkpoint at step 8/40" in log  # resumed mid-run, not restarted or skipped
    rec = RunDir(rd).read_result()
    assert rec["summary"] == ref["summary"] and rec["pretrain"]["final_loss"] == ref["pretrain"]["final_loss"]
    # every loss logged after the resume is the uninterrupted run's, step for step
    assert _losses(rd) == _losses(_only_run(cfg.parent / "res")) and len(_losses(rd)) == 10


@pytest.mark.parametrize("corruption", ["half", "empty", "random"])
def test_corrupt_checkpoint_falls_back_and_says_so(reference: tuple[Path, dict], tmp_path: Path,
                                                    corruption: str) -> None:
    cfg, ref = reference
    rd = _kill_after_checkpoint(cfg, tmp_path, 12)
    last = rd / "ckpt" / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"half": data[: len(data) // 2], "empty": b"", "random": os.urandom(len(data))}[corruption])
    code, _, err = _run_one(cfg, tmp_path)
    assert code == 0, err
    log = (rd / "log.txt").read_text()
    assert "is unreadable" in log and "using previous checkpoint" in log and "(step 8)" in log
    assert RunDir(rd).read_result()["summary"] == ref["summary"]


def test_node_dies_before_result(reference: tuple[Path, dict], tmp_path: Path) -> None:
    cfg, ref = reference
    code, _, _ = _run_one(cfg, tmp_path, env={"VITBENCH_FAULT": "before_result"})
    assert code == -signal.SIGKILL
    rd = RunDir(_only_run(tmp_path))
    assert rd.read_result() is None
    # what the user sees: `vitbench status` on an experiment whose one run is this config
    exp = tmp_path / "exp.yaml"
    exp.write_text("default_scale: micro\nscales: {micro: {}}\nseeds: [0]\nbase:\n" +
                   "".join(f"  {line}\n" for line in cfg.read_text().splitlines()))
    p = _cli("status", str(exp), "--results", str(tmp_path))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert f"{rd.run_id}  incomplete  started, no result and no live job" in out, out
    code, out, err = _run_one(cfg, tmp_path)
    assert code == 0, err
    assert rd.read_result()["summary"] == ref["summary"]
    log = rd.file("log.txt").read_text()
    assert log.count("result written") == 1 and "resuming from checkpoint at step 40/40" in log


def test_evaluation_resumes_from_a_partial_progress_file(tmp_path: Path) -> None:
    """Killed after the first of two fine-tuning rates: the next start redoes neither pretraining nor the
    evaluations progress.json already holds, and runs only the missing rate."""
    cfg = tmp_path / "two-lrs.yaml"
    cfg.write_text(CONFIG.replace("lrs: [0.01]", "lrs: [0.01, 0.03]"))
    code, _, err = _run_one(cfg, tmp_path, env={"VITBENCH_FAULT": "after_finetune@0.01"})
    assert code == -signal.SIGKILL, err
    rd = RunDir(_only_run(tmp_path))
    partial = rd.read_progress()
    assert set(partial) == {"pretrain_top1", "fewshot", "finetune"} and list(partial["finetune"]) == ["0.01"]
    code, _, err = _run_one(cfg, tmp_path)
    assert code == 0, err
    log = rd.file("log.txt").read_text()
    assert log.count("few-shot linear on digits") == 1 and log.count("fine-tuned digits at lr=0.01") == 1
    assert log.count("fine-tuned digits at lr=0.03") == 1 and "resuming from checkpoint at step 40/40" in log
    final = rd.read_progress()
    assert final["fewshot"] == partial["fewshot"] and final["finetune"]["0.01"] == partial["finetune"]["0.01"]
    rec = rd.read_result()
    assert sorted(rec["finetune"]["per_lr"]) == ["0.01", "0.03"]


def _finish(args: tuple[str, int, "mp.synchronize.Barrier"]) -> None:
    root, i, barrier = args
    rd = RunDir(Path(root) / "runs" / f"run{i:03d}")
    rd.create({"seed": i})
    barrier.wait()  # every writer lands at the same moment
    rd.metric("train", step=1, loss=1.0)
    rd.write_progress({"pretrain_top1": 0.5})
    rd.write_result({"status": "done", "summary": {"m": i / 100}, "blob": "x" * 200_000})


def test_fifty_runs_finishing_at_once(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(50)
    procs = [ctx.Process(target=_finish, args=((str(tmp_path), i, barrier),)) for i in range(50)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    recs = [read_json(d / "result.json") for d in sorted((tmp_path / "runs").iterdir())]
    assert len(recs) == 50 and all(r and r["status"] == "done" for r in recs)
    assert sorted(r["summary"]["m"] for r in recs) == [i / 100 for i in range(50)]
    assert not list(tmp_path.rglob("*.tmp"))


def _small_fs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("mode", ["full", "readonly"])
def test_full_or_readonly_disk(reference: tuple[Path, dict], tmp_path: Path, mode: str) -> None:
    cfg, _ = reference
    mnt = tmp_path / "disk"
    if not _small_fs(mnt, "600k"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        # an earlier finished run on the same disk must survive untouched
        old = RunDir(mnt / "runs" / "earlier")
        old.create({"seed": 1})
        old.write_result({"status": "done", "summary": {"m": 0.5}})
        before = old.file("result.json").read_bytes()
        if mode == "full":
            filler = mnt / "filler"
            with open(filler, "wb") as fh:  # leave ~60 kB: the config fits, a checkpoint does not
                try:
                    fh.write(b"\0" * (600 * 1024 - 60 * 1024 - 16 * 1024))
                except OSError:
                    pass
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        code, out, err = _run_one(cfg, mnt)
        assert code == 1, (out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vitbench: error: ")
        assert ("No space left" if mode == "full" else "Read-only") in lines[0]
        assert old.file("result.json").read_bytes() == before
        if mode == "full":
            (rd,) = [p for p in (mnt / "runs").iterdir() if p.name != "earlier"]
            os.unlink(mnt / "filler")
            assert "storage error" in RunDir(rd).read_error()["reason"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_verify_store(reference: tuple[Path, dict], tmp_path: Path) -> None:
    from vitbench.cli import main

    root = tmp_path / "store"
    good = RunDir(root / "runs" / "0123456789ab")
    good.create({"seed": 0})
    p = subprocess.run([sys.executable, "-m", "vitbench.cli", "status", "--verify", "--results", str(root)],
                       cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 1 and "config hashes to" in p.stdout and "orphan   0123456789ab" in p.stdout
    assert main(["status", "--verify", "--results", str(tmp_path / "empty")]) == 0


def test_the_test_only_step_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    from vitbench.record.faults import DELAY_ENV, with_step_delay

    calls: list[int] = []
    monkeypatch.delenv(DELAY_ENV, raising=False)
    assert with_step_delay(calls.append) == calls.append  # unset: the callback itself, no per-step cost
    monkeypatch.setenv(DELAY_ENV, "0.05")
    step = with_step_delay(calls.append)
    t0 = time.perf_counter()
    for done in (1, 2, 3):
        step(done)
    assert time.perf_counter() - t0 >= 0.15 and calls == [1, 2, 3]
    with_step_delay(None)(4)  # no probe: the delay alone
