"""The sweep: every point of a grid measured once, its record appended at once, a rerun resuming.

For every point, in the grid's order: skip it if the results file already holds it (the same key:
model as loaded, the point, the measurement options); else measure it and append its record to
the file at once (:class:`~.store.ResultsFile`, atomic). An out-of-memory error at a point is
recorded as ``status: "oom"`` with the error text, the memory is freed and the sweep goes on; the
larger batch sizes at the same length are recorded as ``skipped_after_oom``. Any other error stops
the sweep (the points finished so far stay in the file; a rerun resumes). Records of ``oom`` and
skipped points count as finished: delete their lines to retry them. A record of another ``schema``
(figures computed by other definitions) is measured again: a table never mixes the two. With
``max_sweep_seconds``, no point starts after that many seconds; the rest are listed as not run.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import torch

from lm_eval_perf.monitor import PerformanceMonitor, provenance
from lm_eval_perf.monitor.clock import Clock, clock_for
from lm_eval_perf.tasks.sweeps.oom import error_text, is_out_of_memory, release_memory
from lm_eval_perf.tasks.sweeps.options import digest
from lm_eval_perf.tasks.sweeps.store import ResultsFile


class SweepPoint(Protocol):
    """A grid point: a batch size and a length (``LENGTH`` names it: ``new_tokens``, ``seq_len``)."""

    LENGTH: ClassVar[str]
    batch_size: int

    @property
    def length(self) -> int: ...

    @property
    def label(self) -> str: ...


@dataclass(frozen=True)
class Sweep:
    """What one sweep task measures: its name, record schema and results file, and per point its key
    and measurement (``measure(point, monitor, clock)`` -> the fields of a finished point)."""

    task: str
    schema: str
    filename: str
    key: Callable[[SweepPoint], dict]
    measure: Callable[[SweepPoint, PerformanceMonitor, Clock], dict]
    describe: Callable[[dict], str]  # a measured record's figures for the progress line


@dataclass
class SweepRun:
    """The records of every point that has one (measured now or before), and the labels of the
    points ``max_sweep_seconds`` left for a rerun."""

    records: list[dict]
    not_run: list[str]
    path: Path


def _record(lm, sweep: Sweep, key: dict, measure: Callable[[], dict], skip_reason: str | None) -> dict:
    """The record of one point: measured, out of memory, or skipped."""
    header = {
        "schema": sweep.schema,
        "key": key,
        "key_id": digest(key),
        "measured_at": provenance.now_iso(),
        "peaks": lm.peaks.to_dict(),
        "model_shape": lm.shape.to_dict(),
    }
    if skip_reason is not None:
        return {**header, "status": "skipped_after_oom", "error": skip_reason}
    try:
        return {**header, **measure()}
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        error = error_text(exc)
    release_memory()  # the failed point's tensors went with the exception's frames
    return {**header, "status": "oom", "error": error}


def log(task: str, message: str) -> None:
    print(f"{task}: {message}", file=sys.stderr, flush=True)


def run_sweep(
    lm, sweep: Sweep, points: Sequence[SweepPoint], max_sweep_seconds: float | None = None
) -> SweepRun:
    """Run (or resume) ``sweep`` over ``points`` on ``lm`` (a ``perf-hf`` model) in one monitor;
    records go to ``<artifacts_dir>/<sweep.filename>``."""
    results = ResultsFile(lm.artifacts_dir() / sweep.filename)
    finished = results.records()
    clock = clock_for(lm.devices, lm.event_device)
    monitor = lm.new_monitor()
    on_device = torch.cuda.device(lm.devices[0]) if len(lm.devices) == 1 else contextlib.nullcontext()
    records: list[dict] = []
    not_run: list[str] = []
    oom_batch: dict[int, int] = {}  # length -> the batch size that ran out of memory at it
    started = time.perf_counter()
    with on_device, monitor:
        for number, point in enumerate(points, 1):
            key = sweep.key(point)
            record = finished.get(digest(key))
            if record is not None and record.get("schema") != sweep.schema:
                record = None  # measured under other definitions: measure again
            if record is None:
                if max_sweep_seconds is not None and time.perf_counter() - started >= max_sweep_seconds:
                    not_run.append(point.label)
                    continue
                failed = oom_batch.get(point.length)
                skip = None
                if failed is not None and point.batch_size > failed:
                    skip = f"batch_size {failed} ran out of memory at {point.LENGTH} {point.length}"
                record = _record(lm, sweep, key, lambda p=point: sweep.measure(p, monitor, clock), skip)
                results.append(record)
                release_memory()
                figures = sweep.describe(record) if record["status"] == "ok" else ""
                log(sweep.task, f"{number}/{len(points)} {point.label} {record['status']}{figures}")
            if record["status"] == "oom":
                oom_batch.setdefault(point.length, point.batch_size)
            records.append(record)
    if not_run:
        log(sweep.task, f"max_sweep_seconds reached: {len(not_run)} points not run; rerun to resume")
    return SweepRun(records, not_run, results.path)
