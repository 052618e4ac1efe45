"""Run ids: the hash that names every run directory must stay what it was when the records were written."""

from pathlib import Path

import pytest
import yaml

from vitbench.plan.ids import canonical, run_id

RUNS = Path(__file__).resolve().parents[1] / "results" / "micro" / "runs"


def test_every_committed_run_is_in_the_directory_its_config_hashes_to() -> None:
    dirs = sorted(p for p in RUNS.iterdir() if p.is_dir())
    assert len(dirs) >= 100
    assert [run_id(yaml.safe_load((d / "config.yaml").read_text())) for d in dirs] == [d.name for d in dirs]


def test_the_canonical_form_is_compact_sorted_json_without_runtime() -> None:
    cfg = {"seed": 1, "model": {"name": "m", "dropout": 0.001}, "runtime": {"device": "cuda"}}
    assert canonical(cfg) == '{"model":{"dropout":0.001,"name":"m"},"seed":1}'
    assert run_id(cfg) == run_id({**cfg, "runtime": {"device": "cpu"}}) != run_id({**cfg, "seed": 2})


def test_a_nan_in_a_config_has_no_id() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        run_id({"pretrain": {"lr": float("nan")}})
