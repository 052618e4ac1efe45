"""The logged training loss is the mean over every step since the previous log line (what the
convergence check reads), not the last batch's; the returned final loss is the last step's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitbench.train.loop import train_loop


class Batches:
    def get_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(step)
        return torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g)


def run(log_every: int, checkpoint_every: int | None = None) -> tuple[list[tuple[int, float]], float]:
    torch.manual_seed(0)
    model = nn.Linear(8, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    logged: list[tuple[int, float]] = []
    res = train_loop(model, Batches(), opt, sched, start_step=0, total_steps=10, device=torch.device("cpu"),
                     precision="fp32", grad_clip=0.0, log_every=log_every,
                     on_log=lambda step, loss, lr: logged.append((step, loss)),
                     checkpoint_every=checkpoint_every, on_checkpoint=(lambda s: None) if checkpoint_every else None)
    return logged, res.last_loss


@pytest.mark.parametrize("checkpoint_every", [None, 3])  # checks at checkpoints split no log interval
def test_logged_loss_is_the_interval_mean(checkpoint_every: int | None) -> None:
    per_step, final = run(log_every=1)
    logged, final4 = run(log_every=4, checkpoint_every=checkpoint_every)
    losses = [loss for _, loss in per_step]
    assert [s for s, _ in logged] == [4, 8, 10]
    expected = [sum(losses[0:4]) / 4, sum(losses[4:8]) / 4, sum(losses[8:10]) / 2]
    assert [loss for _, loss in logged] == pytest.approx(expected, rel=1e-6)
    assert logged[0][1] != pytest.approx(losses[3])  # not the last batch's loss
    assert final4 == final == losses[-1]
