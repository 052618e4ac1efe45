"""What every sub-command shares: the results directory and the plan arguments (one home, so sub-commands
never import ``vitbench.cli``, which imports them)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_RESULTS = "vitbench-results"  # its run directories are vitbench-results/runs/<id>
RESULTS_HELP = f"results directory (default $VITBENCH_RESULTS or ./{DEFAULT_RESULTS})"
SCALE_HELP = "paper | small | micro | smoke (default: the file's default_scale)"
PLUGIN_HELP = ("a Python file registering models, position embeddings, pooling heads or datasets (repeatable; "
               "it is imported, i.e. run: README, Plugins)")
MAX_RUNS_HELP = "refuse grids larger than this (default $VITBENCH_MAX_RUNS or 5000; never above 100,000)"


def results_dir(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "results", None) or os.environ.get("VITBENCH_RESULTS") or DEFAULT_RESULTS)


def add_plan_args(p: argparse.ArgumentParser, *, optional: bool = False, set_help: str | None = None) -> None:
    """EXPERIMENT, --scale, --set, --results, --data-root, --max-runs: how a sub-command names a plan."""
    p.add_argument("experiment", nargs="?" if optional else None,
                   help="experiment file (experiments/*.yaml, ablations/*.yaml)")
    p.add_argument("--scale", help=SCALE_HELP)
    if set_help is not None:
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    p.add_argument("--results", help=RESULTS_HELP)
    p.add_argument("--data-root", help="root of real datasets and published checkpoints (default $VITBENCH_DATA)")
    p.add_argument("--max-runs", type=int, help=MAX_RUNS_HELP)
    add_plugin_arg(p)


def add_plugin_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugin", action="append", metavar="PATH", help=PLUGIN_HELP)


def load_cli_plugins(args: argparse.Namespace) -> None:
    from vitbench.plugins import load_plugins

    load_plugins(getattr(args, "plugin", None) or [], key="--plugin")


def plan_from_args(args: argparse.Namespace, *, check_data: bool):  # noqa: ANN201 - Plan (torch-free import)
    from vitbench.plan.planner import make_plan  # lazy: `vitbench --help` should not import the planner

    load_cli_plugins(args)
    overrides = list(getattr(args, "set", None) or [])
    if getattr(args, "data_root", None):
        overrides.append(f"runtime.data_root={args.data_root}")
    return make_plan(args.experiment, scale=args.scale, overrides=overrides, max_runs=args.max_runs,
                     check_data=check_data)
