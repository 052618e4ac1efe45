"""Few-shot probes during pretraining: the curves of the paper's Figure 9 (Appendix D.3).

With ``eval.fewshot.every = k > 0`` the main rank scores the model every ``k`` pretraining steps,
at the last step, and at step 0 of a run that starts from scratch, on a FIXED probe set:

* the first few-shot dataset, at the few-shot resolution (``at_resolution``, as the final
  evaluation), features from the same :func:`~vitbench.train.loop.extract`;
* the configured shot counts and seeds, with the very draws the final evaluation makes
  (``sample_shots(train labels, k, shot_seed(seed, s))``): only those training images are extracted;
* ``eval.fewshot.probe_size`` test images (default 1000; null = the whole test split): the first
  ones of a fixed permutation salted by the dataset name, independent of the run seed, so every run
  and every probe scores the same images (1000 images: ±1.6% standard error at 50% accuracy, and
  a probe costs a small fraction of a 50k-image final evaluation).

Each probe appends one line to ``metrics.jsonl``::

    {"event": "fewshot", "time": ..., "step": 50, "epoch": 0.32, "dataset": "digits",
     "shots": {"1": 0.41, "5": 0.63}, "test_images": 540, "wall_s": 0.21}

(``shots``: test accuracy per shot count, mean over the few-shot seeds). The probe does not change
training: the model's train/eval mode and the torch (CPU and CUDA), numpy and python RNG states
are restored afterwards, so a run with probes trains bit-identically to one without.

Resume: the steps already recorded are read once when pretraining (re)starts and are not probed
again; readers (:func:`fewshot_curve`) keep the last line per (dataset, step) anyway.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from vitbench.record.faults import fault_point
from vitbench.spec.budget import epochs_of
from vitbench.train.fewshot import fit_and_score, sample_shots, shot_seed
from vitbench.train.loop import at_resolution, extract

EVENT = "fewshot"


def subset_spec(spec: Any, idx: torch.Tensor | None) -> Any:
    """The DatasetSpec restricted to positions ``idx`` (in order); ``None`` = the spec itself."""
    if idx is None:
        return spec
    tds = spec.torch_dataset
    if tds is not None:
        tds = torch.utils.data.Subset(tds, idx.tolist())
    return dataclasses.replace(
        spec, labels=spec.labels[idx], images=spec.images[idx] if spec.images is not None else None,
        torch_dataset=tds, indices=spec.indices[idx] if spec.indices is not None else None, _device_cache={})


def _rng_snapshot() -> tuple[Any, ...]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()


def _rng_restore(state: tuple[Any, ...]) -> None:
    cpu, cuda, np_state, py_state = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(np_state)
    random.setstate(py_state)


class FewshotProbe:
    """``probe(step)``: score the model if ``step`` is a probe step not yet recorded (an ``on_step`` hook)."""

    def __init__(self, run: Any, model: nn.Module, total: int) -> None:
        self.run, self.model, self.total = run, model, total
        cfg = run.cfg
        self.fs = cfg["eval"]["fewshot"]
        self.every = int(self.fs["every"])
        self.dataset = self.fs["datasets"][0]
        self.img = self.fs["img_size"] or cfg["pretrain"]["img_size"]
        self.recorded = {int(m["step"]) for m in run.rd.read_metrics()
                         if m.get("event") == EVENT and m.get("dataset") == self.dataset
                         and isinstance(m.get("step"), int)}
        self._sets: tuple[Any, ...] | None = None

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.total

    def __call__(self, step: int) -> None:
        if self.due(step) and step not in self.recorded:
            self.probe(step)

    def _prepare(self) -> tuple[Any, ...]:
        """The probe set, built once: the union of the shot draws, the fixed test subset."""
        if self._sets is None:
            from vitbench.data.splits import nested_subset

            run, fs = self.run, self.fs
            tr = run._dataset(self.dataset, "train", self.img)
            te = run._dataset(self.dataset, "test", self.img)
            draws = {(k, s): sample_shots(tr.labels, k, seed=shot_seed(run.cfg["seed"], s))
                     for k in fs["shots"] for s in range(fs["seeds"])}
            union = torch.unique(torch.cat(list(draws.values())))  # sorted
            pos = {key: torch.searchsorted(union, idx) for key, idx in draws.items()}
            n = len(te) if fs["probe_size"] is None else min(int(fs["probe_size"]), len(te))
            test_idx = None if n == len(te) else torch.sort(
                nested_subset(len(te), n, salt=f"{self.dataset}/test/fewshot-probe")).values
            self._sets = (subset_spec(tr, union), subset_spec(te, test_idx), pos, tr.num_classes, n)
        return self._sets

    def probe(self, step: int) -> dict[str, float] | None:
        run, fs, model = self.run, self.fs, self.model
        was_training = model.training
        rng = _rng_snapshot()
        t0 = time.perf_counter()
        try:
            train_spec, test_spec, pos, num_classes, n_test = self._prepare()
            net = at_resolution(model, self.img)
            xf, yf = extract(net, run._eval_batches(train_spec), device=run.device, precision=run.precision)
            xt, yt = extract(net, run._eval_batches(test_spec), device=run.device, precision=run.precision)
            if not (bool(torch.isfinite(xf).all()) and bool(torch.isfinite(xt).all())):
                run.log(f"few-shot probe at step {step} skipped: non-finite features (diverging)")
                return None
            shots: dict[str, float] = {}
            for k in fs["shots"]:
                accs = []
                for s in range(fs["seeds"]):
                    p = pos[(k, s)].to(xf.device)
                    accs.extend(fit_and_score(xf[p], yf[p], num_classes, fs["l2"], (xt, yt)))
                shots[str(k)] = sum(accs) / len(accs)
        finally:
            model.train(was_training)
            _rng_restore(rng)
        wall = time.perf_counter() - t0
        epoch = round(epochs_of(run.cfg["pretrain"], step, run.train_size), 4)
        run.rd.metric(EVENT, step=step, epoch=epoch, dataset=self.dataset, shots=shots, test_images=n_test,
                      wall_s=round(wall, 3))
        self.recorded.add(step)
        accs_text = ", ".join(f"{k}-shot {v:.4f}" for k, v in shots.items())
        run.log(f"few-shot probe at step {step} (epoch {epoch:g}) on {self.dataset}: {accs_text} ({wall:.2f}s)")
        fault_point(f"after_fewshot_probe@{step}")
        return shots


def fewshot_curve(metrics: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Probe lines → {dataset: [{"step", "epoch", "<shots>": acc, ...}, ...]} sorted by step.

    A step recorded twice (a run killed between a probe and the next checkpoint re-probes nothing
    it has, but a reader never assumes so) keeps its last line.
    """
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for m in metrics:
        if m.get("event") != EVENT or not isinstance(m.get("step"), int) or not isinstance(m.get("shots"), dict):
            continue
        last[(str(m.get("dataset")), m["step"])] = m
    out: dict[str, list[dict[str, Any]]] = {}
    for (ds, step), m in sorted(last.items()):
        out.setdefault(ds, []).append({"step": step, "epoch": m.get("epoch"), **m["shots"]})
    return out
