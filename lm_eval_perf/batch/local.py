"""The local executor: jobs as subprocesses of this process, one per free GPU.

With GPUs (found by :mod:`lm_eval_perf.batch.gpus`): a job needing ``g`` GPUs starts as soon as
``g`` GPUs are free - held by none of this pool's jobs and busy for no other process - pinned to
them by ``CUDA_VISIBLE_DEVICES``; ``workers`` (optional) caps how many jobs run at once. Streamed ESD
jobs with ``jobs_per_gpu`` > 1 (``Job.per_gpu``) also join a GPU that holds fewer than that many jobs,
all of their kind (free GPUs are filled first). Jobs with
``gpus_per_job: 0`` run on the CPU, ``workers`` (default 1) at a time. Without GPUs every job runs
on the CPU, ``workers`` (default 1) at a time; with several workers each job's torch gets an equal
share of the cores (``OMP_NUM_THREADS``, unless set).

A thread per job waits for its process; everything else (store, rename, progress) happens in the
caller's thread, so a finished job is picked up at once and the next one starts.
"""

from __future__ import annotations

import os
import queue
import threading

from lm_eval_perf.batch import runner
from lm_eval_perf.batch.gpus import GpuProbe
from lm_eval_perf.batch.layout import Layout
from lm_eval_perf.batch.matrix import Job
from lm_eval_perf.batch.runner import Attempt, Outcome
from lm_eval_perf.errors import UserInputError


class LocalPool:
    """Runs jobs on this machine's GPUs (``probe``) or CPU (``probe`` None)."""

    def __init__(self, layout: Layout, probe: GpuProbe | None, workers: int | None = None) -> None:
        self.layout = layout
        self.probe = probe
        self.devices = probe.indices() if probe else []
        self.workers = workers
        self._running: dict[str, tuple[Attempt, list[int]]] = {}
        self._ended: queue.Queue[tuple[Attempt, int, bool]] = queue.Queue()
        self._busy: set[int] = set()

    @property
    def on_gpu(self) -> bool:
        return bool(self.devices)

    @property
    def description(self) -> str:
        if self.on_gpu:
            return f"local pool, GPUs {','.join(map(str, self.devices))}"
        return f"local CPU, {self.workers or 1} at a time"

    @property
    def active(self) -> int:
        return len(self._running)

    def check(self, jobs: list[Job]) -> None:
        """One-line error if a job needs more GPUs than the pool has."""
        for job in jobs:
            if job.gpus > len(self.devices):
                raise UserInputError(
                    f"{job.key}: needs {job.gpus} GPUs per job, this machine has {len(self.devices)}"
                )

    def refresh(self) -> None:
        """Ask NVML once which GPUs other processes use (before a round of :meth:`try_start`)."""
        self._busy = self.probe.busy() if self.probe and len(self._taken()) < len(self.devices) else set()

    def _taken(self) -> set[int]:
        return {g for _, gpus in self._running.values() for g in gpus}

    def _shared(self, job: Job) -> list[int]:
        """GPUs that ``job`` (a one-GPU job with ``per_gpu`` > 1) may join: each holds fewer than
        ``per_gpu`` jobs, all of its kind. NVML counts those jobs' memory as in use, so a GPU they
        share is not asked about again; other processes' memory was checked when the first one started."""
        if job.gpus != 1 or job.per_gpu <= 1:
            return []
        holders: dict[int, list[Job]] = {}
        for attempt, gpus in self._running.values():
            for g in gpus:
                holders.setdefault(g, []).append(attempt.job)
        return [
            g
            for g in self.devices
            if g in holders
            and len(holders[g]) < job.per_gpu
            and all(other.per_gpu == job.per_gpu and other.gpus == 1 for other in holders[g])
        ]

    def full(self) -> bool:
        return self.workers is not None and self.active >= self.workers

    def try_start(self, job: Job, number: int) -> bool:
        """Start attempt ``number`` of ``job`` if a slot is free now."""
        if self.full():
            return False
        if job.gpus == 0:
            cpu_jobs = sum(1 for a, _ in self._running.values() if a.job.gpus == 0)
            if cpu_jobs >= (self.workers or 1):
                return False
            gpus: list[int] = []
        else:
            taken = self._taken()
            free = [g for g in self.devices if g not in taken and g not in self._busy]
            free += self._shared(job)
            if len(free) < job.gpus:
                return False
            gpus = free[: job.gpus]
        threads = {} if gpus or "OMP_NUM_THREADS" in os.environ or not self.workers else self._cpu_threads()
        attempt = runner.launch(job, self.layout, number, gpus if gpus else None, threads)
        self._running[job.key] = (attempt, gpus)
        threading.Thread(target=self._watch, args=(attempt,), daemon=True, name=f"job {job.key}").start()
        return True

    def _cpu_threads(self) -> dict[str, str]:
        return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // self.workers))}  # type: ignore[operator]

    def _watch(self, attempt: Attempt) -> None:
        exit_code, timed_out = runner.wait(attempt)
        self._ended.put((attempt, exit_code, timed_out))

    def wait(self, timeout_s: float) -> list[Outcome]:
        """The outcomes of jobs that ended, waiting up to ``timeout_s`` seconds for the first one."""
        ended = []
        try:
            ended.append(self._ended.get(timeout=timeout_s))
            while True:
                ended.append(self._ended.get_nowait())
        except queue.Empty:
            pass
        outcomes = []
        for attempt, exit_code, timed_out in ended:
            del self._running[attempt.job.key]
            outcomes.append(runner.finish(attempt, self.layout, exit_code, timed_out))
        return outcomes

    def stop(self) -> list[str]:
        """Kill every running job; the keys of those that were running."""
        keys = list(self._running)
        for attempt, _ in self._running.values():
            runner.terminate(attempt, grace_s=5.0)
        for attempt, _ in self._running.values():
            attempt.proc.wait()
            runner.discard(attempt)
        self._running.clear()
        return keys
