"""``distributed.shard``: every DDP rank gets its own slice of the global batch, and the slices
of all ranks partition it (disjoint, nothing lost, nothing repeated, inputs and labels aligned).

tests/test_ddp.py cannot see a shard that hands every rank the whole batch (each rank's gradient
is then the full-batch one and the average is unchanged), so the contract is tested directly.
"""

import pytest
import torch

from vitbench.train.distributed import DistInfo, shard


def _batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    # sample i carries the value i in every pixel; its label is 1000 + i, so alignment is checkable
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    y = torch.arange(n) + 1000
    return x, y


def _ids(x: torch.Tensor) -> list[int]:
    return [int(v) for v in x[:, 0, 0, 0].tolist()]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 7, 8, 12, 16, 17, 30])
def test_shards_partition_the_global_batch(world: int, batch: int) -> None:
    x, y = _batch(batch)
    shards = [shard(x, y, DistInfo(rank=r, world_size=world)) for r in range(world)]
    ids = [_ids(sx) for sx, _ in shards]

    for r, (sx, sy) in enumerate(shards):
        # labels travel with their samples, and the per-sample shape is kept
        assert sx.shape[1:] == x.shape[1:]
        assert [int(v) - 1000 for v in sy.tolist()] == ids[r]
        # what the code does with a remainder: rank r takes samples r, r + world, r + 2*world, ...,
        # so the sizes differ by at most one and the lower ranks take the extra samples
        assert ids[r] == list(range(r, batch, world))
        assert len(ids[r]) == batch // world + (1 if r < batch % world else 0)

    # disjoint across ranks, and together exactly the global batch (each sample once)
    for a in range(world):
        for b in range(a + 1, world):
            assert not set(ids[a]) & set(ids[b]), f"ranks {a} and {b} share samples"
    everything = [i for rank_ids in ids for i in rank_ids]  # concatenation in rank order
    assert sorted(everything) == list(range(batch))
    assert len(everything) == batch
    cat_x = torch.cat([sx for sx, _ in shards])
    cat_y = torch.cat([sy for _, sy in shards])
    order = torch.tensor(everything, dtype=torch.long)
    assert torch.equal(cat_x, x[order]) and torch.equal(cat_y, y[order])


def test_single_process_gets_the_whole_batch_unchanged() -> None:
    x, y = _batch(7)
    sx, sy = shard(x, y, DistInfo())
    assert torch.equal(sx, x) and torch.equal(sy, y)


def test_every_rank_of_a_multi_process_job_gets_a_strict_subset() -> None:
    x, y = _batch(16)
    for world in (2, 4):
        for r in range(world):
            sx, sy = shard(x, y, DistInfo(rank=r, world_size=world))
            assert sx.shape[0] == sy.shape[0] == 16 // world < 16
