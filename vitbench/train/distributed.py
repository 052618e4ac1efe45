"""Data-parallel training across the tasks of one job (DDP), set up from the environment.

submitit exports RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT / LOCAL_RANK through
``submitit.helpers.TorchDistributedEnvironment().export()``; ``torchrun`` sets the same
variables, so a local multi-process run and a SLURM job take the same path here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group described by the environment; single process if there is none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def shard(x: torch.Tensor, y: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's slice of the global batch: every rank draws the same global batch (a pure
    function of (seed, step)), so the shards partition it and DDP's gradient average equals the
    single-process gradient of the whole batch."""
    if not info.enabled:
        return x, y
    return x[info.rank::info.world_size], y[info.rank::info.world_size]


def mean_across_ranks(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
