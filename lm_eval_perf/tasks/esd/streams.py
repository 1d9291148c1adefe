"""Run independent GPU jobs concurrently: one Python thread per CUDA side stream.

``torch.linalg.eigvalsh`` checks its result on the host, so one thread issues one matrix at a time and
the GPU idles between calls and during the solver's sequential phases. With ``workers`` threads, each
on its own stream per device, several solves overlap. Results are made safe to use on the caller's
streams (``wait_stream`` and ``record_stream``) before :func:`map_on_streams` returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

Job = TypeVar("Job")


def map_on_streams(
    work: Callable[[Job], list[torch.Tensor]],
    jobs: Sequence[Job],
    device_of: Callable[[Job], torch.device],
    workers: int,
) -> list[list[torch.Tensor]]:
    """``[work(job) for job in jobs]`` under ``torch.no_grad``; CUDA jobs on ``workers`` side streams."""
    if workers <= 1 or not any(device_of(job).type == "cuda" for job in jobs):
        with torch.no_grad():
            return [work(job) for job in jobs]
    callers = {d: torch.cuda.current_stream(d) for d in {device_of(j) for j in jobs} if d.type == "cuda"}
    created: list[tuple[torch.device, torch.cuda.Stream]] = []
    lock = threading.Lock()
    local = threading.local()

    def run(job: Job) -> list[torch.Tensor]:
        device = device_of(job)
        if device.type != "cuda":
            with torch.no_grad():
                return work(job)
        own = local.__dict__.setdefault("streams", {})
        if device not in own:
            own[device] = torch.cuda.Stream(device)
            own[device].wait_stream(callers[device])  # inputs were made on the caller's stream
            with lock:
                created.append((device, own[device]))
        with torch.no_grad(), torch.cuda.device(device), torch.cuda.stream(own[device]):
            outputs = work(job)
        for tensor in outputs:
            tensor.record_stream(callers[device])  # used there later: keep its memory until then
        return outputs

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, jobs))
    for device, stream in created:
        callers[device].wait_stream(stream)
    return results
