"""The cluster-limit reader and the refusal explainer, on the text scontrol and sbatch print (captured
from SLURM 22.05, the local cluster's version); the same paths run against the real cluster in
tests/integration/test_cluster_refusals.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitbench.errors import ClusterBusy
from vitbench.launch.launcher import array_chunk
from vitbench.launch.profiles import Profile, load_profile
from vitbench.launch.slurm_limits import ClusterLimits, check_profile, explain_refusal, parse_limits, \
    parse_slurm_minutes

PARTITIONS = (
    "PartitionName=debug AllowGroups=ALL Default=YES QoS=N/A MaxNodes=UNLIMITED MaxTime=UNLIMITED Nodes=vm "
    "State=UP TotalCPUs=8 TotalNodes=1 MaxMemPerNode=UNLIMITED\n"
    "PartitionName=gpu Default=NO MaxNodes=2 MaxTime=2-00:00:00 Nodes=g[1-2] State=UP MaxMemPerNode=512000\n")
NODES = ("NodeName=vm CPUTot=8 Gres=(null) RealMemory=21694 State=IDLE Partitions=debug\n"
         "NodeName=g1 CPUTot=96 Gres=gpu:h100:8(S:0-1) RealMemory=1000000 Partitions=gpu\n"
         "NodeName=g2 CPUTot=96 Gres=gpu:8 RealMemory=1000000 Partitions=gpu\n")
CONFIG = "ClusterName = vitbench\nMaxArraySize            = 1001\nMaxJobCount             = 100000\n"


@pytest.mark.parametrize("text,minutes", [("UNLIMITED", None), ("INFINITE", None), ("10", 10), ("10:00", 10),
                                          ("01:30:00", 90), ("2-00:00:00", 2880), ("1-2", 1560),
                                          ("00:10:30", 11)])
def test_slurm_times_read_as_minutes(text: str, minutes: int | None) -> None:
    assert parse_slurm_minutes(text) == minutes


def limits() -> ClusterLimits:
    lim = parse_limits(PARTITIONS, NODES, CONFIG)
    lim.partitions["gpu"].nodes = ["g1", "g2"]  # hostlist expansion is scontrol's (needs the cluster)
    return lim


def test_limits_are_read_from_scontrol_text() -> None:
    lim = limits()
    assert lim.max_array_size == 1001 and lim.default_partition.name == "debug"
    gpu = lim.partitions["gpu"]
    assert (gpu.max_time_min, gpu.max_nodes, gpu.max_mem_mb) == (2880, 2, 512000)
    assert lim.nodes["g1"] == lim.nodes["g2"] == {"cpus": 96, "mem_mb": 1000000, "gpus": 8}
    assert lim.nodes["vm"] == {"cpus": 8, "mem_mb": 21694, "gpus": 0}


def prof(tmp_path: Path, **values: object) -> Profile:
    import yaml

    f = tmp_path / "site.yaml"
    f.write_text(yaml.safe_dump(values))
    return load_profile(str(f))


@pytest.mark.parametrize("values,match", [
    ({"partition": "gpus"}, r"site.yaml: partition: the cluster has no partition 'gpus'; it has: debug, gpu"),
    ({"partition": "gpu", "time_min": 2881}, r"time_min: 2881 minutes is above the MaxTime of partition 'gpu' "
                                             r"\(2880 minutes\); allowed: 1..2880"),
    ({"partition": "gpu", "nodes": 3}, r"nodes: 3 nodes, but partition 'gpu' has at most 2"),
    ({"partition": "gpu", "mem_gb": 600}, r"mem_gb: 600 GB per node, but the nodes of partition 'gpu' have at most "
                                          r"500.0 GB"),
    ({"partition": "gpu", "gpus_per_node": 9}, r"gpus_per_node: 9 GPUs per node, but the nodes of partition 'gpu' "
                                               r"have 8 GPUs"),
    ({"gpus_per_node": 1}, r"gpus_per_node: 1 GPUs per node, but the nodes of partition 'debug' have no GPUs"),
    ({"cpus_per_task": 5, "tasks_per_node": 2}, r"cpus_per_task: cpus_per_task × tasks_per_node = 10 CPUs"),
])
def test_profile_checked_against_the_limits(tmp_path: Path, values: dict, match: str) -> None:
    with pytest.raises(Exception, match=match) as exc:
        check_profile(prof(tmp_path, **values), limits())
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)


def test_a_profile_within_the_limits_passes(tmp_path: Path) -> None:
    check_profile(prof(tmp_path, partition="gpu", nodes=2, gpus_per_node=8, mem_gb=480, time_min=2880,
                       cpus_per_task=12, tasks_per_node=8), limits())
    check_profile(prof(tmp_path), limits())  # no partition: the default one


@pytest.mark.parametrize("stderr,key,busy", [
    ("sbatch: error: invalid partition specified: nope\n"
     "sbatch: error: Batch job submission failed: Invalid partition name specified", "partition", False),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     "account", False),
    ("sbatch: error: Batch job submission failed: Invalid qos specification", "qos", False),
    ("sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)",
     "time_min", False),
    ("sbatch: error: Memory specification can not be satisfied\n"
     "sbatch: error: Batch job submission failed: Requested node configuration is not available", "mem_gb", False),
    ("sbatch: error: Invalid generic resource (gres) specification", "gpus_per_node", False),
    ("sbatch: error: Batch job submission failed: Invalid feature specification", "constraint", False),
    ("sbatch: error: QOSMaxSubmitJobPerUserLimit\n"
     "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy", None, True),
    ("sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying", None, True),
])
def test_sbatch_refusals_name_the_key(tmp_path: Path, stderr: str, key: str | None, busy: bool) -> None:
    p = prof(tmp_path, partition="nope", account="acct", qos="q", constraint="h100")
    err = explain_refusal(stderr, p, submitted=4, remaining=3)
    text = str(err)
    assert isinstance(err, ClusterBusy) == busy and err.exit_code == (1 if busy else 2)
    assert text.startswith(f"{tmp_path / 'site.yaml'}: " + (f"{key}: " if key else "")), text
    assert "\n" not in text and "sbatch: error" not in text
    assert "(3 runs stay new; 4 were submitted before; fix and re-run the same command)" in text


def test_account_refusal_without_an_account_in_the_profile_names_no_key(tmp_path: Path) -> None:
    err = explain_refusal("sbatch: error: Batch job submission failed: Invalid account", prof(tmp_path),
                          submitted=0, remaining=2)
    assert str(err).startswith(f"{tmp_path / 'site.yaml'}: sbatch refused the job: Invalid account (2 runs stay")


@pytest.mark.parametrize("n,max_array,size", [(5, 4, 3), (8, 4, 4), (9, 4, 3), (4, 4, 4), (10001, None, 10001),
                                              (2500, 1001, 834)])
def test_arrays_split_into_equal_parts_below_max_array_size(n: int, max_array: int | None, size: int) -> None:
    assert array_chunk(ClusterLimits(max_array_size=max_array), n) == size


@pytest.mark.parametrize("n,per,sizes", [(5, 1, [1] * 5), (5, 2, [2, 2, 1]), (6, 4, [3, 3]), (1, 3, [1]),
                                         (7, 3, [3, 2, 2])])
def test_runs_are_dealt_round_robin_into_tasks(n: int, per: int, sizes: list[int]) -> None:
    from vitbench.launch.launcher import group_runs

    tasks = group_runs(list(range(n)), per)
    assert [len(t) for t in tasks] == sizes and sorted(sum(tasks, [])) == list(range(n))
    assert all(len(t) <= per for t in tasks) and tasks[0][0] == 0 and (n < 2 or tasks[-1][0] == len(tasks) - 1)
