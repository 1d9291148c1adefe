"""A background thread that polls the sources every ``interval_s`` into one timeline, and reads the
window edges the caller asks for."""

from __future__ import annotations

import threading
import time

from lm_eval_perf.monitor.sources import GpuSource, HostSource, Sample


class Edge:
    """A window edge: asked for on the caller's thread, read by the sampler thread.

    :meth:`sample` waits until the reading exists. The caller does not wait for the read itself:
    on a GPU the edge reads NVML's total-energy counter, about 3.4 ms of CPU per call on an H100
    (BENCHMARKS.md), and the sampler thread makes that call while the caller goes on working.
    """

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._sample: Sample | None = None
        self._error: BaseException | None = None

    def _resolve(self, sample: Sample | None, error: BaseException | None = None) -> None:
        self._sample, self._error = sample, error
        self._ready.set()

    @property
    def ready(self) -> bool:
        """Whether the sampler thread has read the edge (or failed to)."""
        return self._ready.is_set()

    def sample(self) -> Sample:
        """The edge's sample (energy counters included), once the sampler thread has taken it."""
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError(f"the sampler thread failed: {self._error}") from self._error
        assert self._sample is not None
        return self._sample


class Sampler:
    """Polls ``gpu`` and ``host`` every ``interval_s`` seconds while started; reads edges on request.

    Only the sampler thread reads the sources while it runs (before :meth:`start` and after
    :meth:`stop`, :meth:`edge` reads on the caller's thread), so sources need not be thread-safe.
    ``timeline`` is ordered by time. Energy counters are read for edges only: energy is the
    difference of the counter between a window's edges, and on a GPU the counter is the one costly
    read. An edge is read as soon as the thread is free (within milliseconds: a background sample
    takes about 45 µs on an H100, the counter about 3.4 ms) and stamped like every sample, so a
    window spans its two edge samples. Edges asked for while one read is under way share the next
    read.
    """

    def __init__(self, gpu: GpuSource, host: HostSource | None, interval_s: float):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.gpu = gpu
        self.host = host
        self.interval_s = interval_s
        self.timeline: list[Sample] = []
        self._lock = threading.Lock()  # guards _pending, _failed and _thread's hand-over
        self._pending: list[Edge] = []
        self._failed: BaseException | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def _take(self, energy: bool) -> Sample:
        before = time.perf_counter()
        gpus = self.gpu.read(energy=energy)
        host = None if self.host is None else self.host.read()
        # stamped at the middle of the reads (NVML calls take up to a few ms)
        sample = Sample(t_s=(before + time.perf_counter()) / 2, gpus=gpus, host=host)
        self.timeline.append(sample)
        return sample

    def edge(self) -> Edge:
        """Ask for an edge sample now; returns at once while the sampler thread runs."""
        edge = Edge()
        with self._lock:
            inline = self._thread is None or self._failed is not None
            if not inline:
                self._pending.append(edge)
        if inline:
            edge._resolve(self._take(energy=True))
        else:
            self._wake.set()
        return edge

    def _serve_edges(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            sample = self._take(energy=True)
        except BaseException as exc:
            for edge in pending:
                edge._resolve(None, exc)
            raise
        for edge in pending:
            edge._resolve(sample)

    def _run(self) -> None:
        next_t = time.perf_counter()
        try:
            while True:
                self._wake.wait(max(0.0, next_t - time.perf_counter()))
                self._wake.clear()
                self._serve_edges()
                if self._stopping:
                    break
                if time.perf_counter() >= next_t:
                    self._take(energy=False)
                    next_t += self.interval_s
                    if next_t < time.perf_counter():  # fell behind (a slow read): skip missed slots
                        next_t = time.perf_counter()
            self._serve_edges()  # edges asked for while the last ones were read
            self._take(energy=False)  # the last sample (no window ends here: no counter)
        except BaseException as exc:  # a source raised: fail the edges waiting, read later ones inline
            with self._lock:
                self._failed, pending, self._pending = exc, self._pending, []
            for edge in pending:
                edge._resolve(None, exc)

    def start(self) -> None:
        self._stopping = False
        self._wake.clear()
        self._failed = None
        thread = threading.Thread(target=self._run, name="lm-eval-perf-sampler", daemon=True)
        with self._lock:
            self._thread = thread
        thread.start()

    def stop(self) -> None:
        """Read the edges still asked for, take one last sample without the counter, end the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        thread.join()
        with self._lock:
            self._thread = None
