"""The one clock every measurement in this project uses.

Two kinds of time stamp:

* :meth:`Clock.now` - a host time in seconds (``time.perf_counter``) taken after the device has
  finished all work issued so far. Comparable with the sampler's timeline; costs one device sync.
* :meth:`Clock.event` / :meth:`Clock.seconds_between` - a mark in the device's work stream that
  costs no sync (a CUDA event on the GPU, ``perf_counter`` on the CPU, where work is synchronous).
  Used per generated token, where a sync would slow down what is measured.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


class Clock:
    """Host clock for CPU-only work; see :class:`CudaClock` for GPUs."""

    def sync(self) -> None:
        """Wait until the devices finished the work issued so far (nothing to wait for on a CPU)."""

    def now(self) -> float:
        """Seconds on the monotonic host clock, after :meth:`sync`."""
        self.sync()
        return time.perf_counter()

    def event(self) -> Any:
        """A mark in the device's work stream; no sync."""
        return time.perf_counter()

    def seconds_between(self, start: Any, end: Any) -> float:
        """Seconds between two marks made by :meth:`event` (waits for ``end`` if it is pending)."""
        return float(end - start)


class CudaClock(Clock):
    """Synchronizes the given CUDA devices (torch indices) and marks with CUDA events."""

    def __init__(self, devices: Sequence[int]):
        self.devices = tuple(devices)

    def sync(self) -> None:
        import torch

        for index in self.devices:
            torch.cuda.synchronize(index)

    def event(self) -> Any:
        import torch

        mark = torch.cuda.Event(enable_timing=True)
        mark.record()
        return mark

    def seconds_between(self, start: Any, end: Any) -> float:
        end.synchronize()
        return start.elapsed_time(end) / 1000.0


def clock_for(devices: Sequence[int]) -> Clock:
    """:class:`CudaClock` over ``devices`` when there are any, else the host :class:`Clock`."""
    return CudaClock(devices) if devices else Clock()
