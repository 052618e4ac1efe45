"""What the SLURM cluster allows, read up front, and sbatch's refusals turned into one line.

Before submitting, ``scontrol show partition|node|config`` tell the partitions (MaxTime, MaxNodes,
MaxMemPerNode), the nodes (CPUs, memory, GPUs) and MaxArraySize; the profile is checked against them
so that a mistake is a one-line error naming the profile key, and nothing is queued that would pend
forever (a time limit above MaxTime is accepted and left pending by sbatch unless the site sets
EnforcePartLimits). What can only be found out by submitting (an account or QOS the accounting
refuses, a gres name) is read from sbatch's own reason by :func:`explain_refusal`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from vitbench.errors import ClusterBusy, UserError

UNLIMITED = ("UNLIMITED", "INFINITE", "NONE", "N/A", "")


@dataclass
class Partition:
    name: str
    nodes: list[str]
    max_time_min: int | None  # None: unlimited
    max_nodes: int | None
    max_mem_mb: int | None  # MaxMemPerNode
    default: bool = False


@dataclass
class ClusterLimits:
    partitions: dict[str, Partition] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → {cpus, mem_mb, gpus}
    max_array_size: int | None = None  # array indices must be < MaxArraySize

    @property
    def default_partition(self) -> Partition | None:
        return next((p for p in self.partitions.values() if p.default), None)


def _records(text: str) -> list[dict[str, str]]:
    """``scontrol show -o`` output: one record per line, space-separated KEY=VALUE pairs."""
    out = []
    for line in text.splitlines():
        rec = {}
        for tok in line.split():
            key, sep, value = tok.partition("=")
            if sep:
                rec[key] = value
        if rec:
            out.append(rec)
    return out


def parse_slurm_minutes(text: str) -> int | None:
    """SLURM time ``[days-]hours:minutes:seconds`` / ``minutes`` → whole minutes; None when unlimited."""
    text = text.strip()
    if text.upper() in UNLIMITED:
        return None
    days, _, rest = text.partition("-") if "-" in text else ("", "", text)
    parts = [int(p) for p in rest.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        h, m, s = (parts + [0, 0])[:3]
    elif len(parts) == 1:  # minutes
        h, m, s = 0, parts[0], 0
    else:  # minutes:seconds or hours:minutes:seconds
        h, m, s = ([0] * (3 - len(parts)) + parts)
    return (int(days or 0) * 24 + h) * 60 + m + (1 if s else 0)


def _int_or_none(text: str | None) -> int | None:
    if text is None or text.upper() in UNLIMITED:
        return None
    m = re.match(r"\d+", text)
    return int(m.group()) if m else None


def _expand_nodes(spec: str, known: list[str]) -> list[str]:
    """Partition ``Nodes=`` (ALL, a list, or a hostlist expression) → node names among ``known``."""
    if spec in ("ALL", ""):
        return list(known)
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", spec], capture_output=True, text=True, timeout=20)
        names = out.stdout.split() if out.returncode == 0 else spec.split(",")
    except (OSError, subprocess.TimeoutExpired):
        names = spec.split(",")
    return [n for n in names if n in known] or names


def parse_limits(partitions: str, nodes: str, config: str) -> ClusterLimits:
    lim = ClusterLimits()
    for rec in _records(nodes):
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", rec.get("Gres", "")))
        lim.nodes[rec["NodeName"]] = {"cpus": _int_or_none(rec.get("CPUTot")),
                                      "mem_mb": _int_or_none(rec.get("RealMemory")), "gpus": gpus}
    for rec in _records(partitions):
        name = rec.get("PartitionName")
        if not name:
            continue
        lim.partitions[name] = Partition(
            name=name, nodes=_expand_nodes(rec.get("Nodes", ""), list(lim.nodes)),
            max_time_min=parse_slurm_minutes(rec.get("MaxTime", "UNLIMITED")),
            max_nodes=_int_or_none(rec.get("MaxNodes")), max_mem_mb=_int_or_none(rec.get("MaxMemPerNode")),
            default=rec.get("Default") == "YES")
    for line in config.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize":
            lim.max_array_size = _int_or_none(value.strip())
    return lim


def read_limits() -> ClusterLimits | None:
    """The cluster's limits from scontrol; None when scontrol is missing or does not answer
    (then sbatch's own refusal, explained by :func:`explain_refusal`, is the only check)."""
    if shutil.which("scontrol") is None:
        return None
    texts = []
    for args in (["show", "partition", "-o"], ["show", "node", "-o"], ["show", "config"]):
        try:
            out = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0:
            return None
        texts.append(out.stdout)
    return parse_limits(*texts)


def check_profile(profile: Any, lim: ClusterLimits) -> None:
    """One-line UserError (file, key, the cluster's limit) for a profile the cluster cannot run."""
    v, file = profile.values, str(profile.path or profile.name)
    name = v["partition"]
    if name is None:
        part = lim.default_partition
        if part is None:
            raise UserError(f"not set and the cluster has no default partition; it has: {', '.join(lim.partitions)}",
                            file=file, key="partition")
    elif name not in lim.partitions:
        raise UserError(f"the cluster has no partition {name!r}; it has: {', '.join(lim.partitions) or 'none'} "
                        "(scontrol show partition)", file=file, key="partition")
    else:
        part = lim.partitions[name]
    where = f"partition {part.name!r}"
    if part.max_time_min is not None and v["time_min"] > part.max_time_min:
        raise UserError(f"{v['time_min']} minutes is above the MaxTime of {where} ({part.max_time_min} minutes); "
                        f"allowed: 1..{part.max_time_min}", file=file, key="time_min")
    nodes = [lim.nodes[n] for n in part.nodes if n in lim.nodes]
    max_nodes = min(x for x in (part.max_nodes, len(part.nodes) or None) if x is not None) \
        if (part.max_nodes or part.nodes) else None
    if max_nodes is not None and v["nodes"] > max_nodes:
        raise UserError(f"{v['nodes']} nodes, but {where} has at most {max_nodes}", file=file, key="nodes")
    if not nodes:
        return
    mem_mb = max((n["mem_mb"] or 0) for n in nodes)
    if part.max_mem_mb is not None:
        mem_mb = min(mem_mb, part.max_mem_mb)
    if mem_mb and v["mem_gb"] * 1024 > mem_mb:
        raise UserError(f"{v['mem_gb']} GB per node, but the nodes of {where} have at most {mem_mb / 1024:.1f} GB",
                        file=file, key="mem_gb")
    gpus = max(n["gpus"] for n in nodes)
    if v["gpus_per_node"] > gpus:
        raise UserError(f"{v['gpus_per_node']} GPUs per node, but the nodes of {where} have "
                        f"{gpus or 'no'} GPUs (gres)", file=file, key="gpus_per_node")
    cpus = max((n["cpus"] or 0) for n in nodes)
    need = v["cpus_per_task"] * v["tasks_per_node"]
    if cpus and need > cpus:
        raise UserError(f"cpus_per_task × tasks_per_node = {need} CPUs per node, but the nodes of {where} "
                        f"have at most {cpus}", file=file, key="cpus_per_task")


# sbatch's reason (a substring, lower case) → the profile key at fault; None: not a profile value.
_REFUSALS: list[tuple[str, str | None]] = [
    ("invalid account", "account"), ("invalid qos", "qos"), ("invalid partition", "partition"),
    ("account", "account"), ("qos", "qos"), ("partition", "partition"),
    ("time limit", "time_min"),
    ("memory specification", "mem_gb"),
    ("gres", "gpus_per_node"), ("generic resource", "gpus_per_node"),
    ("feature specification", "constraint"),
    ("node count", "nodes"), ("node configuration", "nodes"),
    ("cpu count", "cpus_per_task"),
    ("job array", None),
]
# Refusals that say the queue is full, not that the profile is wrong: retry later (exit 1).
_BUSY = ("maxsubmit", "maxjobcount", "temporarily unable", "too many", "job limit", "queue full")


def explain_refusal(reason: str, profile: Any, *, submitted: int, remaining: int) -> UserError:
    """sbatch's stderr → one line naming the profile file, the key at fault where it can tell, the reason."""
    lines = [ln.strip() for ln in reason.strip().splitlines() if ln.strip()]
    # "sbatch: error: Batch job submission failed: X" is the verdict; earlier lines add detail.
    text = "; ".join(dict.fromkeys(re.sub(r"^sbatch: error: (Batch job submission failed: )?", "", ln)
                                   for ln in lines)) or "no reason given"
    low = text.lower()
    tail = (f" ({remaining} runs stay new" + (f"; {submitted} were submitted before" if submitted else "")
            + "; fix and re-run the same command)")
    file = str(profile.path or profile.name)
    if any(b in low for b in _BUSY):
        return ClusterBusy(f"the cluster refused more jobs: {text}{tail}", file=file)
    key = next((k for pattern, k in _REFUSALS if pattern in low), None)
    if key and not profile.values.get(key) and key in ("account", "qos", "constraint"):
        key = None  # not set in the profile: the site's default is at fault, not a profile key
    value = f" {profile.values.get(key)!r}" if key else ""
    return UserError(f"sbatch refused the job{' with ' + key + value if key else ''}: {text}{tail}",
                     file=file, key=key)
