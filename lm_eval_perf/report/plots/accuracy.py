"""Accuracy against cost, and accuracy/perplexity against the compression ratio.

* ``pareto_latency`` / ``pareto_energy`` - one panel per accuracy column: each row's primary metric
  against its AL (s per batch) or energy per token (J/token), see :mod:`lm_eval_perf.report.efficiency`;
  the Pareto front (no other row both cheaper and better) is drawn as a dashed step line.
* ``accuracy_vs_ratio`` - one panel per column measured at two or more compression ratios of a
  model and precision: the primary metric against the ratio, one line per model/precision. A
  lower-is-better metric spanning more than two orders of magnitude (perplexity of a degraded
  model) gets a logarithmic axis.
"""

from __future__ import annotations

from collections import defaultdict

from lm_eval_perf.report.efficiency import RowEfficiency
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.plots.common import Plot, Skipped, Styles, legend, panels, render, series_label
from lm_eval_perf.report.study import Study
from lm_eval_perf.report.tasks import ACCURACY, Column


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (x, lower is better) and score (y), by cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1] if higher_is_better else p[1])):
        if not front or (y > front[-1][1] if higher_is_better else y < front[-1][1]):
            front.append((x, y))
    return front


def _scored(study: Study, column: Column) -> dict[RowKey, tuple[float, bool | None]]:
    out = {}
    for row in study.rows:
        cell = study.cell(row, column)
        if cell is not None and cell.entry.value is not None:
            out[row] = (cell.entry.value, cell.entry.higher_is_better)
    return out


def pareto_figure(
    study: Study, efficiency: dict[RowKey, RowEfficiency], styles: Styles, cost: str, name: str, xlabel: str
) -> Plot | Skipped:
    data = {}
    for column in study.columns_of(ACCURACY):
        pairs = {
            row: (efficiency[row].values[cost], score)
            for row, (score, _) in _scored(study, column).items()
            if efficiency[row].values.get(cost) is not None
        }
        if pairs:
            data[column] = pairs
    if not data:
        return Skipped(name, f"no row has both an accuracy value and {xlabel}")
    title = f"Accuracy vs {xlabel}"
    fig, axes = panels(len(data), title)
    for ax, (column, pairs) in zip(axes, data.items()):
        middle = sum(x for x, _ in pairs.values()) / len(pairs)
        for row, (x, y) in pairs.items():
            style = styles(series_label(row))
            ax.scatter([x], [y], label=series_label(row), color=style["color"], marker=style["marker"])
            # labels point inwards (right of points left of the middle, left of the others) so that
            # none runs off the panel
            inwards = 1 if x <= middle else -1
            ax.annotate(
                row.label(),
                (x, y),
                fontsize=7,
                xytext=(4 * inwards, 4),
                textcoords="offset points",
                ha="left" if inwards > 0 else "right",
            )
        ax.margins(x=0.2, y=0.2)
        higher = {h for _, h in _scored(study, column).values()}
        if len(higher) == 1 and None not in higher and len(pairs) > 1:
            front = pareto_front(list(pairs.values()), higher.pop())  # type: ignore[arg-type]
            ax.step(*zip(*front), where="post", linestyle="--", color="grey", linewidth=1)
        ax.set_title(study.title(column), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(study.metric_name(column))
        ax.grid(alpha=0.3)
    legend(fig, axes)
    caption = f"Each row's primary metric per task against its {xlabel}; dashed: the Pareto front."
    return render(fig, name, title, caption)


def ratio_figure(study: Study, styles: Styles) -> Plot | Skipped:
    name = "accuracy_vs_ratio"
    data: dict[Column, dict[tuple[str, str], list[tuple[float, float]]]] = {}
    for column in study.columns_of(ACCURACY):
        lines: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        for row, (score, _) in _scored(study, column).items():
            if row.ratio is not None:
                lines[(row.model, row.precision)].append((row.ratio, score))
        lines = {k: sorted(v) for k, v in lines.items() if len(v) >= 2}
        if lines:
            data[column] = lines
    if not data:
        return Skipped(
            name, "no task was measured at two or more compression ratios of one model and precision"
        )
    title = "Accuracy / perplexity vs compression ratio"
    fig, axes = panels(len(data), title)
    for ax, (column, lines) in zip(axes, data.items()):
        ys = []
        for (model, precision), pairs in lines.items():
            label = f"{model} / {precision}"
            ys += [y for _, y in pairs]
            ax.plot(*zip(*pairs), label=label, **styles(label))
        higher = {h for _, h in _scored(study, column).values()}
        positive = [y for y in ys if y > 0]
        if higher == {False} and len(positive) == len(ys) and max(ys) / min(ys) > 100:
            ax.set_yscale("log")
        ax.set_title(study.title(column), fontsize=9)
        ax.set_xlabel("compression ratio (fraction of parameters kept)")
        ax.set_ylabel(study.metric_name(column) + (" (lower is better)" if higher == {False} else ""))
        ax.grid(alpha=0.3)
    legend(fig, axes)
    caption = "Primary metric of each task against the SVD compression ratio (1 = the uncompressed model)."
    return render(fig, name, title, caption)


def accuracy_figures(
    study: Study, efficiency: dict[RowKey, RowEfficiency], styles: Styles
) -> list[Plot | Skipped]:
    return [
        pareto_figure(study, efficiency, styles, "al_s", "pareto_latency", "latency AL (s per batch)"),
        pareto_figure(study, efficiency, styles, "energy_per_token_j", "pareto_energy", "energy (J/token)"),
        ratio_figure(study, styles),
    ]
