"""The merged view of a results directory: one cell per (model, precision, ratio, column).

Several runs may give the same cell (a job run again, an ``lm_eval`` run beside a batch): the
newest one wins - by the results file's ``date``, then its path - and a note names the others.
A row is missing a cell when another row of the study has that column and it has none.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from lm_eval_perf.report.collect import Inputs, Run
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.tasks import ACCURACY, BENCHMARKS, Column, Entry, ResultsIndex


@dataclass
class Cell:
    """The winning entry of one (row, column) and the run it comes from."""

    row: RowKey
    entry: Entry
    run: Run

    @property
    def column(self) -> Column:
        return self.entry.column


@dataclass
class Study:
    """Rows, columns and cells of a results directory, plus what could not be used."""

    inputs: Inputs
    rows: list[RowKey]
    columns: list[Column]
    cells: dict[tuple[RowKey, str], Cell]
    notes: list[str] = field(default_factory=list)

    def cell(self, row: RowKey, column: Column | str) -> Cell | None:
        return self.cells.get((row, column if isinstance(column, str) else column.key))

    def value(self, row: RowKey, column: Column | str) -> float | None:
        """The value shown in cell (row, column), ``None`` when there is none."""
        cell = self.cell(row, column)
        return None if cell is None else cell.entry.value

    def metric_name(self, column: Column) -> str:
        """The primary metric of a column, without its filter (``acc_norm``); ``''`` if unknown."""
        for row in self.rows:
            cell = self.cell(row, column)
            if cell is not None and cell.entry.metric:
                return cell.entry.metric.split(",")[0]
        return BENCHMARKS[column.benchmark].metric if column.benchmark is not None else ""

    def columns_of(self, kind: str) -> list[Column]:
        return [c for c in self.columns if c.kind == kind]

    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.rows))

    def rows_of(self, model: str) -> list[RowKey]:
        return [r for r in self.rows if r.model == model]

    def runs_of(self, row: RowKey) -> list[Run]:
        """The runs that give at least one winning cell of ``row``, oldest first."""
        runs = {id(c.run): c.run for (r, _), c in self.cells.items() if r == row}
        return sorted(runs.values(), key=lambda run: (run.date, str(run.path)))

    def missing(self) -> list[tuple[RowKey, Column]]:
        """(row, accuracy column) pairs without a value, for columns some row has a value in."""
        filled = {key for (_, key), cell in self.cells.items() if cell.entry.value is not None}
        return [
            (row, column)
            for row in self.rows
            for column in self.columns_of(ACCURACY)
            if column.key in filled and self.value(row, column) is None
        ]


def when(seconds: float) -> str:
    """A Unix time as ``2025-01-31 12:00:00 UTC``."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def build(inputs: Inputs) -> Study:
    """Merge the runs of ``inputs`` into cells; newest wins."""
    candidates: dict[tuple[RowKey, str], list[tuple[Run, Entry]]] = defaultdict(list)
    for run in inputs.runs:
        for entry in ResultsIndex(run.data).entries():
            candidates[(run.row, entry.column.key)].append((run, entry))
    cells: dict[tuple[RowKey, str], Cell] = {}
    notes: list[str] = []
    for key, found in candidates.items():
        # a run giving one column twice (e.g. leaderboard_bbh and leaderboard_bbh_local): keep a value
        found.sort(key=lambda pair: (pair[0].date, str(pair[0].path), pair[1].value is not None))
        run, entry = found[-1]
        older = [r for r, _ in found[:-1] if r is not run]
        cells[key] = Cell(key[0], entry, run)
        if older:
            row, column = key
            notes.append(
                f"{row.model} / {row.label()} / {column}: {len(found)} results; the newest "
                f"({inputs.relative(run.path)}, {when(run.date)}) is used, not "
                + ", ".join(f"{inputs.relative(r.path)} ({when(r.date)})" for r in older)
            )
    rows = sorted({row for row, _ in cells}, key=RowKey.sort_key)
    columns = sorted({c.entry.column for c in cells.values()}, key=Column.sort_key)
    return Study(inputs, rows, columns, cells, sorted(notes))
