"""The CSV outputs: tidy ``benchmark_results.csv``, ``benchmark_results_wide.csv`` and
``summary_statistics.csv``.

Tidy: one row per (model, precision, ratio, device, task, metric) of every winning cell - the cell's task
or group and every task below it, each metric it reports - plus the cell's MCR and the row's
efficiency figures (task ``(efficiency)``; ``basis``: the source of the peak memory - alloc, NVML or
RSS - and, for AL, the request kind: one ``al_s`` row per kind). ``column`` is the table column the
row belongs to and ``num_fewshot``, ``limit``, ``batch_size``, ``task_version`` its settings (a column
is a task with its settings), ``primary`` marks the value shown in the table, ``source`` the results
file (relative to the results directory). Numbers are written in full precision (``repr``); missing
values are empty.

``device`` (the last column of both files, so that the others keep their places) is empty unless the
results hold several devices (see :mod:`.identity`).

Wide: one row per (model, precision, ratio, device): each table column's primary metric (header: column,
metric and settings - ``BBH (acc_norm; 3-shot, limit 10)``), then the efficiency figures, headers
with units.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lm_eval_perf.report.efficiency import METRICS, RowEfficiency
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.study import Study
from lm_eval_perf.report.tables import accuracy_columns
from lm_eval_perf.report.tasks import ResultsIndex, Settings, metric_keys, number

TIDY_COLUMNS = (
    "model",
    "precision",
    "ratio",
    "column",
    "num_fewshot",
    "limit",
    "batch_size",
    "task_version",
    "task",
    "metric",
    "filter",
    "value",
    "stderr",
    "unit",
    "basis",
    "higher_is_better",
    "primary",
    "source",
    "device",
)
SUMMARY_COLUMNS = (
    "model",
    "precision",
    "ratio",
    "backend",
    "device",
    "batch_size",
    "gen_length",
    "prompt_len",
    "status",
    "metric",
    "unit",
    "basis",
    "count",
    "mean",
    "std",
    "min",
    "max",
    "p50",
    "error",
)
_UNIT_SUFFIXES = (
    ("tokens_per_s", "tokens/s"),
    ("_per_s", "1/s"),
    ("bits_per_byte", "bits/byte"),
    ("_gib", "GiB"),
    ("_per_token_j", "J/token"),
    ("_j", "J"),
    ("_w", "W"),
    ("_s", "s"),
    ("_seconds", "s"),
    ("mfu", "fraction"),
    ("mbu", "fraction"),
)


def unit_of(metric: str) -> str:
    """The unit a metric name implies (``decode_tokens_per_s@bs1_gen4`` -> ``tokens/s``); ``''`` for
    scores (accuracy, exact match, perplexity)."""
    base = metric.split("@", 1)[0]
    return next((unit for suffix, unit in _UNIT_SUFFIXES if base.endswith(suffix)), "")


def cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_csv(columns, rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: cell_text(row.get(k)) for k in columns} for row in rows)
    return out.getvalue()


def tidy_rows(study: Study, efficiency: dict[RowKey, RowEfficiency]) -> list[dict]:
    out = []
    for row in study.rows:
        ident = {"model": row.model, "precision": row.precision, "ratio": row.ratio, "device": row.device}
        for column in study.columns:
            cell = study.cell(row, column)
            if cell is None:
                continue
            index = ResultsIndex(cell.run.data)
            source = study.inputs.relative(cell.run.path)
            settings = column.settings or Settings()
            where = {
                "column": column.key,
                "num_fewshot": settings.num_fewshot,
                "limit": settings.limit,
                "batch_size": settings.batch_size,
                "task_version": settings.version,
            }
            for task in cell.entry.members:
                block = index.blocks.get(task) or {}
                higher = index.higher.get(task) or {}
                for key in metric_keys(block):
                    metric, _, flt = key.partition(",")
                    out.append(
                        {
                            **ident,
                            **where,
                            "task": task,
                            "metric": metric,
                            "filter": flt,
                            "value": number(block[key]),
                            "stderr": number(block.get(f"{metric}_stderr,{flt}")),
                            "unit": unit_of(metric),
                            "higher_is_better": higher.get(metric),
                            "primary": task == cell.entry.task and key == cell.entry.metric,
                            "source": source,
                        }
                    )
            if column in efficiency[row].mcr:
                out.append(
                    {
                        **ident,
                        **where,
                        "task": cell.entry.task,
                        "metric": "mcr",
                        "value": efficiency[row].mcr[column],
                        "higher_is_better": True,
                        "source": source,
                    }
                )
        sources = ";".join(study.inputs.relative(r.path) for r in study.runs_of(row))
        figures = efficiency[row]
        for metric in METRICS:
            if metric.key == "al_s" and figures.al_by_kind:
                pairs = list(figures.al_by_kind.items())  # AL is per request kind: the kind is its basis
            else:
                basis = figures.peak_memory_source if metric.key == "peak_memory_gib" else None
                pairs = [(basis, figures.values.get(metric.key))]
            for basis, value in pairs:
                out.append(
                    {
                        **ident,
                        "task": "(efficiency)",
                        "metric": metric.key,
                        "value": value,
                        "unit": "fraction" if metric.percent else metric.unit,
                        "basis": basis,
                        "higher_is_better": metric.higher_is_better,
                        "source": sources,
                    }
                )
    return out


def wide(study: Study, efficiency: dict[RowKey, RowEfficiency]) -> tuple[list[str], list[dict]]:
    columns = accuracy_columns(study)
    headers = ["model", "precision", "ratio"]
    names = {}
    for column in columns:
        detail = "; ".join(filter(None, (study.metric_name(column), study.settings_text(column))))
        names[column] = f"{column.key} ({detail})" if detail else column.key
    headers += list(names.values())
    units = {
        m.key: f"{m.label} ({'fraction' if m.percent else m.unit})" if m.unit else m.label for m in METRICS
    }
    headers += [*units.values(), "device"]
    rows = []
    for row in study.rows:
        record: dict = {
            "model": row.model,
            "precision": row.precision,
            "ratio": row.ratio,
            "device": row.device,
        }
        for column in columns:
            cell = study.cell(row, column)
            record[names[column]] = cell.entry.value if cell else None
        for key, header in units.items():
            record[header] = efficiency[row].values.get(key)
        rows.append(record)
    return headers, rows


def write_all(study: Study, efficiency, summary: list[dict], folder: Path, write) -> list[Path]:
    """Write the three CSV files with ``write(path, text)``; returns their paths."""
    headers, rows = wide(study, efficiency)
    return [
        write(folder / "benchmark_results.csv", to_csv(TIDY_COLUMNS, tidy_rows(study, efficiency))),
        write(folder / "benchmark_results_wide.csv", to_csv(headers, rows)),
        write(folder / "summary_statistics.csv", to_csv(SUMMARY_COLUMNS, summary)),
    ]
