"""Resume planning and the run loop, common to the local pool, Ray and Slurm.

:func:`plan` sorts the matrix against what is on disk: a job whose result folder exists is done
(skipped); a failed one is skipped unless ``retry_failed``; everything else runs - new jobs, jobs
that were ``running`` when a previous batch died, and ``done`` jobs whose result folder is gone.
:func:`prepare` writes that to the store (under the output folder's lock) and deletes the staging
folders killed attempts left. :func:`run` starts jobs whenever the executor has room (a job that
fits may overtake a bigger one waiting for GPUs), records every outcome, re-queues a failed job up
to ``retries`` times (a job the executor stopped to run again - ``pending`` - goes back without
counting as a retry), and on Ctrl-C stops the executor (the local pool and Ray kill their running
jobs; Slurm leaves its jobs queued) and puts the jobs it names back to ``pending``. A job the
executor cannot run at all (:meth:`Executor.cannot_run`: a ``cuda`` cell where there is no GPU)
fails at once, in one line, without a retry; the rest of the matrix runs. Jobs a cluster
still holds from an earlier run (Slurm; :meth:`Executor.attach`) are not started again: ``prepare``
leaves them (and their staging folders) alone and ``run`` waits for their outcomes.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from lm_eval_perf.batch.matrix import Job
from lm_eval_perf.batch.progress import Progress
from lm_eval_perf.batch.runner import Outcome, not_run
from lm_eval_perf.batch.store import JobStore
from lm_eval_perf.records.layout import Layout

POLL_S = 2.0  # how often a waiting scheduler looks again for GPUs other processes freed


class Executor(Protocol):
    """Where jobs run (:class:`~lm_eval_perf.batch.local.LocalPool`, :class:`~.ray_pool.RayPool`,
    :class:`~.slurm.SlurmPool`)."""

    on_gpu: bool
    description: str
    active: int
    workers: int | None  # at most this many jobs at once (None: as many as the executor takes)

    def check(self, jobs: list[Job]) -> None: ...

    def cannot_run(self, job: Job) -> str | None:
        """Why no attempt of ``job`` can run on this executor, in one line (None: it can): a job
        that needs GPUs where there are none (a ``cuda`` cell of a ``devices`` axis)."""
        if job.gpus and not self.on_gpu:
            return f"device cuda: no GPU to run it on ({self.description})"
        return None

    def attach(self, jobs: list[Job], store: JobStore) -> set[str]:
        """Take over those of ``jobs`` that an earlier run left in the cluster's hands (their keys);
        ``store`` is where the executor records what it submits. Default: nothing outlives the
        process that ran it."""
        return set()

    def dry_run(self, jobs: list[Job]) -> str:
        """What running ``jobs`` would hand to the cluster, for ``--dry-run`` (default: nothing)."""
        return ""

    def refresh(self) -> None:
        """Look at what decides where jobs start, before a round of :meth:`try_start` (default: nothing
        to look at; the cluster keeps track itself)."""

    def full(self) -> bool:
        """Whether ``workers`` jobs run already."""
        return self.workers is not None and self.active >= self.workers

    def try_start(self, job: Job, number: int) -> bool: ...

    def wait(self, timeout_s: float) -> list[Outcome]: ...

    def stop(self) -> list[str]: ...


@dataclass
class Plan:
    """The matrix sorted by what to do with each job."""

    run: list[Job] = field(default_factory=list)
    done: list[Job] = field(default_factory=list)
    failed: list[Job] = field(default_factory=list)  # failed before, not retried
    reasons: dict[str, str] = field(default_factory=dict)  # key -> why a known job runs again
    changed: list[Job] = field(default_factory=list)  # done with other settings than the config's now


def plan(jobs: list[Job], store: JobStore, layout: Layout, retry_failed: bool) -> Plan:
    """Sort ``jobs`` (reads only)."""
    result = Plan()
    for job in jobs:
        record = store.get(job.key)
        status = record.get("status")
        if layout.is_done(job.key):
            result.done.append(job)
            if status == "done" and record.get("fingerprint") not in (None, job.fingerprint):
                result.changed.append(job)
        elif status == "failed" and not retry_failed:
            result.failed.append(job)
        else:
            result.run.append(job)
            if status == "running":
                result.reasons[job.key] = "interrupted"
            elif status == "done":
                result.reasons[job.key] = "result folder missing"
            elif status == "failed":
                result.reasons[job.key] = "retry"
    return result


def prepare(todo: Plan, store: JobStore, layout: Layout, attached: Collection[str] = ()) -> None:
    """Record the plan in the store and remove leftover staging folders (caller holds the lock);
    ``attached`` jobs (still in a cluster's hands) keep their records and folders."""
    for job in todo.done:
        if store.status(job.key) != "done":
            store.adopt(job.key)
    for job in todo.run:
        if job.key in attached:
            continue
        for folder in layout.stale_staging_dirs(job.key):
            shutil.rmtree(folder, ignore_errors=True)
        store.update(
            job.key, **job.identity(), status="pending", attempts=store.get(job.key).get("attempts", 0)
        )
    store.save()


def run(
    jobs: list[Job],
    store: JobStore,
    executor: Executor,
    retries: int,
    progress: Progress,
    attached: Collection[str] = (),
) -> None:
    """Run ``jobs`` to completion (done, or failed after ``retries`` re-runs); the ``attached`` ones
    are already running (taken over by the executor), their outcomes are waited for."""
    waiting = deque(j for j in jobs if j.key not in attached)
    tries = {j.key: int(j.key in attached) for j in jobs}
    for job in jobs:
        if job.key in attached:
            progress.started(job)
    try:
        while waiting or executor.active:
            executor.refresh()
            refused = []
            for job in list(waiting):
                if executor.full():
                    break
                number = store.get(job.key).get("attempts", 0) + 1
                why = executor.cannot_run(job)
                if why:
                    refused.append(not_run(job, store.layout, number, time.time(), why))
                    tries[job.key] = retries + 1  # no attempt can run it: a retry would fail alike
                elif executor.try_start(job, number):
                    tries[job.key] += 1
                else:
                    continue
                waiting.remove(job)
                store.update(job.key, status="running", attempts=number)
                store.save()
                progress.started(job)
            for outcome in [*refused, *executor.wait(0 if refused else POLL_S)]:
                if outcome.status == "pending":
                    tries[outcome.key] -= 1
                again = outcome.status == "pending" or (
                    outcome.status == "failed" and tries[outcome.key] <= retries
                )
                status = "pending" if again else outcome.status
                store.update(outcome.key, **{**outcome.record(), "status": status})
                store.save()
                if again:
                    waiting.append(next(j for j in jobs if j.key == outcome.key))
                progress.finished(outcome, again)
    except KeyboardInterrupt:
        for key in executor.stop():
            store.update(key, status="pending")
        store.save()
        raise
    finally:
        progress.close()
