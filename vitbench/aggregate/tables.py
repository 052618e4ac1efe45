"""Paper-style tables from run records: mean ± std over seeds, N/A and missing cells explicit.

An experiment's ``report.tables`` is a list of table specs::

    title:  "Table 8 ..."                    # caption; {placeholders} as in metric
    metric: fewshot/{fewshot_dataset}/5shot  # summary metric (test split); {placeholders} from the config
    metrics: [...]                           # or several: one table each; an item may be {metric, title}
    rows:   model.pos_embed                  # key whose values are the rows
    cols:   model.pos_placement              # key whose values are the columns (optional)
    tune:   pretrain.lr                      # optional: add a "tuned" column choosing, per row, the value
                                             # of this key with the best *dev* metric (metric + "/dev")
    kind:   grid | compute                   # compute: rows with params, GFLOPs/img, exaFLOPs, metric
    paper:  {source: "Table 5", values: {ViT-B/16: 0.8397}}  # optional: the paper's number per row, shown
                                             # beside the measured ones (written from the paper, not computed)
    scales: [paper]                          # optional: the scales whose plans have this table (default: all)

Cells: ``N/A`` — no run planned for that combination (e.g. Table 8's relative × every layer);
``missing (k/n)`` — planned runs without a record; ``diverged`` — every finished run diverged.
Partial cells say how many of the planned seeds they average, e.g. ``0.6420 ± 0.0040 (2/3)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from vitbench.errors import UserError
from vitbench.record.metrics import check_metric, planned_metrics
from vitbench.plan.planner import Plan
from vitbench.spec.experiment import SCALES
from vitbench.spec.schema import get_path
from vitbench.spec.yamlio import value_text

REPORT_KEYS = ("title", "metric", "rows", "cols", "tune", "kind", "metrics", "paper", "scales")
KINDS = ("grid", "compute")


@dataclass
class Cell:
    mean: float = math.nan
    std: float = math.nan
    n: int = 0  # finished, finite results
    planned: int = 0
    diverged: int = 0
    note: str = ""  # e.g. the tuned value

    @property
    def state(self) -> str:
        if self.planned == 0:
            return "na"
        if self.n == 0:
            return "diverged" if self.diverged == self.planned else "missing"
        return "ok" if self.n == self.planned else "partial"

    def text(self) -> str:
        s = self.state
        if s == "na":
            return "N/A"
        if s == "diverged":
            return f"diverged ({self.diverged}/{self.planned})"
        if s == "missing":
            extra = f", {self.diverged} diverged" if self.diverged else ""
            return f"missing ({self.n}/{self.planned}{extra})"
        out = f"{self.mean:.4f} ± {self.std:.4f}" if self.n > 1 else f"{self.mean:.4f}"
        if s == "partial":
            out += f" ({self.n}/{self.planned}" + (f", {self.diverged} diverged)" if self.diverged else ")")
        if self.note:
            out += f" @ {self.note}"
        return out


@dataclass
class Table:
    title: str
    metric: str
    text: pd.DataFrame  # what is shown
    cells: pd.DataFrame  # long form: row, col, mean, std, n, planned, diverged, state


def placeholders(plan: Plan) -> dict[str, str]:
    """Values for {fewshot_dataset} / {finetune_dataset} in metric names, from the plan's configs."""
    base = plan.runs[0].config
    return {"fewshot_dataset": (base["eval"]["fewshot"]["datasets"] or ["?"])[0],
            "finetune_dataset": base["eval"]["finetune"]["dataset"] or "?"}


def report_section(plan: Plan) -> dict[str, Any]:
    file = str(plan.experiment.path)
    report = plan.experiment.raw.get("report") or {}
    for key in report:
        if key not in ("tables", "plots", "compare_metric", "claims"):  # claims: vitbench.aggregate.claims
            raise UserError("unknown key; allowed: tables, plots, compare_metric, claims", file=file,
                            key=f"report.{key}")
    return report


def check_spec(spec: Any, allowed: tuple[str, ...], kinds: tuple[str, ...], default_kind: str, *, file: str,
               where: str) -> str:
    """Shared checks of a table or plot spec: a mapping of known keys with a known kind."""
    if not isinstance(spec, dict):
        raise UserError("must be a mapping", file=file, key=where)
    for key in spec:
        if key not in allowed:
            raise UserError(f"unknown key; allowed: {', '.join(allowed)}", file=file, key=f"{where}.{key}")
    kind = spec.get("kind", default_kind)
    if kind not in kinds:
        raise UserError(f"unknown kind {kind!r}; allowed: {', '.join(kinds)}", file=file, key=f"{where}.kind")
    return kind


