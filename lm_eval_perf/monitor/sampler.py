"""A background thread that polls the sources every ``interval_s`` into one timeline."""

from __future__ import annotations

import threading
import time

from lm_eval_perf.monitor.sources import GpuSource, HostSource, Sample


class Sampler:
    """Polls ``gpu`` and ``host`` every ``interval_s`` seconds while started.

    :meth:`sample_now` takes an extra sample on the caller's thread (window edges use it); all reads
    are serialized by one lock, so sources need not be thread-safe. ``timeline`` is ordered by time.
    Energy counters are read at the edges only (``sample_now()``): energy is the difference of the
    counter between a window's edges, and on a GPU the counter is the one costly read.
    """

    def __init__(self, gpu: GpuSource, host: HostSource | None, interval_s: float):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.gpu = gpu
        self.host = host
        self.interval_s = interval_s
        self.timeline: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_now(self, energy: bool = True) -> Sample:
        """Read every source now (``energy=False``: without the GPU energy counter) and keep the sample."""
        with self._lock:
            before = time.perf_counter()
            gpus = self.gpu.read(energy=energy)
            host = None if self.host is None else self.host.read()
            # stamped at the middle of the reads (NVML calls take up to a few ms)
            sample = Sample(t_s=(before + time.perf_counter()) / 2, gpus=gpus, host=host)
            self.timeline.append(sample)
        return sample

    def _run(self) -> None:
        next_t = time.perf_counter()
        while not self._stop.is_set():
            self.sample_now(energy=False)
            next_t += self.interval_s
            delay = next_t - time.perf_counter()
            if delay < 0:  # fell behind (a slow NVML call): keep the cadence, skip missed slots
                next_t = time.perf_counter()
                delay = 0.0
            self._stop.wait(delay)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lm-eval-perf-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after one last background-style sample (no energy: no window ends here)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sample_now(energy=False)
