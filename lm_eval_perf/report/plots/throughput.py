"""Figures of the throughput sweeps (records of ``perf_throughput.jsonl``, see
:mod:`lm_eval_perf.report.sweeps`).

* ``throughput_vs_batch_size`` / ``throughput_vs_gen_length`` - decode tokens/s, one panel per
  generated length / batch size, one line per model/precision (compressed rows included);
* ``ratio_throughput_vs_batch_size__<model>__<precision>`` and ``..._vs_gen_length__...`` - the same
  for one model and precision, one line per compression ratio (only where there are >= 2 ratios);
* ``latency_ttft_tpot`` - median TTFT and TPOT vs batch size at each series' longest generated length;
* ``peak_memory_vs_batch_size`` - CUDA allocator peak (else NVML device peak, else host RSS on CPU);
* ``energy_per_token`` - J per generated token vs batch size.

Only measured points (status ``ok``) are drawn; out-of-memory and skipped points are counted in the
caption. Batch size and generated length are drawn on base-2 logarithmic axes whose ticks are the
measured values. A figure whose x axis would hold a single measured value (a sweep over one
generated length has no line against it) is not drawn; the report says so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

from lm_eval_perf.records.names import slug
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.plots.common import (
    BATCH_AXIS,
    Chart,
    Facets,
    Plot,
    Skipped,
    Styles,
    discrete_x,
    facet_figure,
    legend,
    panels,
    render,
    series_label,
    single_reason,
    single_value,
)
from lm_eval_perf.report.sweeps import SweepPoint

Points = dict[RowKey, list[SweepPoint]]
MEMORY_FIELDS = (
    ("peak_memory_allocated_gib", "CUDA allocator peak"),
    ("device_memory_peak_gib", "NVML device memory peak"),
    ("host_rss_peak_gib", "host RSS peak (CPU run)"),
)


def _ok(points: Points) -> Points:
    return {row: [p for p in found if p.status == "ok"] for row, found in points.items()}


def _failed_note(points: Points) -> str:
    counts: dict[str, int] = defaultdict(int)
    for found in points.values():
        for p in found:
            if p.status != "ok":
                counts[p.status] += 1
    if not counts:
        return ""
    return " Not drawn: " + ", ".join(f"{n} {s} point(s)" for s, n in counts.items()) + "."


def _why_empty(points: Points, field: str) -> str:
    """The sweep's own reason why ``field`` is missing (its ``unavailable`` note), if it gave one."""
    for found in points.values():
        for p in found:
            reason = (p.record.get("unavailable") or {}).get(field.split(".")[0])
            if reason:
                return f"not measured: {reason}"
    return f"no measured point has {field}"


def sweep_figure(
    points: Points, styles: Styles, label: Callable[[RowKey], str], x_axis: str, chart: Chart
) -> Plot | Skipped:
    """Panels per the other axis (generated length for x = batch size and vice versa), a line per series."""
    other = "length" if x_axis == "batch_size" else "batch_size"
    facets: Facets = defaultdict(lambda: defaultdict(list))
    for row, found in _ok(points).items():
        for p in found:
            y = p.value(chart.field)
            if y is not None:
                facets[getattr(p, other)][label(row)].append((getattr(p, x_axis), y))
    what = "generated length" if other == "length" else "batch size"
    x = BATCH_AXIS if x_axis == "batch_size" else ("generated tokens per sequence", "generated length")
    return facet_figure(
        facets,
        styles,
        replace(chart, caption=chart.caption + _failed_note(points)),
        lambda facet: f"{what} {facet}",
        x,
        _why_empty(points, chart.field),
    )


