"""`vitbench table`, `plot` and `compare` on the committed micro records reproduce the committed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitbench.cli import main

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "results" / "micro"
EXPERIMENTS = ["ablations/pos_embed.yaml", "ablations/class_vs_gap.yaml", "experiments/data_scaling.yaml",
               "experiments/model_compute.yaml"]


@pytest.mark.parametrize("exp", EXPERIMENTS, ids=lambda e: Path(e).stem)
@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_tables_reproduce(exp: str, fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / f"t.{fmt}"
    assert main(["table", exp, "--scale", "micro", "--results", str(MICRO), "--format", fmt, "--out", str(out)]) == 0
    assert out.read_bytes() == (MICRO / "tables" / f"{Path(exp).stem}.{fmt}").read_bytes()


@pytest.mark.parametrize("exp", EXPERIMENTS, ids=lambda e: Path(e).stem)
def test_plots_reproduce(exp: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(["plot", exp, "--scale", "micro", "--results", str(MICRO), "--out", str(tmp_path)]) == 0
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made and all((MICRO / "plots" / name).read_bytes() == (tmp_path / name).read_bytes() for name in made)


# (committed file, the compare arguments that made it; results/make_micro.sh writes both)
COMPARES = [
    ("pos_embed-compare-sincos_2d-stem.md", ["--set", "model.pos_embed=sincos_2d", "--set", "model.pos_placement=stem"]),
    ("pos_embed-compare-none-pretrain.md", ["--set", "model.pos_embed=none", "--metric", "pretrain/top1"]),
]


@pytest.mark.parametrize("name,args", COMPARES, ids=[c[0] for c in COMPARES])
def test_compare_reproduces(name: str, args: list[str], capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(["compare", "ablations/pos_embed.yaml", "--scale", "micro", "--results", str(MICRO), "--no-run",
                 *args]) == 0
    assert capsys.readouterr().out == (MICRO / "tables" / name).read_text()
