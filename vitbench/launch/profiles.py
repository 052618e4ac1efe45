"""Cluster profiles: every site value (partition, account, limits, setup lines) lives in
``slurm/profiles/<name>.yaml``, never in code. ``--profile`` names one, or a path to a file."""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitbench.errors import CONTROL, UserError
from vitbench.spec.runconfig import read_yaml
from vitbench.spec.schema import BOOL, INT, LIST, STR, Field, check_value

# One leaf per key, the run-config schema's Field (type, default, help, minimum); a null default is nullable.
PROFILE_KEYS: dict[str, Field] = {
    "partition": Field(STR, None, "SLURM partition", nullable=True),
    "account": Field(STR, None, "SLURM account", nullable=True),
    "qos": Field(STR, None, "quality of service", nullable=True),
    "constraint": Field(STR, None, "node feature constraint, e.g. 'a100|h100'", nullable=True),
    "nodes": Field(INT, 1, "nodes per run", minimum=1),
    "tasks_per_node": Field(INT, 1, "processes per node (= GPUs per node for DDP)", minimum=1),
    "gpus_per_node": Field(INT, 0, "GPUs per node", minimum=0),
    "cpus_per_task": Field(INT, 1, "CPU cores per process", minimum=1),
    "mem_gb": Field((int, float), 4, "memory per node in GB", minimum=0),
    "time_min": Field(INT, 60, "time limit per job in minutes (submitit's own default is 5: always set it)", minimum=1),
    "array_parallelism": Field(INT, 16, "how many tasks of one array run at once", minimum=1),
    "runs_per_task": Field(INT, 1, "runs one array task executes one after another (one start-up for all; "
                           "one record per run, each resumable)", minimum=1),
    "signal_delay_s": Field(INT, 90, "SIGUSR2 this long before the time limit: checkpoint and requeue", minimum=0),
    "max_requeues": Field(INT, 3, "timeouts after which a run is not requeued again", minimum=0),
    "setup": Field(LIST, [], "shell lines run before the job (module load ..., source env): shell BY DESIGN",
                   item_type=str),
    "additional": Field((dict,), {}, "extra sbatch options: {long-option-name: value} (e.g. {exclude: node12})"),
    "use_srun": Field(BOOL, True, "launch tasks through srun (needed for several tasks per node)"),
    "description": Field(STR, "", "what this profile is for"),
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
    values: dict[str, Any] = {key: copy.deepcopy(f.default) for key, f in PROFILE_KEYS.items()}
    for key, value in raw.items():
        if key not in PROFILE_KEYS:
            raise UserError(f"unknown key; allowed: {', '.join(PROFILE_KEYS)}", file=file, key=str(key))
        value = check_value(PROFILE_KEYS[key], value, file=file, key=key)
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
    return Profile(name=path.stem, path=path, values=values)
