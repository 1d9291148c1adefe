"""Each row against its model's baseline row (on the same device), and the best row of each model.

Gains are ``baseline / row`` for costs (latency, energy, memory: > 1 means the row is cheaper) and
``row / baseline`` for rates (IT, decode tokens/s: > 1 means faster). Accuracy changes are
``row - baseline`` in the metric's own unit (for perplexity a positive change is worse).

The best row of a model is chosen among its rows with an accuracy value (a row with only a
throughput sweep or an ESD analysis has none and is left out): the one with the highest mean
primary metric over the accuracy columns where higher is better and every such row has a value;
ties go to the row with fewer weight bytes. ``None`` when the model has no such column.

The peak-memory gain is given only where both rows' peaks have the same source (both CUDA allocator
peaks, both host RSS, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from lm_eval_perf.monitor.metrics import ratio
from lm_eval_perf.report.efficiency import RowEfficiency
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.study import Study
from lm_eval_perf.report.tasks import ACCURACY, Column

# (gain name, efficiency key, True if a rate: row/baseline; False if a cost: baseline/row)
GAINS = (
    ("speed (AL)", "al_s", False),
    ("IT", "it_tokens_per_s", True),
    ("decode tok/s", "decode_tokens_per_s", True),
    ("energy (J/tok)", "energy_per_token_j", False),
    ("memory (weights)", "weight_gib", False),
    ("peak memory", "peak_memory_gib", False),
)


@dataclass(frozen=True)
class Change:
    """One accuracy column of a row against the baseline."""

    column: Column
    metric: str | None
    baseline: float | None
    value: float | None
    delta: float | None  # value - baseline
    higher_is_better: bool | None


@dataclass(frozen=True)
class Comparison:
    row: RowKey
    baseline: RowKey
    changes: list[Change]
    gains: dict[str, float | None]
    mcr: float | None


def compare(
    study: Study, efficiency: dict[RowKey, RowEfficiency], baseline_precision: str
) -> tuple[list[Comparison], list[str]]:
    """Comparisons of every non-baseline row whose model has a baseline row; notes for the others."""
    comparisons, notes = [], []
    for model, device in dict.fromkeys((r.model, r.device) for r in study.rows):
        base = RowKey(model, baseline_precision, device=device)
        others = [r for r in study.rows_of(model) if r.device == device and r != base]
        if base not in study.rows:
            if others:
                notes.append(f"{model}: no {base.label()} row (ratio 1): no accuracy drop, gains or MCR")
            continue
        for row in others:
            changes = []
            for column in study.columns_of(ACCURACY):
                cell, base_cell = study.cell(row, column), study.cell(base, column)
                if cell is None and base_cell is None:
                    continue
                value = None if cell is None else cell.entry.value
                base_value = None if base_cell is None else base_cell.entry.value
                changes.append(
                    Change(
                        column,
                        (cell or base_cell).entry.metric,  # type: ignore[union-attr]
                        base_value,
                        value,
                        None if value is None or base_value is None else value - base_value,
                        (cell or base_cell).entry.higher_is_better,  # type: ignore[union-attr]
                    )
                )
            mine, theirs = efficiency[row].values, efficiency[base].values
            gains = {
                name: ratio(mine[key], theirs[key]) if rate else ratio(theirs[key], mine[key])
                for name, key, rate in GAINS
            }
            if efficiency[row].peak_memory_source != efficiency[base].peak_memory_source:
                gains["peak memory"] = None
            comparisons.append(Comparison(row, base, changes, gains, mine.get("mcr")))
    return comparisons, notes


@dataclass(frozen=True)
class Best:
    """The best row of a model, its mean accuracy and the columns the mean is over."""

    row: RowKey
    score: float
    columns: list[Column]


def best_rows(study: Study, efficiency: dict[RowKey, RowEfficiency]) -> dict[str, Best | None]:
    """Per model: its best row or None (see the module docstring)."""

    def scored(row: RowKey, column: Column) -> bool:
        cell = study.cell(row, column)
        return cell is not None and cell.entry.value is not None and cell.entry.higher_is_better is True

    best: dict[str, Best | None] = {}
    for model in study.models():
        accuracy = study.columns_of(ACCURACY)
        rows = [r for r in study.rows_of(model) if any(scored(r, c) for c in accuracy)]
        columns = [c for c in accuracy if rows and all(scored(r, c) for r in rows)]
        if not columns:
            best[model] = None
            continue
        scores = {r: sum(study.value(r, c) or 0.0 for c in columns) / len(columns) for r in rows}
        size = lambda r: efficiency[r].weight_bytes or 0  # noqa: E731
        winner = max(rows, key=lambda r: (scores[r], -size(r)))
        best[model] = Best(winner, scores[winner], columns)
    return best
