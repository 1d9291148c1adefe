"""What every figure shares: panels, series styles, PNG/PDF rendering, the skip record.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (never pyplot's global state) and
rendered by the Agg (PNG) and PDF backends. A figure that would have no data is not drawn: its
builder returns a :class:`Skipped` with the reason instead.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

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


@dataclass(frozen=True)
class Chart:
    """One figure of panels: what is drawn (``field`` of each point, where it is drawn from sweep
    points) and how it is labelled."""

    name: str
    title: str
    caption: str
    field: str
    ylabel: str


# panel (a length or a batch size) -> series label -> (x, y) pairs
Facets = dict[int, dict[str, list[tuple[float, float]]]]
BATCH_AXIS = ("batch size", "batch size")  # facet_figure's x: axis label, one value in words


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


def single_reason(what: str, value: float) -> str:
    """Why a figure over a single measured x value is not drawn."""
    return f"only one {what} ({value:g}) was measured: no line to draw against it (sweep two or more)"


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


def facet_figure(
    facets: Facets,
    styles: Styles,
    chart: Chart,
    panel_title: Callable[[int], str],
    x: tuple[str, str],
    empty: str,
    log_y: bool = False,
    reference: float | None = None,
) -> Plot | Skipped:
    """One panel per facet (ascending), one line per series, on a :func:`discrete_x` axis; ``x``:
    (axis label, what one x value is, in words). Not drawn - :class:`Skipped` with the reason - when
    there is no data (``empty`` says why) or a single x value. ``reference``: a dotted horizontal line
    (e.g. a speed-up of 1)."""
    if not facets:
        return Skipped(chart.name, empty)
    only = single_value([x for facet in facets.values() for pairs in facet.values() for x, _ in pairs])
    if only is not None:
        return Skipped(chart.name, single_reason(x[1], only))
    fig, axes = panels(len(facets), chart.title)
    for ax, facet in zip(axes, sorted(facets)):
        xs = []
        for label, pairs in facets[facet].items():
            pairs.sort()
            xs += [x for x, _ in pairs]
            ax.plot(*zip(*pairs), label=label, **styles(label))
        discrete_x(ax, xs)
        if log_y:
            ax.set_yscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.4, 3, 200: no 4x10^-1
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        if reference is not None:
            ax.axhline(reference, color="#777777", linestyle=":", linewidth=1)
        ax.set_title(panel_title(facet), fontsize=9)
        ax.set_xlabel(x[0])
        ax.set_ylabel(chart.ylabel)
        ax.grid(alpha=0.3)
    legend(fig, axes)
    return render(fig, chart.name, chart.title, chart.caption)
