"""Tables, plots and comparisons from run records (records written here; no training)."""

from pathlib import Path

import pytest

from vitbench.aggregate.compare import compare_frame, make_variant, paired_delta, render_comparison
from vitbench.aggregate.records import load_frame
from vitbench.aggregate.tables import build_tables, render
from vitbench.cli import main
from vitbench.plan.planner import make_plan
from vitbench.record.rundir import RunDir, run_dir
from vitbench.spec.schema import get_path

POS = "ablations/pos_embed.yaml"


def write_record(results: Path, run, metric: float, status: str = "done") -> None:  # noqa: ANN001
    summary = {"fewshot/digits/5shot": metric, "fewshot/digits/5shot/dev": metric,
               "finetune/digits/top1": metric, "finetune/digits/top1/dev": metric}
    rd = RunDir(run_dir(results, run.run_id))
    rd.create(run.config)
    rd.write_result({"status": status, "config": run.config, "summary": summary if status == "done" else {},
                     "model": {"params": 1000, "flops_per_image": 2_000_000},
                     "pretrain": {"train_flops": 6e12, "diverged_at": 5 if status == "diverged" else None}})


def fill(results: Path, plan, skip=lambda r: False, diverge=lambda r: False) -> None:  # noqa: ANN001
    for i, r in enumerate(plan.runs):
        if skip(r):
            continue
        value = 0.5 + 0.01 * i + 0.001 * r.config["seed"]
        write_record(results, r, value, "diverged" if diverge(r) else "done")


def test_table8_layout_with_na_missing_and_diverged(tmp_path: Path) -> None:
    plan = make_plan(POS, scale="micro", check_data=False)
    is_rel = lambda r: get_path(r.config, "model.pos_embed") == "relative"  # noqa: E731
    is_2d_every = lambda r: (get_path(r.config, "model.pos_embed") == "learned_2d"  # noqa: E731
                             and get_path(r.config, "model.pos_placement") == "every_layer")
    fill(tmp_path, plan, skip=lambda r: is_rel(r) or (is_2d_every(r) and r.config["seed"] == 2),
         diverge=lambda r: get_path(r.config, "model.pos_embed") == "none")
    t8 = build_tables(plan, load_frame(plan, tmp_path))[0]
    assert list(t8.text.columns) == ["stem", "every_layer", "every_layer_shared"]
    assert list(t8.text.index) == ["learned_1d", "learned_2d", "sincos_2d", "none", "relative"]
    assert t8.text.loc["none", "every_layer"] == "N/A" and t8.text.loc["relative", "every_layer_shared"] == "N/A"
    assert t8.text.loc["relative", "stem"] == "missing (0/3)"
    assert t8.text.loc["none", "stem"] == "diverged (3/3)"
    assert t8.text.loc["learned_2d", "every_layer"].endswith("(2/3)")
    assert " ± " in t8.text.loc["learned_1d", "stem"]
    md = render([t8], "md")
    assert "N/A" in md and "missing (0/3)" in md
    csv = render([t8], "csv")
    assert csv.splitlines()[0] == "table,metric,row,col,mean,std,n,planned,diverged,state,note"


