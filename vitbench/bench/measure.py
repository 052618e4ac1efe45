"""One model in `vitbench bench`: vitbench, the timm-style reference and the ablation variants, interleaved.

Throughput is measured on the *uninstrumented* path: vitbench's ``train_loop`` itself, fed by the
in-memory loader's ``get_batch``, timed from outside (one device sync before and after a segment;
the loop's own end-of-segment loss check is its only sync). The split of a step into data,
forward+backward and optimiser time needs a sync between the parts, so it comes from a separate
instrumented pass that repeats the loop's ops one by one (:meth:`vitbench.bench.trainers.VitbenchTrainer.split`).

Methods (vitbench, the timm-style reference, the ablation variants) are measured in interleaved
segments, the order reversed every repeat (A B C, C B A, ...), so drift in machine load hits all of
them alike; each method's figure is the median over repeats, and ratios are medians of the
per-repeat ratios.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import replace
from typing import Any, Callable

import torch

from vitbench.bench.child import ChildTrainer
from vitbench.bench.machine import PeakMemory, mfu, optimizer_impl, sync_fn, usable_cpus
from vitbench.bench.trainers import Ablation, VitbenchTrainer, timed_segment

MICRO = {"img_size": 16, "batch": 128, "dataset_size": 20000}  # experiments/_scales.yaml, scale "micro"
SMALL = {"img_size": 32, "batch": 512}  # scale "small" (ViT-S/4 on 32 px CIFAR)
PAPER_IMG = 224


# ---- one model: every method, interleaved ------------------------------------------------------------


def ablation_variants(family: str, device: torch.device, names: set[str], ref_workers: list[int],
                      default_impl: str) -> dict[str, Ablation]:
    """The variants of the vitbench path to measure besides the default, by ablation name."""
    out: dict[str, Ablation] = {}
    base = Ablation()
    if "optimizer" in names:
        for impl in ("forloop", "foreach", "fused"):
            if impl != default_impl:
                out[f"optimizer={impl}"] = replace(base, optimizer=impl)
    if "channels_last" in names and family in ("bit", "hybrid"):
        out["channels_last"] = replace(base, channels_last=True)
    if "sdpa" in names and family in ("vit", "hybrid"):
        out["sdpa=off"] = replace(base, sdpa=False)
    if "loader" in names:
        for w in ref_workers:
            v = replace(base, loader="dataloader", loader_workers=w)
            out[v.label()] = v
    cpus = usable_cpus()
    now = torch.get_num_threads()
    if "threads" in names and device.type == "cpu" and cpus > 1:
        v = replace(base, threads=1 if now > 1 else cpus)
        out[v.label()] = v
    if "omp" in names and device.type == "cpu":
        policy = "ACTIVE" if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" else "PASSIVE"
        v = replace(base, omp_wait_policy=policy, threads=cpus)
        out[v.label()] = v
    if "compile" in names:
        out["compile"] = replace(base, compile=True)
    return out


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def bench_model(name: str, *, device: torch.device, img_size: int, batch: int, steps: int, warmup: int,
                repeats: int, ablations: set[str], ref_workers: list[int], augment: dict[str, Any] | None,
                dataset_size: int, peak_flops: float | None = None, precision: str = "auto",
                split_steps: int | None = None, split_steps_per_repeat: int = 2,
                max_segment_s: float = math.inf, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure vitbench, the reference (one per worker count) and the ablation variants on one model."""
    from vitbench.data import get_dataset
    from vitbench.models import count_flops, create_model, model_family

    t_start = time.perf_counter()
    family = model_family(name)
    ds = get_dataset("synthetic", "train", img_size=img_size, size=dataset_size)
    with torch.device("meta"):
        meta_model = create_model(name, num_classes=ds.num_classes, img_size=img_size)
    flops = count_flops(meta_model, img_size)
    del meta_model
    sync = sync_fn(device)

    trainers, refs, variants, default_impl = _trainers(name, family, ds, device=device, batch=batch, augment=augment,
                                                       precision=precision, ref_workers=ref_workers,
                                                       ablations=ablations)

    # Warm-up (first-step allocation, worker start, compilation), then the instrumented pass (memory).
    warm_s: dict[str, float] = {}
    splits: dict[str, list[dict[str, float]]] = {k: [] for k in trainers}
    memory: dict[str, dict[str, Any]] = {}
    n_split = split_steps or max(2, min(steps, 5))

    def instrumented(key: str, n: int) -> None:
        tr = trainers[key]
        if isinstance(tr, ChildTrainer):
            sp, nbytes, kind = tr.split_memory(n)
        else:
            with PeakMemory(device) as pm:
                sp = tr.split(n, sync)
            nbytes, kind = pm.bytes, pm.kind
        splits[key].append(sp)
        memory.setdefault(key, {"bytes": nbytes, "kind": kind})

    for key, tr in trainers.items():
        log(f"  {name}: warm-up {key}")
        warm_s[key] = tr.run(warmup) if warmup else 0.0
        instrumented(key, n_split)

    # Interleaved repeats, the order reversed every repeat. A segment starts with untimed steps: one, plus
    # for DataLoader-fed methods the batches their workers prefetched while other methods ran. After the
    # timed segment, a short instrumented pass (the step split, taken under the same machine load).
    def seg_warm(key: str) -> int:
        tr = trainers[key]
        workers = getattr(tr, "workers", None)
        if workers is None and getattr(tr, "variant", Ablation()).loader == "dataloader":
            workers = tr.variant.loader_workers
        return 1 + 2 * (workers or 0)  # DataLoader's default prefetch_factor is 2

    order = list(trainers)
    ips: dict[str, list[float]] = {k: [] for k in trainers}
    seg_steps: dict[str, list[int]] = {k: [] for k in trainers}
    chunk = max(1, math.ceil(steps / 3))
    for r in range(repeats):
        seq = order if r % 2 == 0 else order[::-1]
        for key in seq:
            tr = trainers[key]
            tr.run(seg_warm(key))
            done, dt = timed_segment(tr, steps, max_s=max_segment_s, chunk=chunk)
            ips[key].append(batch * done / dt)
            seg_steps[key].append(done)
            if split_steps_per_repeat and done == steps:  # a capped (pathologically slow) segment: skip it
                instrumented(key, split_steps_per_repeat)
        log(f"  {name}: repeat {r + 1}/{repeats}: vitbench {ips['vitbench'][-1]:.0f} img/s, "
            + ", ".join(f"{k} {ips[k][-1]:.0f}" for k in refs))

    def summary(key: str) -> dict[str, Any]:
        med = _median(ips[key])
        return {"images_per_s": med, "images_per_s_repeats": ips[key], "steps_timed": seg_steps[key],
                "step_ms": 1e3 * batch / med,
                "split_ms": {part: 1e3 * _median([sp[part] for sp in splits[key]]) for part in splits[key][0]},
                "split_steps": n_split + (len(splits[key]) - 1) * split_steps_per_repeat,
                "peak_memory_bytes": memory[key]["bytes"],
                "mfu": mfu(flops, med, peak_flops) if peak_flops else None,
                "warmup_s": warm_s[key], **trainers[key].describe()}

    best_ref = max(refs, key=lambda k: _median(ips[k]))
    per_repeat = [a / b for a, b in zip(ips["vitbench"], ips[best_ref])]
    result: dict[str, Any] = {
        "model": name, "family": family, "img_size": img_size, "batch": batch, "steps": steps,
        "warmup": warmup, "repeats": repeats, "segment_warmup_steps": {k: seg_warm(k) for k in trainers},
        "chunk_steps": chunk,
        "max_segment_s": max_segment_s if math.isfinite(max_segment_s) else None, "precision": precision,
        "dataset": {"name": "synthetic", "size": len(ds), "num_classes": ds.num_classes, "augment": augment},
        "flops_per_image": flops, "flops_per_step": 3 * flops * batch,
        "vitbench": summary("vitbench"),
        "reference": {**summary(best_ref), "chosen_from": refs},
        "references": {k: summary(k) for k in refs},
        "ratio": _median(per_repeat), "ratio_repeats": per_repeat,
        "ratio_vs": {k: _median([a / b for a, b in zip(ips["vitbench"], ips[k])]) for k in refs},
    }
    result["ablations"] = _ablation_entries(result, variants, summary, ips, warm_s, warmup=warmup, batch=batch,
                                            family=family, device=device, precision=precision,
                                            default_impl=default_impl, optimizer=trainers["vitbench"].optimizer,
                                            ablations=ablations)
    for tr in trainers.values():
        tr.close()
    result["wall_s"] = time.perf_counter() - t_start
    return result


