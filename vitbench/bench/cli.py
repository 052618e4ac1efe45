"""``vitbench bench``: training throughput of vitbench's trainer against a timm-``train.py``-style loop.

Wire-up: ``vitbench.cli`` calls :func:`register` on its sub-parsers. Stand-alone:
``python -m vitbench.bench.cli [options]``.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from vitbench.errors import UserError

DEFAULT_OUT = "results/bench"
CPU_MODELS = ["ViT-micro/4", "BiT-micro"]
CUDA_MODELS = ["ViT-B/16", "ViT-S/4"]
CPU_ABLATIONS = ["optimizer", "channels_last", "sdpa", "loader", "threads", "omp"]
CUDA_ABLATIONS = ["optimizer", "channels_last", "sdpa", "loader", "compile"]


def _int_list(text: str, key: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise UserError(f"must be a comma-separated list of integers, got {text!r}", key=key) from None
    if not values or any(v < 0 for v in values):
        raise UserError(f"must be a non-empty list of integers >= 0, got {text!r}", key=key)
    return list(dict.fromkeys(values))


def _ablations(text: str | None, device: str) -> list[str]:
    from vitbench.bench.measure import ABLATIONS

    if text is None or text == "default":
        return CPU_ABLATIONS if device == "cpu" else CUDA_ABLATIONS
    if text == "all":
        return list(ABLATIONS)
    if text == "none":
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in ABLATIONS]
    if bad:
        raise UserError(f"unknown ablation {bad[0]!r}; allowed: {', '.join(ABLATIONS)}, default, all, none",
                        key="--ablations")
    return names


def model_setup(name: str, device: str, *, img_size: int | None, batch: int | None,
                dataset_size: int | None) -> dict[str, Any]:
    """Resolution, batch (None: search on CUDA), augmentation and dataset size of one benchmarked model.

    micro/nano models: the micro scale (16 px, batch 128, 20,000 synthetic images); patch <= 8 ViTs:
    the small scale (32 px, batch 512); everything else: the paper scale (224 px, Inception crop,
    largest power-of-two batch that fits on CUDA, 32 on CPU).
    """
    from vitbench.bench.measure import MICRO, PAPER_IMG, SMALL
    from vitbench.models import model_family

    try:
        family = model_family(name)
    except ValueError as exc:
        raise UserError(str(exc), key="--model") from None
    tiny = "micro" in name or "nano" in name
    small = family == "vit" and int(name.rsplit("/", 1)[1]) <= 8
    img = img_size or (MICRO["img_size"] if tiny else SMALL["img_size"] if small else PAPER_IMG)
    if batch is None:
        batch = MICRO["batch"] if tiny else SMALL["batch"] if small else (None if device == "cuda" else 32)
    augment = {"crop": "random_resized", "flip": True} if img >= PAPER_IMG else {"crop": "pad_crop", "flip": True}
    size = dataset_size or (MICRO["dataset_size"] if img <= 32 else None)  # None: from the batch
    return {"img_size": img, "batch": batch, "augment": augment, "dataset_size": size}


def cmd_bench(args: argparse.Namespace) -> int:
    if args.runs:
        return _run_costs(args)
    import torch

    threads = torch.get_num_threads()
    try:
        return _bench(args)
    finally:
        torch.set_num_threads(threads)  # --threads is for this benchmark only


def _run_costs(args: argparse.Namespace) -> int:
    """Core-seconds per run from records (``--runs LABEL=DIR``), printed and written as a JSON record."""
    import socket
    import time

    from vitbench.bench.runcost import summarise, table
    from vitbench.record.rundir import atomic_write_json

    summaries = []
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep or not label or not (Path(path) / "runs").is_dir():
            raise UserError(f"expects LABEL=RESULTS with a runs/ folder in RESULTS, got {item!r}", key="--runs")
        summaries.append(summarise(label, Path(path)))
    print(table(summaries))
    out = Path(args.out) / f"runcost-{socket.gethostname()}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    atomic_write_json(out, {"kind": "runcost", "argv": getattr(args, "argv", None), "summaries": summaries})
    print(f"\nwritten: {out}")
    return 0


def _checked_device(args: argparse.Namespace) -> str:
    """The device type, after every numeric flag is checked (one-line errors before anything is measured)."""
    import torch

    device_type = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type not in ("cpu", "cuda"):
        raise UserError(f"must be cpu or cuda, got {device_type!r}", key="--device")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise UserError("cuda requested but torch sees no CUDA device", key="--device")
    for key in ("steps", "warmup", "repeats"):
        if getattr(args, key) < (0 if key == "warmup" else 1):
            raise UserError(f"must be >= {0 if key == 'warmup' else 1}", key=f"--{key}")
    if args.planning_runs < 0 or args.planning_runs % 10:
        raise UserError(f"must be a multiple of 10 (0 skips planning), got {args.planning_runs}",
                        key="--planning-runs")
    if args.batch is not None and args.batch < 1:
        raise UserError("must be >= 1", key="--batch")
    return device_type


def _largest_batch(name: str, img_size: int, device: Any, args: argparse.Namespace) -> int:
    from vitbench.bench import machine as mach
    from vitbench.data import dataset_info

    ncls = dataset_info("synthetic").num_classes
    batch = mach.find_max_batch(lambda b: mach.cuda_batch_fits(
        name, img_size=img_size, num_classes=ncls, batch=b, device=device, precision=args.precision),
        start=16, limit=args.max_batch)
    if batch == 0:
        raise UserError(f"{name} at {img_size} px does not fit even at batch 16", key="--model")
    return batch


def _bench(args: argparse.Namespace) -> int:
    import torch

    from vitbench.bench import machine as mach, measure, planning as plan_bench, report

    device_type = _checked_device(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(device_type)
    models = args.model or (CPU_MODELS if device_type == "cpu" else CUDA_MODELS)
    ablations = _ablations(args.ablations, device_type)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ref_workers = (_int_list(args.ref_workers, "--ref-workers") if args.ref_workers
                   else ([0, min(4, cpus)] if device_type == "cpu" else [min(8, cpus)]))
    ref_workers = list(dict.fromkeys(ref_workers))
    setups = {m: model_setup(m, device_type, img_size=args.img_size, batch=args.batch,
                             dataset_size=args.dataset_size) for m in models}

    when = report.now()
    machine = mach.machine_info(device)
    machine["load_average_start"] = mach.load_average()
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    log(f"peak {'bf16' if device_type == 'cuda' else 'fp32'} matmul on {machine['device_name']} ...")
    peak = mach.peak_matmul_flops(device, n=args.peak_n)
    log(f"  {peak['flops_per_s'] / 1e9:.1f} GFLOP/s")

    results = []
    for name in models:
        s = setups[name]
        batch, search = s["batch"], None
        if batch is None:  # CUDA, paper-scale model: the largest batch that fits, by doubling
            batch = _largest_batch(name, s["img_size"], device, args)
            search = {"method": "doubling from 16", "limit": args.max_batch, "found": batch}
            log(f"{name}: largest batch that fits: {batch}")
        size = s["dataset_size"] or max(1024, 4 * batch)
        log(f"{name} @ {s['img_size']} px, batch {batch}")
        r = measure.bench_model(name, device=device, img_size=s["img_size"], batch=batch, steps=args.steps,
                                warmup=args.warmup, repeats=args.repeats, ablations=set(ablations),
                                ref_workers=ref_workers, augment=s["augment"], dataset_size=size,
                                precision=args.precision,
                                max_segment_s=args.max_segment_s or math.inf, log=log)
        if search:
            r["batch_search"] = search
        results.append(r)

    # The peak again at the end: on a shared machine the load can change during the run; MFU uses the
    # higher (less disturbed) of the two measurements.
    log("peak matmul again ...")
    peak_end = mach.peak_matmul_flops(device, n=args.peak_n)
    peak = {**max(peak, peak_end, key=lambda p: p["flops_per_s"]),
            "start_flops_per_s": peak["flops_per_s"], "end_flops_per_s": peak_end["flops_per_s"]}
    for r in results:
        measure.fill_mfu(r, peak["flops_per_s"])

    planning = None
    if args.planning_runs:
        log("planning ...")
        sizes = tuple(dict.fromkeys([args.planning_runs, 100]))
        planning = plan_bench.bench_planning(sizes)
    aggregation = None
    if args.aggregation_runs:
        log("aggregation ...")
        aggregation = plan_bench.bench_aggregation(args.aggregation_runs)
    machine["load_average_end"] = mach.load_average()
    record = {
        "schema": report.SCHEMA,
        "date": when.isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["vitbench", "bench", *args.argv]),
        "argv": [sys.executable, *sys.argv],
        "git": report.git_info(),
        "versions": report.versions(),
        "machine": machine,
        "peak": peak,
        "settings": {"device": device_type, "models": models, "steps": args.steps, "warmup": args.warmup,
                     "repeats": args.repeats, "ablations": ablations, "ref_workers": ref_workers,
                     "precision": args.precision,
                     "memory": "CUDA: max_memory_allocated (all tensors); CPU: peak RSS growth during the "
                               "instrumented steps (workers excluded)",
                     "mfu": "forward FLOPs/image (vitbench count_flops) x 3 x images/s / measured matmul peak",
                     "ratio": "median over repeats of vitbench / fastest reference candidate, segments interleaved "
                              "with the order reversed every repeat"},
        "models": results,
        "planning": planning,
        "aggregation": aggregation,
    }
    tag = device_type if device_type == "cpu" else f"cuda-{machine['device_name']}"
    path = report.write_record(record, Path(args.out), tag, when)
    print(report.format_tables(record))
    print(f"\nrecord: {path}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", metavar="NAME",
                   help="model to benchmark (repeatable; default CPU: ViT-micro/4, BiT-micro; "
                        "CUDA: ViT-B/16 at 224 px, ViT-S/4 at 32 px)")
    p.add_argument("--device", help="cpu | cuda (default: cuda if available)")
    p.add_argument("--batch", type=int, help="batch size for every model (default: the scale's; "
                                             "CUDA 224 px: largest power of two that fits)")
    p.add_argument("--img-size", type=int, help="resolution for every model (default: the scale's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per segment (default 10)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before the first segment (default 5)")
    p.add_argument("--repeats", type=int, default=12,
                   help="interleaved segments per method (default 12: short segments, many repeats, so paired "
                        "segments are close in time)")
    p.add_argument("--ablations", help="comma list of optimizer, channels_last, sdpa, loader, threads, omp, "
                                       "compile; or default | all | none (default CPU: all but compile; "
                                       "CUDA: all but threads, omp)")
    p.add_argument("--ref-workers", help="DataLoader worker counts of the reference, comma list; the fastest is "
                                         "the reference (default CPU: 0,min(4,cpus); CUDA: min(8,cpus))")
    p.add_argument("--dataset-size", type=int, help="synthetic training images (default 20000 at <= 32 px)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="vitbench precision (auto: bf16 autocast on CUDA, fp32 on CPU)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for the whole benchmark")
    p.add_argument("--peak-n", type=int, help="matmul size of the peak-FLOP/s measurement (default 2048 CPU, "
                                              "8192 CUDA)")
    p.add_argument("--max-segment-s", type=float, default=10.0,
                   help="stop a timed segment after the chunk that passes this many seconds (bounds the time of "
                        "a pathologically slow variant; 0: no bound; default 10)")
    p.add_argument("--max-batch", type=int, default=4096, help="upper bound of the CUDA batch search")
    p.add_argument("--aggregation-runs", type=int, default=10000,
                   help="run records of the synthetic aggregation benchmark (multiple of 10; 0 skips it)")
    p.add_argument("--planning-runs", type=int, default=1000,
                   help="runs of the synthetic planning benchmark (multiple of 10; 0 skips it)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"record directory (default {DEFAULT_OUT})")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--runs", action="append", metavar="LABEL=RESULTS",
                   help="instead of timing steps: core-seconds per run from the records in RESULTS, split into "
                        "start-up / setup / pretraining / evaluation (repeatable, e.g. before=DIR after=DIR)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="training throughput of vitbench vs a timm-style loop (JSON record)")
    add_arguments(p)
    p.set_defaults(func=_from_subcommand)


def _from_subcommand(args: argparse.Namespace) -> int:
    if not hasattr(args, "argv"):
        argv = sys.argv[1:]
        args.argv = argv[argv.index("bench") + 1:] if "bench" in argv else argv
    return cmd_bench(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitbench bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return cmd_bench(args)
    except UserError as exc:
        print(f"vitbench: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
