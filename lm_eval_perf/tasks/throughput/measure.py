"""Measure one sweep point: prepare its generator, warm up, repeat it inside one monitor window.

The window (:meth:`PerformanceMonitor.begin_window`) spans the measured iterations only - not the
preparation (compilation, graph capture), not the warm-up, not the profiled iteration - so its
energy, average power and device-memory peak belong to exactly the timed generations. The torch
allocator peak is reset when the point starts, so it includes the point's preparation. A static
loop that was checked when prepared (compiled or graphed) already ran one full iteration: it counts
as one of the ``warmup_iterations``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lm_eval_perf.monitor import PerformanceMonitor, metrics
from lm_eval_perf.monitor.clock import Clock
from lm_eval_perf.monitor.window import GIB, Measurement
from lm_eval_perf.tasks.throughput.figures import point_figures
from lm_eval_perf.tasks.throughput.generation import prepare
from lm_eval_perf.tasks.throughput.oom import raise_injected
from lm_eval_perf.tasks.throughput.profiling import profile_iteration
from lm_eval_perf.tasks.throughput.prompts import prompt_ids
from lm_eval_perf.tasks.throughput.sweep import Point, SweepOptions


def _memory(devices: list[int], window: Measurement) -> tuple[dict, dict[str, str]]:
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


def _energy(window: Measurement, generated_tokens: int) -> tuple[dict, dict[str, str]]:
    """Energy of the point's window; every generated token is kept (exactly ``new_tokens`` per row)."""
    fields = {
        "energy_j": window.energy_j,
        "energy_error_bound": window.energy_error_bound,
        "energy_per_token_j": metrics.ratio(window.energy_j, generated_tokens),
        "avg_power_w": window.aec_w,
        "energy_source": window.energy_source,
        "power_source": window.power_source,
        "window_s": window.duration_s,
    }
    unavailable: dict[str, str] = {}
    if window.energy_j is None:
        reason = window.unavailable.get("energy_j") or window.unavailable.get("gpu") or "no energy source"
        for key in ("energy_j", "energy_error_bound", "energy_per_token_j", "avg_power_w"):
            unavailable[key] = reason
    elif window.energy_error_bound is None:
        unavailable["energy_error_bound"] = window.unavailable.get("energy_error_bound", "no bound known")
    return fields, unavailable


def measure_point(
    lm,
    monitor: PerformanceMonitor,
    clock: Clock,
    options: SweepOptions,
    point: Point,
    profile_folder: Path | None,
) -> dict:
    """The fields of a finished point (``status: ok``). Out-of-memory errors propagate."""
    raise_injected(options, point)
    vocab_size = lm.model.config.get_text_config().vocab_size
    prompts = prompt_ids(lm.tokenizer, vocab_size, options, point.batch_size)
    for index in lm.devices:
        torch.cuda.reset_peak_memory_stats(index)
    started = time.perf_counter()
    generator = prepare(lm, prompts, point.new_tokens, clock, options.static_compile, options.compile_shapes)
    prepare_s = time.perf_counter() - started
    checked = 1 if generator.check is not None else 0  # the check already ran one full iteration
    for _ in range(max(0, options.warmup_iterations - checked)):
        generator.run()

    iterations = []
    name = f"perf_throughput {point.label}"
    monitor.begin_window(name)
    try:
        began = time.perf_counter()
        while len(iterations) < options.min_iterations or time.perf_counter() - began < options.min_seconds:
            iterations.append(generator.run())
    finally:
        monitor.end_window(name)
    window = monitor.measurement(name)
    assert window is not None

    figures, unavailable = point_figures(
        point, options.prompt_len, iterations, lm.shape, lm.peaks, options.overhead_threshold
    )
    memory, memory_unavailable = _memory(lm.devices, window)
    energy, energy_unavailable = _energy(window, len(iterations) * point.batch_size * point.new_tokens)
    profile = None
    if profile_folder is not None:
        profile = profile_iteration(generator.run, profile_folder, bool(lm.devices))
    return {
        "status": "ok",
        "error": None,
        "decode_path": generator.path,
        "decode_path_note": generator.note,
        "graph_check": generator.check,
        "prepare_s": prepare_s,
        "warmup_iterations": options.warmup_iterations,
        **figures,
        **memory,
        **energy,
        "profile": profile,
        "unavailable": {**unavailable, **memory_unavailable, **energy_unavailable},
    }
