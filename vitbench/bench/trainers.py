"""The vitbench trainer path that ``vitbench bench`` times: ``train_loop`` itself on the in-memory loader, its
ablation settings (:class:`Ablation`), and the instrumented data / forward+backward / optimiser split."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from vitbench.bench.machine import optimizer_impl, sync_fn
from vitbench.bench.reference import ImageArrayDataset, forever, make_dataloader, reference_transforms


# ---- the vitbench path -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ablation:
    """How the vitbench path is set up. The default is what ``vitbench run-one`` does today."""

    optimizer: str = "default"  # default (build_pretrain_optimizer) | forloop | foreach | fused
    channels_last: bool = False
    compile: bool = False
    sdpa: bool = True  # False: the explicit softmax attention of vitbench's Attention
    loader: str = "memory"  # memory (make_loader's get_batch) | dataloader (reference's per-sample DataLoader)
    loader_workers: int = 0
    threads: int | None = None  # torch.set_num_threads while this variant runs
    omp_wait_policy: str | None = None  # run in a child process started with OMP_WAIT_POLICY set to this

    def label(self) -> str:
        parts = []
        if self.optimizer != "default":
            parts.append(f"optimizer={self.optimizer}")
        if self.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append("compile")
        if not self.sdpa:
            parts.append("sdpa=off")
        if self.loader != "memory":
            parts.append(f"loader=dataloader(workers={self.loader_workers})")
        if self.threads is not None:
            parts.append(f"threads={self.threads}")
        if self.omp_wait_policy is not None:
            parts.append(f"OMP_WAIT_POLICY={self.omp_wait_policy}")
        return ", ".join(parts) or "default"


class _DataLoaderSource:
    """``get_batch`` over the reference's DataLoader (per-sample torchvision transforms)."""

    def __init__(self, dataset: Any, *, batch_size: int, workers: int, device: torch.device,
                 augment: dict[str, Any] | None, seed: int) -> None:

        ds = ImageArrayDataset(dataset.images, dataset.labels, reference_transforms(dataset.img_size, augment))
        self.loader = make_dataloader(ds, batch_size=batch_size, workers=workers, device=device, seed=seed)
        self._it = forever(self.loader)
        self.device = device

    def get_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(self._it)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def close(self) -> None:
        self._it.close()
        self.loader = None  # type: ignore[assignment]


class _ChannelsLastSource:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def get_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.inner.get_batch(step)
        return x.contiguous(memory_format=torch.channels_last), y

    def close(self) -> None:
        getattr(self.inner, "close", lambda: None)()


def _rebuild_optimizer(opt: torch.optim.Optimizer, impl: str) -> torch.optim.Optimizer:
    """The same optimiser class, param groups and hyper-parameters with another implementation."""
    if impl == "default":
        return opt
    flags = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[impl]
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in opt.param_groups]
    d = opt.defaults
    return type(opt)(groups, lr=d["lr"], betas=d["betas"], eps=d["eps"], **flags)


