"""``profile_point``: one extra iteration of a sweep point under the PyTorch profiler.

Writes ``trace.json`` (Chrome trace: open in chrome://tracing or https://ui.perfetto.dev) and
``top_ops.txt`` (the operators with the most self time: device time on a GPU, CPU time otherwise)
into the folder the task names (``<artifacts_dir>/perf_throughput_profile/<backend>-<point>/``,
``<artifacts_dir>/perf_forward_profile/<point>/``). The profiled iteration is not one of the point's
measured iterations (the profiler slows it down).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from lm_eval_perf.atomic import write_atomic

TOP_OPS = 30


def profile_iteration(run: Callable[[], object], folder: Path, on_gpu: bool) -> dict[str, str]:
    """Profile one call of ``run``; the paths of the trace and of the top-operators table."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities, record_shapes=True) as profiler:
        run()
        if on_gpu:
            torch.cuda.synchronize()
    folder.mkdir(parents=True, exist_ok=True)
    trace = folder / "trace.json"
    temporary = folder / "trace.json.tmp"
    profiler.export_chrome_trace(str(temporary))
    os.replace(temporary, trace)
    sort_by = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    table = folder / "top_ops.txt"
    write_atomic(table, profiler.key_averages().table(sort_by=sort_by, row_limit=TOP_OPS) + "\n")
    return {"trace": str(trace), "top_ops": str(table), "sorted_by": sort_by}
