"""DDP across the tasks of one job, through submitit's distributed environment: 2 CPU
processes with the gloo backend train to the same weights as one process on the whole batch."""

from pathlib import Path

import submitit
import torch

from vitbench.launch.job import RunJob
from vitbench.plan.ids import run_id
from vitbench.record.rundir import RunDir
from vitbench.spec.runconfig import resolve_run_config
from vitbench.train.run import Run


def _config() -> dict:
    return resolve_run_config({
        "model": {"name": "ViT-nano/4"},
        "pretrain": {"dataset": "synthetic", "size": 256, "img_size": 16, "steps": 8, "batch_size": 16,
                     "warmup_steps": 2},
        "eval": {"fewshot": {"datasets": ["digits"], "shots": [1], "seeds": 1},
                 "finetune": {"dataset": None}},
        "runtime": {"device": "cpu", "checkpoint_every": 4, "log_every": 2, "progress": "off"},
    })


def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    cfg = _config()
    single = RunDir(tmp_path / "single" / run_id(cfg))
    Run(cfg, single).execute()

    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    executor.update_parameters(tasks_per_node=2, nodes=1, timeout_min=10, cpus_per_task=1)
    ddp_dir = tmp_path / "ddp" / run_id(cfg)
    job = executor.submit(RunJob(cfg, str(ddp_dir)))
    job.results()  # both tasks; raises if either failed
    log = (ddp_dir / "log.txt").read_text()
    assert "task 0/2" in log

    a = torch.load(single.ckpt_dir / "last.pt", weights_only=True)["model"]
    b = torch.load(ddp_dir / "ckpt" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < 1e-4, f"DDP weights differ from single-process by {worst}"
    ra, rb = RunDir(single.path).read_result(), RunDir(ddp_dir).read_result()
    assert rb["status"] == "done" and rb["pretrain"]["steps_done"] == 8
    assert abs(ra["pretrain"]["final_loss"] - rb["pretrain"]["final_loss"]) < 1e-4


def _poll_worker(rank: int, init: str, out: str) -> None:
    import json

    import torch.distributed as dist

    from vitbench.launch.job import _StopFlag, _stop_poll

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    flag = _StopFlag()
    poll = _stop_poll(flag)
    answers = []
    for i in range(5):
        if rank == 1 and i == 2:
            flag(12, None)  # only rank 1 receives SIGUSR2, before its third poll
        answers.append(poll())
    dist.destroy_process_group()
    Path(out, f"{rank}.json").write_text(json.dumps(answers))


def test_ddp_ranks_agree_to_stop_when_one_is_signalled(tmp_path: Path) -> None:
    """SLURM may signal one task of a job first: every rank must stop at the same step boundary, or the
    others wait forever in the next all-reduce."""
    import json

    import torch.multiprocessing as tmp_mp

    tmp_mp.spawn(_poll_worker, args=(f"file://{tmp_path / 'init'}", str(tmp_path)), nprocs=2, join=True)
    answers = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert answers[0] == answers[1] == [False, False, True, True, True]