def _trainers(name: str, family: str, ds: Any, *, device: torch.device, batch: int, augment: dict[str, Any] | None,
              precision: str, ref_workers: list[int], ablations: set[str]) -> tuple[dict[str, Any], list[str],
                                                                                     dict[str, Ablation], str]:
    """Every method of one model by label: vitbench, one reference per worker count, the ablation variants."""
    from vitbench.bench.reference import ReferenceTrainer

    trainers: dict[str, Any] = {}
    trainers["vitbench"] = VitbenchTrainer(name, dataset=ds, device=device, batch_size=batch, augment=augment,
                                           precision=precision)
    default_impl = optimizer_impl(trainers["vitbench"].optimizer)
    refs = []
    for w in ref_workers:
        key = f"reference(workers={w})"
        trainers[key] = ReferenceTrainer(name, dataset=ds, device=device, batch_size=batch, workers=w,
                                         augment=augment)
        refs.append(key)
    variants = ablation_variants(family, device, ablations, ref_workers, default_impl)
    for label, v in variants.items():
        kw = dict(dataset=ds, device=device, batch_size=batch, augment=augment, precision=precision)
        if v.omp_wait_policy is not None:
            trainers[label] = ChildTrainer({"OMP_WAIT_POLICY": v.omp_wait_policy},
                                           v.threads or torch.get_num_threads(), name=name,
                                           variant=replace(v, threads=None), **kw)
        else:
            trainers[label] = VitbenchTrainer(name, variant=v, **kw)
    return trainers, refs, variants, default_impl


