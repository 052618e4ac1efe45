"""The reference: a plain training loop written the way timm's ``train.py`` trains.

What it does per step, as ``train.py``'s ``train_one_epoch`` (no mixup, no EMA, no prefetcher):

* the batch comes from a ``torch.utils.data.DataLoader`` over a map-style dataset that turns one
  uint8 HWC array into a PIL image (as ``torchvision.datasets.CIFAR10``) and runs per-sample
  torchvision transforms (RandomCrop with padding or RandomResizedCrop, RandomHorizontalFlip,
  ToTensor, Normalize); ``shuffle``, ``drop_last``, persistent workers, ``pin_memory`` on CUDA;
* the model is a timm model of the equivalent architecture (``timm.create_model`` where timm
  has one; see :func:`build_reference_model`);
* the optimiser is ``timm.optim.create_optimizer_v2(model, 'adamw', ...)`` (``torch.optim.AdamW``
  with timm's no-decay groups; torch's default implementation: the single-tensor for-loop on
  CPU, foreach on CUDA, never fused), the schedule timm's ``CosineLRScheduler`` stepped per update;
* ``autocast`` (bf16) on CUDA, nothing on CPU; ``loss.backward()``, ``dispatch_clip_grad`` (norm),
  ``optimizer.step()``, ``loss.item()`` into the running average as ``train.py`` logs it,
  ``optimizer.zero_grad()``, ``lr_scheduler.step_update``.
"""

from __future__ import annotations

import contextlib
import time
from functools import partial
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from vitbench.bench.machine import optimizer_impl
from vitbench.data.ops import pad_padding

# vitbench's ViT sizes → timm's vit_base_patch16_224 overridden by kwargs (timm merges kwargs over its args)
_TIMM_VIT_BASE = "vit_base_patch16_224"
# BiT-R{depth}x{width} with a timm registration
_TIMM_BIT = {("50", "1"): "resnetv2_50x1_bit", ("50", "3"): "resnetv2_50x3_bit", ("101", "1"): "resnetv2_101x1_bit",
             ("101", "3"): "resnetv2_101x3_bit", ("152", "2"): "resnetv2_152x2_bit",
             ("152", "4"): "resnetv2_152x4_bit"}


def build_reference_model(name: str, *, num_classes: int, img_size: int) -> tuple[nn.Module, str]:
    """(timm model of the architecture of vitbench's ``name``, a one-line description of what was built).

    * ``ViT-*``: ``timm.create_model('vit_base_patch16_224', img_size, patch_size, embed_dim, depth,
      num_heads, mlp_ratio, num_classes)``: same encoder, [class] token, learned 1-D position
      embedding; timm has no pre-logits (Linear+tanh) layer, vitbench's default has one (D² + D
      parameters more).
    * ``BiT-R*`` with a timm registration: ``timm.create_model('resnetv2_<d>x<w>_bit', num_classes)``.
      ``BiT-micro``/``BiT-nano`` and other widths: timm's ``ResNetV2`` class with the BiT arguments
      (what ``_create_resnetv2_bit`` passes) and vitbench's tiny stage layout - timm registers no
      model of that size.
    * Hybrids (``R50+B/16``): timm has no equivalent with vitbench's layout; the vitbench model itself.
    """
    import timm

    from vitbench.models import model_family
    from vitbench.models.bit import DEPTHS, TINY
    from vitbench.models.vit import VIT_SIZES

    family = model_family(name)
    if family == "vit":
        size, patch = name[len("ViT-"):].split("/")
        dim, depth, heads, mlp = VIT_SIZES[size]
        kw = dict(img_size=img_size, patch_size=int(patch), embed_dim=dim, depth=depth, num_heads=heads,
                  mlp_ratio=mlp / dim, num_classes=num_classes)
        model = timm.create_model(_TIMM_VIT_BASE, pretrained=False, **kw)
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
        return model, f"timm.create_model('{_TIMM_VIT_BASE}', {args}) (no pre-logits layer)"
    if family == "bit":
        from timm.layers import GroupNormAct, StdConv2d
        from timm.models.resnetv2 import ResNetV2

        tiny = name[len("BiT-"):] if name[len("BiT-"):] in TINY else None
        if tiny is None:
            depth, width = name[len("BiT-R"):].split("x")
            if (depth, width) in _TIMM_BIT:
                variant = _TIMM_BIT[(depth, width)]
                return (timm.create_model(variant, pretrained=False, num_classes=num_classes),
                        f"timm.create_model('{variant}', num_classes={num_classes})")
            arch: dict[str, Any] = dict(layers=DEPTHS[depth], width_factor=int(width))
        else:
            arch = dict(TINY[tiny])
        groups = arch.pop("num_groups", 32)
        model = ResNetV2(num_classes=num_classes, stem_type="fixed", conv_layer=partial(StdConv2d, eps=1e-8),
                         norm_layer=partial(GroupNormAct, num_groups=groups), **arch)
        args = ", ".join(f"{k}={v!r}" for k, v in arch.items())
        return model, (f"timm.models.resnetv2.ResNetV2({args}, stem_type='fixed', StdConv2d(eps=1e-8), "
                       f"GroupNormAct(num_groups={groups})) (BiT arguments; timm registers no model of this size)")
    from vitbench.models import create_model

    return (create_model(name, num_classes=num_classes, img_size=img_size),
            f"vitbench.models.create_model('{name}') (timm has no equivalent hybrid)")


