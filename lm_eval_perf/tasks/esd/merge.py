"""The ESD runs of a model list, merged: one CSV of every layer and per-model tables for the report.

batch_eval calls :func:`write_tables` after each run with every finished ``esd`` job (streamed or
not); it rewrites, atomically, in ``<output_dir>/esd/``:

* ``esd_layers.csv`` - every layer of every model: ``model``, ``precision`` (the job's result-folder
  names), ``layer_type`` (:func:`layer_type`), then the per-layer CSV's own columns;
* ``esd_models.csv`` - one row per model: its identity and
  :func:`~lm_eval_perf.tasks.esd.records.layer_summary` (alpha mean/median/spread, means of
  alpha_weighted, spectral norm, stable rank, entropy; parameters and layers);
* ``esd_layer_types.csv`` - model × layer type: the mean alpha of the model's layers of each type
  (empty where it has none with a finite alpha);
* ``esd_alpha_histograms.csv`` - per model, how many layers' alpha falls in each bin of
  :data:`ALPHA_EDGES` (fixed, so that reruns and models compare), and in the bins below and above.

Each model's rows come from the newest ``esd_layers_*.csv`` in its job's result folder.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lm_eval_perf.tasks.esd.estimator import COLUMNS
from lm_eval_perf.tasks.esd.records import IDENTITY_COLUMNS, layer_summary, write_csv

ALPHA_EDGES = tuple(i / 2 for i in range(25))  # 0, 0.5, ..., 12
FOLDER = "esd"


@dataclass(frozen=True)
class ModelRun:
    """One finished ESD job: the model's result-folder name, its precision folder, its result folder."""

    model: str
    precision: str
    folder: Path


def layer_type(longname: str) -> str:
    """A layer's name without its position: what follows the last numeric component
    (``model.layers.3.self_attn.q_proj`` -> ``self_attn.q_proj``), the name without numeric components
    when it ends in one (``features.0`` -> ``features``), the name itself without any (``lm_head``)."""
    parts = longname.split(".")
    numeric = [i for i, part in enumerate(parts) if part.isdigit()]
    if not numeric:
        return longname
    if numeric[-1] == len(parts) - 1:
        return ".".join(p for p in parts if not p.isdigit())
    return ".".join(parts[numeric[-1] + 1 :])


def _rows(run: ModelRun) -> list[dict[str, str]]:
    found = sorted(run.folder.rglob("esd_layers_*.csv"))
    if not found:
        return []
    with found[-1].open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _alpha(row: dict[str, str]) -> float | None:
    value = float(row["alpha"]) if row["alpha"] else math.nan
    return value if math.isfinite(value) else None


def _histogram_columns() -> list[str]:
    inner = [f"alpha_{lo:g}-{hi:g}" for lo, hi in itertools.pairwise(ALPHA_EDGES)]
    return [f"alpha_below_{ALPHA_EDGES[0]:g}", *inner, f"alpha_from_{ALPHA_EDGES[-1]:g}"]


def _histogram(alphas: list[float]) -> list[int]:
    counts = [0] * (len(ALPHA_EDGES) + 1)
    for alpha in alphas:
        counts[sum(alpha >= edge for edge in ALPHA_EDGES)] += 1
    return counts


def write_tables(runs: Sequence[ModelRun], folder: Path) -> list[Path]:
    """The four tables of the module docstring for ``runs`` in ``folder``; their paths."""
    layers: list[dict] = []
    models: list[dict] = []
    types: list[dict] = []
    histograms: list[dict] = []
    type_names: dict[str, None] = {}
    for run in runs:
        rows = _rows(run)
        if not rows:
            continue
        head = {"model": run.model, "precision": run.precision}
        layers += [{**head, "layer_type": layer_type(r["longname"]), **r} for r in rows]
        models.append({**head, **{k: rows[0][k] for k in IDENTITY_COLUMNS}, **layer_summary(rows)})
        by_type: dict[str, list[float]] = {}
        for row in rows:
            kind, alpha = layer_type(row["longname"]), _alpha(row)
            type_names.setdefault(kind)
            by_type.setdefault(kind, []).extend([] if alpha is None else [alpha])
        types.append({**head, **{k: sum(v) / len(v) for k, v in by_type.items() if v}})
        counts = _histogram([a for a in map(_alpha, rows) if a is not None])
        histograms.append({**head, **dict(zip(_histogram_columns(), counts))})
    out = Path(folder)
    head_columns = ("model", "precision")
    tables = (
        ("esd_layers.csv", layers, (*head_columns, "layer_type", *IDENTITY_COLUMNS, *COLUMNS)),
        ("esd_models.csv", models, (*head_columns, *IDENTITY_COLUMNS, *(models[0] if models else {}))),
        ("esd_layer_types.csv", types, (*head_columns, *type_names)),
        ("esd_alpha_histograms.csv", histograms, (*head_columns, *_histogram_columns())),
    )
    written = []
    for name, rows, columns in tables:
        write_csv(out / name, rows, list(dict.fromkeys(columns)))
        written.append(out / name)
    return written
