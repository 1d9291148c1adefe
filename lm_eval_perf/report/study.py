"""The merged view of a results directory: one cell per (model, precision, ratio, column).

A column is a task with its evaluation settings (:class:`~lm_eval_perf.report.tasks.Settings`), so
only runs measured alike can give the same cell (a job run again, an ``lm_eval`` run beside a batch
with the same settings): then the newest one wins - by the results file's ``date``, then its path -
and a note names the others. Which cells are missing is said by batch_eval's matrix plans
(:mod:`lm_eval_perf.records.layout`): the planned jobs without a result, with their state.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from lm_eval_perf.report.collect import Inputs, Run
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.tasks import BENCHMARKS, Column, Entry, ResultsIndex


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
    cells: dict[tuple[RowKey, Column], Cell]
    notes: list[str] = field(default_factory=list)

    def cell(self, row: RowKey, column: Column) -> Cell | None:
        return self.cells.get((row, column))

    def value(self, row: RowKey, column: Column) -> float | None:
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

    def settings_text(self, column: Column) -> str:
        """The settings shown under a column's name: few-shot count and limit always; batch size and
        task version where another column of the same name differs in them."""
        if column.settings is None:
            return ""
        parts = column.settings.parts()
        shown = ["num_fewshot", "limit"]
        for name in ("batch_size", "version"):
            siblings = {getattr(c.settings, name) for c in self.columns if c.key == column.key and c.settings}
            if len(siblings) > 1:
                shown.append(name)
        return ", ".join(parts[name] for name in shown)

    def title(self, column: Column) -> str:
        """``BBH (3-shot, limit 10)``: a column's name with its settings."""
        settings = self.settings_text(column)
        return f"{column.key} ({settings})" if settings else column.key

    def missing(self) -> list[dict]:
        """The cells batch_eval planned that have no result: ``{model, row, task, state}`` per job of
        every matrix plan found, whose result folder gave no readable results file."""
        read = {run.path for run in self.inputs.runs}
        out = []
        for plan in self.inputs.plans:
            for job in plan.jobs:
                folder = plan.root / "results" / job.key
                if any(folder in path.parents for path in read):
                    continue
                state = job.state if job.state != "done" else "done, but no readable results file"
                ratio = 1.0 if job.compression_ratio is None else job.compression_ratio
                device = job.device if self.inputs.by_device else None
                row = RowKey(job.model, job.precision or "default", ratio, device)
                out.append({"model": job.model, "row": row.label(), "task": job.task_label, "state": state})
        return out


def when(seconds: float) -> str:
    """A Unix time as ``2025-01-31 12:00:00 UTC``."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def build(inputs: Inputs) -> Study:
    """Merge the runs of ``inputs`` into cells; newest wins."""
    candidates: dict[tuple[RowKey, Column], list[tuple[Run, Entry]]] = defaultdict(list)
    for run in inputs.runs:
        for entry in ResultsIndex(run.data).entries():
            candidates[(run.row, entry.column)].append((run, entry))
    cells: dict[tuple[RowKey, Column], Cell] = {}
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
                f"{row.model} / {row.label()} / {column.key}: {len(found)} results with the same settings; "
                "the newest "
                f"({inputs.relative(run.path)}, {when(run.date)}) is used, not "
                + ", ".join(f"{inputs.relative(r.path)} ({when(r.date)})" for r in older)
            )
    rows = sorted({row for row, _ in cells}, key=RowKey.sort_key)
    columns = sorted({c.entry.column for c in cells.values()}, key=Column.sort_key)
    return Study(inputs, rows, columns, cells, sorted(notes))
