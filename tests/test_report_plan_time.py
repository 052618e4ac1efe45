"""`report:` (tables, plots, claims) is checked when the plan is made, with the rest of the file: a typo
in it fails `vitbench run` with one line and exit 2 before anything is created or submitted, not after
the whole grid has trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vitbench.cli import main

REPO = Path(__file__).resolve().parents[1]


def experiment(tmp_path: Path, report: dict) -> Path:
    doc = yaml.safe_load((REPO / "ablations" / "pos_embed.yaml").read_text())
    doc["extends"] = str(REPO / "experiments" / "_scales.yaml")
    doc["report"] = report
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(doc))
    return f


GOOD_TABLE = {"title": "t", "metric": "pretrain/top1", "rows": "model.pos_embed", "cols": "model.pos_placement"}
GOOD_PLOT = {"kind": "bar", "x": "model.pos_embed", "metric": "pretrain/top1", "file": "p"}
GOOD_CLAIM = {"id": "c", "claim": "x", "kind": "less_than_each", "metric": "pretrain/top1",
              "subject": {"model.pos_embed": "none"}}


@pytest.mark.parametrize("report,match", [
    ({"tables": [{**GOOD_TABLE, "rows": "model.pos_embedding"}]}, "model.pos_embedding"),
    ({"tables": [{**GOOD_TABLE, "metric": "fewshot/digits/7shot"}]}, "7shot"),
    ({"plots": [{**GOOD_PLOT, "kind": "barr"}]}, "barr"),
    ({"plots": [{**GOOD_PLOT, "x": "model.nope"}]}, "model.nope"),
    ({"claims": [{**GOOD_CLAIM, "kind": "less_than_every"}]}, "less_than_every"),
    ({"claims": [{**GOOD_CLAIM, "subject": {"model.pos_embed": "nonee"}}]}, "nonee"),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_report_typo_fails_the_run_command_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  report: dict, match: str, dry_run: bool) -> None:
    f = experiment(tmp_path, report)
    results = tmp_path / "results"
    code = main(["run", str(f), "--scale", "smoke", "--cluster", "debug", "--results", str(results)]
                + (["--dry-run"] if dry_run else []))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("vitbench: error: "), err
    assert match in err and "report" in err, err
    assert not results.exists()  # nothing created, nothing run


def test_the_same_file_with_a_correct_report_plans(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = experiment(tmp_path, {"tables": [GOOD_TABLE], "plots": [GOOD_PLOT], "claims": [GOOD_CLAIM]})
    assert main(["run", str(f), "--scale", "smoke", "--dry-run", "--results", str(tmp_path / "r")]) == 0
    assert "10 runs" in capsys.readouterr().out
