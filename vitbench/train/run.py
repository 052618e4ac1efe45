"""One run, end to end: pretrain → few-shot linear eval → fine-tuning sweep → result record.

This is the single entry point that ``vitbench run-one``, the local launcher and the SLURM
jobs all call. It resumes from whatever the run directory holds: the newest readable
checkpoint for pretraining, ``progress.json`` for finished evaluation pieces.
"""

from __future__ import annotations

import copy
import os
import platform
import socket
import sys
import time
from typing import Any, Callable

import torch
from torch import nn

from vitbench.errors import UserError
from vitbench.record.faults import fault_point, with_step_delay
from vitbench.record.metrics import summary_metrics
from vitbench.models.published import init_for_run
from vitbench.plugins import load_for_run
from vitbench.spec.budget import describe, epochs_of, evaluation_only, steps_for
from vitbench.record.rundir import RunDir
from vitbench.train import distributed
from vitbench.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from vitbench.train.fewshot import fewshot_eval
from vitbench.train.selection import summarise_finetune
from vitbench.train import convergence
from vitbench.train.timing import Phases
from vitbench.train.mpp import MaskedPatchPretraining, pretraining_loss
from vitbench.train.loop import LoopResult, at_resolution, extract, resolve_device, top1, train_loop
from vitbench.train.probe import FewshotProbe, fewshot_curve
from vitbench.train.optim import build_finetune_optimizer, build_pretrain_optimizer, build_schedule


def _progress_bar(total: int, initial: int, desc: str, mode: str) -> Any | None:
    show = mode == "on" or (mode == "auto" and sys.stderr.isatty())
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)


