"""The ESD task's per-layer table (``esd_layers_<run>.csv``) of each row.

The ESD runner writes its CSV next to lm-eval's results JSON (or into ``artifacts_dir=``), named
after lm-eval's run time stamp, and perf-hf lists it in the results JSON (see ``Run.artifact``). A
run without that list falls back to ``esd_layers.csv`` in its folder; when several runs share such a
file, it belongs to the newest of them that has an ESD entry, and an older run gets no layers (and a
note). Rows that are truncated or whose ``alpha`` is not a number are reported and left out.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from lm_eval_perf.records.artifacts import ESD_LAYERS
from lm_eval_perf.report.collect import Problem, Run
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.study import Study
from lm_eval_perf.report.tasks import ESD, ResultsIndex


@dataclass(frozen=True)
class Layer:
    name: str
    alpha: float | None  # None: no finite power-law fit for this layer


def layers_file(run: Run) -> Path:
    return run.artifact(ESD_LAYERS)


def read_layers(path: Path, problems: list[Problem]) -> list[Layer]:
    """The layers of one CSV; bad rows are reported in ``problems`` and skipped."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        problems.append(Problem(path, f"cannot read the ESD layers: {exc}"))
        return []
    if not header or "alpha" not in header or "longname" not in header:
        problems.append(Problem(path, "not an ESD layers CSV (no 'longname'/'alpha' columns)"))
        return []
    name_at, alpha_at = header.index("longname"), header.index("alpha")
    layers = []
    for number, row in enumerate(rows, 2):
        if len(row) != len(header):
            problems.append(
                Problem(path, f"line {number}: truncated row ({len(row)} of {len(header)} fields)")
            )
            continue
        text = row[alpha_at].strip()
        try:
            alpha = float(text) if text else None
        except ValueError:
            problems.append(Problem(path, f"line {number}: alpha {text!r} is not a number"))
            continue
        layers.append(Layer(row[name_at], alpha if alpha is not None and math.isfinite(alpha) else None))
    return layers


def _has_esd(run: Run) -> bool:
    return any(e.column.kind == ESD for e in ResultsIndex(run.data).entries())


def study_layers(study: Study) -> tuple[dict[RowKey, list[Layer]], list[str]]:
    """Per row with an ESD cell: its layers; plus notes for cells whose CSV belongs to a newer run."""
    owner: dict[Path, Run] = {}
    for run in study.inputs.runs:
        path = layers_file(run)
        if _has_esd(run) and (path not in owner or run.date > owner[path].date):
            owner[path] = run
    found, notes = {}, []
    for row in study.rows:
        for column in study.columns_of(ESD):
            cell = study.cell(row, column)
            if cell is None:
                continue
            path = layers_file(cell.run)
            if owner.get(path) is not cell.run:
                notes.append(
                    f"{row.model} / {row.label()}: {path.name} in {path.parent} was rewritten by a newer "
                    "ESD run; its per-layer alpha is not shown"
                )
            elif not path.is_file():
                study.inputs.problems.append(Problem(path, f"missing: ESD layers of {cell.run.path.name}"))
            else:
                layers = read_layers(path, study.inputs.problems)
                if layers:
                    found[row] = layers
            break
    return found, notes