class ImageArrayDataset(torch.utils.data.Dataset):
    """Map-style dataset over uint8 images, one PIL image per item (as torchvision's CIFAR10)."""

    def __init__(self, images_nchw: torch.Tensor, labels: torch.Tensor, transform: Callable[[Any], Any]) -> None:
        self.data = np.ascontiguousarray(images_nchw.cpu().permute(0, 2, 3, 1).numpy())  # N, H, W, C
        self.targets = labels.cpu().tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        img = Image.fromarray(self.data[index])
        return self.transform(img), self.targets[index]


def reference_transforms(img_size: int, augment: dict[str, Any] | None) -> Callable[[Any], Any]:
    """Per-sample torchvision transforms equivalent to vitbench's batched augment ops.

    pad_crop → RandomCrop(padding=vitbench's pad); random_resized → RandomResizedCrop; flip →
    RandomHorizontalFlip; then ToTensor and Normalize to [-1, 1] (vitbench's value range).
    """
    from torchvision import transforms as T

    augment = augment or {}
    ops: list[Any] = []
    crop = augment.get("crop", "none") or "none"
    if crop == "pad_crop":
        ops.append(T.RandomCrop(img_size, padding=pad_padding(img_size)))
    elif crop == "random_resized":
        ops.append(T.RandomResizedCrop(img_size))
    if augment.get("flip", False):
        ops.append(T.RandomHorizontalFlip())
    ops += [T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    return T.Compose(ops)


def make_dataloader(dataset: torch.utils.data.Dataset, *, batch_size: int, workers: int,
                    device: torch.device, seed: int = 0) -> torch.utils.data.DataLoader:
    """timm ``create_loader``'s DataLoader settings, without its CUDA prefetcher."""
    kw: dict[str, Any] = dict(batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                              pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed))
    if workers > 0:
        kw["persistent_workers"] = True
    return torch.utils.data.DataLoader(dataset, **kw)


