"""ESD figures from each row's ``esd_layers.csv`` (see :mod:`lm_eval_perf.report.esd`).

* ``esd_alpha_histogram`` - distribution of the per-layer power-law exponent alpha, one step
  histogram per model/precision (same bins for all);
* ``esd_alpha_per_layer`` - alpha of every layer in the CSV's order (the model's module order).
Layers without a finite fit are left out.
"""

from __future__ import annotations

from lm_eval_perf.report.esd import Layer
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.plots.common import Plot, Skipped, Styles, legend, panels, render, series_label

BINS = 20


def esd_figures(layers: dict[RowKey, list[Layer]], styles: Styles) -> list[Plot | Skipped]:
    alphas = {row: [x.alpha for x in found if x.alpha is not None] for row, found in layers.items()}
    alphas = {row: values for row, values in alphas.items() if values}
    if not alphas:
        reason = "no ESD run (esd task) with a finite per-layer alpha in the results"
        return [Skipped("esd_alpha_histogram", reason), Skipped("esd_alpha_per_layer", reason)]
    every = [a for values in alphas.values() for a in values]
    low, high = min(every), max(every)
    edges = [low + (high - low) * i / BINS for i in range(BINS + 1)] if high > low else BINS

    title = "ESD: distribution of the per-layer alpha"
    fig, axes = panels(1, title)
    for row, values in alphas.items():
        label = series_label(row)
        ax = axes[0]
        style = styles(label)
        ax.hist(
            values,
            bins=edges,
            histtype="step",
            linewidth=1.5,
            label=label,
            color=style["color"],
            linestyle=style["linestyle"],
        )
    axes[0].set_xlabel("alpha (power-law exponent of the eigenvalue spectrum)")
    axes[0].set_ylabel("layers")
    axes[0].grid(alpha=0.3)
    legend(fig, axes)
    histogram = render(
        fig, "esd_alpha_histogram", title, "Histogram of alpha over the layers with a finite fit."
    )

    title = "ESD: alpha per layer"
    fig, axes = panels(1, title)
    for row, found in layers.items():
        points = [(i, x.alpha) for i, x in enumerate(found) if x.alpha is not None]
        if points:
            label = series_label(row)
            axes[0].plot(*zip(*points), label=label, markersize=3, linewidth=1, **styles(label))
    axes[0].set_xlabel("layer (order of esd_layers.csv)")
    axes[0].set_ylabel("alpha")
    axes[0].grid(alpha=0.3)
    legend(fig, axes)
    per_layer = render(
        fig, "esd_alpha_per_layer", title, "Alpha of each analysed weight matrix, in module order."
    )
    return [histogram, per_layer]
