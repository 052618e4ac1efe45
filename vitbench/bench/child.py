"""A trainer in a child process (its own environment: OpenMP policy, thread count), driven over a pickle
protocol on stdin/stdout, so one benchmark can time settings that only take effect at process start."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch

from vitbench.bench.machine import PeakMemory, sync_fn
from vitbench.bench.trainers import VitbenchTrainer


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
            [sys.executable, "-c", "from vitbench.bench.child import _child_entry; _child_entry()"],
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