class VitbenchTrainer:
    """vitbench's trainer on one model: ``run(n)`` calls ``train_loop`` for n steps and returns seconds."""

    kind = "vitbench"

    def __init__(self, name: str, *, dataset: Any, device: torch.device, batch_size: int,
                 augment: dict[str, Any] | None, variant: Ablation = Ablation(), precision: str = "auto",
                 lr: float = 1e-3, weight_decay: float = 0.1, warmup_steps: int = 30, seed: int = 0) -> None:
        from vitbench.data import make_loader
        from vitbench.models import create_model
        from vitbench.models.vit import Attention
        from vitbench.spec.schema import default_config
        from vitbench.train.optim import build_pretrain_optimizer, build_schedule

        self.name, self.device, self.batch_size, self.variant = name, device, batch_size, variant
        self.precision = precision
        cfg = default_config()["pretrain"]
        cfg.update(lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, batch_size=batch_size)
        self.grad_clip, self.label_smoothing = cfg["grad_clip"], cfg["label_smoothing"]
        torch.manual_seed(seed)
        model = create_model(name, num_classes=dataset.num_classes, img_size=dataset.img_size).to(device)
        if variant.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if not variant.sdpa:
            for m in model.modules():
                if isinstance(m, Attention):
                    m.fused = False
        self.model = model
        self.optimizer = _rebuild_optimizer(build_pretrain_optimizer(model, cfg), variant.optimizer)
        self.scheduler = build_schedule(self.optimizer, total=10 ** 6, warmup=cfg["warmup_steps"], decay=cfg["decay"])
        self.net = torch.compile(model) if variant.compile else model
        if variant.loader == "memory":
            source: Any = make_loader(dataset, batch_size=batch_size, device=device, train=True, seed=seed,
                                      augment=augment)
        else:
            source = _DataLoaderSource(dataset, batch_size=batch_size, workers=variant.loader_workers, device=device,
                                       augment=augment, seed=seed)
        self.source = _ChannelsLastSource(source) if variant.channels_last else source
        self.params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.step = 0

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        if self.variant.threads is None:
            yield
            return
        old = torch.get_num_threads()
        torch.set_num_threads(self.variant.threads)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    def run(self, n: int) -> float:
        """``train_loop`` for steps [step, step + n): seconds, from a synced start to a synced end."""
        from vitbench.train.loop import train_loop

        sync = sync_fn(self.device)
        with self._threads():
            sync()
            t0 = time.perf_counter()
            res = train_loop(self.net, self.source, self.optimizer, self.scheduler, start_step=self.step,
                             total_steps=self.step + n, device=self.device, precision=self.precision,
                             grad_clip=self.grad_clip, label_smoothing=self.label_smoothing, log_every=10 ** 9)
            sync()
            dt = time.perf_counter() - t0
        if res.status != "ok":
            raise RuntimeError(f"{self.name}: training diverged at step {res.diverged_at} while benchmarking")
        self.step += n
        return dt

    def split(self, n: int, sync: Callable[[], None]) -> dict[str, float]:
        """Instrumented steps, ``train_loop``'s two step halves with a sync between the parts: mean seconds of
        data (``get_batch``) / ``forward_backward`` / ``optimizer_step``."""
        from vitbench.train.loop import forward_backward, optimizer_step

        params = [p for p in self.model.parameters() if p.requires_grad]
        pending = []
        t_data = t_fb = t_opt = 0.0
        with self._threads():
            for step in range(self.step, self.step + n):
                sync()
                t0 = time.perf_counter()
                x, y = self.source.get_batch(step)
                sync()
                t1 = time.perf_counter()
                loss = forward_backward(self.net, x, y, self.optimizer, device=self.device, precision=self.precision,
                                        label_smoothing=self.label_smoothing)
                sync()
                t2 = time.perf_counter()
                optimizer_step(params, self.optimizer, self.scheduler, self.grad_clip)
                pending.append(loss.detach())
                sync()
                t3 = time.perf_counter()
                t_data, t_fb, t_opt = t_data + t1 - t0, t_fb + t2 - t1, t_opt + t3 - t2
        self.step += n
        if not bool(torch.isfinite(torch.stack(pending)).all()):
            raise RuntimeError(f"{self.name}: non-finite loss while benchmarking")
        return {"data": t_data / n, "fwd_bwd": t_fb / n, "optimizer": t_opt / n}

    def describe(self) -> dict[str, Any]:
        src = self.source.inner if isinstance(self.source, _ChannelsLastSource) else self.source
        return {"model_source": f"vitbench.models.create_model('{self.name}')", "params": self.params,
                "variant": self.variant.label(),
                "optimizer": f"{type(self.optimizer).__name__} ({optimizer_impl(self.optimizer)})",
                "loader": type(src).__name__, "compiled": self.variant.compile,
                "precision": self.precision}

    def close(self) -> None:
        getattr(self.source, "close", lambda: None)()


def timed_segment(trainer: Any, steps: int, *, max_s: float, chunk: int) -> tuple[int, float]:
    """Run ``steps`` steps in chunks of ``chunk``; stop after the chunk that passes ``max_s`` seconds.

    Returns (steps done, seconds). Chunks bound the time a pathologically slow variant can take;
    each chunk adds one end-of-chunk loss check to the vitbench loop (one sync; nothing on CPU).
    """
    done, elapsed = 0, 0.0
    while done < steps:
        k = min(chunk, steps - done)
        elapsed += trainer.run(k)
        done += k
        if elapsed >= max_s:
            break
    return done, elapsed
