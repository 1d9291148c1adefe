"""The two paper tables as plain data: accuracy per task, efficiency per row.

Rows are grouped by model (precisions, then compression ratios, in :meth:`RowKey.sort_key` order).
Cells are formatted with :func:`lm_eval_perf.records.console.fmt` (4 significant figures); a missing
value is ``--``. An accuracy column's header names its task, its primary metric and its settings
(few-shot count, ``--limit``; see :meth:`Study.settings_text`). In each column the best value is
marked (``best``) - the highest or lowest as the metric's ``higher_is_better`` says, ties all
marked - when the column has at least two values of the same basis (peak memory: the same source)
and a direction. Renderers (LaTeX, HTML, text) only lay these out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lm_eval_perf.records.console import fmt
from lm_eval_perf.report.efficiency import METRICS, RowEfficiency
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.study import Study
from lm_eval_perf.report.tasks import ACCURACY, BENCHMARKS, Column


@dataclass
class Header:
    label: str
    unit: str = ""  # metric name or physical unit, shown under the label
    higher_is_better: bool | None = None
    settings: str = ""  # evaluation settings of an accuracy column: "3-shot, limit 10"


@dataclass
class TableCell:
    value: float | None
    text: str
    best: bool = False
    basis: str = ""  # what the value measures where a column mixes kinds (peak memory's source)


@dataclass
class TableRow:
    model: str
    precision: str
    ratio: str
    cells: list[TableCell]
    first: bool = False  # first row of its model's group
    device: str = ""  # the row's device, where the study tells devices apart
    item: str = ""  # what the row measures, in a table of several figures per row (item_header)


@dataclass
class Table:
    name: str
    caption: str
    headers: list[Header]
    rows: list[TableRow]
    with_ratio: bool = False  # the study has compressed rows: show a Ratio column
    notes: list[str] = field(default_factory=list)
    with_device: bool = False  # the rows differ by device: show a Device column
    item_header: str = ""  # non-empty: an item column (TableRow.item) of this name after the row's names


def mark_best(rows: list[TableRow], headers: list[Header]) -> None:
    """Set ``best`` on the best cell(s) of every column (see the module docstring)."""
    for i, header in enumerate(headers):
        values = [r.cells[i].value for r in rows if r.cells[i].value is not None]
        bases = {r.cells[i].basis for r in rows if r.cells[i].value is not None}
        if header.higher_is_better is None or len(values) < 2 or len(bases) > 1:
            continue
        best = max(values) if header.higher_is_better else min(values)
        for row in rows:
            row.cells[i].best = row.cells[i].value == best


def table_row(row: RowKey, cells: list[TableCell], first: bool, item: str = "") -> TableRow:
    """The table row of ``row`` (``first``: the first of its model's group)."""
    return TableRow(row.model, row.precision, row.ratio_text(), cells, first, row.device or "", item)


def _rows(study: Study, cells) -> list[TableRow]:
    out, previous = [], None
    for row in study.rows:
        out.append(table_row(row, cells(row), row.model != previous))
        previous = row.model
    return out


def accuracy_columns(study: Study) -> list[Column]:
    """The EfficientLLM benchmark columns (all six once one is present; a benchmark measured with
    several settings has a column for each), then the other tasks."""
    present = study.columns_of(ACCURACY)
    if not any(c.benchmark is not None for c in present):
        return present
    benchmarks = []
    for i, bench in enumerate(BENCHMARKS):
        benchmarks += [c for c in present if c.benchmark == i] or [Column(bench.column, ACCURACY, i)]
    return benchmarks + [c for c in present if c.benchmark is None]


def _header(study: Study, column: Column) -> Header:
    """The column's name, metric, direction (none when its cells disagree or do not say) and settings."""
    directions = {c.entry.higher_is_better for r in study.rows if (c := study.cell(r, column)) is not None}
    higher = directions.pop() if len(directions) == 1 else None
    return Header(column.key, study.metric_name(column), higher, study.settings_text(column))


def accuracy_table(study: Study) -> Table:
    columns = accuracy_columns(study)
    headers = [_header(study, c) for c in columns]

    def cells(row: RowKey) -> list[TableCell]:
        return [TableCell(v, fmt(v)) for v in (study.value(row, c) for c in columns)]

    rows = _rows(study, cells)
    mark_best(rows, headers)
    return Table(
        "accuracy",
        "Accuracy: each task's primary metric, under it the settings it was measured with - results with "
        "other settings are other columns (best per column in bold; -- = not run or failed).",
        headers,
        rows,
        with_ratio=any(r.compressed for r in study.rows),
        with_device=study.inputs.by_device,
    )


def efficiency_table(study: Study, efficiency: dict[RowKey, RowEfficiency], baseline: str) -> Table:
    headers = [Header(m.label, m.unit, m.higher_is_better) for m in METRICS]

    def cells(row: RowKey) -> list[TableCell]:
        out = []
        for metric in METRICS:
            value = efficiency[row].values.get(metric.key)
            shown = None if value is None else value * 100 if metric.percent else value
            text, basis = fmt(shown, 3 if metric.percent else 4), ""
            if metric.key == "peak_memory_gib" and value is not None:
                basis = efficiency[row].peak_memory_source or ""
                text += f" ({basis})"
            out.append(TableCell(value, text, basis=basis))
        return out

    rows = _rows(study, cells)
    mark_best(rows, headers)
    return Table(
        "efficiency",
        "Efficiency per model and precision: AMU/PCU average GPU memory/compute utilization, AL average "
        "latency per batch, IT generated tokens/s, Decode the best decode rate of the throughput sweep, "
        "AEC average power, energy per token, peak memory of the device the model ran on (alloc: CUDA "
        "allocator, NVML: GPU device memory, RSS: host memory of a CPU run), weights in memory, MCR "
        f"against {baseline} (best per column in bold; -- = not measured).",
        headers,
        rows,
        with_ratio=any(r.compressed for r in study.rows),
        with_device=study.inputs.by_device,
    )
