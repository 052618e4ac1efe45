"""The ``vitbench`` command line.

Every user error (bad file, flag, data root, profile) ends as one line on stderr and exit
code 2, before anything is submitted; argparse's own usage errors also exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from vitbench.cliargs import RESULTS_HELP, add_plan_args, add_plugin_arg, load_cli_plugins, plan_from_args, results_dir
from vitbench.errors import UserError
from vitbench.spec.yamlio import value_text


def cmd_run_one(args: argparse.Namespace) -> int:
    from vitbench.plan.ids import run_id
    from vitbench.record.rundir import RunDir, run_dir
    from vitbench.spec.runconfig import load_run_config
    from vitbench.train.run import Run

    load_cli_plugins(args)
    overrides = list(args.set or [])
    if args.data_root:
        overrides.append(f"runtime.data_root={args.data_root}")
    if args.device:
        overrides.append(f"runtime.device={args.device}")
    cfg = load_run_config(args.config, overrides)
    rid = run_id(cfg)
    rd = RunDir(args.run_dir) if args.run_dir else RunDir(run_dir(results_dir(args), rid))
    record = Run(cfg, rd).execute()
    if record is not None:
        print(f"{record['status']}: {rd.path}")
        for key, value in sorted(record["summary"].items()):
            print(f"  {key:32s} {value if value is None else f'{value:.4f}'}")
    return 0


def _plan(args: argparse.Namespace):  # -> Plan
    # showing a plan needs no data; running one does
    return plan_from_args(args, check_data=not getattr(args, "dry_run", False))


def _plan_table(plan, states) -> str:  # noqa: ANN001 - Plan, dict[str, RunState]
    from tabulate import tabulate

    rows = []
    for r in plan.runs:
        st = states[r.run_id]
        rows.append([r.run_id, *(value_text(v) for v in plan.labels(r).values()), st.state, st.detail])
    return tabulate(rows, headers=["run", *plan.varying, "state", "detail"], tablefmt="simple")


def check_report(plan) -> None:  # noqa: ANN001 - Plan
    """report: tables, plots and claims are checked with the rest of the file, before anything runs."""
    from vitbench.aggregate.claims import check_claims
    from vitbench.aggregate.plots import plot_specs
    from vitbench.aggregate.tables import placeholders, report_section, report_specs

    report = report_section(plan)
    if report.get("tables"):
        report_specs(plan)
    if report.get("plots"):
        plot_specs(plan, placeholders(plan))
    check_claims(plan)


def plan_json(plan, states) -> str:  # noqa: ANN001 - Plan, dict[str, RunState]
    """One object per run: id, the fully resolved config, its state, recipes applied, planned steps."""
    import json

    from vitbench.spec.budget import planned_steps

    rows = [{"run_id": r.run_id, "config": r.config, "state": states[r.run_id].state, "recipes": r.recipes,
             "steps": planned_steps(r.config)} for r in plan.runs]
    return json.dumps(rows, indent=1, allow_nan=False)



def cmd_run(args: argparse.Namespace) -> int:
    from vitbench.launch.launcher import CLUSTERS, plan_states, submit
    from vitbench.launch.profiles import load_profile

    if args.cluster not in CLUSTERS:
        raise UserError(f"unknown cluster {args.cluster!r}; allowed: {', '.join(CLUSTERS)}", key="--cluster")
    plan = _plan(args)
    check_report(plan)
    profile = load_profile(args.profile)
    results = results_dir(args)
    if args.json and not args.dry_run:
        raise UserError("--json only goes with --dry-run (it prints the plan)", key="--json")
    if args.dry_run:
        states = plan_states(plan, results)
        if args.json:
            print(plan_json(plan, states))
            return 0
        print(f"{plan.experiment.path} @ {plan.scale}: {len(plan.runs)} runs"
              + (f" ({plan.duplicates} duplicate points merged)" if plan.duplicates else ""))
        print(_plan_table(plan, states))
        return 0
    submit(plan, results, cluster=args.cluster, profile=profile, wait=args.wait)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from vitbench.plan.planner import make_plan
    from vitbench.record.verify import verify_store
    from vitbench.spec.experiment import SCALES

    files = [Path(args.experiment)] if args.experiment else sorted(
        p for d in ("experiments", "ablations") for p in Path(d).glob("*.yaml"))
    known: set[str] = set()
    for f in files:
        for scale in SCALES:
            try:
                plan = make_plan(f, scale=scale, overrides=list(args.set or []), check_data=False,
                                 max_runs=args.max_runs)
            except UserError:
                continue  # a scale the file does not define
            known.update(r.run_id for r in plan.runs)
    results = results_dir(args)
    rep = verify_store(results, known)
    print(f"{results}: {rep.checked} run directories, {rep.done} finished records, "
          f"{len(rep.problems)} problems, {len(rep.orphans)} orphans (planned by none of {len(files)} experiment files)")
    for rid, what in rep.problems:
        print(f"  problem  {rid}: {what}")
    for rid in rep.orphans:
        print(f"  orphan   {rid}")
    return 0 if rep.ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    from collections import Counter

    from vitbench.launch.launcher import plan_states

    if args.verify:
        return cmd_verify(args)
    if not args.experiment:
        raise UserError("needs an experiment file (or --verify to audit the whole run store)", key="EXPERIMENT")
    plan = _plan(args)
    results = results_dir(args)
    states = plan_states(plan, results)
    counts = Counter(s.state for s in states.values())
    order = ["done", "diverged", "running", "pending", "failed", "incomplete", "new"]
    print(f"{plan.experiment.path} @ {plan.scale}: {len(plan.runs)} runs — "
          + ", ".join(f"{counts[k]} {k}" for k in order if counts[k]))
    print(_plan_table(plan, states))
    for r in plan.runs:
        st = states[r.run_id]
        if st.state in ("failed", "incomplete") and st.log:
            print(f"{r.run_id} log: {st.log}")
    return 0


def _add_plan_args(p: argparse.ArgumentParser, status: bool = False) -> None:
    add_plan_args(p, optional=status, set_help="override a run-config key in every run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run-one", help="train and evaluate one run config into its run directory")
    p.add_argument("config", help="run config YAML (partial; defaults fill the rest)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--results", help=RESULTS_HELP)
    p.add_argument("--run-dir", help="explicit run directory (default RESULTS/runs/<run id>)")
    p.add_argument("--data-root", help="root of real datasets and published checkpoints (default $VITBENCH_DATA)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    add_plugin_arg(p)
    p.set_defaults(func=cmd_run_one)

    p = sub.add_parser("run", help="submit every run of an experiment that is not done")
    _add_plan_args(p)
    p.add_argument("--cluster", default="slurm", help="slurm | local | debug (default slurm)")
    p.add_argument("--profile", default="local", help="cluster profile: slurm/profiles/NAME.yaml or a path")
    p.add_argument("--dry-run", action="store_true", help="print the plan and each run's state; submit nothing")
    p.add_argument("--json", action="store_true",
                   help="with --dry-run: a JSON list of {run_id, config, state, recipes, steps}, one per run")
    p.add_argument("--wait", action="store_true", help="wait for the jobs and show progress")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="counts and a per-run table: done, running, pending, failed")
    _add_plan_args(p, status=True)
    p.add_argument("--verify", action="store_true",
                   help="audit the run store: config hashes, parseable records, orphans (all experiments if none given)")
    p.set_defaults(func=cmd_status)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _register_aggregate(sub: argparse._SubParsersAction) -> None:
    from vitbench.aggregate.cli import register

    register(sub)


def _register_bench(sub: argparse._SubParsersAction) -> None:
    from vitbench.bench import register

    register(sub)


def _register_analyze(sub: argparse._SubParsersAction) -> None:
    from vitbench.analyze.cli import register

    register(sub)


# Later pipeline stages add their sub-commands here (aggregate, bench, analyze).
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_register_aggregate, _register_bench, _register_analyze]


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that busy-wait collapse throughput when cores are shared (README, Speed); passive
    # waiting costs little when they are not.
    # torch is imported lazily below, so this takes effect; jobs inherit it through the environment.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"vitbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        return 0
    except OSError as exc:  # disk full, read-only results directory, ...
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"vitbench: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vitbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
