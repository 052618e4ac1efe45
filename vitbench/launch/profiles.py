"""Cluster profiles: every site value (partition, account, limits, setup lines) lives in
``slurm/profiles/<name>.yaml``, never in code. ``--profile`` names one, or a path to a file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitbench.errors import UserError
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
    "signal_delay_s": ((int,), 90, "SIGUSR2 this long before the time limit: checkpoint and requeue"),
    "max_requeues": ((int,), 3, "timeouts after which a run is not requeued again"),
    "setup": ((list,), [], "shell lines run before the job (module load ..., source env)"),
    "additional": ((dict,), {}, "extra sbatch options, passed verbatim (e.g. {exclude: node12})"),
    "use_srun": ((bool,), True, "launch tasks through srun (needed for several tasks per node)"),
    "description": ((str,), "", "what this profile is for"),
}


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
        values[key] = value
    for key in ("nodes", "tasks_per_node", "cpus_per_task", "time_min", "array_parallelism"):
        if values[key] < 1:
            raise UserError(f"must be >= 1, got {values[key]}", file=file, key=key)
    return Profile(name=path.stem, path=path, values=values)