def test_tables_regenerate_byte_identically(tmp_path: Path) -> None:
    plan = make_plan(POS, scale="micro", check_data=False)
    fill(tmp_path, plan)
    outs = []
    for i in range(2):
        out = tmp_path / f"t{i}.md"
        assert main(["table", POS, "--scale", "micro", "--results", str(tmp_path), "--out", str(out)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    for fmt in ("csv", "latex"):
        assert main(["table", POS, "--scale", "micro", "--results", str(tmp_path), "--format", fmt,
                     "--out", str(tmp_path / f"t.{fmt}")]) == 0
    # csv and LaTeX carry the same cells as the markdown: each csv cell's mean ± std is on its LaTeX row
    import csv as csvmod

    rows = list(csvmod.DictReader((tmp_path / "t.csv").open()))
    latex = (tmp_path / "t.latex").read_text()
    tables = latex.split("\\begin{tabular}")[1:]
    assert len(tables) == len({r["table"] for r in rows}) == 3 and all("\\end{tabular}" in t for t in tables)
    assert "learned\\_1d" in latex and "every\\_layer\\_shared" in latex  # LaTeX-escaped underscores
    first = [r for r in rows if r["table"] == rows[0]["table"]]
    assert {(r["row"], r["col"]) for r in first} >= {("learned_1d", "stem"), ("relative", "stem")}
    lines = {ln.split("&")[0].strip().replace("\\_", "_"): ln for ln in tables[0].splitlines() if "&" in ln}
    checked = [r for r in first if r["state"] == "ok" and int(r["n"]) > 1]
    for r in checked:
        assert f"{float(r['mean']):.4f} ± {float(r['std']):.4f}" in lines[r["row"]], (r, lines[r["row"]])
    assert len(checked) >= 3


def test_tuned_learning_rate_uses_dev_not_test(tmp_path: Path) -> None:
    plan = make_plan("ablations/class_vs_gap.yaml", scale="micro", check_data=False)
    for r in plan.runs:
        lr = r.config["pretrain"]["lr"]
        rd = RunDir(run_dir(tmp_path, r.run_id))
        rd.create(r.config)
        # dev prefers lr=1e-3, test would prefer 1e-2: the tuned column must follow dev
        dev = 0.9 if lr == 1e-3 else 0.5
        test = 0.99 if lr == 1e-2 else 0.6
        rd.write_result({"status": "done", "config": r.config,
                         "summary": {"fewshot/digits/5shot": test, "fewshot/digits/5shot/dev": dev}})
    table = build_tables(plan, load_frame(plan, tmp_path))[0]
    tuned = table.text.columns[-1]
    assert tuned.startswith("tuned lr")
    assert table.text.loc["cls", tuned] == "0.6000 ± 0.0000 @ lr=0.001"


def test_plots_written(tmp_path: Path) -> None:
    plan = make_plan(POS, scale="micro", check_data=False)
    fill(tmp_path, plan)
    assert main(["plot", POS, "--scale", "micro", "--results", str(tmp_path), "--out", str(tmp_path / "p")]) == 0
    files = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert files == ["pos_embed-micro-table8.pdf", "pos_embed-micro-table8.png"]


def test_paired_delta_interval() -> None:
    d = paired_delta({0: 0.6, 1: 0.62, 2: 0.64}, {0: 0.5, 1: 0.51, 2: 0.55})
    assert d["n"] == 3 and d["delta"] == pytest.approx(0.1)
    assert d["lo"] < d["delta"] < d["hi"] and d["significant"] is True
    same = paired_delta({0: 0.5, 1: 0.6}, {0: 0.55, 1: 0.55})
    assert same["significant"] is False
    assert paired_delta({0: 0.5}, {0: 0.4})["significant"] is None


def test_compare_against_every_baseline(tmp_path: Path) -> None:
    plan = make_plan(POS, scale="micro", check_data=False)
    fill(tmp_path, plan)
    variant = make_variant(plan, variant_file=None, overrides=["model.pos_embed=sincos_2d",
                                                               "model.pos_placement=every_layer"])
    assert [r.config["seed"] for r in variant.runs] == [0, 1, 2]
    for r in variant.runs:
        write_record(tmp_path, r, 0.9 + 0.001 * r.config["seed"])
    frame = compare_frame(plan, variant, tmp_path, "fewshot/digits/5shot")
    assert len(frame) == 10 and (frame["delta"] > 0).all() and frame["significant"].all()
    text = render_comparison(frame, variant, "fewshot/digits/5shot")
    assert "95% CI" in text and "model.pos_embed=sincos_2d" in text and "left out" not in text


def test_compare_leaves_out_the_variant_itself(tmp_path: Path) -> None:
    plan = make_plan(POS, scale="micro", check_data=False)
    fill(tmp_path, plan)
    variant = make_variant(plan, variant_file=None, overrides=["model.pos_embed=sincos_2d",
                                                               "model.pos_placement=stem"])
    frame = compare_frame(plan, variant, tmp_path, "fewshot/digits/5shot")
    assert len(frame) == 9  # 10 grid points, one of which is the variant
    assert not ((frame["model.pos_embed"] == "sincos_2d") & (frame["model.pos_placement"] == "stem")).any()
    text = render_comparison(frame, variant, "fewshot/digits/5shot")
    assert "grid point model.pos_embed=sincos_2d, model.pos_placement=stem; its row is left out" in text


def _report_file(tmp_path: Path, tables: str) -> Path:
    import shutil

    shutil.copy("experiments/_scales.yaml", tmp_path / "_scales.yaml")
    f = tmp_path / "exp.yaml"
    f.write_text("description: t\nextends: _scales.yaml\ngrid: {model.pos_embed: [none, learned_1d]}\n"
                 f"report:\n  tables:\n{tables}")
    return f


def test_one_table_spec_with_titled_metrics_makes_one_table_each(tmp_path: Path) -> None:
    from vitbench.aggregate.tables import report_specs

    f = _report_file(tmp_path, "    - rows: model.pos_embed\n      title: shared\n      metrics:\n"
                               "        - {metric: pretrain/top1, title: Pretraining}\n"
                               "        - 'fewshot/{fewshot_dataset}/5shot'\n")
    specs = report_specs(make_plan(f, scale="smoke", check_data=False))
    assert [(s["metric"], s["title"]) for s in specs] == [("pretrain/top1", "Pretraining"),
                                                           ("fewshot/digits/5shot", "shared")]
    assert {s["rows"] for s in specs} == {"model.pos_embed"}


@pytest.mark.parametrize("item,message", [
    ("{metric: pretrain/top1, titel: x}", "report.tables[0].metrics[0].titel: unknown key; allowed: metric, title"),
    ("{title: x}", "report.tables[0].metrics[0]: needs metric"),
])
def test_a_bad_metrics_item_is_one_line(tmp_path: Path, item: str, message: str, capsys) -> None:  # noqa: ANN001
    f = _report_file(tmp_path, f"    - rows: model.pos_embed\n      metrics: [{item}]\n")
    assert main(["table", str(f), "--scale", "smoke", "--results", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == f"vitbench: error: {f}: {message}"
