"""``train.distributed``: joining the process group from the environment, the mean across ranks, the
barrier and the shutdown. Two CPU processes with gloo, as in tests/test_ddp.py; single-process
cases with a one-rank group."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from vitbench.train.distributed import DistInfo, barrier, init_from_env, mean_across_ranks, shutdown


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    import os

    # what torchrun / submitit export; rank 0 is given no LOCAL_RANK, rank 1 is
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": "2"})
    os.environ.pop("LOCAL_RANK", None)
    if rank == 1:
        os.environ["LOCAL_RANK"] = "1"
    info = init_from_env("cpu")
    mine = torch.tensor([1.0 + rank, 10.0 * (rank + 1), -4.0 * rank])  # rank 0: [1, 10, 0]; rank 1: [2, 20, -4]
    before = mine.clone()
    mean = mean_across_ranks(mine)
    barrier(info)
    backend = dist.get_backend()
    shutdown(info)
    Path(out, f"{rank}.json").write_text(json.dumps({
        "info": [info.rank, info.world_size, info.local_rank, info.is_main, info.enabled], "backend": backend,
        "mean": mean.tolist(), "input_kept": torch.equal(mine, before), "left_group": not dist.is_initialized()}))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    import torch.multiprocessing as tmp_mp

    out = tmp_path_factory.mktemp("ddp")
    tmp_mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return [json.loads((out / f"{r}.json").read_text()) for r in (0, 1)]


def test_each_rank_joins_with_its_rank_world_size_and_local_rank(two_ranks: list[dict]) -> None:
    """From RANK / WORLD_SIZE / LOCAL_RANK each process learns who it is; LOCAL_RANK defaults to 0."""
    assert two_ranks[0]["info"] == [0, 2, 0, True, True]
    assert two_ranks[1]["info"] == [1, 2, 1, False, True]


def test_cpu_ranks_talk_over_gloo(two_ranks: list[dict]) -> None:
    """Without CUDA the group uses the gloo backend (NCCL needs GPUs)."""
    assert [r["backend"] for r in two_ranks] == ["gloo", "gloo"]


def test_every_rank_gets_the_mean_and_keeps_its_own_tensor(two_ranks: list[dict]) -> None:
    """Two ranks holding different losses both get their average; neither rank's input is overwritten."""
    for r in two_ranks:
        assert r["mean"] == [1.5, 15.0, -2.0]
        assert r["input_kept"]


def test_shutdown_leaves_the_group(two_ranks: list[dict]) -> None:
    """After shutdown a multi-process run is no longer in a process group."""
    assert [r["left_group"] for r in two_ranks] == [True, True]


# -- single process -------------------------------------------------------------------------------

@pytest.mark.parametrize("world", [None, "1", "0"])
def test_without_a_multi_process_world_there_is_no_group(monkeypatch: pytest.MonkeyPatch, world) -> None:  # noqa: ANN001
    """No WORLD_SIZE, or one of at most 1, is a single process: rank 0 of 1, no group joined."""
    if world is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    info = init_from_env("cpu")
    assert info == DistInfo() and info.is_main and not info.enabled
    assert not dist.is_initialized()
    barrier(info)  # a no-op without a group
    shutdown(info)


@pytest.fixture
def one_rank_group(tmp_path: Path):  # noqa: ANN201
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init1'}", rank=0, world_size=1)
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_an_existing_group_is_joined_not_created_again(one_rank_group, monkeypatch) -> None:  # noqa: ANN001
    """If the process group already exists (set up by the launcher), init_from_env reads it instead of failing."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert init_from_env("cpu") == DistInfo(rank=0, world_size=1, local_rank=3)


@pytest.mark.parametrize("device,backend", [("cuda", "nccl"), ("cpu", "gloo")])
def test_the_backend_follows_the_device(tmp_path, monkeypatch, device: str, backend: str) -> None:  # noqa: ANN001
    """A CUDA run joins an NCCL group, a CPU run a gloo one (NCCL needs GPUs, so the join is recorded and
    stood in for by a one-rank gloo group)."""
    chosen: list[str] = []
    real_init = dist.init_process_group

    def join(backend: str) -> None:
        chosen.append(str(dist.Backend(backend)))
        real_init("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)

    monkeypatch.setattr(dist, "init_process_group", join)
    monkeypatch.setenv("WORLD_SIZE", "2")
    try:
        init_from_env(device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert chosen == [backend]


def test_single_process_shutdown_leaves_a_group_it_did_not_make(one_rank_group) -> None:  # noqa: ANN001
    """shutdown of a single-process run does not tear down a process group someone else set up."""
    shutdown(DistInfo())
    assert dist.is_initialized()


def test_single_rank_mean_is_the_value_itself(one_rank_group) -> None:  # noqa: ANN001
    """In a one-process group the mean is the value itself, returned as a new tensor."""
    t = torch.tensor([3.0, -1.5])
    m = mean_across_ranks(t)
    assert torch.equal(m, torch.tensor([3.0, -1.5])) and m is not t


# -- this process as rank 0 of two -----------------------------------------------------------------

def _plain_peer(port: int) -> None:
    """Rank 1 of a two-process group, written with torch.distributed alone: it contributes [3, -6, 40]."""
    import datetime
    import os

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "1", "WORLD_SIZE": "2"})
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
    dist.all_reduce(torch.tensor([3.0, -6.0, 40.0]), op=dist.ReduceOp.SUM)
    dist.destroy_process_group()


@pytest.mark.timeout(60)
def test_rank_zero_of_two_reads_the_world_size_from_the_group_and_averages(monkeypatch) -> None:  # noqa: ANN001
    """In this very process (rank 0, a second process as rank 1): the world size comes from the group, the
    mean is the sum over ranks divided by 2 (not the sum, not the sum times 2), and shutdown leaves the group."""
    import multiprocessing

    port = _free_port()
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    peer = multiprocessing.get_context("spawn").Process(target=_plain_peer, args=(port,), daemon=True)
    peer.start()
    ok = False
    try:
        info = init_from_env("cpu")
        mine = torch.tensor([1.0, 2.0, -8.0])
        mean = mean_across_ranks(mine)
        shutdown(info)
        assert info == DistInfo(rank=0, world_size=2, local_rank=0) and info.is_main and info.enabled
        assert mean.tolist() == [2.0, -2.0, 16.0]
        assert mine.tolist() == [1.0, 2.0, -8.0]
        assert not dist.is_initialized()
        ok = True
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        peer.join(timeout=20 if ok else 0)
        if peer.is_alive():
            peer.kill()
            peer.join()
    assert peer.exitcode == 0
