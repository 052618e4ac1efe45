"""Figures from run records (seaborn), to PNG and PDF.

An experiment's ``report.plots`` is a list of specs::

    kind:   line | bar | scatter | curve
    x:      run-config key on the x axis, or "exaflops" (pretraining compute, Fig. 5);
            curve: "epoch" (default) or "step" of pretraining
    hue:    run-config key, or "family" (vit / bit / hybrid, from model.name), or a list of keys
            (one line per combination, labelled e.g. "cls, lr 0.001")
    metric: summary metric on y (placeholders {fewshot_dataset} / {finetune_dataset});
            curve: fewshot_curve/<dataset>/<k>shot, the few-shot probes recorded during pretraining
            (``eval.fewshot.every``; the record's ``fewshot_curve``), Figure 9
    logx:   true where the paper uses a log axis (set size, compute, learning rate)
    title / xlabel / ylabel / file (stem of the output files)

Only finished runs are drawn (mean ± std over seeds as error bars; a curve: mean with a ±1 std
band); the caption under each figure states how many planned runs are missing or diverged (and,
for a curve, finished without probes), so an empty point is never silent.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from vitbench.errors import UserError
from vitbench.record.metrics import check_metric
from vitbench.plan.planner import Plan

PLOT_KEYS = ("kind", "x", "hue", "metric", "logx", "logy", "title", "xlabel", "ylabel", "file")
KINDS = ("line", "bar", "scatter", "curve")
CURVE_X = ("epoch", "step")
CURVE_METRIC = re.compile(r"fewshot_curve/(?P<dataset>[^/]+)/(?P<shots>\d+)shot")
PRETTY = {
    "model.pos_embed": "position embedding", "model.pos_placement": "added at", "model.pool": "representation",
    "pretrain.size": "pretraining images", "pretrain.lr": "pretraining learning rate", "model.name": "model",
    "exaflops": "pretraining compute (exaFLOPs)", "family": "model family",
}


def plot_specs(plan: Plan, fill: dict[str, str]) -> list[dict[str, Any]]:
    file = str(plan.experiment.path)
    from vitbench.aggregate.tables import check_spec, fill_metric, report_section
    from vitbench.spec.schema import get_path

    specs = report_section(plan).get("plots") or []
    if not isinstance(specs, list) or not specs:
        raise UserError("has no report.plots section to draw", file=file, key="report.plots")
    out = []
    for i, spec in enumerate(specs):
        where = f"report.plots[{i}]"
        kind = check_spec(spec, PLOT_KEYS, KINDS, "line", file=file, where=where)
        if kind == "curve":
            spec = {"x": "epoch", **spec}
        for key in ("x", "metric"):
            if key not in spec:
                raise UserError(f"needs {key}", file=file, key=where)
        _check_hue(plan, spec.get("hue"), file=file, where=f"{where}.hue")
        metric = fill_metric(spec["metric"], fill, file=file, key=f"{where}.metric")
        configs = [r.config for r in plan.runs]
        check_metric(configs, metric, file=file, key=f"{where}.metric")
        if kind != "curve":  # x: a run-config key or a per-run number (exaflops, params, a metric)
            try:
                get_path(plan.runs[0].config, str(spec["x"]))
            except (KeyError, TypeError):
                check_metric(configs, str(spec["x"]), file=file, key=f"{where}.x")
        if kind == "curve":
            if spec["x"] not in CURVE_X:
                raise UserError(f"x must be one of {', '.join(CURVE_X)} for a curve, got {spec['x']!r}", file=file,
                                key=f"{where}.x")
            if not CURVE_METRIC.fullmatch(metric):
                raise UserError(f"metric must be fewshot_curve/<dataset>/<k>shot for a curve, got {metric!r}",
                                file=file, key=f"{where}.metric")
        out.append({"kind": "line", "logx": False, "logy": False, "file": f"plot{i}", **spec, "metric": metric})
    return out


def _hue_keys(hue: Any) -> list[str]:
    if not hue:
        return []
    return [str(h) for h in hue] if isinstance(hue, list) else [str(hue)]


def _check_hue(plan: Plan, hue: Any, *, file: str, where: str) -> None:
    from vitbench.spec.schema import get_path

    if hue is not None and not isinstance(hue, (str, list)):
        raise UserError("must be a run-config key or a list of them", file=file, key=where)
    for key in _hue_keys(hue):
        if key == "family":
            continue
        try:
            get_path(plan.runs[0].config, key)
        except (KeyError, TypeError):
            raise UserError(f"{key!r} is not a run-config key (or family)", file=file, key=where) from None


def _hue_column(frame: pd.DataFrame, plan: Plan, hue: Any) -> pd.Series:
    """One label per run: the value of a single key, or "cls, lr 0.001" for a list of keys."""
    if not isinstance(hue, list):
        return _column(frame, plan, hue).astype(str)
    parts = []
    for key in hue:
        short = key.split(".")[-1]
        parts.append(_column(frame, plan, key).map(
            lambda v, short=short: f"{short} {v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool)
            else str(v)))
    out = parts[0]
    for p in parts[1:]:
        out = out + ", " + p
    return out


def _hue_title(hue: Any) -> str:
    return ", ".join(PRETTY.get(k, k) for k in _hue_keys(hue))


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

    if spec["kind"] == "curve":
        return _draw_curve(plan, frame, spec, out_dir)
    metric = spec["metric"]
    df = frame.copy()
    df["_x"] = _column(df, plan, spec["x"])
    hue = spec.get("hue")
    if hue:
        df["_hue"] = _hue_column(df, plan, hue)
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
        ax.legend(title=_hue_title(hue), fontsize="small")
    note = f"{planned - missing - diverged}/{planned} runs finished"
    return _finish(fig, plan, spec, out_dir, note, missing, diverged, "error bars: ±1 std over seeds")


def _finish(fig: Any, plan: Plan, spec: dict[str, Any], out_dir: Path, note: str, missing: int, diverged: int,
            spread: str) -> list[Path]:
    """The caption that counts what is not drawn, then save: an empty point is never silent."""
    if missing:
        note += f", {missing} missing"
    if diverged:
        note += f", {diverged} diverged (not drawn)"
    fig.text(0.01, 0.01, f"{plan.experiment.name} @ {plan.scale}: {note}; {spread}", fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, plan, spec, out_dir)


def _curve_points(df: pd.DataFrame, dataset: str, shots: str, x: str) -> pd.DataFrame:
    """Long form of the finished runs' probe curves: one row per (run, probe step)."""
    rows = []
    for idx, row in df.iterrows():
        curve = row.get("fewshot_curve")
        if row["state"] != "done" or not isinstance(curve, dict):
            continue
        for point in curve.get(dataset) or []:
            acc, xv = point.get(shots), point.get(x)
            if isinstance(acc, (int, float)) and isinstance(xv, (int, float)):
                rows.append({"_run": idx, "_hue": row.get("_hue"), "_x": float(xv), "_y": float(acc)})
    return pd.DataFrame(rows, columns=["_run", "_hue", "_x", "_y"])


