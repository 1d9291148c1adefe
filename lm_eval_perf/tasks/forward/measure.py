"""Measure one forward point: its rows on the device, warm-up passes, then timed passes in one window.

Each pass is timed between two marks of the project clock (CUDA events on a GPU, recorded on the
stream without a host sync per pass; ``perf_counter`` on a CPU). The monitor window spans the
measured passes only (:mod:`lm_eval_perf.tasks.sweeps.point`); the torch allocator peak is reset
when the point starts, so it includes the warm-up.
"""

from __future__ import annotations

from pathlib import Path

from lm_eval_perf.models.forward_call import ForwardCall
from lm_eval_perf.monitor import PerformanceMonitor
from lm_eval_perf.monitor.clock import Clock
from lm_eval_perf.tasks.forward.figures import point_figures
from lm_eval_perf.tasks.forward.inputs import Rows
from lm_eval_perf.tasks.forward.options import ForwardOptions, Point
from lm_eval_perf.tasks.sweeps.oom import raise_injected
from lm_eval_perf.tasks.sweeps.point import (
    energy_fields,
    measured_window,
    memory_fields,
    reset_allocator_peaks,
)
from lm_eval_perf.tasks.sweeps.profiling import profile_iteration


def measure_point(
    lm,
    monitor: PerformanceMonitor,
    clock: Clock,
    options: ForwardOptions,
    point: Point,
    rows: Rows,
    call: ForwardCall,
    profile_folder: Path | None,
) -> dict:
    """The fields of a finished point (``status: ok``). Out-of-memory errors propagate."""
    raise_injected(options.inject_oom_from_batch_size, point.batch_size)
    reset_allocator_peaks(lm.devices)
    ids = rows.input_ids.to(lm.device)
    mask = None if rows.attention_mask is None else rows.attention_mask.to(lm.device)
    for _ in range(options.num_warmup):
        call(ids, mask)

    def timed() -> tuple:
        start = clock.event()
        call(ids, mask)
        return start, clock.event()

    marks, window = measured_window(
        monitor, f"perf_forward {point.label}", timed, options.num_runs, options.min_seconds
    )
    latencies = [clock.seconds_between(start, end) for start, end in marks]
    all_logits = lm.classifier is not None or not call.last_position_only
    figures, unavailable = point_figures(
        point, rows.row_tokens, latencies, lm.shape, lm.peaks, all_logits, options.overhead_threshold
    )
    memory, memory_unavailable = memory_fields(lm.devices, window)
    per = {"sample": len(marks) * point.batch_size, "token": len(marks) * sum(rows.row_tokens)}
    energy, energy_unavailable = energy_fields(window, per)
    profile = None
    if profile_folder is not None:
        profile = profile_iteration(lambda: call(ids, mask), profile_folder, bool(lm.devices))
    return {
        "status": "ok",
        "error": None,
        "warmup_runs": options.num_warmup,
        "logits": "classifier head" if lm.classifier is not None else ("all" if all_logits else "last"),
        **figures,
        **memory,
        **energy,
        "profile": profile,
        "unavailable": {**unavailable, **memory_unavailable, **energy_unavailable},
    }
