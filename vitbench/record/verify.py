"""``vitbench status --verify``: audit a run store.

Checks every run directory: its config parses and hashes to the directory's name (the run id),
its result record (if any) parses and names the same run, and lists orphans — run directories
that no known experiment plans (left over from an edited grid, or copied in by hand).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitbench.plan.ids import run_id
from vitbench.record.result import NotARecord, parse_result
from vitbench.record.rundir import RESULT, RunDir, runs_root


@dataclass
class StoreReport:
    checked: int = 0
    done: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (run dir, what is wrong)
    orphans: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(results: str | Path, known_ids: set[str] | None = None) -> StoreReport:
    report = StoreReport()
    root = runs_root(results)
    if not root.is_dir():
        return report
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        report.checked += 1
        rd = RunDir(path)
        cfg = rd.read_config()
        if cfg is None:
            report.problems.append((path.name, "config.yaml is missing or unreadable"))
        else:
            try:
                rid = run_id(cfg)
            except (TypeError, ValueError) as exc:
                report.problems.append((path.name, f"config.yaml cannot be hashed: {exc}"))
                rid = None
            if rid is not None and rid != path.name:
                report.problems.append((path.name, f"config hashes to {rid}, not to the directory's id"))
        rfile = rd.file(RESULT)
        if rfile.exists():
            try:
                rec = parse_result(rfile.read_bytes())
                if rec.get("run_id") not in (None, path.name):
                    report.problems.append((path.name, f"result.json names run {rec.get('run_id')}"))
                else:
                    report.done += 1
            except NotARecord as exc:
                report.problems.append((path.name, f"result.json is not a record: {exc}"))
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                report.problems.append((path.name, f"result.json does not parse ({type(exc).__name__})"))
        if known_ids is not None and path.name not in known_ids:
            report.orphans.append(path.name)
    return report