def _draw_curve(plan: Plan, frame: pd.DataFrame, spec: dict[str, Any], out_dir: Path) -> list[Path]:
    """Figure 9: few-shot accuracy over pretraining, one line per hue value, mean ± std band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    m = CURVE_METRIC.fullmatch(spec["metric"])
    assert m is not None  # plot_specs checked it
    dataset, shots = m["dataset"], m["shots"]
    df = frame.copy()
    hue = spec.get("hue")
    if hue:
        df["_hue"] = _hue_column(df, plan, hue)
    points = _curve_points(df, dataset, shots, spec["x"])
    planned = len(df)
    missing = int((~df["state"].isin(["done", "diverged"])).sum())
    diverged = int((df["state"] == "diverged").sum())
    done = int((df["state"] == "done").sum())
    no_curve = done - points["_run"].nunique()

    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if len(points):
        kw: dict[str, Any] = {"data": points, "x": "_x", "y": "_y", "ax": ax}
        if hue:
            kw["hue"] = "_hue"
            kw["hue_order"] = sorted(points["_hue"].unique())
        sns.lineplot(**kw, marker="o", errorbar="sd", err_style="band", sort=True)
    else:
        ax.text(0.5, 0.5, "no finished runs with few-shot probes", ha="center", va="center", transform=ax.transAxes)
    if spec.get("logx"):
        ax.set_xscale("symlog" if len(points) and (points["_x"] <= 0).any() else "log")
    if spec.get("logy"):
        ax.set_yscale("log")
    ax.set_xlabel(spec.get("xlabel") or f"pretraining {spec['x']}s")
    ax.set_ylabel(spec.get("ylabel") or f"{shots}-shot linear accuracy ({dataset})")
    ax.set_title(spec.get("title") or spec["metric"])
    if hue and len(points):
        ax.legend(title=_hue_title(hue), fontsize="small")
    note = f"{done}/{planned} runs finished"
    if no_curve:
        note += f", {no_curve} without probes (not drawn)"
    return _finish(fig, plan, spec, out_dir, note, missing, diverged, "band: ±1 std over seeds")


def _save(fig: Any, plan: Plan, spec: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

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