def report_specs(plan: Plan) -> list[dict[str, Any]]:
    """The table specs of an experiment's report section, checked, placeholders filled."""
    file = str(plan.experiment.path)
    specs = report_section(plan).get("tables") or []
    if not isinstance(specs, list) or not specs:
        raise UserError("has no report.tables section (a list of {metric, rows, cols}) to build a table from",
                        file=file, key="report.tables")
    base, fill = plan.runs[0].config, placeholders(plan)
    out = []
    for i, spec in enumerate(specs):
        where = f"report.tables[{i}]"
        kind = check_spec(spec, REPORT_KEYS, KINDS, "grid", file=file, where=where)
        scales = spec.get("scales")
        if scales is not None and (not isinstance(scales, list) or not scales or any(x not in SCALES for x in scales)):
            raise UserError(f"must be a non-empty list of scales; allowed: {', '.join(SCALES)}", file=file,
                            key=f"{where}.scales")
        if scales is not None and plan.scale not in scales:
            continue  # a table of another scale's datasets (e.g. the paper's ImageNet fine-tuning)
        if ("metric" not in spec and "metrics" not in spec) or "rows" not in spec:
            raise UserError("needs metric (or metrics) and rows", file=file, key=where)
        metrics = spec.get("metrics") or [spec["metric"]]
        if not isinstance(metrics, list):
            raise UserError("must be a list of metric names", file=file, key=f"{where}.metrics")
        for key in ("rows", "cols", "tune"):
            if spec.get(key) is not None:
                try:
                    get_path(base, spec[key])
                except (KeyError, TypeError):
                    raise UserError(f"{spec[key]!r} is not a run-config key", file=file,
                                    key=f"{where}.{key}") from None
        if "paper" in spec:
            _check_paper(spec["paper"], [_fmt_key(v) for v in _values(plan, spec["rows"])], file=file,
                         key=f"{where}.paper")
        for j, m in enumerate(metrics):
            key = f"{where}.metric" + (f"s[{j}]" if "metrics" in spec else "")
            title = spec.get("title")
            if isinstance(m, dict):  # {metric, title}: one table spec for tables that differ in these only
                for k in m:
                    if k not in ("metric", "title"):
                        raise UserError("unknown key; allowed: metric, title", file=file, key=f"{key}.{k}")
                if "metric" not in m:
                    raise UserError("needs metric", file=file, key=key)
                m, title = m["metric"], m.get("title", title)
            metric = fill_metric(m, fill, file=file, key=key)
            check_metric([r.config for r in plan.runs], metric, file=file, key=f"{where}.metric")
            title = fill_metric(title, fill, file=file, key=f"{where}.title") if title else title
            out.append({**spec, "kind": kind, "metric": metric, "title": title})
    return out


def _check_paper(paper: Any, rows: list[str], *, file: str, key: str) -> None:
    if not isinstance(paper, dict) or set(paper) != {"source", "values"} or not isinstance(paper["values"], dict):
        raise UserError("must be {source: <table of the paper>, values: {<row>: <number>}}", file=file, key=key)
    for row, value in paper["values"].items():
        if str(row) not in rows:
            raise UserError(f"{row!r} is not a row of the table; rows: {', '.join(rows)}", file=file,
                            key=f"{key}.values")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{row}: must be a number, got {value!r}", file=file, key=f"{key}.values")


def _paper_column(spec: dict[str, Any], rows: list[Any], text: dict[str, list[str]], long: list[dict[str, Any]]) -> None:
    """The paper's numbers beside the measured ones, as written in the experiment file (cited by its source)."""
    if "paper" not in spec:
        return
    label, values = f"paper ({spec['paper']['source']})", {str(k): float(v) for k, v in spec["paper"]["values"].items()}
    text[label] = [f"{values[_fmt_key(r)]:.4f}" if _fmt_key(r) in values else "–" for r in rows]
    long.extend({"row": _fmt_key(r), "col": label, "mean": values[_fmt_key(r)], "std": math.nan, "n": 0,
                 "planned": 0, "diverged": 0, "state": "paper", "note": ""} for r in rows if _fmt_key(r) in values)


def fill_metric(metric: Any, fill: dict[str, str], *, file: str, key: str) -> str:
    """A report metric with its {placeholders} filled; an unknown one is a one-line error."""
    try:
        return str(metric).format(**fill)
    except (KeyError, IndexError, ValueError):
        raise UserError(f"unknown placeholder in {metric!r}; allowed: {', '.join('{' + p + '}' for p in fill)}",
                        file=file, key=key) from None


