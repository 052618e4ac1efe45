"""`vitbench table`, `plot` and `compare` on the committed micro records reproduce the committed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitbench.cli import main
from vitbench.plan.suite import MICRO_EXPERIMENTS

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "results" / "micro"
EXPERIMENTS = MICRO_EXPERIMENTS


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
    *((f"pos_embed-compare-rope_2d-{m.split('/')[0]}.md",  # the plugin worked example (README, Plugins)
       ["--plugin", "ablations/plugins/rope2d.py", "--set", "model.pos_embed=rope_2d", "--set",
        "model.pos_placement=stem", "--metric", m]) for m in ("fewshot/digits/5shot", "finetune/digits/top1",
                                                               "pretrain/top1")),
]


@pytest.mark.parametrize("name,args", COMPARES, ids=[c[0] for c in COMPARES])
def test_compare_reproduces(name: str, args: list[str], capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(["compare", "ablations/pos_embed.yaml", "--scale", "micro", "--results", str(MICRO), "--no-run",
                 *args]) == 0
    assert capsys.readouterr().out == (MICRO / "tables" / name).read_text()


@pytest.mark.parametrize("exp", EXPERIMENTS, ids=lambda e: Path(e).stem)
def test_claims_reproduce(exp: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vitbench claims` on the committed records gives the committed output, with a verdict per claim
    (the README's quote of it is checked whole by the next test)."""
    monkeypatch.chdir(REPO)
    out = tmp_path / "claims.md"
    assert main(["claims", exp, "--scale", "micro", "--results", str(MICRO), "--out", str(out)]) == 0
    text = out.read_text()
    assert text == (MICRO / "claims" / f"{Path(exp).stem}.md").read_text()
    assert text.count("\nverdict: ") == text.count("\n## ") > 0


def test_results_readme_quotes_are_the_committed_outputs() -> None:
    """Every quoted claims block and table in results/README.md is what results/quote_readme.py makes
    from results/micro/ (so a re-run that forgets to re-quote fails here)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("quote_readme", REPO / "results" / "quote_readme.py")
    assert spec and spec.loader
    quote = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quote)
    readme = (REPO / "results" / "README.md").read_text()
    assert readme.count("<!-- tables ") == len(EXPERIMENTS) and readme.count("<!-- vitbench claims ") == len(EXPERIMENTS)
    assert quote.rewrite(readme) == readme
