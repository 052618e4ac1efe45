"""Cluster profiles: every site value (partition, account, limits, setup lines) lives in
``slurm/profiles/<name>.yaml``, never in code. ``--profile`` names one, or a path to a file."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitbench.errors import CONTROL, UserError
from vitbench.spec.runconfig import read_yaml

# key: (types, default, help)
PROFILE_KEYS: dict[str, tuple[tuple[type, ...], Any, str]] = {
    "partition": ((str,), None, "SLURM partition"),
    "account": ((str,), None, "SLURM account"),
    "qos": ((str,), None, "quality of service"),
    "constraint": ((str,), None, "node feature constraint, e.g. 'a100|h100'"),
    "nodes": ((int,), 1, "nodes per run"),
    "tasks_per_node": ((int,), 1, "processes per node (= GPUs per node for DDP)"),
    "gpus_per_node": ((int,), 0, "GPUs per node"),
    "cpus_per_task": ((int,), 1, "CPU cores per process"),
    "mem_gb": ((int, float), 4, "memory per node in GB"),
    "time_min": ((int,), 60, "time limit per job in minutes (submitit's own default is 5: always set it)"),
    "array_parallelism": ((int,), 16, "how many tasks of one array run at once"),
    "runs_per_task": ((int,), 1, "runs one array task executes one after another (one start-up for all; "
                      "one record per run, each resumable)"),
    "signal_delay_s": ((int,), 90, "SIGUSR2 this long before the time limit: checkpoint and requeue"),
    "max_requeues": ((int,), 3, "timeouts after which a run is not requeued again"),
    "setup": ((list,), [], "shell lines run before the job (module load ..., source env): shell BY DESIGN"),
    "additional": ((dict,), {}, "extra sbatch options: {long-option-name: value} (e.g. {exclude: node12})"),
    "use_srun": ((bool,), True, "launch tasks through srun (needed for several tasks per node)"),
    "description": ((str,), "", "what this profile is for"),
}


# Every profile value but `setup` lands in the sbatch script's "#SBATCH --key=value" header, where a
# newline would end the header and start shell; so values hold no control character and keys are
# sbatch long-option names. submitit shlex-quotes the value, so spaces and quotes are harmless.
SBATCH_OPTION = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
# Options vitbench or submitit set themselves: overriding them would break logs, arrays or requeue.
RESERVED_OPTIONS = {"array", "output", "error", "open-mode", "signal", "job-name", "wckey", "wrap", "parsable",
                    "requeue", "no-requeue", "chdir", "export", "time", "nodes", "ntasks-per-node",
                    "cpus-per-task", "mem", "gpus-per-node", "partition", "account", "qos", "constraint"}


def _check_text(value: str, file: str, key: str) -> None:
    bad = CONTROL.search(value)
    if bad:
        raise UserError(f"holds the control character {bad.group()!r}; sbatch header values must be one "
                        "line of printable text", file=file, key=key)


def _check_additional(options: dict[Any, Any], file: str) -> None:
    for k, val in options.items():
        key = f"additional.{str(k)[:40]!r}" if not isinstance(k, str) else f"additional.{k[:40]}"
        if not isinstance(k, str) or not SBATCH_OPTION.fullmatch(k):
            raise UserError("keys must be sbatch long-option names (lower case, e.g. exclude, mail-type)",
                            file=file, key=key)
        if k.replace("_", "-") in RESERVED_OPTIONS:
            raise UserError("is set by vitbench from the profile's own keys or by submitit; use those keys",
                            file=file, key=key)
        if isinstance(val, bool):
            if not val:
                raise UserError("a flag is given as true; leave it out to not set it", file=file, key=key)
        elif isinstance(val, (int, float)):
            pass
        elif isinstance(val, str):
            _check_text(val, file, key)
        else:
            raise UserError(f"must be a string, number or true, got {type(val).__name__}", file=file, key=key)


@dataclass
class Profile:
    name: str
    path: Path | None
    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def submitit_parameters(self, cluster: str) -> dict[str, Any]:
        """Parameters for ``submitit.AutoExecutor.update_parameters``."""
        v = self.values
        params: dict[str, Any] = {
            "timeout_min": v["time_min"], "nodes": v["nodes"], "tasks_per_node": v["tasks_per_node"],
            "cpus_per_task": v["cpus_per_task"], "mem_gb": v["mem_gb"],
        }
        if v["gpus_per_node"]:
            params["gpus_per_node"] = v["gpus_per_node"]
        if cluster == "slurm":
            params.update(slurm_array_parallelism=v["array_parallelism"], slurm_signal_delay_s=v["signal_delay_s"],
                          slurm_use_srun=v["use_srun"])
            for key in ("partition", "account", "qos", "constraint"):
                if v[key]:
                    params[f"slurm_{key}"] = v[key]
            if v["setup"]:
                params["slurm_setup"] = list(v["setup"])
            if v["additional"]:
                params["slurm_additional_parameters"] = dict(v["additional"])
        return params


def profiles_dir() -> Path:
    env = os.environ.get("VITBENCH_PROFILES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "slurm" / "profiles"


def list_profiles() -> list[str]:
    d = profiles_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_profile(name: str) -> Profile:
    """A profile by name (slurm/profiles/NAME.yaml) or by path; one-line UserError otherwise."""
    path = Path(name)
    if not (name.endswith((".yaml", ".yml")) or os.sep in name):
        path = profiles_dir() / f"{name}.yaml"
        if not path.is_file():
            raise UserError(f"unknown profile {name!r}; available: {', '.join(list_profiles()) or 'none'} "
                            f"(in {profiles_dir()})", key="--profile")
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    file = str(path)
    if not isinstance(raw, dict):
        raise UserError(f"must be a mapping of {', '.join(PROFILE_KEYS)}", file=file)
    values: dict[str, Any] = {}
    for key, (types, default, _) in PROFILE_KEYS.items():
        values[key] = default
    for key, value in raw.items():
        if key not in PROFILE_KEYS:
            raise UserError(f"unknown key; allowed: {', '.join(PROFILE_KEYS)}", file=file, key=str(key))
        types = PROFILE_KEYS[key][0]
        if value is None and PROFILE_KEYS[key][1] is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            raise UserError(f"must be {names}, got {value!r:.40}", file=file, key=str(key))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise UserError(f"must be >= 0, got {value}", file=file, key=str(key))
        if key == "setup" and not all(isinstance(line, str) for line in value):
            raise UserError("must be a list of shell lines (strings)", file=file, key=key)
        if key == "setup":
            for i, line in enumerate(value):  # shell by design; one list item is one line of it
                if "\x00" in line or "\n" in line or "\r" in line:
                    raise UserError("one shell line per item: no newline or NUL inside a line",
                                    file=file, key=f"setup[{i}]")
        elif isinstance(value, str) and key != "description":
            _check_text(value, file, key)
        elif key == "additional":
            _check_additional(value, file)
        values[key] = value
    for key in ("nodes", "tasks_per_node", "cpus_per_task", "time_min", "array_parallelism", "runs_per_task"):
        if values[key] < 1:
            raise UserError(f"must be >= 1, got {values[key]}", file=file, key=key)
    return Profile(name=path.stem, path=path, values=values)