def _latency_figure(points: Points, styles: Styles) -> Plot | Skipped:
    name, title = "latency_ttft_tpot", "Time to first token and time per output token"
    longest = {}
    for row, found in _ok(points).items():
        if found:
            gen = max(p.length for p in found)
            longest[row] = [p for p in found if p.length == gen]
    metrics = [("ttft_s.p50", "TTFT p50 (s)"), ("tpot_s.p50", "TPOT p50 (s)")]
    if not any(p.value(k) is not None for found in longest.values() for p in found for k, _ in metrics):
        return Skipped(name, _why_empty(points, "ttft_s"))
    only = single_value([p.batch_size for found in longest.values() for p in found])
    if only is not None:
        return Skipped(name, single_reason("batch size", only))
    fig, axes = panels(2, title)
    for ax, (key, ylabel) in zip(axes, metrics):
        xs = []
        for row, found in longest.items():
            pairs = [(p.batch_size, p.value(key)) for p in found if p.value(key) is not None]
            if pairs:
                xs += [x for x, _ in pairs]
                text = f"{series_label(row)} (gen {found[0].length})"
                ax.plot(*zip(*sorted(pairs)), label=text, **styles(series_label(row)))
        discrete_x(ax, xs)
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    legend(fig, axes)
    caption = (
        "Median TTFT (prefill) and TPOT (one decode step) per batch size, at each series' longest "
        "generated length."
    )
    return render(fig, name, title, caption + _failed_note(points))


def _ratio_groups(points: Points) -> dict[tuple[str, str], Points]:
    groups: dict[tuple[str, str], Points] = defaultdict(dict)
    for row, found in points.items():
        groups[(row.model, row.precision)][row] = found
    return {k: v for k, v in groups.items() if len({r.ratio for r in v}) >= 2}


def _memory_chart(points: Points) -> Chart:
    key, text = next(
        (
            (key, text)
            for key, text in MEMORY_FIELDS
            if any(p.value(key) is not None for found in _ok(points).values() for p in found)
        ),
        MEMORY_FIELDS[0],
    )
    caption = f"{text} during each point's measured iterations, GiB."
    return Chart("peak_memory_vs_batch_size", "Peak memory vs batch size", caption, key, f"{text} (GiB)")


DECODE_CAPTION = "Decode tokens/s of the sweep (all sequences of the batch), one line per model/precision."
ENERGY = Chart(
    "energy_per_token",
    "Energy per generated token vs batch size",
    "GPU energy of the measured iterations / generated tokens (needs an NVML energy source).",
    "energy_per_token_j",
    "J per generated token",
)


def throughput_figures(points: Points, styles: Styles) -> list[Plot | Skipped]:
    """Every throughput figure (or why it was skipped)."""
    if not points:
        reason = "no throughput sweep records (perf_throughput.jsonl beside a perf_throughput result)"
        names = ("throughput_vs_batch_size", "throughput_vs_gen_length", "latency_ttft_tpot")
        return [Skipped(n, reason) for n in (*names, "peak_memory_vs_batch_size", ENERGY.name)]
    out: list[Plot | Skipped] = []
    axes = (("batch_size", "batch_size", "batch size"), ("length", "gen_length", "generated length"))
    for x_axis, stem, what in axes:
        chart = Chart(
            f"throughput_vs_{stem}",
            f"Decode throughput vs {what}",
            DECODE_CAPTION,
            "decode_tokens_per_s",
            "decode tokens/s",
        )
        out.append(sweep_figure(points, styles, series_label, x_axis, chart))
    for (model, precision), group in sorted(_ratio_groups(points).items()):
        ratio = lambda row: f"r={row.ratio_text()}"  # noqa: E731
        ratio_styles = Styles([ratio(r) for r in sorted(group, key=RowKey.sort_key)])
        for x_axis, stem, what in axes:
            chart = Chart(
                f"ratio_throughput_vs_{stem}__{slug(model)}__{slug(precision)}",
                f"{model} ({precision}): decode throughput vs {what} per compression ratio",
                "One line per SVD compression ratio (fraction of each layer's parameters kept).",
                "decode_tokens_per_s",
                "decode tokens/s",
            )
            out.append(sweep_figure(group, ratio_styles, ratio, x_axis, chart))
    out.append(_latency_figure(points, styles))
    out.append(sweep_figure(points, styles, series_label, "batch_size", _memory_chart(points)))
    out.append(sweep_figure(points, styles, series_label, "batch_size", ENERGY))
    return out
