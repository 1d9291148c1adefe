"""Everything the report templates show, as plain values (numbers already formatted).

The templates (``templates/*.j2``, overridable with ``--template``) receive one object, ``report``,
a :class:`ReportData`; its fields are documented below so that a user's template can use them.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field

from lm_eval_perf.records.console import fmt
from lm_eval_perf.report.collect import Problem
from lm_eval_perf.report.compare import Comparison, best_rows, compare
from lm_eval_perf.report.efficiency import METRICS, RowEfficiency, cell_mcr
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.study import Study, when
from lm_eval_perf.report.tables import Table, accuracy_table, efficiency_table
from lm_eval_perf.report.tasks import ACCURACY, BENCHMARKS, number


@dataclass
class FigureView:
    """A drawn figure: ``name`` (file stem), ``title``, ``caption``, ``data_uri`` (PNG, base64),
    ``files`` (paths of its PNG and PDF relative to the output folder), ``png`` (the PNG's bytes)."""

    name: str
    title: str
    caption: str
    data_uri: str
    files: list[str]
    png: bytes = field(default=b"", repr=False)


@dataclass
class ReportData:
    """The ``report`` object of the templates.

    ``accuracy``/``efficiency``: :class:`~lm_eval_perf.report.tables.Table`; ``devices``: the
    tables of the CPU and other devices side by side (:mod:`lm_eval_perf.report.devices`; empty
    where the results hold one device); ``best``: per model
    ``{model, row, score, over}`` (``over``: the columns the mean is over); ``comparisons``: per
    non-baseline row ``{model, row, baseline, changes: [{column, metric, baseline, value, delta}],
    gains: [{name, value}], mcr}`` (texts); ``mcr``: per
    accuracy cell ``{model, row, column, value, reason}``; ``figures``: :class:`FigureView` list;
    ``skipped``: ``{name, reason}`` of figures not drawn; ``failures``: batch_eval's failed jobs;
    ``problems``: ``{path, reason}`` of unreadable files; ``missing``: ``{model, row, task, state}`` of
    the cells batch_eval's matrix plans planned that have no result (state pending, running or failed);
    ``notes``: texts (newest-wins choices and the like); ``outputs_skipped``: ``{name, reason}`` of
    the default outputs that could not be made here (the PDF without pdflatex or Chromium);
    ``unavailable``: ``{row, metrics, reason}``
    of efficiency figures shown as ``--``; ``runs``: ``{path, model, row, origin,
    date}``; ``benchmarks``: the column mapping; ``metrics``: the efficiency columns' definitions.
    """

    title: str
    generated: str
    results_dir: str
    baseline: str
    accuracy: Table
    efficiency: Table
    devices: list[Table] = field(default_factory=list)
    best: list[dict] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)
    mcr: list[dict] = field(default_factory=list)
    figures: list[FigureView] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outputs_skipped: list[dict] = field(default_factory=list)
    unavailable: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    benchmarks: list[dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)


def signed(value: float | None) -> str:
    """A change: ``+0.125`` / ``-0.031`` / ``--``."""
    text = fmt(value)
    return f"+{text}" if value is not None and value > 0 else text


def times(value: float | None) -> str:
    """A gain factor: ``1.85x`` / ``--``."""
    return "--" if value is None else f"{fmt(value, 3)}x"


def _comparison(study: Study, c: Comparison) -> dict:
    return {
        "model": c.row.model,
        "row": c.row.label(),
        "baseline": c.baseline.label(),
        "changes": [
            {
                "column": study.title(ch.column),
                "metric": (ch.metric or "").split(",")[0]
                + (
                    ""
                    if ch.higher_is_better is None
                    else " (higher is better)"
                    if ch.higher_is_better
                    else " (lower is better)"
                ),
                "baseline": fmt(ch.baseline),
                "value": fmt(ch.value),
                "delta": signed(ch.delta),
            }
            for ch in c.changes
        ],
        "gains": [{"name": name, "value": times(value)} for name, value in c.gains.items()],
        "mcr": fmt(c.mcr),
    }


