"""A plugin edited while its job waits in the SLURM queue: the job checks the file's hash when it starts and fails
with one line, instead of training other code under the old run id (the partition is held DOWN so that the job
is still queued when the file changes; no mocks of sbatch or scontrol)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import PARTITION
from slurm_helpers import REPO, job_ids, vitbench, wait_until
from test_plugins import _write

pytestmark = pytest.mark.slurm


def _partition(state: str) -> None:
    subprocess.run(["scontrol", "update", f"PartitionName={PARTITION}", f"State={state}"], check=True, timeout=30)


@pytest.mark.timeout(600)
def test_a_plugin_changed_while_its_job_is_queued_fails_the_job_with_one_line(slurm_cluster: object,
                                                                               tmp_path: Path) -> None:
    plugin = _write(tmp_path / "mine.py", "_q")
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"extends: {REPO / 'experiments' / '_scales.yaml'}\nplugins: [mine.py]\n"
                   "grid: {model.pos_embed: [zero_1d_q]}\n")
    results = tmp_path / "results"
    _partition("DOWN")
    try:
        out = vitbench("run", str(exp), "--scale", "smoke", "--cluster", "slurm", "--results", str(results)).stdout
        assert "submitted 1 run" in out, out
        (run_id,) = job_ids(results)
        _write(plugin, "_q", "# edited while the job waits\n")
    finally:
        _partition("UP")
    error = results / "runs" / run_id / "error.json"
    wait_until(error.exists, 300, "the queued job to refuse the edited plugin")
    reason = json.loads(error.read_text())["reason"]
    assert reason.startswith(f"UserError: plugins: {plugin.resolve()} changed after the run was planned (sha256 ")
    assert reason.endswith("); plan it again") and "\n" not in reason
    assert not (results / "runs" / run_id / "result.json").exists()
