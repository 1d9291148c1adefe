"""``PerformanceMonitor``: the one object a caller needs.

    with PerformanceMonitor(model_shape=shape) as monitor:
        with monitor.window("generate"):
            start = monitor.clock.now()
            out = model.generate(...)
            monitor.record_request("generate", monitor.clock.now() - start, batch_size=8,
                                   prompt_tokens=1024, generated_tokens=256)
    record = monitor.summary()      # plain dict: per-kind blocks, overall block, provenance

The constructor only stores configuration; devices are opened and the sampler thread started in
``__enter__``. Data flows one way: sources -> sampler timeline -> windows (``Measurement``) and timed
batches (``BatchRecord``) -> :meth:`state` -> record (:mod:`lm_eval_perf.monitor.record`). Window
edges cost the caller one device sync: the sampler thread reads the edge (energy counters included),
and a window's :class:`Measurement` is computed when it is first asked for (:meth:`measurement`,
:meth:`summary`). :meth:`paused` leaves a block out of every open window (a batch-size probe, another
benchmark run inside the evaluation).
"""

from __future__ import annotations

import contextlib
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from lm_eval_perf.monitor import provenance
from lm_eval_perf.monitor.clock import Clock, clock_for
from lm_eval_perf.monitor.metrics import ModelShape
from lm_eval_perf.monitor.peaks import DevicePeaks, peaks_for
from lm_eval_perf.monitor.record import TOTAL, MonitorState, build_record
from lm_eval_perf.monitor.requests import BatchRecord
from lm_eval_perf.monitor.sampler import Edge, Sampler
from lm_eval_perf.monitor.sources import GpuInfo, GpuSource, HostSource, NoGpuSource, NvmlSource, Sample
from lm_eval_perf.monitor.window import Measurement, measure, merge


@dataclass
class _Closed:
    """A closed window: its two edges, and its :class:`Measurement` once computed."""

    first: Edge
    last: Edge
    measured: Measurement | None = None


