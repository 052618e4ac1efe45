"""What the real local cluster refuses comes back as one line naming the profile file and key, exit 2,
the runs stay new and the corrected command submits them; arrays above MaxArraySize are split (the test
restarts the cluster with a lower MaxArraySize, then as it was). No mocks of sbatch or scontrol."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import cluster_status
from slurm_helpers import REPO, job_ids, one_run_experiment, vitbench, wait_until

pytestmark = pytest.mark.slurm

def profile(tmp_path: Path, **values: object) -> Path:
    f = tmp_path / "site.yaml"
    f.write_text(yaml.safe_dump({"partition": "debug", "cpus_per_task": 1, "mem_gb": 1, "time_min": 10,
                                 "array_parallelism": 4, **values}))
    return f


def run(exp: Path, prof: Path, results: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return vitbench("run", str(exp), "--scale", "smoke", "--cluster", "slurm", "--profile", str(prof),
                    "--results", str(results), *extra, check=False)


def states(exp: Path, results: Path) -> str:
    return vitbench("status", str(exp), "--scale", "smoke", "--results", str(results)).stdout


@pytest.mark.parametrize("values,key,reason", [
    ({"partition": "gpu-typo"}, "partition", r"the cluster has no partition 'gpu-typo'; it has: debug, short"),
    ({"partition": "short", "time_min": 60}, "time_min",
     r"60 minutes is above the MaxTime of partition 'short' \(10 minutes\)"),
    ({"mem_gb": 100000}, "mem_gb", r"100000 GB per node, but the nodes of partition 'debug' have at most"),
    ({"gpus_per_node": 1}, "gpus_per_node", r"1 GPUs per node, but the nodes of partition 'debug' have no GPUs"),
    ({"nodes": 3}, "nodes", r"3 nodes, but partition 'debug' has at most 1"),
    # not readable up front: sbatch's own reason, with the key it points at
    ({"constraint": "h100"}, "constraint", r"sbatch refused the job with constraint 'h100': Invalid feature"),
    ({"additional": {"bogus-option": 3}}, None, r"sbatch refused the job: .*unrecognized option '--bogus-option=3'"),
])
def test_a_refused_profile_is_one_line_and_the_fix_submits(slurm_cluster: None, tmp_path: Path, values: dict,
                                                           key: str | None, reason: str) -> None:
    exp = one_run_experiment(tmp_path, "refused", [0], steps=4)
    results = tmp_path / "results"
    bad = profile(tmp_path, **values)
    proc = run(exp, bad, results)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert err.startswith(f"vitbench: error: {bad}: " + (f"{key}: " if key else "")), err
    assert re.search(reason, err), err
    assert job_ids(results) == {} and "1 new" in states(exp, results)
    if key not in ("partition", "constraint"):  # the corrected command is run for a checked and an sbatch refusal
        return
    good = profile(tmp_path)
    proc = run(exp, good, results, "--wait")
    assert proc.returncode == 0 and "submitted 1 runs" in proc.stdout, proc.stdout + proc.stderr
    assert "1 done" in states(exp, results)


@pytest.fixture
def max_array_size_4(slurm_cluster: None):  # noqa: ANN201
    """The cluster restarted with MaxArraySize=4 for one test, then restarted as it was (a restart, because
    slurmctld lowers MaxArraySize on `scontrol reconfigure` but does not raise it back)."""
    def restart(value: str | None) -> None:
        env = {k: v for k, v in os.environ.items() if k != "VITBENCH_SLURM_MAX_ARRAY"}
        if value:
            env["VITBENCH_SLURM_MAX_ARRAY"] = value
        subprocess.run(["bash", str(REPO / "slurm" / "start-cluster.sh")], check=True, env=env, timeout=300,
                       capture_output=True)
        cfg = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
        assert re.search(rf"^MaxArraySize\s*=\s*{value or 10001}$", cfg, re.M), cfg
        wait_until(lambda: cluster_status()[0] is not None, 60, "the restarted cluster (node idle, sacct)")

    restart("4")
    try:
        yield
    finally:
        restart(os.environ.get("VITBENCH_SLURM_MAX_ARRAY"))


def test_a_grid_above_max_array_size_goes_as_several_arrays_and_waits_as_one(max_array_size_4: None,
                                                                             tmp_path: Path) -> None:
    exp = one_run_experiment(tmp_path, "split", [0, 1, 2, 3, 4], steps=4)
    results = tmp_path / "results"
    proc = run(exp, profile(tmp_path, array_parallelism=2), results, "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"submitted 5 runs as 2 arrays \d+, \d+ \(MaxArraySize 4\)", proc.stdout), proc.stdout
    ids = job_ids(results)
    arrays: dict[str, list[str]] = {}
    for jid in ids.values():
        arr, _, task = jid.partition("_")
        arrays.setdefault(arr, []).append(task)
    assert sorted(len(v) for v in arrays.values()) == [2, 3], ids  # equal halves, each below MaxArraySize
    assert "5 done" in states(exp, results)  # --wait returned only when both arrays had finished
    for rid in ids:
        assert json.loads((results / "runs" / rid / "result.json").read_text())["status"] == "done"
    for arr, tasks in arrays.items():  # each array carries the profile's parallelism
        script = (results / "slurm" / arr / f"{arr}_submission.sh").read_text()
        assert f"#SBATCH --array=0-{len(tasks) - 1}%2" in script.splitlines(), script
    again = run(exp, profile(tmp_path), results)
    assert "nothing to submit" in again.stdout