def _ablation_entries(result: dict[str, Any], variants: dict[str, Ablation], summary: Callable[[str], dict[str, Any]],
                      ips: dict[str, list[float]], warm_s: dict[str, float], *, warmup: int, batch: int, family: str,
                      device: torch.device, precision: str, default_impl: str, optimizer: torch.optim.Optimizer,
                      ablations: set[str]) -> dict[str, Any]:
    """The record's ``ablations``: the default's setup, each variant's speed-up (and compile break-even), what
    was skipped or does not apply."""
    abl: dict[str, Any] = {"default": {"images_per_s": result["vitbench"]["images_per_s"],
                                       "setup": f"{default_impl} {type(optimizer).__name__}, "
                                                "eager, " + ("SDPA, " if family != "bit" else "")
                                                + ("NCHW, " if family != "vit" else "") + "in-memory loader, "
                                                + (f"{torch.get_num_threads()} threads" if device.type == "cpu"
                                                   else precision)}}
    for label in variants:
        s = summary(label)
        entry = {"images_per_s": s["images_per_s"], "images_per_s_repeats": s["images_per_s_repeats"],
                 "steps_timed": s["steps_timed"],
                 "speedup_vs_default": _median([a / b for a, b in zip(ips[label], ips["vitbench"])]),
                 "split_ms": s["split_ms"], "peak_memory_bytes": s["peak_memory_bytes"]}
        if variants[label].compile:
            eager_step = batch / result["vitbench"]["images_per_s"]
            comp_step = batch / s["images_per_s"]
            compile_s = warm_s[label] - warmup * comp_step
            entry["compile_s"] = compile_s
            gain = eager_step - comp_step
            entry["break_even_steps"] = math.ceil(compile_s / gain) if gain > 0 else None
        abl[label] = entry
    skipped = {"compile": "not requested (add it to --ablations; compiling fwd+bwd takes minutes on a small CPU)"}
    for a in sorted(set(ABLATIONS) - ablations):
        abl.setdefault("skipped", {})[a] = skipped.get(a, "not requested")
    if "channels_last" in ablations and family == "vit":
        abl.setdefault("not_applicable", []).append("channels_last (no convolutions beyond the patch embedding)")
    if "sdpa" in ablations and family == "bit":
        abl.setdefault("not_applicable", []).append("sdpa (no attention)")
    return abl


def fill_mfu(result: dict[str, Any], peak_flops: float) -> None:
    """(Re)compute every method's MFU of one bench_model result against ``peak_flops``."""
    flops = result["flops_per_image"]
    for side in [result["vitbench"], result["reference"], *result["references"].values()]:
        side["mfu"] = mfu(flops, side["images_per_s"], peak_flops)
    for entry in result["ablations"].values():
        if isinstance(entry, dict) and "images_per_s" in entry:
            entry["mfu"] = mfu(flops, entry["images_per_s"], peak_flops)


ABLATIONS = ("optimizer", "channels_last", "sdpa", "loader", "threads", "omp", "compile")