class PerformanceMonitor:
    """Samples GPUs and host in the background; times batches; measures named windows.

    Args:
        interval_s: sampling period of the background thread, seconds.
        devices: torch CUDA indices to watch; ``None`` = every CUDA device visible to the process,
            ``[]`` = none (CPU run: GPU metrics are null with a reason).
        model_shape: parameter count, weight bytes and KV layout, for TT/ST/MFU/MBU.
        peaks: device peaks for MFU/MBU; looked up by the first GPU's name when omitted.
        warmup_batches: the first N batches of each request kind are left out of latency and
            throughput figures (they are still counted and their energy is in the windows).
        event_device: torch CUDA index whose stream carries the clock's marks (TTFT/TPOT): the GPU
            that makes the logits; default the first watched GPU.
        gpu_source, host_source: replace NVML / psutil (tests feed known values this way).
    """

    def __init__(
        self,
        *,
        interval_s: float = 0.1,
        devices: Sequence[int] | None = None,
        model_shape: ModelShape | None = None,
        peaks: DevicePeaks | None = None,
        warmup_batches: int = 0,
        event_device: int | None = None,
        gpu_source: GpuSource | None = None,
        host_source: HostSource | None = None,
    ):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s}")
        if warmup_batches < 0:
            raise ValueError(f"warmup_batches must be >= 0, got {warmup_batches}")
        self.interval_s = interval_s
        self.devices = None if devices is None else tuple(devices)
        self.model_shape = model_shape
        self.peaks = peaks
        self.warmup_batches = warmup_batches
        self.event_device = event_device
        self._gpu_source = gpu_source
        self._host_source = host_source
        self._sampler: Sampler | None = None
        self._gpu_infos: list[GpuInfo] = []
        self._open: dict[str, Edge] = {}
        self._windows: dict[str, list[_Closed]] = defaultdict(list)
        self._batches: dict[str, list[BatchRecord]] = defaultdict(list)
        self._torch_peaks: dict[str, float] | None = None  # allocator peaks outside paused blocks
        self._excluded: list[dict] = []  # blocks left out of the windows (see paused)
        self._started = ""
        self.clock: Clock = Clock()

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> PerformanceMonitor:
        if self._sampler is not None:
            raise RuntimeError("this PerformanceMonitor is already running")
        self._started = provenance.now_iso()
        gpu = self._gpu_source
        if gpu is None:
            gpu = (
                NoGpuSource("no GPU requested (devices=[])")
                if self.devices == ()
                else NvmlSource(self.devices)
            )
        host = self._host_source if self._host_source is not None else HostSource()
        self._gpu_infos = gpu.open()
        host.open()
        cuda_indices = [g.index for g in self._gpu_infos] if self._gpu_source is None else []
        self.clock = clock_for(cuda_indices, self.event_device)
        if self.peaks is None:
            dtype = None if self.model_shape is None else self.model_shape.compute_dtype
            self.peaks = peaks_for(self._gpu_infos[0].name if self._gpu_infos else None, dtype=dtype)
        self._reset_torch_peaks(cuda_indices)
        self._sampler = Sampler(gpu, host, self.interval_s)
        self._sampler.start()
        self.begin_window(TOTAL)
        return self

    def __exit__(self, *exc_info) -> None:
        self.end_window(TOTAL)
        for name in list(self._open):
            self.end_window(name)
        assert self._sampler is not None
        self._sampler.stop()
        self._keep_torch_peaks()
        self._sampler.gpu.close()
        if self._sampler.host is not None:
            self._sampler.host.close()

    # -- windows ---------------------------------------------------------------------------------

    def _edge(self) -> Edge:
        if self._sampler is None:
            raise RuntimeError("use the monitor inside `with PerformanceMonitor(...) as monitor:`")
        self.clock.sync()
        return self._sampler.edge()

    def begin_window(self, name: str) -> None:
        """Open window ``name`` (windows of different names may overlap)."""
        if name in self._open:
            raise ValueError(f"window {name!r} is already open")
        self._open[name] = self._edge()

    def end_window(self, name: str) -> None:
        """Close window ``name``; :meth:`measurement` gives what was measured in it."""
        if name not in self._open:
            raise ValueError(f"window {name!r} is not open")
        last = self._edge()
        self._windows[name].append(_Closed(self._open.pop(name), last))

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[None]:
        """``with monitor.window(name):`` is ``begin_window`` / ``end_window`` around the block."""
        self.begin_window(name)
        try:
            yield
        finally:
            self.end_window(name)

    @contextlib.contextmanager
    def paused(self, what: str) -> Iterator[None]:
        """Leave the block out of every open window and of the allocator peaks; ``what`` names it in
        the record's ``overall.excluded`` (with its length in seconds).

        The open windows end before the block and open again, under the same names, after it (a
        name's windows merge: their durations and energies add). The allocator peaks reached so far
        are kept, and torch's peak counters are reset after the block, so memory the block held
        (a batch-size probe's largest batch, another monitor's benchmark) does not enter them.
        """
        names = list(self._open)
        for name in names:
            self.end_window(name)
        self._keep_torch_peaks()
        started = self.clock.now()
        try:
            yield
        finally:
            self._excluded.append({"what": what, "seconds": self.clock.now() - started})
            self._reset_torch_peaks([g.index for g in self._gpu_infos] if self._gpu_source is None else [])
            for name in names:
                self.begin_window(name)

    def measurement(self, name: str) -> Measurement | None:
        """All closed windows called ``name`` merged into one, or ``None`` if there were none."""
        closed = self._windows.get(name)
        if not closed:
            return None
        assert self._sampler is not None
        edges = [(w, w.first.sample(), w.last.sample()) for w in closed if w.measured is None]
        timeline = list(self._sampler.timeline)  # it holds every edge sample now
        for window, first, last in edges:
            window.measured = measure(name, timeline, first, last, self._unavailable())
        return merge(name, [window.measured for window in closed if window.measured is not None])

    # -- batches ---------------------------------------------------------------------------------

    def record_request(
        self,
        kind: str,
        latency_s: float,
        *,
        batch_size: int = 1,
        prompt_tokens: int = 0,
        generated_tokens: int = 0,
        prompt_len: int | None = None,
        decode_steps: int | None = None,
        ttft_s: float | None = None,
        tpot_s: float | None = None,
        row_tokens: Sequence[int] | None = None,
    ) -> BatchRecord:
        """Record one timed batch of request kind ``kind`` (seconds; token counts for the batch;
        ``generated_tokens`` = the tokens kept, ``row_tokens`` = each row's unpadded prompt length)."""
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        record = BatchRecord(
            kind=kind,
            latency_s=latency_s,
            batch_size=batch_size,
            prompt_tokens=prompt_tokens,
            generated_tokens=generated_tokens,
            prompt_len=prompt_len,
            decode_steps=decode_steps,
            ttft_s=ttft_s,
            tpot_s=tpot_s,
            warmup=len(self._batches[kind]) < self.warmup_batches,
            row_tokens=None if row_tokens is None else tuple(row_tokens),
        )
        self._batches[kind].append(record)
        return record

    def batches(self, kind: str) -> list[BatchRecord]:
        return list(self._batches.get(kind, []))

    @property
    def timeline(self) -> list[Sample]:
        """Every sample taken so far, oldest first."""
        return [] if self._sampler is None else list(self._sampler.timeline)

    # -- memory ----------------------------------------------------------------------------------

    def _reset_torch_peaks(self, indices: list[int]) -> None:
        torch = sys.modules.get("torch")
        if torch is not None and indices:
            for i in indices:
                torch.cuda.reset_peak_memory_stats(i)

    def _keep_torch_peaks(self) -> None:
        """Fold torch's current peak counters (GiB, summed over the watched GPUs) into the kept ones."""
        torch = sys.modules.get("torch")
        if torch is None or self._gpu_source is not None or not self._gpu_infos:
            return
        indices = [g.index for g in self._gpu_infos]
        now = {
            "allocated_peak_gib": sum(torch.cuda.max_memory_allocated(i) for i in indices) / 1024**3,
            "reserved_peak_gib": sum(torch.cuda.max_memory_reserved(i) for i in indices) / 1024**3,
        }
        kept = self._torch_peaks or {}
        self._torch_peaks = {key: max(value, kept.get(key, 0.0)) for key, value in now.items()}

    def _unavailable(self) -> dict[str, str]:
        assert self._sampler is not None
        notes = dict(self._sampler.gpu.unavailable)
        if self._sampler.host is not None:
            notes.update(self._sampler.host.unavailable)
        return notes

    # -- the record ------------------------------------------------------------------------------

    def state(self, **extra) -> MonitorState:
        """What this monitor measured, as plain data (to combine with other processes' states);
        ``extra`` = the caller's per-process facts for the record's ``ranks`` block."""
        if self._sampler is None:
            raise RuntimeError("state() needs a monitor that was entered")
        names = [TOTAL, *self._batches]
        windows = {name: m for name in names if (m := self.measurement(name)) is not None}
        return MonitorState(
            batches={kind: list(batches) for kind, batches in self._batches.items()},
            windows=windows,
            torch_memory=self._torch_peaks,
            excluded=list(self._excluded),
            unavailable=self._unavailable(),
            provenance=provenance.collect(
                self._gpu_infos, self.interval_s, self.warmup_batches, self._started
            ),
            extra=extra,
        )

    def summary(self) -> dict:
        """The efficiency record: ``kinds`` (one block per request kind), ``overall``, provenance."""
        return build_record([self.state()], self.model_shape, self.peaks)