def _failure(record: dict) -> dict:
    ratio = number(record.get("compression_ratio"))
    precision = str(record.get("precision") or "default")
    row = RowKey("", precision, 1.0 if ratio is None else ratio, record.get("device") or None)
    return {
        "model": str(record.get("model") or "?"),
        "row": row.label(),
        "task": str(record.get("task") or "?"),
        "error": str(record.get("error") or "unknown error"),
        "log": str(record.get("log") or ""),
        "file": str(record.get("file") or ""),
    }


def _unavailable(study: Study, efficiency: dict[RowKey, RowEfficiency]) -> list[dict]:
    """Why efficiency cells are ``--``: one entry per row and reason, naming the metrics."""
    labels = {m.key: m.label for m in METRICS}
    out = []
    for row in study.rows:
        by_reason: dict[str, list[str]] = {}
        for key, reason in efficiency[row].unavailable.items():
            if key in labels and efficiency[row].values.get(key) is None:
                by_reason.setdefault(reason, []).append(labels[key])
        for reason, metrics in by_reason.items():
            out.append(
                {"row": f"{row.model} / {row.label()}", "metrics": ", ".join(metrics), "reason": reason}
            )
    return out


def build_report(
    study: Study,
    efficiency: dict[RowKey, RowEfficiency],
    baseline: str,
    figures: list[FigureView],
    skipped: list[dict],
    notes: list[str],
    devices: list[Table],
) -> ReportData:
    """The :class:`ReportData` of a study (figures already drawn); ``devices``: the side-by-side
    tables (:func:`lm_eval_perf.report.devices.device_tables`)."""
    comparisons, compare_notes = compare(study, efficiency, baseline)
    best = [
        {
            "model": model,
            "row": "--" if found is None else found.row.label(),
            "score": "--" if found is None else fmt(found.score),
            "over": "no accuracy task all its scored rows have"
            if found is None
            else ", ".join(map(study.title, found.columns)),
        }
        for model, found in best_rows(study, efficiency).items()
    ]
    mcr = []
    for row in study.rows:
        for column in study.columns_of(ACCURACY):
            cell = study.cell(row, column)
            if cell is not None:
                value, why = cell_mcr(study, cell, baseline)
                mcr.append(
                    {
                        "model": row.model,
                        "row": row.label(),
                        "column": study.title(column),
                        "value": fmt(value),
                        "reason": why or "",
                    }
                )
    problems: list[Problem] = study.inputs.problems
    return ReportData(
        title="lm-eval-perf benchmark report",
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        results_dir=str(study.inputs.root),
        baseline=baseline,
        accuracy=accuracy_table(study),
        efficiency=efficiency_table(study, efficiency, baseline),
        devices=devices,
        best=best,
        comparisons=[_comparison(study, c) for c in comparisons],
        mcr=mcr,
        figures=figures,
        skipped=skipped,
        failures=[_failure(f) for f in study.inputs.failures],
        problems=[{"path": study.inputs.relative(p.path), "reason": p.reason} for p in problems],
        missing=study.missing(),
        notes=[*study.notes, *compare_notes, *notes],
        unavailable=_unavailable(study, efficiency),
        runs=[
            {
                "path": study.inputs.relative(run.path),
                "model": run.row.model,
                "row": run.row.label(),
                "origin": run.origin,
                "date": when(run.date),
            }
            for run in sorted(study.inputs.runs, key=lambda r: (r.row.sort_key(), r.date))
        ],
        benchmarks=[
            {"column": b.column, "names": ", ".join(b.names), "metric": b.metric} for b in BENCHMARKS
        ],
        metrics=[{"label": m.label, "unit": m.unit, "key": m.key} for m in METRICS],
    )


def figure_view(name: str, title: str, caption: str, png: bytes, files: list[str]) -> FigureView:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return FigureView(name, title, caption, uri, files, png)
