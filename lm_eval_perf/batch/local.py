"""The local executor: jobs as subprocesses of this process, on this machine's GPUs or CPU.

With GPUs (found by :mod:`lm_eval_perf.batch.gpus`): a job needing ``g`` GPUs starts as soon as
``g`` GPUs can take it (:mod:`lm_eval_perf.batch.packing`: by default one job per GPU, on GPUs held
by none of this pool's jobs and busy for no other process; with ``jobs_per_gpu`` > 1 small jobs
share a GPU within its memory budget), pinned to them by ``CUDA_VISIBLE_DEVICES``; ``workers``
(optional) caps how many jobs run at once. Jobs with ``gpus_per_job: 0`` (and the ``cpu`` cells
of a ``devices`` axis) run on the CPU, ``workers`` (default 1) at a time, with every GPU hidden from
them (``CUDA_VISIBLE_DEVICES=""``): they take no GPU slot. Without GPUs every job runs on the CPU,
``workers`` (default 1) at a time, and a job that needs a GPU (a ``cuda`` cell) fails at once; with
several workers each job's torch gets an equal share of the cores (``OMP_NUM_THREADS``, unless set).

Every round the pool lists the processes on its GPUs (:mod:`lm_eval_perf.batch.sharing`): each GPU
job's record says what else ran on its GPUs (``gpu_sharing``). A timing-sensitive job runs alone,
and other processes on its GPUs - found before it starts (below the ``busy`` threshold) or while it
runs - are handled as ``isolation:`` says: ``warn`` runs (on) and says so in the record and on the
console; ``error`` fails the job (before it starts, or by stopping it); ``wait`` holds it back, or
stops it and runs it again, until its GPUs are free of them, failing it when that takes longer than
``isolation_wait_s`` from the first time it was held back.

A thread per job waits for its process; everything else (store, rename, progress) happens in the
caller's thread, so a finished job is picked up at once and the next one starts.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace

from lm_eval_perf.batch import runner
from lm_eval_perf.batch.gpus import GpuProbe, GpuProcess
from lm_eval_perf.batch.matrix import Job
from lm_eval_perf.batch.packing import budgets, choose
from lm_eval_perf.batch.runner import Attempt, Outcome
from lm_eval_perf.batch.scheduler import Executor
from lm_eval_perf.batch.sharing import Neighbour, SharingLog, foreign, identify
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.layout import Layout


@dataclass(frozen=True)
class GpuPolicy:
    """How the pool shares GPUs (the config's ``jobs_per_gpu``, ``gpu_memory_budget_gb``, ``isolation*``)."""

    jobs_per_gpu: int = 1
    budget_gb: float | None = None  # per GPU; None: packing.BUDGET_FRACTION of its memory
    isolation: str = "warn"  # warn | error | wait
    isolation_wait_s: float | None = 600.0  # None: no limit


@dataclass
class _Running:
    attempt: Attempt
    gpus: list[int]
    log: SharingLog | None
    warning: str | None = None
    stopped_for: str | None = None  # the pool stopped it: why
    again: bool = False  # stopped to run again (isolation: wait)
    seen: set[int] = field(default_factory=set)  # foreign pids already reported


class LocalPool(Executor):
    """Runs jobs on this machine's GPUs (``probe``) or CPU (``probe`` None)."""

    def __init__(
        self,
        layout: Layout,
        probe: GpuProbe | None,
        workers: int | None = None,
        policy: GpuPolicy | None = None,
    ) -> None:
        self.layout = layout
        self.probe = probe
        self.devices = probe.indices() if probe else []
        self.workers = workers
        self.policy = policy or GpuPolicy()
        self._budgets = budgets(probe.memory_total_bytes(), self.policy.budget_gb) if probe else {}
        self._running: dict[str, _Running] = {}
        self._ended: queue.Queue[tuple[Attempt, int, bool]] = queue.Queue()
        self._refused: list[Outcome] = []
        self._held_since: dict[str, float] = {}  # key -> time.monotonic() it was first held back
        self._busy: set[int] = set()
        self._processes: dict[int, list[GpuProcess] | None] = {}
        self._ended_pids: set[int] = set()  # NVML may list a process for a moment after it ended

    @property
    def on_gpu(self) -> bool:
        return bool(self.devices)

    @property
    def description(self) -> str:
        if self.on_gpu:
            packed = (
                f", up to {self.policy.jobs_per_gpu} jobs per GPU" if self.policy.jobs_per_gpu > 1 else ""
            )
            return f"local pool, GPUs {','.join(map(str, self.devices))}{packed}"
        return f"local CPU, {self.workers or 1} at a time"

    @property
    def active(self) -> int:
        return len(self._running)

    def check(self, jobs: list[Job]) -> None:
        """One-line error if a job needs more GPUs than the pool has (a pool without GPUs fails its
        GPU jobs one by one instead: :meth:`~lm_eval_perf.batch.scheduler.Executor.cannot_run`)."""
        for job in jobs:
            if self.devices and job.gpus > len(self.devices):
                raise UserInputError(
                    f"{job.key}: needs {job.gpus} GPUs per job, this machine has {len(self.devices)}"
                )

    def refresh(self) -> None:
        """Ask NVML once which GPUs other processes use and which processes each GPU holds (before a
        round of :meth:`try_start`), and act on what a timing-sensitive job's GPUs hold."""
        if not self.probe:
            return
        self._busy = self.probe.busy() if len(self._load()) < len(self.devices) else set()
        self._processes = self.probe.processes()
        groups = self._groups()
        for key, running in self._running.items():
            if running.log is not None:
                self._observe(key, running, groups)

    def _groups(self) -> dict[int, str]:
        """Process-group id -> key of each running job (each job leads a process group of its own)."""
        return {r.attempt.proc.pid: key for key, r in self._running.items()}

    def _load(self) -> dict[int, list[Job]]:
        """The pool's jobs on each GPU that holds any."""
        load: dict[int, list[Job]] = {}
        for running in self._running.values():
            for gpu in running.gpus:
                load.setdefault(gpu, []).append(running.attempt.job)
        return load

    def _neighbours(self, gpus: list[int], groups: dict[int, str]) -> tuple[list[Neighbour], bool]:
        """The processes on ``gpus`` now, and whether NVML could list them on every one."""
        listed = [self._processes.get(g) for g in gpus]
        found = [
            identify(g, p, groups)
            for g, procs in zip(gpus, listed)
            for p in procs or ()
            if p.pid not in self._ended_pids
        ]
        return found, all(procs is not None for procs in listed)

    def _observe(self, key: str, running: _Running, groups: dict[int, str]) -> None:
        neighbours, readable = self._neighbours(running.gpus, groups)
        packed = {k for k, r in self._running.items() if k != key and set(r.gpus) & set(running.gpus)}
        running.log.observe(neighbours, readable, packed)  # type: ignore[union-attr]
        if not running.attempt.job.timing_sensitive or running.stopped_for:
            return
        new = [n for n in foreign(neighbours, key, started=True) if n.pid not in running.seen]
        if not new:
            return
        running.seen.update(n.pid for n in new)
        what = "; ".join(n.describe() for n in new)
        mode = self.policy.isolation
        if mode == "warn":
            before = f"{running.warning}; " if running.warning else "isolation: "
            running.warning = f"{before}other processes on its GPUs during the job: {what}"
            return
        running.stopped_for = f"isolation: another process appeared on its GPUs during the job: {what}"
        running.again = mode == "wait"
        if running.again:
            self._held_since.setdefault(key, time.monotonic())
        threading.Thread(target=runner.terminate, args=(running.attempt,), daemon=True).start()

    def try_start(self, job: Job, number: int) -> bool:
        """Start attempt ``number`` of ``job`` if a slot is free now (or fail it at once: isolation)."""
        if self.full():
            return False
        if job.gpus == 0:
            cpu_jobs = sum(1 for r in self._running.values() if r.attempt.job.gpus == 0)
            if cpu_jobs >= (self.workers or 1):
                return False
            return self._launch(job, number, [], None)
        gpus = self._place(job)
        if gpus is None:
            return False
        warning = None
        if job.timing_sensitive:
            disturbing = foreign(self._neighbours(gpus, self._groups())[0], job.key, started=False)
            if disturbing:
                what = "; ".join(n.describe() for n in disturbing)
                if self.policy.isolation == "warn":
                    warning = f"isolation: other processes on its GPUs at the start: {what}"
                elif self.policy.isolation == "error":
                    error = f"isolation: its GPUs hold other processes: {what}"
                    self._refused.append(runner.not_run(job, self.layout, number, time.time(), error))
                    return True
                else:
                    return self._hold(job, number, what)
        self._held_since.pop(job.key, None)
        return self._launch(job, number, gpus, warning)

    def _place(self, job: Job) -> list[int] | None:
        """GPUs for ``job``; a timing-sensitive job prefers GPUs without other processes."""
        load, policy = self._load(), self.policy
        if job.timing_sensitive:
            clean = [g for g in self.devices if not self._processes.get(g)]
            found = choose(job, clean, load, self._busy, policy.jobs_per_gpu, self._budgets)
            if found is not None:
                return found
        return choose(job, self.devices, load, self._busy, policy.jobs_per_gpu, self._budgets)

    def _hold(self, job: Job, number: int, what: str) -> bool:
        """Keep a timing-sensitive job waiting for GPUs free of other processes (isolation: wait);
        fail it (True: it ended) once it has waited ``isolation_wait_s``."""
        since = self._held_since.setdefault(job.key, time.monotonic())
        limit = self.policy.isolation_wait_s
        if limit is None or time.monotonic() - since < limit:
            return False
        del self._held_since[job.key]
        error = f"isolation: waited {limit:g} s for GPUs free of other processes: {what}"
        self._refused.append(runner.not_run(job, self.layout, number, time.time(), error))
        return True

    def _launch(self, job: Job, number: int, gpus: list[int], warning: str | None) -> bool:
        threads = {} if gpus or "OMP_NUM_THREADS" in os.environ or not self.workers else self._cpu_threads()
        # a CPU job on a machine with GPUs sees none of them (CUDA_VISIBLE_DEVICES=""): it takes no GPU
        attempt = runner.launch(job, self.layout, number, gpus if gpus or self.devices else None, threads)
        log = SharingLog(job.key, gpus) if gpus else None
        running = self._running[job.key] = _Running(attempt, gpus, log, warning)
        if log is not None:
            neighbours, readable = self._neighbours(gpus, self._groups())
            packed = {k for k, r in self._running.items() if k != job.key and set(r.gpus) & set(gpus)}
            log.observe(neighbours, readable, packed)
            running.seen.update(n.pid for n in neighbours)
        threading.Thread(target=self._watch, args=(attempt,), daemon=True, name=f"job {job.key}").start()
        return True

    def _cpu_threads(self) -> dict[str, str]:
        return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // self.workers))}  # type: ignore[operator]

    def _watch(self, attempt: Attempt) -> None:
        exit_code, timed_out = runner.wait(attempt)
        self._ended.put((attempt, exit_code, timed_out))

    def wait(self, timeout_s: float) -> list[Outcome]:
        """The outcomes of jobs that ended, waiting up to ``timeout_s`` seconds for the first one."""
        outcomes, self._refused = self._refused, []
        ended = []
        try:
            ended.append(self._ended.get(timeout=0 if outcomes else timeout_s))
            while True:
                ended.append(self._ended.get_nowait())
        except queue.Empty:
            pass
        for attempt, exit_code, timed_out in ended:
            running = self._running.pop(attempt.job.key)
            self._ended_pids.add(attempt.proc.pid)
            sharing = running.log.record() if running.log else None
            outcome = runner.finish(
                attempt, self.layout, exit_code, timed_out, sharing, running.warning, running.stopped_for
            )
            if running.again and outcome.status == "failed":
                outcome = replace(outcome, status="pending")
            outcomes.append(outcome)
        return outcomes

    def stop(self) -> list[str]:
        """Kill every running job; the keys of those that were running."""
        keys = list(self._running)
        for running in self._running.values():
            runner.terminate(running.attempt, grace_s=5.0)
        for running in self._running.values():
            running.attempt.proc.wait()
            runner.discard(running.attempt)
        self._running.clear()
        return keys
