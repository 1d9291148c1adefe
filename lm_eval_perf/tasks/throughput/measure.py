"""Measure one sweep point: prepare its generator, warm up, repeat it inside one monitor window.

The window spans the measured iterations only - not the preparation (compilation, graph capture),
not the warm-up, not the profiled iteration (:mod:`lm_eval_perf.tasks.sweeps.point`). The torch
allocator peak is reset when the point starts, so it includes the point's preparation. A static
loop that was checked when prepared (compiled or graphed) already ran one full iteration: it counts
as one of the ``warmup_iterations``.
"""

from __future__ import annotations

import time
from pathlib import Path

from lm_eval_perf.monitor import PerformanceMonitor
from lm_eval_perf.monitor.clock import Clock
from lm_eval_perf.tasks.sweeps.oom import raise_injected
from lm_eval_perf.tasks.sweeps.point import (
    energy_fields,
    measured_window,
    memory_fields,
    reset_allocator_peaks,
)
from lm_eval_perf.tasks.sweeps.profiling import profile_iteration
from lm_eval_perf.tasks.throughput.figures import point_figures
from lm_eval_perf.tasks.throughput.generation import prepare
from lm_eval_perf.tasks.throughput.prompts import prompt_ids
from lm_eval_perf.tasks.throughput.sweep import Point, SweepOptions


def measure_point(
    lm,
    monitor: PerformanceMonitor,
    clock: Clock,
    options: SweepOptions,
    point: Point,
    profile_folder: Path | None,
) -> dict:
    """The fields of a finished point (``status: ok``). Out-of-memory errors propagate."""
    raise_injected(options.inject_oom_from_batch_size, point.batch_size)
    vocab_size = lm.model.config.get_text_config().vocab_size
    prompts = prompt_ids(lm.tokenizer, vocab_size, options, point.batch_size)
    reset_allocator_peaks(lm.devices)
    started = time.perf_counter()
    generator = prepare(lm, prompts, point.new_tokens, clock, options.static_compile, options.compile_shapes)
    prepare_s = time.perf_counter() - started
    checked = 1 if generator.check is not None else 0  # the check already ran one full iteration
    for _ in range(max(0, options.warmup_iterations - checked)):
        generator.run()

    iterations, window = measured_window(
        monitor, f"perf_throughput {point.label}", generator.run, options.min_iterations, options.min_seconds
    )
    figures, unavailable = point_figures(
        point, options.prompt_len, iterations, lm.shape, lm.peaks, options.overhead_threshold
    )
    memory, memory_unavailable = memory_fields(lm.devices, window)
    # every generated token is kept (exactly ``new_tokens`` per row)
    generated = len(iterations) * point.batch_size * point.new_tokens
    energy, energy_unavailable = energy_fields(window, {"token": generated})
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
