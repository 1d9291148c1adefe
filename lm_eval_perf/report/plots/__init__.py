"""The report's figures (matplotlib, PNG + PDF); see the modules for what each one shows."""

from __future__ import annotations

from lm_eval_perf.report.efficiency import RowEfficiency
from lm_eval_perf.report.esd import Layer
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.plots.accuracy import accuracy_figures
from lm_eval_perf.report.plots.common import Plot, Skipped, Styles, series_label
from lm_eval_perf.report.plots.devices import device_figures
from lm_eval_perf.report.plots.esd import esd_figures
from lm_eval_perf.report.plots.throughput import throughput_figures
from lm_eval_perf.report.study import Study
from lm_eval_perf.report.sweeps import SweepPoint


def all_figures(
    study: Study,
    efficiency: dict[RowKey, RowEfficiency],
    points: dict[RowKey, list[SweepPoint]],
    layers: dict[RowKey, list[Layer]],
    forward: dict[RowKey, list[SweepPoint]] | None = None,
) -> list[Plot | Skipped]:
    """Every figure of the report, in report order, or why it was skipped; ``points``: the
    throughput sweeps', ``forward``: the forward sweeps' (for the CPU/GPU figures)."""
    styles = Styles([series_label(row) for row in study.rows])
    return [
        *throughput_figures(points, styles),
        *device_figures(study, forward or {}, points, styles),
        *accuracy_figures(study, efficiency, styles),
        *esd_figures(layers, styles),
    ]


__all__ = ["Plot", "Skipped", "all_figures"]
