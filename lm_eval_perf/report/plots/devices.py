"""Figures of the CPU and the GPU side by side (groups of :mod:`lm_eval_perf.report.devices`: one
model, precision and ratio measured on the CPU and another device). Drawn only where such a group
exists; a results folder of one device gets none of them, not even a "not drawn" line.

* ``device_speedup_vs_batch_size`` - the forward sweep's speed-up over the CPU (samples/s on the
  device ÷ on the CPU) per batch size, one panel per sequence length, one line per group (and device,
  where several are compared with the CPU); a dotted line marks 1 (as fast as the CPU);
* ``device_latency_per_sample_vs_batch_size`` - the forward sweep's median latency per sample (ms)
  per batch size, one panel per sequence length, one line per group and device;
* ``device_speedup_decode_vs_batch_size`` - the throughput sweep's (``perf_throughput``) decode
  tokens/s on the device ÷ on the CPU, one panel per generated length.

Only points measured (status ``ok``) on both devices give a speed-up. The y axes are logarithmic:
a CPU and a GPU differ by orders of magnitude.
"""

from __future__ import annotations

from collections import defaultdict

from lm_eval_perf.monitor.metrics import ratio
from lm_eval_perf.report.devices import Group, accelerators, groups
from lm_eval_perf.report.identity import CPU, RowKey
from lm_eval_perf.report.plots.common import (
    BATCH_AXIS,
    Chart,
    Facets,
    Plot,
    Skipped,
    Styles,
    facet_figure,
    series_label,
)
from lm_eval_perf.report.study import Study
from lm_eval_perf.report.sweeps import FORWARD_SWEEP, THROUGHPUT_SWEEP, SweepKind, SweepPoint

Points = dict[RowKey, list[SweepPoint]]


def _speedup_facets(found: dict[RowKey, Group], points: Points, field: str) -> Facets:
    """Length -> series -> (batch size, device value ÷ CPU value) where both points were measured."""
    several = len(accelerators(found)) > 1
    facets: Facets = defaultdict(lambda: defaultdict(list))
    for key, group in found.items():
        cpu = {(p.length, p.batch_size): p for p in points.get(group[CPU], []) if p.status == "ok"}
        for device, row in group.items():
            if device == CPU:
                continue
            label = series_label(key) + (f" {device}/{CPU}" if several else "")
            for p in points.get(row, []):
                base = cpu.get((p.length, p.batch_size))
                gain = ratio(p.value(field), base.value(field)) if base and p.status == "ok" else None
                if gain is not None:
                    facets[p.length][label].append((p.batch_size, gain))
    return facets


def _speedup(
    found: dict[RowKey, Group], points: Points, styles: Styles, kind: SweepKind, chart: Chart
) -> Plot | Skipped:
    """``chart.field`` on each device ÷ on the CPU, per batch size (see the module docstring)."""
    facets = _speedup_facets(found, points, chart.field)
    empty = f"no {kind.artifact.filename} point measured on the CPU and on another device at one batch size"
    title = lambda length: f"{kind.length_name} {length}"  # noqa: E731
    return facet_figure(facets, styles, chart, title, BATCH_AXIS, empty, log_y=True, reference=1.0)


def _latency(found: dict[RowKey, Group], forward: Points, styles: Styles) -> Plot | Skipped:
    chart = Chart(
        "device_latency_per_sample_vs_batch_size",
        "Latency per sample vs batch size, per device (forward sweep)",
        "Median latency per sample (batch latency / rows) of the forward passes, ms, one line per "
        "model/precision and device.",
        "latency_per_sample_s.p50",
        "latency per sample p50 (ms)",
    )
    facets: Facets = defaultdict(lambda: defaultdict(list))
    for group in found.values():
        for row in group.values():
            for p in forward.get(row, []):
                value = p.value(chart.field)
                if p.status == "ok" and value is not None:
                    facets[p.length][series_label(row)].append((p.batch_size, value * 1e3))
    empty = "no perf_forward point measured on the devices compared"
    title = lambda length: f"sequence length {length}"  # noqa: E731
    return facet_figure(facets, styles, chart, title, BATCH_AXIS, empty, log_y=True)


def device_figures(study: Study, forward: Points, throughput: Points, styles: Styles) -> list[Plot | Skipped]:
    """The side-by-side figures (none where no model and precision ran on the CPU and another device)."""
    found = groups(study)
    if not found:
        return []
    devices = ", ".join(accelerators(found))
    forward_chart = Chart(
        "device_speedup_vs_batch_size",
        f"Speed-up over the CPU vs batch size ({devices}, forward sweep)",
        "Samples/s of the forward passes on the device / on the CPU at the same sequence length and batch "
        "size (> 1: faster than the CPU; the dotted line is 1).",
        "samples_per_s",
        "speed-up over the CPU (x)",
    )
    decode_chart = Chart(
        "device_speedup_decode_vs_batch_size",
        f"Decode speed-up over the CPU vs batch size ({devices}, throughput sweep)",
        "Decode tokens/s on the device / on the CPU at the same generated length and batch size (> 1: "
        "faster than the CPU; the dotted line is 1).",
        "decode_tokens_per_s",
        "decode speed-up over the CPU (x)",
    )
    return [
        _speedup(found, forward, styles, FORWARD_SWEEP, forward_chart),
        _latency(found, forward, styles),
        _speedup(found, throughput, styles, THROUGHPUT_SWEEP, decode_chart),
    ]
