"""The optimisation loop shared by pretraining and fine-tuning.

No host–device synchronisation per step: losses stay on the device and are checked for
NaN/inf (divergence) only at log and checkpoint points, so a diverged run is reported at the
exact step it went bad, at the cost of at most ``log_every`` wasted steps.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn


class BatchSource(Protocol):
    def get_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class StopRequested(Exception):
    """Preemption or timeout: the loop saved a checkpoint at ``step`` and stops."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stop requested at step {step}")
        self.step = step


@dataclass
class LoopResult:
    status: str  # "ok" | "diverged"
    steps_done: int
    last_loss: float | None
    diverged_at: int | None = None
    timings: dict[str, float] = field(default_factory=dict)


def resolve_device(spec: str) -> torch.device:
    """``runtime.device``: auto (CUDA when there is one) | cpu | cuda | cuda:N."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA (``auto``/``bf16``); plain fp32 elsewhere unless bf16 is forced."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]


def forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer, *,
                     device: torch.device, precision: str, label_smoothing: float, loss_fn: LossFn | None = None,
                     step: int = 0) -> torch.Tensor:
    """The first half of a training step: forward, loss, fresh gradients. Returns the loss (on device).

    ``loss_fn(model, x, y, step)``: another objective's loss (masked patch prediction); default cross-entropy.
    """
    with autocast_for(device, precision):
        out = model(x) if loss_fn is None else loss_fn(model, x, y, step)
    loss = out.float() if loss_fn is not None else F.cross_entropy(
        out.float(), y, label_smoothing=0.0 if y.is_floating_point() else label_smoothing)  # mixed: smoothed already
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss


def optimizer_step(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, grad_clip: float) -> None:
    """The second half: clip the global gradient norm (0 = off), step the optimiser and the schedule."""
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()


def train_loop(model: nn.Module, data: BatchSource, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, *, start_step: int, total_steps: int,
               device: torch.device, precision: str = "auto", grad_clip: float = 1.0,
               label_smoothing: float = 0.0, log_every: int = 25,
               on_log: Callable[[int, float, float], None] | None = None,
               checkpoint_every: int | None = None, on_checkpoint: Callable[[int], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               on_step: Callable[[int], None] | None = None,
               progress: Any | None = None,
               reduce_losses: Callable[[torch.Tensor], torch.Tensor] | None = None,
               batch_transform: Callable[[torch.Tensor, torch.Tensor],
                                                                      tuple[torch.Tensor, torch.Tensor]] | None = None,
               mix: Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] | None = None,
               loss_fn: LossFn | None = None,
               ) -> LoopResult:
    """Run steps ``start_step .. total_steps-1``.

    ``reduce_losses`` (DDP) averages the per-rank losses at check points.
    ``on_log(step, loss, lr)`` is called every ``log_every`` steps and at the end, with the mean loss of
    the steps since the previous log line (every step counts: single-batch values are too noisy for the
    convergence check, vitbench/train/convergence.py); the returned ``final_loss`` is the last step's;
    ``on_checkpoint(steps_done)`` every ``checkpoint_every`` steps; ``should_stop()`` is polled
    at every step boundary and, when true, a checkpoint is written and StopRequested raised.
    ``on_step(steps_done)`` is called at every step boundary, after that step's divergence check
    (if any) and before its checkpoint (few-shot probes: recorded before the checkpoint).
    ``mix(x, y, step)`` (Mixup/CutMix, ``loader.mixer()``) runs on the global batch before
    ``batch_transform`` (the DDP shard), so every rank trains on its slice of one mixed batch; it
    returns soft targets, which carry their own label smoothing (``label_smoothing`` is then unused).
    """
    model.train()
    pending: list[torch.Tensor] = []  # device-side losses since the last check
    pending_start = start_step
    last_loss: float | None = None
    interval = [0.0, 0]  # sum and count of the losses since the last log line
    t_data = t_step = 0.0
    params = [p for p in model.parameters() if p.requires_grad]

    def check(step_after: int) -> tuple[bool, int | None]:
        nonlocal pending, pending_start, last_loss
        if not pending:
            return False, None
        losses = torch.stack(pending).float()
        if reduce_losses is not None:  # DDP: every rank sees the mean loss, so all agree on divergence
            losses = reduce_losses(losses)
        losses = losses.cpu()  # the one sync point
        finite = torch.isfinite(losses)
        pending, first = [], pending_start
        pending_start = step_after
        if not bool(finite.all()):
            # step k is the k-th step (as metrics.jsonl, checkpoints and resume count): the loss at
            # index i of this window is that of step first + i + 1
            return True, first + int((~finite).nonzero()[0]) + 1
        last_loss = float(losses[-1])
        interval[0] += float(losses.double().sum())
        interval[1] += len(losses)
        return False, None

    for step in range(start_step, total_steps):
        t0 = time.perf_counter()
        x, y = data.get_batch(step)
        if mix is not None:
            x, y = mix(x, y, step)
        if batch_transform is not None:
            x, y = batch_transform(x, y)
        t1 = time.perf_counter()
        loss = forward_backward(model, x, y, optimizer, device=device, precision=precision,
                                label_smoothing=label_smoothing, loss_fn=loss_fn, step=step)
        optimizer_step(params, optimizer, scheduler, grad_clip)
        pending.append(loss.detach())
        t_data += t1 - t0
        t_step += time.perf_counter() - t1
        done = step + 1
        if progress is not None:
            progress.update(1)
        is_log = done % log_every == 0 or done == total_steps
        is_ckpt = checkpoint_every is not None and on_checkpoint is not None and done % checkpoint_every == 0
        stop = should_stop is not None and should_stop()
        if is_log or is_ckpt or stop:
            diverged, at = check(done)
            if diverged:
                return LoopResult("diverged", done, None, diverged_at=at,
                                  timings={"data_s": t_data, "step_s": t_step})
            if is_log and on_log is not None and interval[1]:
                on_log(done, interval[0] / interval[1], scheduler.get_last_lr()[0])
            if is_log:
                interval[:] = [0.0, 0]
            if progress is not None and last_loss is not None:
                progress.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
        if on_step is not None:
            on_step(done)
        if is_ckpt or (stop and on_checkpoint is not None):
            on_checkpoint(done)
        if stop:
            raise StopRequested(done)
    return LoopResult("ok", total_steps, last_loss, timings={"data_s": t_data, "step_s": t_step})


def at_resolution(model: nn.Module, img_size: int) -> nn.Module:
    """The model itself at its own resolution, else a copy resized (the evaluation must not resize the trained one)."""
    if getattr(model, "img_size", img_size) == img_size:
        return model
    other = copy.deepcopy(model)
    other.set_img_size(img_size)
    return other


@torch.inference_mode()
def extract(model: nn.Module, batches: Any, *, device: torch.device, precision: str = "auto",
            features: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-logit features (or logits) and labels over an evaluation iterator, kept on device."""
    model.eval()
    outs, labels = [], []
    fn = model.forward_features if features else model.forward
    for x, y in batches:
        with autocast_for(device, precision):
            out = fn(x)
        outs.append(out.float())
        labels.append(y)
    return torch.cat(outs), torch.cat(labels)


def top1(model: nn.Module, batches: Any, *, device: torch.device, precision: str = "auto") -> float:
    logits, labels = extract(model, batches, device=device, precision=precision, features=False)
    return (logits.argmax(1) == labels).float().mean().item()
