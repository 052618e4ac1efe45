"""How fast the planner and the aggregation are: ``make_plan`` on generated grids, ``table`` on generated records."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any



# ---- planning ----------------------------------------------------------------------------------------


def planning_experiment(n_runs: int) -> str:
    """YAML of an experiment whose grid (pretrain.lr × pretrain.weight_decay) × seeds has ``n_runs`` runs."""
    if n_runs % 10:
        raise ValueError(f"n_runs must be a multiple of 10, got {n_runs}")
    seeds = list(range(10))
    cells = n_runs // 10
    n_lr = min(cells, 10)
    n_wd = cells // n_lr
    if n_lr * n_wd != cells:
        raise ValueError(f"cannot lay out {n_runs} runs as lr x wd x 10 seeds")
    lrs = [round(1e-4 * (i + 1), 6) for i in range(n_lr)]
    wds = [round(0.01 * (i + 1), 4) for i in range(n_wd)]
    return (f"description: planning benchmark, {n_runs} runs (lr x weight_decay x seeds)\n"
            f"base:\n  model: {{name: ViT-micro/4}}\n"
            f"  pretrain: {{dataset: synthetic, size: 20000, img_size: 16, steps: 300, batch_size: 128}}\n"
            f"grid:\n  product:\n    pretrain.lr: {lrs}\n    pretrain.weight_decay: {wds}\n"
            f"seeds: {seeds}\n"
            f"default_scale: micro\nscales:\n  micro: {{description: micro}}\n")


def bench_planning(sizes: tuple[int, ...] = (1000, 100), trials: int = 3) -> dict[str, Any]:
    """Time ``make_plan`` on synthetic experiment files of ``sizes`` runs (first call and best of ``trials``)."""
    from vitbench.plan.planner import make_plan

    out: dict[str, Any] = {"target_s": 1.0}
    with tempfile.TemporaryDirectory(prefix="vitbench-plan-") as tmp:
        for n in sizes:
            path = Path(tmp) / f"plan{n}.yaml"
            path.write_text(planning_experiment(n))
            times = []
            plan = None
            for _ in range(trials):
                t0 = time.perf_counter()
                plan = make_plan(path, scale="micro", max_runs=max(n, 1))
                times.append(time.perf_counter() - t0)
            assert plan is not None
            out[f"runs_{n}"] = {"runs": len(plan.runs), "grid": "pretrain.lr x pretrain.weight_decay x 10 seeds",
                                "seconds_first": times[0], "seconds_best": min(times),
                                "within_target": times[0] <= out["target_s"],
                                "varying": plan.varying}
    out["one_array_note"] = ("vitbench.launch.launcher.submit wraps every submit of a plan in executor.batch() "
                             "(one sbatch, a job array); the one-array property is tested against SLURM, "
                             "not here")
    return out


def bench_aggregation(n_runs: int = 10_000, trials: int = 3) -> dict[str, Any]:
    """Time reading ``n_runs`` run records and laying out their table (target ≤ 2 s).

    The records are generated here, in a temporary run store, from a synthetic lr × weight-decay
    × seeds experiment: plausible summaries, a few diverged runs and a few missing ones, so every
    cell kind is exercised. Writing them is not timed.
    """
    import random

    from vitbench.aggregate.records import load_frame
    from vitbench.aggregate.tables import build_tables, render
    from vitbench.plan.planner import make_plan
    from vitbench.record.rundir import RunDir, run_dir

    out: dict[str, Any] = {"target_s": 2.0, "runs": n_runs}
    with tempfile.TemporaryDirectory(prefix="vitbench-agg-") as tmp:
        path = Path(tmp) / "agg.yaml"
        path.write_text(planning_experiment(n_runs) + "report:\n  tables:\n    - {metric: fewshot/digits/5shot, "
                        "rows: pretrain.lr, cols: pretrain.weight_decay, tune: pretrain.weight_decay}\n")
        plan = make_plan(path, scale="micro", max_runs=n_runs, check_data=False)
        rng = random.Random(0)
        results = Path(tmp) / "store"
        for i, run in enumerate(plan.runs):
            if i % 97 == 0:
                continue  # missing
            rd = RunDir(run_dir(results, run.run_id))
            rd.path.mkdir(parents=True)
            status = "diverged" if i % 89 == 0 else "done"
            acc = rng.random()
            rd.write_result({"status": status, "config": run.config,
                             "summary": {"fewshot/digits/5shot": acc, "fewshot/digits/5shot/dev": acc + 0.01}
                             if status == "done" else {},
                             "model": {"params": 143_114, "flops_per_image": 4_860_160},
                             "pretrain": {"train_flops": 1e12, "diverged_at": 7 if status == "diverged" else None}})
        times = []
        for _ in range(trials):
            t0 = time.perf_counter()
            text = render(build_tables(plan, load_frame(plan, results)), "md")
            times.append(time.perf_counter() - t0)
        out.update(seconds_first=times[0], seconds_best=min(times), within_target=times[0] <= out["target_s"],
                   table_lines=text.count("\n"))
    return out
