"""``vitbench analyze``: the paper's analyses of what a ViT learns (Figures 6 and 7), from checkpoints.

    vitbench analyze RUN_DIR    [--images N] [--out DIR]             # one run → RUN_DIR/analysis/
    vitbench analyze EXPERIMENT [--scale S] [--results DIR] [--out DIR]  # its runs side by side →
                                                                     #   RESULTS/analysis/<name>-<scale>/

``register(subparsers)`` adds the sub-command to the main CLI; ``main(argv)`` runs it on its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vitbench.cliargs import RESULTS_HELP, SCALE_HELP, results_dir
from vitbench.errors import UserError
from vitbench.spec.yamlio import value_text

PART_NAMES = {"filters": "filters", "pos": "pos", "pos-embed": "pos", "distance": "distance", "maps": "maps"}
DEFAULT_IMAGES = 128  # the paper averages attention distances over 128 example images
DESCRIPTION = ("The paper's analyses of what a ViT learns (Figures 6 and 7) from a run's checkpoint: embedding "
               "filters, position-embedding similarity, mean attention distance, attention rollout maps. "
               "Writes PNG + PDF figures and the CSV numbers behind them.")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze", help="what a ViT learned: embedding filters, position-embedding similarity, attention "
                        "distance, attention maps (paper Fig. 6-7)",
        description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=cmd_analyze)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN_DIR|EXPERIMENT",
                   help="a run directory (RESULTS/runs/<id>), a run id under --results, or an experiment file")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES,
                   help=f"test images averaged for attention distance (default {DEFAULT_IMAGES}); "
                        "the first 8 are shown with their attention maps")
    p.add_argument("--out", help="output directory (default RUN_DIR/analysis, or "
                                 "RESULTS/analysis/<experiment>-<scale> for an experiment)")
    p.add_argument("--only", action="append", choices=sorted(PART_NAMES), metavar="PART",
                   help="only this analysis (repeatable): filters, pos, distance, maps")
    p.add_argument("--scale", help="experiment " + SCALE_HELP)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="experiment: the same overrides the runs were launched with (they change run ids)")
    p.add_argument("--results", help=RESULTS_HELP)
    p.add_argument("--data-root", help="root of real datasets for the sample images (default: the run's, "
                                       "else $VITBENCH_DATA)")
    p.add_argument("--device", default="cpu", help="cpu (default) | auto | cuda | cuda:N")


def _device(spec: str) -> Any:
    from vitbench.train.loop import resolve_device

    try:
        return resolve_device(spec)
    except RuntimeError as exc:
        raise UserError(f"bad device {spec!r} ({exc})", key="--device") from None


def cmd_analyze(args: argparse.Namespace) -> int:
    if args.images < 1:
        raise UserError(f"must be at least 1, got {args.images}", key="--images")
    from vitbench.analyze.runs import PARTS

    parts = tuple(p for p in PARTS if p in {PART_NAMES[o] for o in args.only}) if args.only else PARTS
    target = Path(args.target)
    if target.is_dir():
        return _analyze_run_dir(target, args, parts)
    if target.is_file():
        return _analyze_experiment(target, args, parts)
    by_id = results_dir(args) / "runs" / args.target
    if "/" not in args.target and by_id.is_dir():
        return _analyze_run_dir(by_id, args, parts)
    raise UserError("no such run directory, run id or experiment file", file=args.target)


def _say(line: str) -> None:
    print(line, flush=True)


def _report(out: Path, written: dict[str, list[Path]], notes: dict[str, str], parts: tuple[str, ...]) -> None:
    from vitbench.analyze.output import STEMS

    for part in parts:
        stem = STEMS[part]
        if part in written:
            _say(f"  {stem:22s} {out / stem}.{{png,pdf,csv}}")
        else:
            _say(f"  {stem:22s} note: no figure: {notes.get(part, 'nothing to show')}")


def _analyze_run_dir(path: Path, args: argparse.Namespace, parts: tuple[str, ...]) -> int:
    from vitbench.analyze.output import write_run
    from vitbench.analyze.runs import analyze_run, load_run

    if args.scale or args.set:
        raise UserError("--scale and --set apply to an experiment file, not a run directory", file=str(path))
    device = _device(args.device)
    run = load_run(path, device=device)
    res = analyze_run(run, images=args.images, parts=parts, data_root=args.data_root, device=device)
    out = Path(args.out) if args.out else path / "analysis"
    written = write_run(res, out, parts)
    _say(f"analyzed {run.run_id} ({run.model_name}, step {run.step}) → {out}")
    _report(out, written, res.notes, parts)
    if res.data_error:
        raise UserError(f"attention analyses skipped, no sample images: {res.data_error}", key="--data-root")
    return 0


def _short_labels(keys: list[str]) -> dict[str, str]:
    """Dotted keys → their last part, or the full key where the last part is ambiguous."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}



def _analyze_experiment(path: Path, args: argparse.Namespace, parts: tuple[str, ...]) -> int:
    from vitbench.analyze.output import write_comparison
    from vitbench.analyze.runs import ImageCache, analyze_run, load_run
    from vitbench.plan.planner import make_plan
    from vitbench.record.rundir import run_dir

    plan = make_plan(path, scale=args.scale, overrides=list(args.set or []), check_data=False)
    results = results_dir(args)
    device = _device(args.device)
    short = _short_labels(plan.varying)
    items, skipped, data_errors = [], {}, []
    cache: ImageCache = {}
    for r in plan.runs:
        label = ", ".join(f"{short[k]}={value_text(v)}" for k, v in plan.labels(r).items()) or r.run_id
        rd = run_dir(results, r.run_id)
        if not (rd / "ckpt").is_dir():
            skipped[r.run_id] = f"{label}: no checkpoint"
            continue
        try:
            run = load_run(rd, device=device)
        except UserError as exc:
            skipped[r.run_id] = f"{label}: {exc}"
            continue
        res = analyze_run(run, images=args.images, parts=parts, data_root=args.data_root, device=device,
                          cache=cache)
        if res.data_error:
            data_errors.append(res.data_error)
        items.append((label, res))
        del run
    name = f"{plan.experiment.name}-{plan.scale}"
    if not items:
        raise UserError(f"none of its {len(plan.runs)} runs has a checkpoint under {run_dir(results, '')}; "
                        f"train them first (vitbench run)", file=str(path))
    out = Path(args.out) if args.out else results / "analysis" / name
    written = write_comparison(items, out, parts, f"{plan.experiment.name} @ {plan.scale}", skipped)
    _say(f"analyzed {len(items)} of {len(plan.runs)} runs of {name} → {out}")
    notes = {p: "no run has it (" + "; ".join(sorted({r.notes[p] for _, r in items if p in r.notes})) + ")"
             for p in parts}
    _report(out, written, notes, parts)
    if skipped:
        _say(f"skipped {len(skipped)} run(s): " + "; ".join(f"{rid} ({why})" for rid, why in skipped.items()))
    if data_errors:
        raise UserError(f"attention analyses skipped, no sample images: {data_errors[0]}", key="--data-root")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitbench analyze", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=cmd_analyze)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``vitbench analyze`` on its own (tests, ``python -m vitbench.analyze``)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"vitbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