def _values(plan: Plan, key: str) -> list[Any]:
    seen: list[Any] = []
    for r in plan.runs:
        v = get_path(r.config, key)
        if v not in seen:
            seen.append(v)
    return seen


def _cell(frame: pd.DataFrame, metric: str) -> Cell:
    planned = len(frame)
    if planned == 0:
        return Cell()
    diverged = int((frame["state"] == "diverged").sum())
    vals = frame.loc[frame["state"] == "done", metric] if metric in frame else pd.Series(dtype=float)
    vals = vals.dropna()
    n = len(vals)
    if n == 0:
        return Cell(planned=planned, diverged=diverged)
    return Cell(mean=float(vals.mean()), std=float(vals.std(ddof=0)), n=n, planned=planned, diverged=diverged)


def _fmt_key(v: Any) -> str:
    return "all" if v is None else value_text(v)


def _row_frame(plan: Plan, frame: pd.DataFrame, key: str, value: Any) -> pd.DataFrame:
    if key in frame.columns:
        return frame[frame[key] == value] if value is not None else frame[frame[key].isna()]
    return frame  # the key does not vary: every run has that value


def _cells(frame: pd.DataFrame, keys: list[str], metric: str) -> dict[tuple, Cell]:
    """Every cell of a table in one groupby (10,000 records → a table in well under a second).

    Keys that do not vary (not columns of the frame) are left out of the grouping and out of the
    returned tuples; planned = runs in the group, n = finished runs with a finite metric.
    """
    present = [k for k in keys if k in frame.columns]
    done = frame["state"] == "done"
    vals = frame[metric].where(done) if metric in frame.columns else pd.Series(math.nan, index=frame.index)
    df = pd.DataFrame({"_div": frame["state"] == "diverged", "_val": vals.astype(float)}, index=frame.index)
    if not present:
        df["_all"] = 0
        present_keys = ["_all"]
    else:
        for k in present:
            df[k] = frame[k]
        present_keys = present
    agg = df.groupby(present_keys, sort=False, dropna=False).agg(
        planned=("_div", "size"), diverged=("_div", "sum"), n=("_val", "count"), mean=("_val", "mean"),
        var=("_val", "var"))
    out = {}
    for key, row in zip(agg.index, agg.itertuples(index=False)):
        n = int(row.n)
        std = math.sqrt(row.var * (n - 1) / n) if n > 1 else (0.0 if n == 1 else math.nan)  # population std
        tkey = () if not present else (key if isinstance(key, tuple) else (key,))
        out[tkey] = Cell(mean=float(row.mean) if n else math.nan, std=std, n=n, planned=int(row.planned),
                         diverged=int(row.diverged))
    return out


def _get(cells: dict[tuple, Cell], frame: pd.DataFrame, keys: list[str], values: list[Any]) -> Cell:
    key = tuple(v for k, v in zip(keys, values) if k in frame.columns)
    found = cells.get(key)
    return Cell() if found is None else Cell(**vars(found))


def grid_table(plan: Plan, frame: pd.DataFrame, spec: dict[str, Any]) -> Table:
    metric, rk, ck, tune = spec["metric"], spec["rows"], spec.get("cols"), spec.get("tune")
    rows, cols = _values(plan, rk), (_values(plan, ck) if ck else [None])
    keys = [rk, ck] if ck else [rk]
    cells = _cells(frame, keys, metric)
    text: dict[str, list[str]] = {}
    long = []
    for c in cols:
        col_name = _fmt_key(c) if ck else metric
        text[col_name] = []
        for r in rows:
            cell = _get(cells, frame, keys, [r, c] if ck else [r])
            text[col_name].append(cell.text())
            long.append({"row": _fmt_key(r), "col": _fmt_key(c) if ck else "", **_cell_numbers(cell)})
    if tune:
        label = f"tuned {tune.split('.')[-1]} (dev)"
        text[label] = []
        tkeys = [rk, tune]
        test, dev = _cells(frame, tkeys, metric), _cells(frame, tkeys, f"{metric}/dev")
        for r in rows:
            cell = _tuned(plan, frame, test, dev, tkeys, r)
            text[label].append(cell.text())
            long.append({"row": _fmt_key(r), "col": label, **_cell_numbers(cell)})
    _paper_column(spec, rows, text, long)
    shown = pd.DataFrame(text, index=pd.Index([_fmt_key(r) for r in rows], name=rk))
    return Table(spec.get("title") or metric, metric, shown, pd.DataFrame(long))


