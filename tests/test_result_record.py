"""record/result.py: what counts as a record, the one reader, the row the aggregation reads."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vitbench.record.metrics import RECORD_COLUMNS
from vitbench.record.result import COLUMNS, converged, parse_result, read_result, record_row

RECORD = {"status": "done", "summary": {"pretrain/top1": 0.9, "fewshot/digits/5shot": None},
          "model": {"params": 1234, "flops_per_image": 5.0e6},
          "pretrain": {"train_flops": 2.0e18, "diverged_at": None, "convergence": {"converged": True}},
          "finetune": {"best_lr": 0.01, "converged": False}, "fewshot_curve": {"digits": [{"step": 0, "5": 0.1}]}}


def test_row_of_a_full_record() -> None:
    row = record_row(RECORD)
    assert row["state"] == "done" and row["pretrain/top1"] == 0.9 and math.isnan(row["fewshot/digits/5shot"])
    assert (row["params"], row["flops_per_image"], row["train_flops"], row["exaflops"]) == (1234, 5.0e6, 2.0e18, 2.0)
    assert (row["diverged_at"], row["finetune_best_lr"]) == (None, 0.01)
    assert row["fewshot_curve"] == RECORD["fewshot_curve"]
    assert set(RECORD_COLUMNS) == set(COLUMNS) <= set(row)  # one list of columns


def test_row_of_a_diverged_bare_and_missing_record() -> None:
    row = record_row({"status": "diverged", "pretrain": {"diverged_at": 7}})
    assert row["state"] == "diverged" and row["diverged_at"] == 7 and math.isnan(row["exaflops"])
    assert row["params"] is None and row["finetune_best_lr"] is None
    assert record_row(None) == {"state": "missing"}


def test_convergence_flags() -> None:
    assert converged(RECORD) == {"pretrain": True, "finetune": False}
    assert converged(None) == {"pretrain": None, "finetune": None}
    assert converged({"pretrain": {"convergence": {"converged": None}}, "finetune": {"converged": "yes"}}) == \
        {"pretrain": None, "finetune": None}  # only a real bool counts
    # no pretraining phase (from scratch, a published model as it is): nothing there could stop short
    scratch = {"status": "done", "pretrain": {"steps": 0, "convergence": {"converged": None}},
               "finetune": {"converged": False}}
    assert converged(scratch) == {"pretrain": True, "finetune": False}
    assert converged({**scratch, "status": "diverged"})["pretrain"] is None
    assert converged({**scratch, "pretrain": {"steps": 10, "convergence": {"converged": None}}})["pretrain"] is None


@pytest.mark.parametrize("text", ['{"status": "failed"}', '{"status": "done"', '["done"]', b"\xff\xfe", "{}"])
def test_not_a_record(tmp_path: Path, text: str | bytes) -> None:
    f = tmp_path / "result.json"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert read_result(f) is None
    with pytest.raises(ValueError):
        parse_result(f.read_bytes())


def test_a_record_and_no_file(tmp_path: Path) -> None:
    f = tmp_path / "result.json"
    f.write_text('{"status": "diverged", "x": 1}')
    assert read_result(f) == {"status": "diverged", "x": 1}
    assert read_result(tmp_path / "none.json") is None and read_result(tmp_path) is None


def test_verify_names_each_kind_of_bad_result(tmp_path: Path) -> None:
    from vitbench.plan.ids import run_id
    from vitbench.record.rundir import RunDir
    from vitbench.record.verify import verify_store
    from vitbench.spec.schema import default_config

    cfg = default_config()
    rid = run_id(cfg)
    texts = {'{"status": "failed"}': "result.json is not a record: status must be done or diverged, got 'failed'",
             '["done"]': "result.json is not a record: a JSON list, not an object",
             '{"status": "done"': "result.json does not parse (JSONDecodeError)",
             '{"status": "done", "run_id": "ffffffffffff"}': "result.json names run ffffffffffff"}
    for text, problem in texts.items():
        root = tmp_path / str(len(problem))
        rd = RunDir(root / "runs" / rid)
        rd.create(cfg)
        rd.file("result.json").write_text(text)
        rep = verify_store(root)
        assert rep.problems == [(rid, problem)] and rep.done == 0
    rd.file("result.json").write_text('{"status": "diverged"}')
    assert verify_store(root).problems == [] and verify_store(root).done == 1


def test_verify_counts_every_directory_and_names_each_config_problem(tmp_path: Path) -> None:
    from vitbench.plan.ids import run_id
    from vitbench.record.rundir import RunDir
    from vitbench.record.verify import verify_store
    from vitbench.spec.schema import default_config

    runs = tmp_path / "runs"
    good_cfg, other_cfg = default_config(), {**default_config(), "seed": 1}
    good, other = run_id(good_cfg), run_id(other_cfg)
    for rid, cfg in ((good, good_cfg), (other, other_cfg)):
        rd = RunDir(runs / rid)
        rd.create(cfg)
        rd.write_result({"status": "done"})
    (runs / "noconfig0000").mkdir()
    RunDir(runs / "wronghash000").create(good_cfg)
    RunDir(runs / "unhashable0").create({"lr": float("nan")})  # JSON refuses NaN: the id cannot be computed
    (runs / "a-file").write_text("not a run directory")
    rep = verify_store(tmp_path, known_ids={good})
    assert (rep.checked, rep.done) == (5, 2)
    assert rep.problems == [
        ("noconfig0000", "config.yaml is missing or unreadable"),
        ("unhashable0", "config.yaml cannot be hashed: Out of range float values are not JSON compliant"),
        ("wronghash000", f"config hashes to {good}, not to the directory's id")]
    assert rep.orphans == sorted([other, "noconfig0000", "unhashable0", "wronghash000"])
    assert verify_store(tmp_path).orphans == []  # no known ids: nothing is called an orphan
    assert verify_store(tmp_path / "none").checked == 0
