"""What every figure shares: panels, series styles, PNG/PDF rendering, the skip record.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (never pyplot's global state) and
rendered by the Agg (PNG) and PDF backends. A figure that would have no data is not drawn: its
builder returns a :class:`Skipped` with the reason instead.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure

from lm_eval_perf.report.identity import RowKey

PANEL_W, PANEL_H = 4.2, 3.2
MIN_WIDTH = 7.0  # inches: room for a legend below a single panel
MARKERS = "osD^v<>ph*"
LINESTYLES = ("-", "--", "-.", ":")  # overlapping series (e.g. bf16 and fp32 of one model) stay visible


@dataclass(frozen=True)
class Plot:
    """A drawn figure: file stem, title, caption, and its PNG and PDF bytes."""

    name: str
    title: str
    caption: str
    png: bytes
    pdf: bytes


@dataclass(frozen=True)
class Skipped:
    """A figure that was not drawn, and why."""

    name: str
    reason: str


class Styles:
    """A fixed colour and marker per series label, the same in every figure of a report."""

    def __init__(self, labels: Sequence[str]):
        self._index = {label: i for i, label in enumerate(dict.fromkeys(labels))}

    def __call__(self, label: str) -> dict:
        i = self._index.setdefault(label, len(self._index))
        return {
            "color": f"C{i % 10}",
            "marker": MARKERS[(i // 10) % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)],
        }


def series_label(row: RowKey) -> str:
    """``model / precision`` (with ``r=ratio`` for a compressed row)."""
    return f"{row.model} / {row.label()}"


def panels(count: int, title: str, columns: int = 3) -> tuple[Figure, list]:
    """A figure with ``count`` panels in rows of at most ``columns``; unused slots are removed."""
    cols = min(count, columns)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(max(PANEL_W * cols, MIN_WIDTH), PANEL_H * rows + 0.8), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False)
    axes = [ax for line in grid for ax in line]
    for ax in axes[count:]:
        ax.remove()
    fig.suptitle(title)
    return fig, axes[:count]


def discrete_x(ax, values: Sequence[float], base: int = 2) -> None:
    """An x axis for a grid of sizes (batch sizes, lengths): ticks at the values themselves, and
    logarithmic when the positive values span a factor of 4 or more."""
    positive = sorted({v for v in values if v > 0})
    if positive and positive[-1] / positive[0] >= 4:
        ax.set_xscale("log", base=base)
    if 0 < len(positive) <= 12:
        ax.set_xticks(positive, [f"{v:g}" for v in positive])
        ax.minorticks_off()


def render(fig: Figure, name: str, title: str, caption: str) -> Plot:
    """PNG (120 dpi) and PDF bytes of ``fig``."""
    png, pdf = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    fig.savefig(pdf, format="pdf")
    return Plot(name, title, caption, png.getvalue(), pdf.getvalue())


def legend(fig: Figure, axes: list) -> None:
    """One legend for the figure, below the panels, from the first panel that has labelled lines."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()), list(seen), loc="outside lower center", ncols=min(3, len(seen)), fontsize=8
        )
