"""The one clock every measurement in this project uses.

Two kinds of time stamp:

* :meth:`Clock.now` - a host time in seconds (``time.perf_counter``) taken after the device has
  finished all work issued so far. Comparable with the sampler's timeline; costs one device sync.
* :meth:`Clock.event` / :meth:`Clock.seconds_between` - a mark in the device's work stream that
  costs no sync (a CUDA event on the GPU, ``perf_counter`` on the CPU, where work is synchronous).
  Used per generated token, where a sync would slow down what is measured. On GPUs every mark is
  recorded on the current stream of one device, the *event device*: the GPU that runs the timed work
  (for a model split over GPUs, the one that makes the logits). A CUDA event measures only the stream
  it is recorded on, and two events can be compared only on one device, so marking on whatever device
  happens to be current (cuda:0) would time the host instead of a model on cuda:1.
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
    """Synchronizes the given CUDA devices (torch indices) and marks with CUDA events recorded on
    ``event_device`` (a torch index; default: the first of ``devices``)."""

    def __init__(self, devices: Sequence[int], event_device: int | None = None):
        if not devices:
            raise ValueError("CudaClock needs at least one CUDA device")
        self.devices = tuple(devices)
        self.event_device = self.devices[0] if event_device is None else event_device

    def sync(self) -> None:
        import torch

        for index in self.devices:
            torch.cuda.synchronize(index)

    def event(self) -> Any:
        import torch

        mark = torch.cuda.Event(enable_timing=True)
        mark.record(torch.cuda.current_stream(self.event_device))
        return mark

    def seconds_between(self, start: Any, end: Any) -> float:
        end.synchronize()
        return start.elapsed_time(end) / 1000.0


def clock_for(devices: Sequence[int], event_device: int | None = None) -> Clock:
    """:class:`CudaClock` over ``devices`` (marks on ``event_device``) when there are any, else the
    host :class:`Clock`."""
    return CudaClock(devices, event_device) if devices else Clock()


class TokenTimer:
    """A logits processor (transformers calls it once per generated token, after the logits are
    made) that marks the time of every token with ``clock.event()``; scores pass unchanged."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.marks: list = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self.marks.append(self.clock.event())
        return scores