def environment() -> dict[str, Any]:
    import timm

    return {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
            "host": socket.gethostname(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "threads": torch.get_num_threads()}


class Run:
    """Executes one resolved run config inside its run directory."""

    def __init__(self, cfg: dict[str, Any], rundir: RunDir, *, should_stop: Callable[[], bool] | None = None) -> None:
        self.cfg = cfg
        self.rd = rundir
        self.should_stop = should_stop
        self._datasets: dict[tuple[Any, ...], Any] = {}
        rt = cfg["runtime"]
        self.device = resolve_device(rt["device"])
        threads = rt["threads"] or int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
        if threads > 0 and self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.precision = rt["precision"]
        self.dist = distributed.init_from_env(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)

    # -- helpers --------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.dist.is_main:
            self.rd.log(msg)

    def _dataset(self, name: str, split: str, img_size: int, size: int | None = None) -> Any:
        """Each split is built once per run: few-shot and every fine-tuning rate share it."""
        from vitbench.data import get_dataset

        key = (name, split, img_size, size)
        if key not in self._datasets:
            self._datasets[key] = get_dataset(name, split, img_size=img_size, root=self.cfg["runtime"]["data_root"],
                                              size=size, seed=self.cfg["seed"])
        return self._datasets[key]

    def _loader(self, spec: Any, batch_size: int, *, train: bool, augment: dict[str, Any] | None,
                seed: int) -> Any:
        from vitbench.data import make_loader

        return make_loader(spec, batch_size=batch_size, device=self.device, train=train, seed=seed,
                           augment=augment, num_workers=self.cfg["runtime"]["num_workers"])

    def _eval_batches(self, spec: Any) -> Any:
        return self._loader(spec, self.cfg["runtime"]["eval_batch_size"], train=False, augment=None,
                            seed=0).iter_eval(self.cfg["runtime"]["eval_batch_size"])

    def build_model(self, num_classes: int) -> nn.Module:
        from vitbench.models import from_config

        torch.manual_seed(self.cfg["seed"])
        return from_config(self.cfg["model"], num_classes=num_classes,
                           img_size=self.cfg["pretrain"]["img_size"]).to(self.device)

    # -- phases ---------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any] | None:
        """Run (or resume) to completion; returns the result record on the main rank.

        A storage failure (disk full, read-only results directory) marks the run failed with the
        reason when the directory still takes a small file, and is re-raised: earlier records are
        never touched (every write goes to a temporary file first).
        """
        try:
            return self._execute()
        except UserError as exc:  # e.g. the checkpoint changed after planning: the reason, in the run's state
            if self.dist.is_main:
                self.rd.create(self.cfg)
                self.rd.write_error(str(exc))
            raise
        except OSError as exc:
            reason = f"storage error: {exc.strerror or exc} ({exc.filename or self.rd.path})"
            try:
                self.rd.write_error(reason)
            except OSError:
                pass  # the disk refuses even that: the job log and SLURM's state carry the reason
            raise

    def _execute(self) -> dict[str, Any] | None:
        t_start = time.time()
        self.phases = Phases()
        cfg = self.cfg
        if self.dist.is_main:
            self.rd.create(cfg)
            self.rd.clear_error()
        p = cfg["pretrain"]
        torch.manual_seed(cfg["seed"])
        load_for_run(cfg)  # the plugins whose names the run uses, if they still have their planned bytes
        init = init_for_run(cfg)  # the checkpoint still has the bytes the run id was made from
        if evaluation_only(cfg):  # a published model as it is, or from scratch: no pretraining data, no head
            train_ds, self.train_size, self.pretrain_steps = None, 0, 0
            model = self.build_model(0)
        else:
            train_ds = self._dataset(p["dataset"], "train", p["img_size"], p["size"])
            model = self.build_model(train_ds.num_classes)
            self.train_size = len(train_ds)
            self.pretrain_steps = steps_for(p, self.train_size)
        self.init = None
        if init is not None:
            from vitbench.models.published import init_from_file

            notes = init_from_file(model, init)
            self.init = {"file": str(init), "sha256": cfg["model"]["init_sha256"], "notes": notes}
            self.log(f"initialised from {init} (sha256 {cfg['model']['init_sha256'][:12]})"
                     + "".join(f"; {n}" for n in notes))
        from vitbench.models import count_flops, count_params

        n_params, flops = count_params(model), count_flops(model, p["img_size"])
        what = (f"no pretraining ({f'evaluating {init} as it is' if init else 'from scratch'})"
                if train_ds is None else
                f"pretrain {p['dataset']} n={len(train_ds)}: {describe(p, self.pretrain_steps, len(train_ds))}")
        self.log(f"run {self.rd.run_id}: {cfg['model']['name']} ({n_params:,} params, "
                 f"{flops / 1e6:.2f} MFLOPs/img) on {self.device}, {what}")

        self.phases.mark("setup")
        pre = LoopResult("ok", 0, None) if train_ds is None else self.pretrain(model, train_ds)
        self.phases.mark("pretrain")
        if pre.status == "diverged":
            return self._finish(t_start, model, n_params, flops, pre, evals=None)
        evals = self.evaluate(model, train_ds)
        self.phases.mark("evaluate")
        return self._finish(t_start, model, n_params, flops, pre, evals)

    def pretrain(self, model: nn.Module, train_ds: Any) -> LoopResult:
        p, rt = self.cfg["pretrain"], self.cfg["runtime"]
        total = self.pretrain_steps
        mpp = p["objective"] == "masked_patch"  # self-supervised: the ViT inside a [mask] + prediction head
        trained = MaskedPatchPretraining(model, p["mpp_target"], self.cfg["seed"]).to(self.device) if mpp else model
        optimizer = build_pretrain_optimizer(trained, p, log=self.log)  # logs which tensors are decayed
        scheduler = build_schedule(optimizer, total=total, warmup=p["warmup_steps"], decay=p["decay"])
        start = 0
        ckpt = load_checkpoint(self.rd.ckpt_dir, log=self.log)
        if ckpt is not None:
            trained.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            set_rng_state(ckpt["rng"])
            start = int(ckpt["step"])
            self.log(f"resuming from checkpoint at step {start}/{total}")
            if ckpt.get("diverged_at") is not None:
                return LoopResult("diverged", start, None, diverged_at=int(ckpt["diverged_at"]))
        fs = self.cfg["eval"]["fewshot"]
        probe = FewshotProbe(self, model, total) if fs["every"] > 0 and fs["datasets"] and self.dist.is_main else None
        if probe is not None:
            probe(start)  # step 0 of a fresh run (the curves start at epoch 0); on resume, only if unrecorded
        if start >= total:
            return LoopResult("ok", start, ckpt.get("last_loss") if ckpt else None)

        loader = self._loader(train_ds, p["batch_size"], train=True, augment=p["augment"], seed=self.cfg["seed"])
        net: nn.Module = trained
        if rt["compile"]:
            net = torch.compile(net)  # type: ignore[assignment]
        if self.dist.enabled:
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        def save(step: int) -> None:
            if self.dist.is_main:
                save_checkpoint(self.rd.ckpt_dir, {"step": step, "model": trained.state_dict(),
                                                   "optimizer": optimizer.state_dict(),
                                                   "scheduler": scheduler.state_dict(), "rng": rng_state()})
                self.rd.metric("checkpoint", step=step)
                fault_point(f"after_checkpoint@{step}")

        def on_log(step: int, loss: float, lr: float) -> None:
            if self.dist.is_main:
                self.rd.metric("train", phase="pretrain", step=step, loss=loss, lr=lr)

        bar = _progress_bar(total, start, "pretrain", rt["progress"]) if self.dist.is_main else None
        try:
            res = train_loop(net, loader, optimizer, scheduler, start_step=start, total_steps=total,
                             device=self.device, precision=self.precision, grad_clip=p["grad_clip"],
                             label_smoothing=p["label_smoothing"], log_every=rt["log_every"], on_log=on_log,
                             checkpoint_every=rt["checkpoint_every"], on_checkpoint=save,
                             should_stop=self.should_stop, progress=bar, on_step=with_step_delay(probe),
                             reduce_losses=distributed.mean_across_ranks if self.dist.enabled else None,
                             mix=None if mpp else loader.mixer(p["label_smoothing"]),  # global batch, before the shard
                             loss_fn=pretraining_loss if mpp else None,
                             batch_transform=lambda x, y: distributed.shard(x, y, self.dist))
        finally:
            if bar is not None:
                bar.close()
        if res.status == "diverged":
            self.log(f"pretraining diverged: non-finite loss at step {res.diverged_at}")
            if self.dist.is_main:
                save_checkpoint(self.rd.ckpt_dir, {"step": res.steps_done, "model": trained.state_dict(),
                                                   "optimizer": optimizer.state_dict(),
                                                   "scheduler": scheduler.state_dict(), "rng": rng_state(),
                                                   "diverged_at": res.diverged_at})
            return res
        if total % rt["checkpoint_every"] != 0:
            save(total)  # the evaluation phase resumes from the finished weights
        self.log(f"pretraining done: {total} steps, loss {res.last_loss}")
        return res

    def evaluate(self, model: nn.Module, train_ds: Any) -> dict[str, Any] | None:
        """Pretrain top-1, few-shot linear, fine-tuning sweep; main rank only."""
        distributed.barrier(self.dist)
        if not self.dist.is_main:
            return None
        cfg, progress = self.cfg, self.rd.read_progress()
        p = cfg["pretrain"]
        if train_ds is None or p["objective"] != "supervised":
            progress["pretrain_top1"] = None  # no supervised head (published as it is, self-supervised, none)
        elif "pretrain_top1" not in progress:
            test = self._dataset(p["dataset"], "test", p["img_size"])
            progress["pretrain_top1"] = top1(model, self._eval_batches(test), device=self.device,
                                             precision=self.precision)
            self.rd.write_progress(progress)
        if progress["pretrain_top1"] is not None:
            self.log(f"pretrain top-1 on {p['dataset']} test: {progress['pretrain_top1']:.4f}")

        fs = cfg["eval"]["fewshot"]
        progress.setdefault("fewshot", {})
        for name in fs["datasets"]:
            if name in progress["fewshot"]:
                continue
            img = fs["img_size"] or p["img_size"]
            net = at_resolution(model, img)
            tr, dv, te = (self._dataset(name, split, img) for split in ("train", "dev", "test"))
            xf, yf = extract(net, self._eval_batches(tr), device=self.device, precision=self.precision)
            xd, yd = extract(net, self._eval_batches(dv), device=self.device, precision=self.precision)
            xt, yt = extract(net, self._eval_batches(te), device=self.device, precision=self.precision)
            progress["fewshot"][name] = fewshot_eval(xf, yf, xt, yt, num_classes=tr.num_classes, shots=fs["shots"],
                                                     seeds=fs["seeds"], l2=fs["l2"], seed=cfg["seed"], dev=(xd, yd))
            self.rd.write_progress(progress)
            accs = ", ".join(f"{k}-shot {v['mean']:.4f}" for k, v in progress["fewshot"][name].items())
            self.log(f"few-shot linear on {name}: {accs}")

        ft = cfg["eval"]["finetune"]
        if ft["dataset"]:
            progress.setdefault("finetune", {})
            for lr in ft["lrs"]:
                key = repr(float(lr))
                if key in progress["finetune"]:
                    continue
                progress["finetune"][key] = self.finetune_one(model, lr)
                self.rd.write_progress(progress)
                fault_point(f"after_finetune@{key}")
        return progress

    def finetune_one(self, pretrained: nn.Module, lr: float) -> dict[str, Any]:
        """Fine-tune a copy at one learning rate; dev accuracy (for selection) and test accuracy."""
        ft, p = self.cfg["eval"]["finetune"], self.cfg["pretrain"]
        img = ft["img_size"] or p["img_size"]
        tr, dev, te = (self._dataset(ft["dataset"], s, img) for s in ("train", "dev", "test"))
        torch.manual_seed(self.cfg["seed"])
        model = copy.deepcopy(pretrained)
        model.reset_classifier(tr.num_classes)
        model.set_img_size(img)
        model.to(self.device)
        opt = build_finetune_optimizer(model, lr)
        steps = steps_for(ft, len(tr))
        losses: list[tuple[int, float]] = []  # (step, loss) at log points, for the convergence check

        def on_log(step: int, loss: float, cur: float) -> None:
            losses.append((step, loss))
            self.rd.metric("train", phase=f"finetune@{lr:g}", step=step, loss=loss, lr=cur)

        sched = build_schedule(opt, total=steps, warmup=ft["warmup_steps"], decay="cosine")
        loader = self._loader(tr, ft["batch_size"], train=True, augment=ft["augment"], seed=self.cfg["seed"] + 1)
        t0 = time.time()
        res = train_loop(model, loader, opt, sched, start_step=0, total_steps=steps, device=self.device,
                         precision=self.precision, grad_clip=ft["grad_clip"],
                         log_every=self.cfg["runtime"]["log_every"], mix=loader.mixer(),
                         on_log=on_log)
        if res.status == "diverged":
            self.log(f"fine-tuning at lr={lr:g} diverged at step {res.diverged_at}")
            return {"status": "diverged", "diverged_at": res.diverged_at, "dev_top1": None, "test_top1": None}
        out = {"status": "ok", "steps": steps, "final_loss": res.last_loss,
               "convergence": convergence.check(losses, steps),
               "dev_top1": top1(model, self._eval_batches(dev), device=self.device, precision=self.precision),
               "test_top1": top1(model, self._eval_batches(te), device=self.device, precision=self.precision),
               "wall_s": round(time.time() - t0, 2)}
        self.log(f"fine-tuned {ft['dataset']} at lr={lr:g}: dev {out['dev_top1']:.4f}, test {out['test_top1']:.4f}")
        return out

    def _finish(self, t_start: float, model: nn.Module, n_params: int, flops: int, pre: LoopResult,
                evals: dict[str, Any] | None) -> dict[str, Any] | None:
        if not self.dist.is_main:
            distributed.shutdown(self.dist)
            return None
        p = self.cfg["pretrain"]
        images_seen = pre.steps_done * p["batch_size"]
        record: dict[str, Any] = {
            "status": "diverged" if pre.status == "diverged" else "done",
            "config": self.cfg,
            "model": {"name": self.cfg["model"]["name"], "params": n_params, "flops_per_image": flops,
                      **({"init": self.init} if self.init else {})},
            "pretrain": {"steps": self.pretrain_steps, "train_size": self.train_size,
                         "epochs": round(epochs_of(p, self.pretrain_steps, self.train_size), 4) if self.train_size
                         else 0.0,
                         "steps_done": pre.steps_done, "images_seen": images_seen, "final_loss": pre.last_loss,
                         "diverged_at": pre.diverged_at,
                         # forward + backward ≈ 3 × forward FLOPs (the paper's compute axis)
                         "train_flops": 3 * flops * images_seen},
            "plugins": self.cfg.get("plugins") or [],
            "env": environment(),
            "wall_s": round(time.time() - t_start, 2),
        }
        if evals is not None:
            record["pretrain"]["top1"] = evals.get("pretrain_top1")
            record["fewshot"] = evals.get("fewshot", {})
            if "finetune" in evals:
                record["finetune"] = summarise_finetune(self.cfg["eval"]["finetune"]["dataset"], evals["finetune"])
        metrics = self.rd.read_metrics()
        record["pretrain"]["convergence"] = convergence.check(convergence.curve(metrics, "pretrain"),
                                                              self.pretrain_steps)
        record["timing"] = self.phases.record()
        conv = record["pretrain"]["convergence"]
        if evaluation_only(self.cfg):
            conv["reason"] = ("not pretrained here: the weights are model.init's" if self.init else
                              "not pretrained: pretrain.objective is none")
        else:
            self.log(f"pretraining converged: {conv['converged']} (loss drop over the last fifth "
                     f"{conv['rel_drop']} of the initial loss; rule: {conv['rule']})")
        curve = fewshot_curve(metrics)  # the few-shot probes (Figure 9), last line per step
        if curve:
            record["fewshot_curve"] = curve
        record["summary"] = summary_metrics(record)
        fault_point("before_result")
        self.rd.write_result(record)
        self.log(f"result written: {record['status']} {record['summary']}")
        distributed.shutdown(self.dist)
        return record
