"""What every figure shares: panels, series styles, PNG/PDF rendering, the skip record.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (never pyplot's global state) and
rendered by the Agg (PNG) and PDF backends. A figure that would have no data is not drawn: its
builder returns a :class:`Skipped` with the reason instead.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from matplotlib.figure import Figure

from lm_eval_perf.report.identity import RowKey

PANEL_W, PANEL_H = 4.2, 3.2
MIN_WIDTH = 7.0  # inches: room for a legend below a single panel
# Okabe & Ito's colour-blind-safe palette (Color Universal Design, 2008), yellow last: it is faint on white
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000", "#F0E442")
MARKERS = "osD^v<>ph*"
LINESTYLES = ("-", "--", "-.", ":")  # overlapping series (e.g. bf16 and fp32 of one model) stay visible


@dataclass(frozen=True)
class Plot:
    """A drawn figure: file stem, title, caption, its PNG and PDF bytes, and the figure itself."""

    name: str
    title: str
    caption: str
    png: bytes
    pdf: bytes
    figure: Figure = field(repr=False, compare=False)


@dataclass(frozen=True)
class Skipped:
    """A figure that was not drawn, and why."""

    name: str
    reason: str


class Styles:
    """A fixed colour (from :data:`PALETTE`), marker and line style per series label, the same in every
    figure of a report; beyond the palette's 8 colours the marker tells series apart."""

    def __init__(self, labels: Sequence[str]):
        self._index = {label: i for i, label in enumerate(dict.fromkeys(labels))}

    def __call__(self, label: str) -> dict:
        i = self._index.setdefault(label, len(self._index))
        return {
            "color": PALETTE[i % len(PALETTE)],
            "marker": MARKERS[(i // len(PALETTE)) % len(MARKERS)],
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


def discrete_x(ax, values: Sequence[float]) -> None:
    """An x axis for a grid of sizes (batch sizes, generated lengths): logarithmic to base 2, ticks
    labelled with the measured values themselves (and no others)."""
    positive = sorted({v for v in values if v > 0})
    ax.set_xscale("log", base=2)
    ax.set_xticks(positive, [f"{v:g}" for v in positive])
    ax.minorticks_off()


def single_value(values: Sequence[float]) -> float | None:
    """The value when ``values`` hold only one distinct value (nothing to draw a line over), else None."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def render(fig: Figure, name: str, title: str, caption: str) -> Plot:
    """PNG (120 dpi) and PDF bytes of ``fig``."""
    png, pdf = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    fig.savefig(pdf, format="pdf")
    return Plot(name, title, caption, png.getvalue(), pdf.getvalue(), fig)


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
