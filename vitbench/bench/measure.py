"""Measurement machinery of ``vitbench bench``: the vitbench trainer path, timing, peak FLOP/s, memory.

Throughput is measured on the *uninstrumented* path: vitbench's ``train_loop`` itself, fed by the
in-memory loader's ``get_batch``, timed from outside (one device sync before and after a segment;
the loop's own end-of-segment loss check is its only sync). The split of a step into data,
forward+backward and optimiser time needs a sync between the parts, so it comes from a separate
instrumented pass that repeats the loop's ops one by one (:meth:`VitbenchTrainer.split`).

Methods (vitbench, the timm-style reference, the ablation variants) are measured in interleaved
segments, the order reversed every repeat (A B C, C B A, ...), so drift in machine load hits all of
them alike; each method's figure is the median over repeats, and ratios are medians of the
per-repeat ratios.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

MICRO = {"img_size": 16, "batch": 128, "dataset_size": 20000}  # experiments/_scales.yaml, scale "micro"
SMALL = {"img_size": 32, "batch": 512}  # scale "small" (ViT-S/4 on 32 px CIFAR)
PAPER_IMG = 224


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


# ---- the vitbench path -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
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
        from vitbench.bench.reference import ImageArrayDataset, forever, make_dataloader, reference_transforms

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


class VitbenchTrainer:
    """vitbench's trainer on one model: ``run(n)`` calls ``train_loop`` for n steps and returns seconds."""

    kind = "vitbench"

    def __init__(self, name: str, *, dataset: Any, device: torch.device, batch_size: int,
                 augment: dict[str, Any] | None, variant: Variant = Variant(), precision: str = "auto",
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
        """Instrumented steps, the ops of ``train_loop``'s step one by one with a sync between the parts:
        mean seconds of data (``get_batch``) / forward+loss+zero_grad+backward / clip+optimizer+scheduler."""
        from vitbench.train.loop import autocast_for

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
                with autocast_for(self.device, self.precision):
                    logits = self.net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                sync()
                t2 = time.perf_counter()
                if self.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
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


def _child_entry() -> None:
    """Body of a :class:`ChildTrainer` process: build a VitbenchTrainer, then serve run/split/describe.

    The protocol (pickles) runs over stdin and a private copy of stdout; stray prints go to stderr.
    """
    import pickle
    import sys

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer

    def reply(status: str, value: Any) -> None:
        pickle.dump((status, value), out)
        out.flush()

    try:
        kwargs, threads = pickle.load(inp)
        torch.set_num_threads(threads)
        tr = VitbenchTrainer(**kwargs)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        reply("error", f"{type(exc).__name__}: {exc}")
        return
    reply("ok", None)
    while True:
        try:
            cmd, arg = pickle.load(inp)
        except EOFError:
            return
        try:
            if cmd == "run":
                value: Any = tr.run(arg)
            elif cmd == "split":
                with PeakMemory(tr.device) as pm:
                    sp = tr.split(arg, sync_fn(tr.device))
                value = (sp, pm.bytes, pm.kind)
            elif cmd == "describe":
                value = tr.describe()
            else:  # close
                tr.close()
                reply("ok", None)
                return
            reply("ok", value)
        except Exception as exc:  # noqa: BLE001
            reply("error", f"{type(exc).__name__}: {exc}")


class ChildTrainer:
    """A :class:`VitbenchTrainer` in a child interpreter started with extra environment variables.

    For settings read once when the OpenMP runtime loads (``OMP_WAIT_POLICY``), which cannot be
    switched inside this process. ``run`` times inside the child (the pipe round trip is not counted).
    """

    kind = "vitbench"

    def __init__(self, env: dict[str, str], threads: int, **kwargs: Any) -> None:
        import pickle
        import subprocess
        import sys

        self.env = dict(env)
        root = str(Path(__file__).resolve().parents[2])  # the directory holding the vitbench package
        child_env = {**os.environ, **env,
                     "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from vitbench.bench.measure import _child_entry; _child_entry()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env)
        self._pickle = pickle
        self._send((kwargs, threads))
        self._reply()

    def _send(self, obj: Any) -> None:
        assert self.proc.stdin is not None
        self._pickle.dump(obj, self.proc.stdin)
        self.proc.stdin.flush()

    def _reply(self) -> Any:
        assert self.proc.stdout is not None
        try:
            status, value = self._pickle.load(self.proc.stdout)
        except EOFError:
            raise RuntimeError(f"child trainer ({self.env}) exited with code {self.proc.wait()}") from None
        if status != "ok":
            raise RuntimeError(f"child trainer ({self.env}): {value}")
        return value

    def _call(self, cmd: str, arg: Any = None) -> Any:
        self._send((cmd, arg))
        return self._reply()

    def run(self, n: int) -> float:
        return float(self._call("run", n))

    def split_memory(self, n: int) -> tuple[dict[str, float], int | None, str]:
        return tuple(self._call("split", n))  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {**self._call("describe"), "process": f"child process with {self.env}"}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call("close")
        with contextlib.suppress(Exception):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(10)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait()


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


# ---- one model: every method, interleaved ------------------------------------------------------------


def ablation_variants(family: str, device: torch.device, names: set[str], ref_workers: list[int],
                      default_impl: str) -> dict[str, Variant]:
    """The variants of the vitbench path to measure besides the default, by ablation name."""
    out: dict[str, Variant] = {}
    base = Variant()
    if "optimizer" in names:
        for impl in ("forloop", "foreach", "fused"):
            if impl != default_impl:
                out[f"optimizer={impl}"] = replace(base, optimizer=impl)
    if "channels_last" in names and family in ("bit", "hybrid"):
        out["channels_last"] = replace(base, channels_last=True)
    if "sdpa" in names and family in ("vit", "hybrid"):
        out["sdpa=off"] = replace(base, sdpa=False)
    if "loader" in names:
        for w in ref_workers:
            v = replace(base, loader="dataloader", loader_workers=w)
            out[v.label()] = v
    cpus = usable_cpus()
    now = torch.get_num_threads()
    if "threads" in names and device.type == "cpu" and cpus > 1:
        v = replace(base, threads=1 if now > 1 else cpus)
        out[v.label()] = v
    if "omp" in names and device.type == "cpu":
        policy = "ACTIVE" if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" else "PASSIVE"
        v = replace(base, omp_wait_policy=policy, threads=cpus)
        out[v.label()] = v
    if "compile" in names:
        out["compile"] = replace(base, compile=True)
    return out


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def bench_model(name: str, *, device: torch.device, img_size: int, batch: int, steps: int, warmup: int,
                repeats: int, ablations: set[str], ref_workers: list[int], augment: dict[str, Any] | None,
                dataset_size: int, peak_flops: float | None = None, precision: str = "auto",
                split_steps: int | None = None, split_steps_per_repeat: int = 2,
                max_segment_s: float = math.inf, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure vitbench, the reference (one per worker count) and the ablation variants on one model."""
    from vitbench.bench.reference import ReferenceTrainer
    from vitbench.data import get_dataset
    from vitbench.models import count_flops, create_model, model_family

    t_start = time.perf_counter()
    family = model_family(name)
    ds = get_dataset("synthetic", "train", img_size=img_size, size=dataset_size)
    with torch.device("meta"):
        meta_model = create_model(name, num_classes=ds.num_classes, img_size=img_size)
    flops = count_flops(meta_model, img_size)
    del meta_model
    sync = sync_fn(device)

    trainers: dict[str, Any] = {}
    trainers["vitbench"] = VitbenchTrainer(name, dataset=ds, device=device, batch_size=batch, augment=augment,
                                           precision=precision)
    default_impl = optimizer_impl(trainers["vitbench"].optimizer)
    refs = []
    for w in ref_workers:
        key = f"reference(workers={w})"
        trainers[key] = ReferenceTrainer(name, dataset=ds, device=device, batch_size=batch, workers=w,
                                         augment=augment)
        refs.append(key)
    variants = ablation_variants(family, device, ablations, ref_workers, default_impl)
    for label, v in variants.items():
        kw = dict(dataset=ds, device=device, batch_size=batch, augment=augment, precision=precision)
        if v.omp_wait_policy is not None:
            trainers[label] = ChildTrainer({"OMP_WAIT_POLICY": v.omp_wait_policy},
                                           v.threads or torch.get_num_threads(), name=name,
                                           variant=replace(v, threads=None), **kw)
        else:
            trainers[label] = VitbenchTrainer(name, variant=v, **kw)

    # Warm-up (first-step allocation, worker start, compilation), then the instrumented pass (memory).
    warm_s: dict[str, float] = {}
    splits: dict[str, list[dict[str, float]]] = {k: [] for k in trainers}
    memory: dict[str, dict[str, Any]] = {}
    n_split = split_steps or max(2, min(steps, 5))

    def instrumented(key: str, n: int) -> None:
        tr = trainers[key]
        if isinstance(tr, ChildTrainer):
            sp, nbytes, kind = tr.split_memory(n)
        else:
            with PeakMemory(device) as pm:
                sp = tr.split(n, sync)
            nbytes, kind = pm.bytes, pm.kind
        splits[key].append(sp)
        memory.setdefault(key, {"bytes": nbytes, "kind": kind})

    for key, tr in trainers.items():
        log(f"  {name}: warm-up {key}")
        warm_s[key] = tr.run(warmup) if warmup else 0.0
        instrumented(key, n_split)

    # Interleaved repeats, the order reversed every repeat. A segment starts with untimed steps: one, plus
    # for DataLoader-fed methods the batches their workers prefetched while other methods ran. After the
    # timed segment, a short instrumented pass (the step split, taken under the same machine load).
    def seg_warm(key: str) -> int:
        tr = trainers[key]
        workers = getattr(tr, "workers", None)
        if workers is None and getattr(tr, "variant", Variant()).loader == "dataloader":
            workers = tr.variant.loader_workers
        return 1 + 2 * (workers or 0)  # DataLoader's default prefetch_factor is 2

    order = list(trainers)
    ips: dict[str, list[float]] = {k: [] for k in trainers}
    seg_steps: dict[str, list[int]] = {k: [] for k in trainers}
    chunk = max(1, math.ceil(steps / 3))
    for r in range(repeats):
        seq = order if r % 2 == 0 else order[::-1]
        for key in seq:
            tr = trainers[key]
            tr.run(seg_warm(key))
            done, dt = timed_segment(tr, steps, max_s=max_segment_s, chunk=chunk)
            ips[key].append(batch * done / dt)
            seg_steps[key].append(done)
            if split_steps_per_repeat and done == steps:  # a capped (pathologically slow) segment: skip it
                instrumented(key, split_steps_per_repeat)
        log(f"  {name}: repeat {r + 1}/{repeats}: vitbench {ips['vitbench'][-1]:.0f} img/s, "
            + ", ".join(f"{k} {ips[k][-1]:.0f}" for k in refs))

    def summary(key: str) -> dict[str, Any]:
        med = _median(ips[key])
        return {"images_per_s": med, "images_per_s_repeats": ips[key], "steps_timed": seg_steps[key],
                "step_ms": 1e3 * batch / med,
                "split_ms": {part: 1e3 * _median([sp[part] for sp in splits[key]]) for part in splits[key][0]},
                "split_steps": n_split + (len(splits[key]) - 1) * split_steps_per_repeat,
                "peak_memory_bytes": memory[key]["bytes"],
                "mfu": mfu(flops, med, peak_flops) if peak_flops else None,
                "warmup_s": warm_s[key], **trainers[key].describe()}

    best_ref = max(refs, key=lambda k: _median(ips[k]))
    per_repeat = [a / b for a, b in zip(ips["vitbench"], ips[best_ref])]
    result: dict[str, Any] = {
        "model": name, "family": family, "img_size": img_size, "batch": batch, "steps": steps,
        "warmup": warmup, "repeats": repeats, "segment_warmup_steps": {k: seg_warm(k) for k in trainers},
        "chunk_steps": chunk,
        "max_segment_s": max_segment_s if math.isfinite(max_segment_s) else None, "precision": precision,
        "dataset": {"name": "synthetic", "size": len(ds), "num_classes": ds.num_classes, "augment": augment},
        "flops_per_image": flops, "flops_per_step": 3 * flops * batch,
        "vitbench": summary("vitbench"),
        "reference": {**summary(best_ref), "chosen_from": refs},
        "references": {k: summary(k) for k in refs},
        "ratio": _median(per_repeat), "ratio_repeats": per_repeat,
        "ratio_vs": {k: _median([a / b for a, b in zip(ips["vitbench"], ips[k])]) for k in refs},
    }
    abl: dict[str, Any] = {"default": {"images_per_s": result["vitbench"]["images_per_s"],
                                       "setup": f"{default_impl} {type(trainers['vitbench'].optimizer).__name__}, "
                                                "eager, " + ("SDPA, " if family != "bit" else "")
                                                + ("NCHW, " if family != "vit" else "") + "in-memory loader, "
                                                + (f"{torch.get_num_threads()} threads" if device.type == "cpu"
                                                   else precision)}}
    for label in variants:
        s = summary(label)
        entry = {"images_per_s": s["images_per_s"], "images_per_s_repeats": s["images_per_s_repeats"],
                 "steps_timed": s["steps_timed"],
                 "speedup_vs_default": _median([a / b for a, b in zip(ips[label], ips["vitbench"])]),
                 "split_ms": s["split_ms"], "peak_memory_bytes": s["peak_memory_bytes"]}
        if variants[label].compile:
            eager_step = batch / result["vitbench"]["images_per_s"]
            comp_step = batch / s["images_per_s"]
            compile_s = warm_s[label] - warmup * comp_step
            entry["compile_s"] = compile_s
            gain = eager_step - comp_step
            entry["break_even_steps"] = math.ceil(compile_s / gain) if gain > 0 else None
        abl[label] = entry
    skipped = {"compile": "not requested (add it to --ablations; compiling fwd+bwd takes minutes on a small CPU)"}
    for a in sorted(set(ABLATIONS) - ablations):
        abl.setdefault("skipped", {})[a] = skipped.get(a, "not requested")
    if "channels_last" in ablations and family == "vit":
        abl.setdefault("not_applicable", []).append("channels_last (no convolutions beyond the patch embedding)")
    if "sdpa" in ablations and family == "bit":
        abl.setdefault("not_applicable", []).append("sdpa (no attention)")
    result["ablations"] = abl
    for tr in trainers.values():
        tr.close()
    result["wall_s"] = time.perf_counter() - t_start
    return result


def fill_mfu(result: dict[str, Any], peak_flops: float) -> None:
    """(Re)compute every method's MFU of one bench_model result against ``peak_flops``."""
    flops = result["flops_per_image"]
    for side in [result["vitbench"], result["reference"], *result["references"].values()]:
        side["mfu"] = mfu(flops, side["images_per_s"], peak_flops)
    for entry in result["ablations"].values():
        if isinstance(entry, dict) and "images_per_s" in entry:
            entry["mfu"] = mfu(flops, entry["images_per_s"], peak_flops)


ABLATIONS = ("optimizer", "channels_last", "sdpa", "loader", "threads", "omp", "compile")


# ---- planning ----------------------------------------------------------------------------------------


def planning_experiment(n_runs: int) -> str:
    """YAML of an experiment whose grid (pretrain.lr × pretrain.weight_decay) × seeds has ``n_runs`` runs."""
    if n_runs % 10:
        raise ValueError(f"n_runs must be a multiple of 10, got {n_runs}")
    seeds = list(range(10))
    cells = n_runs // 10
    n_lr = min(cells, 10)
    n_wd = cells // n_lr
    if n_lr * n_wd != cells:
        raise ValueError(f"cannot lay out {n_runs} runs as lr x wd x 10 seeds")
    lrs = [round(1e-4 * (i + 1), 6) for i in range(n_lr)]
    wds = [round(0.01 * (i + 1), 4) for i in range(n_wd)]
    return (f"description: planning benchmark, {n_runs} runs (lr x weight_decay x seeds)\n"
            f"base:\n  model: {{name: ViT-micro/4}}\n"
            f"  pretrain: {{dataset: synthetic, size: 20000, img_size: 16, steps: 300, batch_size: 128}}\n"
            f"grid:\n  product:\n    pretrain.lr: {lrs}\n    pretrain.weight_decay: {wds}\n"
            f"seeds: {seeds}\n"
            f"default_scale: micro\nscales:\n  micro: {{description: micro}}\n")


def bench_planning(sizes: tuple[int, ...] = (1000, 100), trials: int = 3) -> dict[str, Any]:
    """Time ``make_plan`` on synthetic experiment files of ``sizes`` runs (first call and best of ``trials``)."""
    from vitbench.plan.planner import make_plan

    out: dict[str, Any] = {"target_s": 1.0}
    with tempfile.TemporaryDirectory(prefix="vitbench-plan-") as tmp:
        for n in sizes:
            path = Path(tmp) / f"plan{n}.yaml"
            path.write_text(planning_experiment(n))
            times = []
            plan = None
            for _ in range(trials):
                t0 = time.perf_counter()
                plan = make_plan(path, scale="micro", max_runs=max(n, 1))
                times.append(time.perf_counter() - t0)
            assert plan is not None
            out[f"runs_{n}"] = {"runs": len(plan.runs), "grid": "pretrain.lr x pretrain.weight_decay x 10 seeds",
                                "seconds_first": times[0], "seconds_best": min(times),
                                "within_target": times[0] <= out["target_s"],
                                "varying": plan.varying}
    out["one_array_note"] = ("vitbench.launch.launcher.submit wraps every submit of a plan in executor.batch() "
                             "(one sbatch, a job array); the one-array property is tested against SLURM, "
                             "not here")
    return out


def bench_aggregation(n_runs: int = 10_000, trials: int = 3) -> dict[str, Any]:
    """Time reading ``n_runs`` run records and laying out their table (target ≤ 2 s).

    The records are generated here, in a temporary run store, from a synthetic lr × weight-decay
    × seeds experiment: plausible summaries, a few diverged runs and a few missing ones, so every
    cell kind is exercised. Writing them is not timed.
    """
    import random

    from vitbench.aggregate.records import load_frame
    from vitbench.aggregate.tables import build_tables, render
    from vitbench.plan.planner import make_plan
    from vitbench.record.rundir import RunDir, run_dir

    out: dict[str, Any] = {"target_s": 2.0, "runs": n_runs}
    with tempfile.TemporaryDirectory(prefix="vitbench-agg-") as tmp:
        path = Path(tmp) / "agg.yaml"
        path.write_text(planning_experiment(n_runs) + "report:\n  tables:\n    - {metric: fewshot/digits/5shot, "
                        "rows: pretrain.lr, cols: pretrain.weight_decay, tune: pretrain.weight_decay}\n")
        plan = make_plan(path, scale="micro", max_runs=n_runs, check_data=False)
        rng = random.Random(0)
        results = Path(tmp) / "store"
        for i, run in enumerate(plan.runs):
            if i % 97 == 0:
                continue  # missing
            rd = RunDir(run_dir(results, run.run_id))
            rd.path.mkdir(parents=True)
            status = "diverged" if i % 89 == 0 else "done"
            acc = rng.random()
            rd.write_result({"status": status, "config": run.config,
                             "summary": {"fewshot/digits/5shot": acc, "fewshot/digits/5shot/dev": acc + 0.01}
                             if status == "done" else {},
                             "model": {"params": 143_114, "flops_per_image": 4_860_160},
                             "pretrain": {"train_flops": 1e12, "diverged_at": 7 if status == "diverged" else None}})
        times = []
        for _ in range(trials):
            t0 = time.perf_counter()
            text = render(build_tables(plan, load_frame(plan, results)), "md")
            times.append(time.perf_counter() - t0)
        out.update(seconds_first=times[0], seconds_best=min(times), within_target=times[0] <= out["target_s"],
                   table_lines=text.count("\n"))
    return out