def _tuned(plan: Plan, frame: pd.DataFrame, test: dict[tuple, Cell], dev: dict[tuple, Cell], keys: list[str],
           row: Any) -> Cell:
    """Best value of ``keys[1]`` by the mean *dev* metric; the test metric reported at that value."""
    key = keys[1]
    best, best_dev = None, -math.inf
    for v in _values(plan, key):
        c = _get(dev, frame, keys, [row, v])
        if c.n and c.mean > best_dev:
            best, best_dev = v, c.mean
    if best is None:
        sub = _row_frame(plan, frame, keys[0], row)
        return Cell(planned=len(sub), diverged=int((sub["state"] == "diverged").sum()))
    cell = _get(test, frame, keys, [row, best])
    cell.note = f"{key.split('.')[-1]}={_fmt_key(best)}"
    return cell


def _cell_numbers(cell: Cell) -> dict[str, Any]:
    return {"mean": cell.mean, "std": cell.std, "n": cell.n, "planned": cell.planned, "diverged": cell.diverged,
            "state": cell.state, "note": cell.note}


def compute_table(plan: Plan, frame: pd.DataFrame, spec: dict[str, Any]) -> Table:
    """Table 6 style: per model, parameters, GFLOPs per image, pretraining exaFLOPs, accuracy."""
    metric, rk = spec["metric"], spec["rows"]
    rows = _values(plan, rk)
    cols: dict[str, list[str]] = {"params (M)": [], "GFLOPs/img": [], "exaFLOPs": [], metric: []}
    long = []
    for r in rows:
        sub = _row_frame(plan, frame, rk, r)
        done = sub[sub["state"].isin(["done", "diverged"])]
        params = done["params"].dropna()
        gfl = done["flops_per_image"].dropna()
        exa = done["exaflops"].dropna()
        cols["params (M)"].append(f"{params.iloc[0] / 1e6:.3f}" if len(params) else "missing")
        cols["GFLOPs/img"].append(f"{gfl.iloc[0] / 1e9:.4f}" if len(gfl) else "missing")
        cols["exaFLOPs"].append(f"{exa.mean():.3e}" if len(exa) else "missing")
        cell = _cell(sub, metric)
        cols[metric].append(cell.text())
        long.append({"row": _fmt_key(r), "col": metric, **_cell_numbers(cell),
                     "params": float(params.iloc[0]) if len(params) else math.nan,
                     "exaflops": float(exa.mean()) if len(exa) else math.nan})
    _paper_column(spec, rows, cols, long)
    shown = pd.DataFrame(cols, index=pd.Index([_fmt_key(r) for r in rows], name=rk))
    return Table(spec.get("title") or metric, metric, shown, pd.DataFrame(long))


def _recording(plan: Plan, frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The runs planned to record ``metric`` (a cell's "planned"); every run for a record column such as params.

    In a grid whose runs record different metrics (experiments/published.yaml: few-shot only with one of the
    fine-tuning datasets), a run that never records the metric is neither missing nor part of the cell.
    """
    ids = [r.run_id for r in plan.runs if metric in planned_metrics(r.config)]
    return frame[frame["run_id"].isin(ids)] if ids and len(ids) < len(plan.runs) else frame


def build_tables(plan: Plan, frame: pd.DataFrame) -> list[Table]:
    out = []
    for s in report_specs(plan):
        sub = _recording(plan, frame, s["metric"])
        out.append(compute_table(plan, sub, s) if s["kind"] == "compute" else grid_table(plan, sub, s))
    return out


def render(tables: list[Table], fmt: str) -> str:
    """md (GitHub tables with captions), csv (long form, numbers), latex (booktabs)."""
    from tabulate import tabulate

    if fmt == "csv":
        parts = []
        for t in tables:
            df = t.cells.copy()
            df.insert(0, "metric", t.metric)
            df.insert(0, "table", t.title)
            parts.append(df)
        return pd.concat(parts).to_csv(index=False, float_format="%.6f", lineterminator="\n")
    out = []
    for t in tables:
        body = t.text.reset_index()
        if fmt == "md":
            out.append(f"**{t.title}** — metric `{t.metric}`, mean ± std over seeds\n\n"
                       + tabulate(body, headers="keys", tablefmt="github", showindex=False, disable_numparse=True))
        elif fmt == "latex":
            out.append(f"% {t.title} ({t.metric})\n"
                       + tabulate(body, headers="keys", tablefmt="latex_booktabs", showindex=False,
                                  disable_numparse=True))
        else:
            raise UserError(f"unknown format {fmt!r}; allowed: md, csv, latex", key="--format")
    return "\n\n".join(out) + "\n"
