"""Shared helpers for the integration tests that need the local SLURM cluster.

The cluster is the one started by ``slurm/start-cluster.sh`` (ClusterName
``vitbench``, partition ``debug``, accounting through slurmdbd so that ``sacct``
and therefore submitit's job states work).

* ``cluster_available()`` tells whether a usable cluster answers.
* The ``slurm_cluster`` fixture hands tests a :class:`SlurmCluster`; without a
  cluster it skips the test, except under ``CI=true`` where it fails it (the
  CI job starts the cluster, so a missing one is a broken CI, not a reason to
  skip silently).
* Tests marked ``@pytest.mark.slurm`` get the same skip/fail even when they do
  not request the fixture.
* ``smoke_store``: the four paper experiments at smoke scale, trained through the
  cluster once per session, for every test that reads them (a test that changes
  the store works on a copy).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vitbench.plan.suite import PAPER_EXPERIMENTS

PARTITION = "debug"
CLUSTER_NAME = "vitbench"
START_HINT = "start it with `bash slurm/start-cluster.sh` (as root)"
_USABLE_NODE_STATES = {"idle", "mixed", "allocated", "completing"}


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """What a test needs to know about the running cluster."""

    name: str
    partition: str
    nodes: tuple[str, ...]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def _run(*cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def cluster_status() -> tuple[SlurmCluster | None, str]:
    """Probe the cluster: ``(cluster, "")`` when usable, else ``(None, reason)``."""
    for tool in ("sinfo", "sbatch", "sacct"):
        if shutil.which(tool) is None:
            return None, f"`{tool}` not found: SLURM is not installed; {START_HINT}"
    try:
        sinfo = _run("sinfo", "-h", "-N", "-p", PARTITION, "-o", "%N|%a|%T")
        if sinfo.returncode != 0:
            return None, f"sinfo failed ({sinfo.stderr.strip()}); {START_HINT}"
        nodes = []
        for line in sinfo.stdout.splitlines():
            node, avail, state = (line.split("|") + ["", ""])[:3]
            # '*' marks a node that does not respond; '~', '#', ... power states
            if avail == "up" and state.rstrip("*~#!%$@^-") in _USABLE_NODE_STATES and not state.endswith("*"):
                nodes.append(node)
        if not nodes:
            return None, f"no usable node in partition {PARTITION!r} (sinfo: {sinfo.stdout.strip()!r}); {START_HINT}"
        # submitit reads job states from sacct: accounting must work too.
        sacct = _run("sacct", "-n", "-X", "-S", "now", "-o", "JobID")
        if sacct.returncode != 0:
            return None, f"sacct does not work ({sacct.stderr.strip()}); {START_HINT}"
        show = _run("scontrol", "show", "config")
        name = CLUSTER_NAME
        for line in show.stdout.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ClusterName":
                name = value.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"SLURM does not answer ({exc}); {START_HINT}"
    return SlurmCluster(name=name, partition=PARTITION, nodes=tuple(nodes)), ""


def cluster_available() -> bool:
    """True when a SLURM cluster with partition ``debug`` and working
    accounting (``sacct``) answers on this machine."""
    return cluster_status()[0] is not None


@functools.lru_cache(maxsize=1)
def _cached_status() -> tuple[SlurmCluster | None, str]:
    return cluster_status()


def require_cluster() -> SlurmCluster:
    """Return the cluster, or skip the calling test (fail it under CI=true)."""
    cluster, reason = _cached_status()
    if cluster is None:
        if in_ci():
            pytest.fail(f"CI=true but the SLURM cluster is not usable: {reason}", pytrace=False)
        pytest.skip(f"SLURM cluster not available: {reason}")
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The local SLURM cluster; skips (fails under CI=true) when it is not up."""
    return require_cluster()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # every integration test trains through the cluster: slow (deselect with -m "not slow"), and a
    # longer limit than the unit tests' (pyproject.toml) unless the test sets its own
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(600))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("slurm") is not None:
        require_cluster()


@dataclasses.dataclass(frozen=True)
class SmokeStore:
    results: Path  # a path with spaces and quotes: nothing is pasted into a shell
    submitted: dict[str, str]  # experiment -> stdout of its first `vitbench run`
    waited: dict[str, str]  # experiment -> stdout of the second `run --wait` pass


@pytest.fixture(scope="session")
def smoke_store(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> SmokeStore:
    from slurm_helpers import vitbench

    results = tmp_path_factory.mktemp("smoke") / "my results 'quoted' \"dir\""
    args = ("--scale", "smoke", "--cluster", "slurm", "--results", str(results))
    submitted = {exp: vitbench("run", exp, *args).stdout for exp in PAPER_EXPERIMENTS}
    # the second pass submits nothing new and waits for what the first queued
    waited = {exp: vitbench("run", exp, *args, "--wait").stdout for exp in PAPER_EXPERIMENTS}
    return SmokeStore(results, submitted, waited)
