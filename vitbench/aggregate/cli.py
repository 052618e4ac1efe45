"""``vitbench table``, ``plot``, ``claims`` and ``compare``: the aggregation end of the pipeline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vitbench.cliargs import add_plan_args, plan_from_args, results_dir

SAME_SET = "the same overrides the runs were made with"


def _plan(args: argparse.Namespace):  # noqa: ANN202 - Plan
    return plan_from_args(args, check_data=False)


def cmd_table(args: argparse.Namespace) -> int:
    from vitbench.aggregate.records import load_frame
    from vitbench.aggregate.tables import build_tables, render
    from vitbench.errors import UserError

    if args.format not in ("md", "csv", "latex"):
        raise UserError(f"unknown format {args.format!r}; allowed: md, csv, latex", key="--format")
    plan = _plan(args)
    return _emit(render(build_tables(plan, load_frame(plan, results_dir(args))), args.format), args.out)


def _emit(text: str, out: str | None) -> int:
    """Write ``text`` to ``out`` (saying so) or to stdout."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        print(f"wrote {out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from vitbench.aggregate.plots import draw, plot_specs
    from vitbench.aggregate.records import load_frame
    from vitbench.aggregate.tables import placeholders

    plan = _plan(args)
    frame = load_frame(plan, results_dir(args))
    out = Path(args.out or "plots")
    for spec in plot_specs(plan, placeholders(plan)):
        for path in draw(plan, frame, spec, out):
            print(f"wrote {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from vitbench.aggregate.compare import compare_frame, make_variant, render_comparison
    from vitbench.aggregate.tables import report_section, report_specs
    from vitbench.launch.launcher import submit
    from vitbench.launch.profiles import load_profile
    from vitbench.plan.planner import Plan

    plan = _plan(args)
    results = results_dir(args)
    variant = make_variant(plan, variant_file=args.variant, overrides=list(args.variant_set or []))
    metric = args.metric or report_section(plan).get("compare_metric") or report_specs(plan)[0]["metric"]
    if not args.no_run:
        vplan = Plan(plan.experiment, plan.scale, variant.runs)
        submit(vplan, results, cluster=args.cluster, profile=load_profile(args.profile), wait=True,
               out=sys.stderr)
    sys.stdout.write(render_comparison(compare_frame(plan, variant, results, metric), variant, metric))
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from vitbench.aggregate.claims import claims_text

    plan = _plan(args)
    return _emit(claims_text(plan, results_dir(args)), args.out)


def register(sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser, set_help: str | None = SAME_SET) -> None:
        add_plan_args(p, set_help=set_help)  # --data-root: a published checkpoint's sha256 is part of its run id

    p = sub.add_parser("table", help="paper-style table (mean ± std over seeds) from the run records")
    common(p)
    p.add_argument("--format", default="md", help="md | csv | latex")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("plot", help="figures (PNG + PDF) from the run records")
    common(p)
    p.add_argument("--out", help="output folder (default ./plots)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("claims", help="the report's claims: numbers, Holm-adjusted tests and a computed verdict each")
    common(p)
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_claims)

    p = sub.add_parser("compare", help="run a new variant with the experiment's seeds; deltas vs each baseline")
    common(p, set_help=None)
    p.add_argument("--variant", help="partial run-config file: the variant's overlay on the experiment's base")
    p.add_argument("--set", dest="variant_set", action="append", metavar="KEY=VALUE",
                   help="the variant's overlay, key by key (repeatable)")
    p.add_argument("--metric", help="metric to compare (default: the report's compare_metric or first table's)")
    p.add_argument("--cluster", default="local", help="where missing variant runs go: local | slurm | debug")
    p.add_argument("--profile", default="local", help="cluster profile")
    p.add_argument("--no-run", action="store_true", help="only compare runs that already exist")
    p.set_defaults(func=cmd_compare, set=None)
