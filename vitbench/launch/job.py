"""The cluster job: a thin submitit ``Checkpointable`` around the same ``Run`` that
``vitbench run-one`` executes locally (DeiT's run_with_submitit pattern).

Preemption / timeout: SLURM sends SIGUSR2 ``signal_delay_s`` before the end. submitit's own
handler would checkpoint from inside the signal handler, i.e. in the middle of an optimiser
step. We instead only raise a flag; the training loop sees it at the next step boundary,
writes a consistent checkpoint and unwinds, and then we hand over to submitit's handler, which
calls ``checkpoint()`` and requeues the job. On restart the run resumes from its directory.
"""

from __future__ import annotations

import os
import signal
import traceback
from typing import Any

import submitit

from vitbench.record.rundir import RunDir


class _StopFlag:
    def __init__(self) -> None:
        self.raised = False
        self.previous: Any = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.raised = True


def _stop_poll(flag: _StopFlag) -> Any:
    """A should_stop() that agrees across DDP ranks (all must stop at the same step)."""
    import torch
    import torch.distributed as dist

    def poll() -> bool:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = torch.tensor([1.0 if flag.raised else 0.0])
            if dist.get_backend() == "nccl":
                t = t.cuda()
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            return bool(t.item() > 0)
        return flag.raised

    return poll


class RunJob(submitit.helpers.Checkpointable):
    """Executes one planned run; picklable (config dict + run directory path). On timeout or preemption the
    inherited ``Checkpointable.checkpoint`` resubmits this same object: the training state is already on disk."""

    def __init__(self, config: dict[str, Any], run_dir: str) -> None:
        self.config = config
        self.run_dir = str(run_dir)

    def __call__(self) -> str:
        from vitbench.train.loop import StopRequested
        from vitbench.train.run import Run

        rd = RunDir(self.run_dir)
        rd.path.mkdir(parents=True, exist_ok=True)
        if rd.read_result() is not None:  # finished by an earlier attempt: never count twice
            rd.log("already finished; nothing to do")
            return rd.read_result()["status"]  # type: ignore[index]
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            # DDP: RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT / LOCAL_RANK for torch.distributed
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if env.global_rank == 0:
            rd.log(f"job {env.job_id} (task {env.global_rank}/{env.num_tasks}, restart {restarts}) "
                   f"on {os.uname().nodename}")
        flag = _StopFlag()
        flag.previous = signal.getsignal(signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, flag)
        try:
            record = Run(self.config, rd, should_stop=_stop_poll(flag)).execute()
        except StopRequested as stop:
            if env.global_rank == 0:
                rd.log(f"preempted: checkpoint saved at step {stop.step}; requeueing")
            signal.signal(signal.SIGUSR2, flag.previous)
            if callable(flag.previous):
                flag.previous(signal.SIGUSR2, None)  # submitit: checkpoint() + requeue + exit
            raise
        except BaseException as exc:
            if env.global_rank == 0 and not isinstance(exc, SystemExit):
                last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                rd.write_error(f"{type(exc).__name__}: {last}"[:500], job_id=env.job_id,
                               traceback=traceback.format_exc()[-4000:])
                rd.log(f"failed: {type(exc).__name__}: {last}")
            raise
        return record["status"] if record else "done"


class RunGroupJob(submitit.helpers.Checkpointable):
    """Several runs in one array task (profile ``runs_per_task``): one process start-up for all, still
    one record per run. A requeued task resumes where it stopped: finished runs return at once, the
    interrupted one resumes from its checkpoint. A failed run does not stop the others; the task fails
    at the end so that SLURM shows it."""

    def __init__(self, jobs: list[RunJob]) -> None:
        self.jobs = jobs

    def __call__(self) -> list[str]:
        from vitbench.train.loop import StopRequested

        statuses, failed = [], None
        for job in self.jobs:
            try:
                statuses.append(job())
            except (StopRequested, SystemExit, KeyboardInterrupt):
                raise  # preemption: submitit requeues the whole task (see RunJob)
            except Exception as exc:  # recorded in that run's directory by RunJob
                statuses.append("failed")
                failed = failed or exc
        if failed is not None:
            raise failed
        return statuses

