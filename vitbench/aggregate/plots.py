"""Figures from run records (seaborn), to PNG and PDF.

An experiment's ``report.plots`` is a list of specs::

    kind:   line | bar | scatter
    x:      run-config key on the x axis, or "exaflops" (pretraining compute, Fig. 5)
    hue:    run-config key, or "family" (vit / bit / hybrid, from model.name)
    metric: summary metric on y (placeholders {fewshot_dataset} / {finetune_dataset})
    logx:   true where the paper uses a log axis (set size, compute, learning rate)
    title / xlabel / ylabel / file (stem of the output files)

Only finished runs are drawn (mean ± std over seeds as error bars); the caption under each
figure states how many planned runs are missing or diverged, so an empty point is never silent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from vitbench.errors import UserError
from vitbench.plan.planner import Plan

PLOT_KEYS = ("kind", "x", "hue", "metric", "logx", "logy", "title", "xlabel", "ylabel", "file")
KINDS = ("line", "bar", "scatter")
PRETTY = {
    "model.pos_embed": "position embedding", "model.pos_placement": "added at", "model.pool": "representation",
    "pretrain.size": "pretraining images", "pretrain.lr": "pretraining learning rate", "model.name": "model",
    "exaflops": "pretraining compute (exaFLOPs)", "family": "model family",
}


def plot_specs(plan: Plan, fill: dict[str, str]) -> list[dict[str, Any]]:
    file = str(plan.experiment.path)
    from vitbench.aggregate.tables import check_spec, report_section

    specs = report_section(plan).get("plots") or []
    if not isinstance(specs, list) or not specs:
        raise UserError("has no report.plots section to draw", file=file, key="report.plots")
    out = []
    for i, spec in enumerate(specs):
        where = f"report.plots[{i}]"
        check_spec(spec, PLOT_KEYS, KINDS, "line", file=file, where=where)
        for key in ("x", "metric"):
            if key not in spec:
                raise UserError(f"needs {key}", file=file, key=where)
        out.append({"kind": "line", "logx": False, "logy": False, "file": f"plot{i}", **spec,
                    "metric": str(spec["metric"]).format(**fill)})
    return out


def family(name: str) -> str:
    from vitbench.models import model_family

    return {"vit": "ViT", "bit": "BiT ResNet", "hybrid": "hybrid"}.get(model_family(name), name)


def _column(frame: pd.DataFrame, plan: Plan, key: str) -> pd.Series:
    if key == "family":
        names = frame["model.name"] if "model.name" in frame else pd.Series(
            [plan.runs[0].config["model"]["name"]] * len(frame), index=frame.index)
        return names.map(family)
    if key in frame.columns:
        return frame[key]
    from vitbench.spec.schema import get_path

    return pd.Series([get_path(plan.runs[0].config, key)] * len(frame), index=frame.index)


def draw(plan: Plan, frame: pd.DataFrame, spec: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    metric = spec["metric"]
    df = frame.copy()
    df["_x"] = _column(df, plan, spec["x"])
    hue = spec.get("hue")
    if hue:
        df["_hue"] = _column(df, plan, hue).astype(str)
    planned = len(df)
    missing = int((~df["state"].isin(["done", "diverged"])).sum())
    diverged = int((df["state"] == "diverged").sum())
    ok = df[(df["state"] == "done") & df.get(metric, pd.Series(dtype=float)).notna()] if metric in df else df.iloc[0:0]

    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    kw: dict[str, Any] = {"data": ok, "x": "_x", "y": metric, "ax": ax}
    if hue:
        kw["hue"] = "_hue"
    if len(ok):
        if spec["kind"] == "line":
            sns.lineplot(**kw, marker="o", errorbar="sd", err_style="bars", sort=True)
        elif spec["kind"] == "bar":
            kw["x"] = "_x"
            sns.barplot(**kw, errorbar="sd", capsize=0.1)
        else:
            sns.scatterplot(**kw, s=50)
    else:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
    if spec.get("logx"):
        ax.set_xscale("log")
        xs = sorted(ok["_x"].dropna().unique()) if len(ok) and spec["x"] != "exaflops" else []
        if 0 < len(xs) <= 8:  # label the grid values themselves, not crowded minor ticks
            from matplotlib.ticker import NullFormatter, NullLocator

            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
    if spec.get("logy"):
        ax.set_yscale("log")
    ax.set_xlabel(spec.get("xlabel") or PRETTY.get(spec["x"], spec["x"]))
    ax.set_ylabel(spec.get("ylabel") or metric)
    ax.set_title(spec.get("title") or metric)
    if hue and len(ok):
        ax.legend(title=PRETTY.get(hue, hue), fontsize="small")
    note = f"{planned - missing - diverged}/{planned} runs finished"
    if missing:
        note += f", {missing} missing"
    if diverged:
        note += f", {diverged} diverged (not drawn)"
    fig.text(0.01, 0.01, f"{plan.experiment.name} @ {plan.scale}: {note}; error bars: ±1 std over seeds",
             fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{plan.experiment.name}-{plan.scale}-{spec['file']}.{ext}"
        # fixed metadata so the same records give the same bytes
        meta = {"Software": None} if ext == "png" else {"CreationDate": None, "Producer": None, "Creator": None}
        fig.savefig(path, dpi=150, metadata=meta)
        paths.append(path)
    plt.close(fig)
    return paths
