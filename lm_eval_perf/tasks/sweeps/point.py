"""One sweep point's measurement conventions, shared by the sweep tasks.

* :func:`measured_window`: the point's measured iterations run inside one monitor window - not the
  preparation, not the warm-up, not the profiled iteration - so its energy, average power and
  device-memory peak belong to exactly the timed work; the iterations repeat until both
  ``min_iterations`` and ``min_seconds`` are reached.
* :func:`reset_allocator_peaks` when the point starts: the torch allocator peak then includes the
  point's preparation and warm-up.
* :func:`memory_fields` and :func:`energy_fields`: the record's memory and energy figures, each
  ``None`` with its reason where this machine cannot measure it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch

from lm_eval_perf.monitor import PerformanceMonitor, metrics
from lm_eval_perf.monitor.window import GIB, Measurement

T = TypeVar("T")


def reset_allocator_peaks(devices: list[int]) -> None:
    """Reset torch's peak-memory counters of the model's GPUs (nothing on a CPU)."""
    for index in devices:
        torch.cuda.reset_peak_memory_stats(index)


def measured_window(
    monitor: PerformanceMonitor,
    name: str,
    run: Callable[[], T],
    min_iterations: int,
    min_seconds: float,
) -> tuple[list[T], Measurement]:
    """Call ``run`` inside monitor window ``name`` until it ran ``min_iterations`` times and
    ``min_seconds`` passed (host clock); its results and the window's measurement."""
    iterations: list[T] = []
    monitor.begin_window(name)
    try:
        began = time.perf_counter()
        while len(iterations) < min_iterations or time.perf_counter() - began < min_seconds:
            iterations.append(run())
    finally:
        monitor.end_window(name)
    window = monitor.measurement(name)
    assert window is not None
    return iterations, window


def memory_fields(devices: list[int], window: Measurement) -> tuple[dict, dict[str, str]]:
    """(fields, unavailable): torch allocator peaks (GiB, summed over the model's GPUs, since the
    point started), NVML device memory peak and host RSS peak of the window (GiB)."""
    fields = {
        "peak_memory_allocated_gib": None,
        "peak_memory_reserved_gib": None,
        "device_memory_peak_gib": window.memory_used_peak_gib,
        "host_rss_peak_gib": window.host_rss_peak_gib,
    }
    unavailable: dict[str, str] = {}
    if devices:
        fields["peak_memory_allocated_gib"] = sum(torch.cuda.max_memory_allocated(i) for i in devices) / GIB
        fields["peak_memory_reserved_gib"] = sum(torch.cuda.max_memory_reserved(i) for i in devices) / GIB
    else:
        for key in ("peak_memory_allocated_gib", "peak_memory_reserved_gib"):
            unavailable[key] = "the model runs on a CPU: no CUDA allocator"
    if window.memory_used_peak_gib is None:
        unavailable["device_memory_peak_gib"] = window.unavailable.get("gpu", "NVML gave no memory reading")
    return fields, unavailable


def energy_fields(window: Measurement, per: Mapping[str, int]) -> tuple[dict, dict[str, str]]:
    """(fields, unavailable): the window's energy (J), its error bound, average power (W), and
    ``energy_per_<unit>_j`` for each ``unit -> count`` of ``per`` (e.g. ``{"token": 4096}``: the
    units processed in the window)."""
    fields = {
        "energy_j": window.energy_j,
        "energy_error_bound": window.energy_error_bound,
        **{f"energy_per_{unit}_j": metrics.ratio(window.energy_j, count) for unit, count in per.items()},
        "avg_power_w": window.aec_w,
        "energy_source": window.energy_source,
        "power_source": window.power_source,
        "window_s": window.duration_s,
    }
    unavailable: dict[str, str] = {}
    if window.energy_j is None:
        reason = window.unavailable.get("energy_j") or window.unavailable.get("gpu") or "no energy source"
        for key in ("energy_j", "energy_error_bound", *(f"energy_per_{u}_j" for u in per), "avg_power_w"):
            unavailable[key] = reason
    elif window.energy_error_bound is None:
        unavailable["energy_error_bound"] = window.unavailable.get("energy_error_bound", "no bound known")
    return fields, unavailable