def forever(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """Epoch after epoch (train.py's outer epoch loop)."""
    while True:
        yield from loader


class ReferenceTrainer:
    """timm-``train.py``-style loop on one model; ``run(n)`` trains n steps and returns seconds."""

    kind = "reference"

    def __init__(self, name: str, *, dataset: Any, device: torch.device, batch_size: int, workers: int,
                 augment: dict[str, Any] | None, lr: float = 1e-3, weight_decay: float = 0.1,
                 warmup_steps: int = 30, grad_clip: float = 1.0, seed: int = 0) -> None:
        import timm.optim
        import timm.scheduler
        from timm.utils import AverageMeter, dispatch_clip_grad

        self.name, self.device, self.batch_size, self.workers = name, device, batch_size, workers
        torch.manual_seed(seed)
        model, self.model_source = build_reference_model(name, num_classes=dataset.num_classes,
                                                         img_size=dataset.img_size)
        self.model = model.to(device)
        self.model.train()
        self.optimizer = timm.optim.create_optimizer_v2(self.model, opt="adamw", lr=lr, weight_decay=weight_decay)
        self.scheduler = timm.scheduler.CosineLRScheduler(self.optimizer, t_initial=10 ** 6, warmup_t=warmup_steps,
                                                          warmup_lr_init=lr * 1e-3, t_in_epochs=False)
        self.loss_fn = nn.CrossEntropyLoss().to(device)
        self.amp_autocast: Callable[[], Any] = (
            partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda"
            else contextlib.nullcontext)
        self.clip = partial(dispatch_clip_grad, value=grad_clip, mode="norm") if grad_clip > 0 else None
        self.losses = AverageMeter()
        self.dataset = ImageArrayDataset(dataset.images, dataset.labels,
                                         reference_transforms(dataset.img_size, augment))
        self.loader = make_dataloader(self.dataset, batch_size=batch_size, workers=workers, device=device,
                                      seed=seed)
        self._it = forever(self.loader)
        self.num_updates = 0
        self.optimizer.zero_grad()

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _next(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(self._it)
        if self.device.type != "cpu":  # train.py without prefetcher: input.to(device)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return x, y

    def _update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self.amp_autocast():
            output = self.model(x)
            loss = self.loss_fn(output, y)
        loss.backward()
        if self.clip is not None:
            self.clip(self.model.parameters())
        self.optimizer.step()
        self._finish(loss, x.shape[0])

    def _finish(self, loss: torch.Tensor, n: int) -> None:
        self.losses.update(loss.item(), n)  # train.py: losses_m.update(loss.item() * accum_steps, ...)
        self.optimizer.zero_grad()
        self.num_updates += 1
        self.scheduler.step_update(num_updates=self.num_updates, metric=self.losses.avg)

    def run(self, n: int) -> float:
        """Train ``n`` steps; seconds taken (loss.item() syncs every step, as train.py)."""
        t0 = time.perf_counter()
        for _ in range(n):
            x, y = self._next()
            self._update(x, y)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def split(self, n: int, sync: Callable[[], None]) -> dict[str, float]:
        """Instrumented steps: mean seconds of data / forward+backward / optimiser (incl. the loop's bookkeeping)."""
        t_data = t_fb = t_opt = 0.0
        for _ in range(n):
            sync()
            t0 = time.perf_counter()
            x, y = self._next()
            sync()
            t1 = time.perf_counter()
            with self.amp_autocast():
                output = self.model(x)
                loss = self.loss_fn(output, y)
            loss.backward()
            sync()
            t2 = time.perf_counter()
            if self.clip is not None:
                self.clip(self.model.parameters())
            self.optimizer.step()
            self._finish(loss, x.shape[0])
            sync()
            t3 = time.perf_counter()
            t_data, t_fb, t_opt = t_data + t1 - t0, t_fb + t2 - t1, t_opt + t3 - t2
        return {"data": t_data / n, "fwd_bwd": t_fb / n, "optimizer": t_opt / n}

    def describe(self) -> dict[str, Any]:
        return {"model_source": self.model_source, "params": self.params, "workers": self.workers,
                "optimizer": f"timm.optim.create_optimizer_v2('adamw') -> {type(self.optimizer).__name__} "
                             f"({optimizer_impl(self.optimizer)})",
                "loader": f"DataLoader(per-sample torchvision transforms, workers={self.workers})",
                "autocast": "bf16" if self.device.type == "cuda" else None}

    def close(self) -> None:
        self._it.close()  # the generator drops the DataLoader iterator, which stops the persistent workers
        self.loader = None  # type: ignore[assignment]
