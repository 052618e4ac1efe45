"""The machine side of ``vitbench bench``: peak matmul FLOP/s and MFU, CUDA batch search, process memory
from /proc, CPU and thread facts, and which optimiser implementation torch runs."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F


# ---- small pieces (unit-tested on CPU, also for the CUDA-only paths) -------------------------------


def sync_fn(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def peak_matmul_flops(device: torch.device, *, dtype: torch.dtype | None = None, n: int | None = None,
                      repeats: int | None = None, trials: int = 3) -> dict[str, Any]:
    """The device's achievable matmul FLOP/s, measured now: best of ``trials`` timings of ``repeats``
    n×n×n products. CUDA: bf16, n = 8192; CPU: fp32, n = 2048 (8192³ would take minutes on a few cores).
    """
    cuda = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    n = n or (8192 if cuda else 2048)
    repeats = repeats or (20 if cuda else 3)
    sync = sync_fn(device)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    c = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=c)  # warm-up: kernel selection, thread pool
    sync()
    best = math.inf
    for _ in range(trials):
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b, out=c)
        sync()
        best = min(best, time.perf_counter() - t0)
    del a, b, c
    return {"flops_per_s": 2.0 * n ** 3 * repeats / best, "dtype": str(dtype).replace("torch.", ""), "n": n,
            "repeats": repeats, "trials": trials, "best_seconds": best,
            "threads": torch.get_num_threads() if not cuda else None}


def mfu(flops_per_image: float, images_per_s: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: forward FLOPs/image × 3 (forward + backward) × images/s ÷ peak FLOP/s."""
    return 3.0 * flops_per_image * images_per_s / peak_flops_per_s


def find_max_batch(fits: Callable[[int], bool], *, start: int = 8, limit: int = 1 << 16) -> int:
    """Largest batch start·2^k ≤ limit with ``fits(batch)`` true, by doubling from ``start``.

    Stops at the first batch that does not fit (memory use grows with the batch). Returns 0 when
    even ``start`` does not fit.
    """
    if start < 1 or limit < start:
        raise ValueError(f"need 1 <= start <= limit, got start={start}, limit={limit}")
    if not fits(start):
        return 0
    b = start
    while b * 2 <= limit and fits(b * 2):
        b *= 2
    return b


def cuda_batch_fits(name: str, *, img_size: int, num_classes: int, batch: int, device: torch.device,
                    precision: str = "auto", headroom: float = 0.85) -> bool:
    """One vitbench training step of ``name`` at ``batch`` runs, using at most ``headroom`` of the GPU."""
    from vitbench.models import create_model
    from vitbench.spec.schema import default_config
    from vitbench.train.loop import autocast_for
    from vitbench.train.optim import build_pretrain_optimizer

    model = opt = x = y = loss = None
    try:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        model = create_model(name, num_classes=num_classes, img_size=img_size).to(device)
        opt = build_pretrain_optimizer(model, default_config()["pretrain"])
        x = torch.randn(batch, 3, img_size, img_size, device=device)
        y = torch.randint(0, num_classes, (batch,), device=device)
        for _ in range(2):  # the second step has the optimizer state
            with autocast_for(device, precision):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize(device)
        total = torch.cuda.get_device_properties(device).total_memory
        return torch.cuda.max_memory_allocated(device) <= headroom * total
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        del model, opt, x, y, loss
        torch.cuda.empty_cache()


# ---- memory ------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory of the code inside ``with``.

    CUDA: ``torch.cuda.max_memory_allocated`` (everything allocated: weights, optimizer state,
    activations). CPU: growth of this process's resident set over its size at entry (the
    step's working memory: activations, gradients, temporaries; DataLoader worker processes are
    not counted). The high-water mark is reset through ``/proc/self/clear_refs`` where Linux allows
    it, else ``resource.getrusage`` ru_maxrss (a lifetime peak, so a later, smaller peak reads 0).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bytes: int | None = None
        self.kind = ""

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda max_memory_allocated"
            return self
        _malloc_trim()  # freed heap of earlier passes would otherwise hide this pass's growth
        self._reset = False
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self._reset = True
        self._rss0 = _status_kib("VmRSS")
        self._ru0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.kind = ("cpu peak RSS delta (VmHWM after clear_refs)" if self._reset and self._rss0 is not None
                     else "cpu peak RSS delta (getrusage ru_maxrss)")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = int(torch.cuda.max_memory_allocated(self.device))
            return
        hwm = _status_kib("VmHWM")
        if self._reset and self._rss0 is not None and hwm is not None:
            self.bytes = max(0, hwm - self._rss0) * 1024
        else:
            self.bytes = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._ru0) * 1024


# ---- machine -----------------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME",
              "OMP_PROC_BIND", "CUDA_VISIBLE_DEVICES")


def machine_info(device: torch.device) -> dict[str, Any]:
    affinity = usable_cpus()
    return {"device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": affinity,
            "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "platform": platform.platform(), "hostname": platform.node(),
            "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}


def optimizer_impl(opt: torch.optim.Optimizer) -> str:
    """Which implementation torch runs for this optimiser (resolving foreach=None as torch does)."""
    d = opt.defaults
    if d.get("fused"):
        return "fused"
    if d.get("foreach") is None:
        params = [p for g in opt.param_groups for p in g["params"]]
        try:  # torch's own rule (a private helper; stable across 2.x)
            from torch.optim.optimizer import _default_to_fused_or_foreach

            _, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
        except Exception:  # noqa: BLE001 - fall back to the documented rule: foreach on CUDA only
            foreach = all(p.is_cuda for p in params)
        return "foreach" if foreach else "forloop"
    return "foreach" if d["foreach"] else "forloop"
