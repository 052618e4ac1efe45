"""Writing the analyses: figures (PNG + PDF) and the numbers behind them (CSV), per run or per experiment.

Files (same stems in a run's ``analysis/`` and in an experiment's comparison directory):

* ``embedding_filters``     — PCs of the patch-embedding filters (Fig. 7 left);
  CSV: component, explained_variance_ratio, channel, row, col, value
* ``pos_embed_similarity``  — cosine similarity of position embeddings (Fig. 7 centre);
  CSV: query_row, query_col, key_row, key_col, cosine_similarity (1-based grid positions)
* ``attention_distance``    — mean attention distance per layer and head (Fig. 7 right);
  CSV: layer, head, mean_distance_px, std_over_images_px, images, uniform_distance_px, token_px
* ``attention_maps``        — attention rollout over sample images (Fig. 6);
  CSV: image, test_index, label, row, col, rollout (each image's map sums to 1)
* ``analysis.json``         — what was analysed (run, step, images) and why any part is missing.

Experiment CSVs carry two leading columns, ``run_id`` and ``label``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable, Sequence

from vitbench.analyze import figures
from vitbench.analyze.runs import RunAnalysis
from vitbench.record.rundir import atomic_write_json

STEMS = {"filters": "embedding_filters", "pos": "pos_embed_similarity", "distance": "attention_distance",
         "maps": "attention_maps"}


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in rows:
            w.writerow([_fmt(v) for v in row])
    return path


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


# ---- rows of each analysis ------------------------------------------------------------------------------------

FILTER_HEADER = ["component", "explained_variance_ratio", "channel", "row", "col", "value"]
POS_HEADER = ["query_row", "query_col", "key_row", "key_col", "cosine_similarity"]
DIST_HEADER = ["layer", "head", "mean_distance_px", "std_over_images_px", "images", "uniform_distance_px",
               "token_px"]
MAP_HEADER = ["image", "test_index", "label", "row", "col", "rollout"]


def filter_rows(res: RunAnalysis) -> Iterable[list[Any]]:
    assert res.filters is not None
    comps, ratio = res.filters
    k, c, ph, pw = comps.shape
    for i in range(k):
        for ch in range(c):
            for y in range(ph):
                for x in range(pw):
                    yield [i + 1, float(ratio[i]), ch, y, x, float(comps[i, ch, y, x])]


def pos_rows(res: RunAnalysis) -> Iterable[list[Any]]:
    assert res.pos_similarity is not None
    sim = res.pos_similarity
    gh, gw = sim.shape[:2]
    for qi in range(gh):
        for qj in range(gw):
            for ki in range(gh):
                for kj in range(gw):
                    yield [qi + 1, qj + 1, ki + 1, kj + 1, float(sim[qi, qj, ki, kj])]


def distance_rows(res: RunAnalysis) -> Iterable[list[Any]]:
    assert res.distance is not None
    d = res.distance
    mean, n = d.mean(dim=0), d.shape[0]
    std = d.std(dim=0) if n > 1 else d.new_zeros(mean.shape)
    token = "x".join(str(v) for v in res.token_px)
    for layer in range(d.shape[1]):
        for head in range(d.shape[2]):
            yield [layer + 1, head + 1, float(mean[layer, head]), float(std[layer, head]), n,
                   float(res.uniform_distance or 0.0), token]


def map_rows(res: RunAnalysis) -> Iterable[list[Any]]:
    assert res.maps is not None and res.map_indices is not None and res.map_labels is not None
    for i, m in enumerate(res.maps):
        for y in range(m.shape[0]):
            for x in range(m.shape[1]):
                yield [i + 1, int(res.map_indices[i]), int(res.map_labels[i]), y + 1, x + 1, float(m[y, x])]


ROWS = {"filters": (FILTER_HEADER, filter_rows), "pos": (POS_HEADER, pos_rows),
        "distance": (DIST_HEADER, distance_rows), "maps": (MAP_HEADER, map_rows)}


def has(res: RunAnalysis, part: str) -> bool:
    return {"filters": res.filters, "pos": res.pos_similarity, "distance": res.distance,
            "maps": res.maps}[part] is not None


# ---- one run --------------------------------------------------------------------------------------------------


def _captions(res: RunAnalysis) -> list[str]:
    assert res.map_indices is not None and res.map_labels is not None
    return [f"#{int(i)} (class {int(c)})" for i, c in zip(res.map_indices, res.map_labels)]


def run_figure(res: RunAnalysis, part: str) -> figures.Figure:
    if part == "filters":
        assert res.filters is not None
        return figures.filters_figure(*res.filters, res.title)
    if part == "pos":
        assert res.pos_similarity is not None
        return figures.pos_similarity_figure(res.pos_similarity, res.pos_desc, res.title)
    if part == "distance":
        assert res.distance is not None
        return figures.attention_distance_figure(res.distance.mean(dim=0), res.uniform_distance,
                                                 res.distance.shape[0], res.title)
    assert res.maps is not None and res.map_images is not None
    return figures.attention_maps_figure(res.map_images, res.maps, _captions(res), res.pool, res.title)


def write_run(res: RunAnalysis, out_dir: Path, parts: Sequence[str]) -> dict[str, list[Path]]:
    """Figures + CSVs of the analyses ``res`` holds; returns part -> files written."""
    written: dict[str, list[Path]] = {}
    with figures.style():
        for part in parts:
            if not has(res, part):
                continue
            header, rows = ROWS[part]
            files = figures.save(run_figure(res, part), out_dir, STEMS[part])
            files.append(write_csv(out_dir / f"{STEMS[part]}.csv", header, rows(res)))
            written[part] = files
    _write_json(out_dir / "analysis.json", {
        **_summary(res), "out_dir": str(out_dir),
        "files": {STEMS[p]: [f.name for f in fs] for p, fs in written.items()},
    })
    return written


def _summary(res: RunAnalysis) -> dict[str, Any]:
    return {"run_id": res.run_id, "model": res.model_name, "step": res.step, "dataset": res.dataset,
            "img_size": res.img_size, "pos_embed": res.pos_kind, "pool": res.pool, "grid": list(res.grid),
            "token_px": list(res.token_px),
            "images": int(res.distance.shape[0]) if res.distance is not None else 0,
            "skipped": {STEMS[p]: why for p, why in res.notes.items()}}


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj)  # a reader (or a second analyze) never sees half a summary


# ---- an experiment: the same figure side by side --------------------------------------------------------------


def comparison_figure(items: Sequence[tuple[str, RunAnalysis]], part: str, title: str) -> figures.Figure:
    if part == "filters":
        return figures.compare_filters_figure(
            [(label, r.filters, r.notes.get("filters", "")) for label, r in items], title)
    if part == "pos":
        return figures.compare_pos_similarity_figure(
            [(label, r.pos_similarity, r.notes.get("pos", "")) for label, r in items], title)
    if part == "distance":
        return figures.compare_attention_distance_figure(
            [(label, r.distance.mean(dim=0) if r.distance is not None else None, r.uniform_distance,
              r.notes.get("distance", "")) for label, r in items], title)
    k = max((len(r.maps) for _, r in items if r.maps is not None), default=1)
    return figures.compare_attention_maps_figure(
        [(label, r.map_images, r.maps, r.notes.get("maps", "")) for label, r in items], title, min(k, 6))


def write_comparison(items: Sequence[tuple[str, RunAnalysis]], out_dir: Path, parts: Sequence[str], title: str,
                     skipped: dict[str, str]) -> dict[str, list[Path]]:
    """Side-by-side figures (one panel per run, labelled) + CSVs with run_id and label columns."""
    written: dict[str, list[Path]] = {}
    with figures.style():
        for part in parts:
            if not any(has(r, part) for _, r in items):
                continue
            header, rows = ROWS[part]
            files = figures.save(comparison_figure(items, part, title), out_dir, STEMS[part])
            files.append(write_csv(out_dir / f"{STEMS[part]}.csv", ["run_id", "label", *header],
                                   ([r.run_id, label, *row] for label, r in items if has(r, part) for row in rows(r))))
            written[part] = files
    _write_json(out_dir / "analysis.json", {
        "title": title, "out_dir": str(out_dir),
        "runs": [{"label": label, **_summary(r)} for label, r in items],
        "skipped_runs": skipped,
        "files": {STEMS[p]: [f.name for f in fs] for p, fs in written.items()},
    })
    return written
