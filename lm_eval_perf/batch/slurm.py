"""The Slurm executor: every job an ``sbatch`` job (or a task of a job array), submitted by submitit.

A Slurm job runs :func:`attempt` on its node: :func:`lm_eval_perf.batch.runner.run_job`, as a Ray
task does - ``lm_eval_perf.cli`` in a subprocess with its timeout, a staging folder renamed
into the result folder on success, ``job.json`` - so every node must see ``output_dir`` at the same
path (a shared file system) and run the same Python (the submitting process's ``sys.executable``;
sbatch passes the environment on, ``PYTHONPATH`` included). ``pip install 'lm-eval-perf[slurm]'``.
submitit keeps its files in ``<output_dir>/slurm/``: ``<id>_submission.sh``, ``<id>_submitted.pkl``
(the attempt), ``<id>_0_log.out`` (Slurm's log of the job: submitit's lines, and ``slurmstepd``'s such
as ``CANCELLED ... DUE TO TIME LIMIT``) and ``<id>_0_result.pkl`` (the attempt's outcome).

What each job asks for: ``--gpus-per-node`` = the job's ``gpus_per_job`` (0: none, the job runs on the
CPU), ``--time`` = ``slurm.time_limit_min``, else the job's ``timeout`` + :data:`GRACE_MIN` (the attempt
stops the job itself at its timeout; Slurm's limit is the backstop), and the ``slurm:`` block's
partition, account, ``mem_gb``, ``cpus_per_job``, ``sbatch`` options and ``setup`` lines. With
``slurm.array_parallelism`` jobs asking for the same go as job arrays (at most that many tasks of one
running at once), else one ``sbatch`` each. ``jobs_per_gpu`` and ``isolation`` are the local pool's:
on Slurm, GPUs are Slurm's to hand out.

Surviving the submitting process: before ``sbatch`` the job store records each job's Slurm job name
(unique per submission) and array index, after it the job id and Slurm's log. A rerun of the same
command takes over (:meth:`SlurmPool.attach`) every job the store says is running - by its id, or, if
the process died between ``sbatch`` and the store's save, by its name in ``squeue``/``sacct`` - and
waits for it like for its own: a running job is not started twice, a pending one keeps its place in
the queue, one that ended meanwhile is judged as below. Ctrl-C stops the waiting and leaves submitted
jobs to Slurm. A job that finds its result folder already there (a duplicate) runs nothing.

Judging an ended job: the attempt's result file decides (done, or failed with the job's log tail, as
on the local pool). A Slurm job that ended without one - the time limit, out of memory, a node failure,
``scancel``, a failed start - is a failed attempt whose record and ``failures.jsonl`` line name the
Slurm job id, its state and Slurm's log, and whose staging folder is deleted; a preempted one is
submitted again without counting as a retry. A job Slurm requeues itself (``--requeue``, preemption
with ``PreemptMode=REQUEUE``) keeps its id and is simply waited for. States come from
:mod:`lm_eval_perf.batch.slurm_state` every :data:`STATE_POLL_S` seconds; result files are looked for
every round (~2 s).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from lm_eval_perf.batch import runner, slurm_state
from lm_eval_perf.batch.config import SlurmSpec
from lm_eval_perf.batch.matrix import Job
from lm_eval_perf.batch.runner import Outcome
from lm_eval_perf.batch.scheduler import Executor
from lm_eval_perf.batch.store import JobStore, read_json
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.layout import JOB_FILE, Layout

SUBMITIT_DIR = "slurm"  # under output_dir
GRACE_MIN = 5  # minutes of Slurm time limit beyond a job's timeout: start-up, loading the attempt
STATE_POLL_S = 15.0  # how often squeue is asked (result files are looked for every round)
RECHECK_S = 5.0  # a job seen ended without a result file is judged one look later (shared-FS lag)
MAX_ARRAY = 1000  # tasks per job array (Slurm's default MaxArraySize is 1001)


def attempt(job: Job, layout: Layout, number: int) -> Outcome:
    """One attempt of ``job``, on the node of a Slurm job (what each Slurm job runs)."""
    import submitit

    # submitit's signal that the time limit is near: let Slurm's limit end the job (state TIMEOUT).
    signal.signal(signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"], signal.SIG_IGN)
    if layout.is_done(job.key):
        return Outcome.from_record(read_json(layout.result_dir(job.key) / JOB_FILE, "job file"))
    return runner.run_job(job, layout, number)


def _import_submitit():
    try:
        import submitit
    except ImportError as exc:
        raise UserInputError(
            "--executor slurm needs submitit: pip install 'lm-eval-perf[slurm]' (or pip install submitit)"
        ) from exc
    return submitit


@dataclass
class _Submitted:
    job: Job
    number: int  # the attempt
    handle: Any  # submitit.SlurmJob
    since: float  # Unix seconds it was submitted
    result: Outcome | None = None  # what the attempt reported, once its result file is there
    seen_ended: bool = False  # Slurm said it ended, and no result file was there yet


class SlurmPool(Executor):
    """Runs jobs as Slurm jobs; ``workers`` caps how many are queued or running at once."""

    on_gpu = True  # a job asks for its gpus_per_job; 0 runs it on the CPU

    def __init__(self, layout: Layout, spec: SlurmSpec, workers: int | None = None) -> None:
        self._submitit = _import_submitit()
        for tool in ("sbatch", "squeue", "srun"):
            if shutil.which(tool) is None:
                raise UserInputError(
                    f"--executor slurm: {tool} is not on PATH; run batch_eval where Slurm jobs are submitted"
                )
        self.layout = layout
        self.spec = spec
        self.workers = workers
        self.folder = layout.root / SUBMITIT_DIR
        self._queued: list[tuple[Job, int]] = []
        self._submitted: dict[str, _Submitted] = {}
        self._store: JobStore | None = None
        self._next_poll = 0.0  # time.monotonic() of the next squeue

    @property
    def description(self) -> str:
        where = f"partition {self.spec.partition}" if self.spec.partition else "default partition"
        at_once = self.spec.array_parallelism
        return f"Slurm ({where}" + (f", job arrays of {at_once} at once)" if at_once else ")")

    @property
    def active(self) -> int:
        return len(self._queued) + len(self._submitted)

    @property
    def store(self) -> JobStore:
        """The job store :meth:`attach` was given: where submissions and Slurm's states are recorded."""
        if self._store is None:
            raise RuntimeError("SlurmPool.attach() must come first")
        return self._store

    def check(self, jobs: list[Job]) -> None:
        """One-line error if a job has no time limit to give Slurm."""
        if self.spec.time_limit_min is None:
            for job in jobs:
                if job.timeout_s is None:
                    raise UserInputError(
                        f"{job.key}: its task has timeout: null; set slurm.time_limit_min (a Slurm job "
                        "needs a time limit)"
                    )

    def attach(self, jobs: list[Job], store: JobStore) -> set[str]:
        """Take over the jobs ``store`` says a run submitted and saw no end of (see the module doc)."""
        self._store = store
        running = [
            j for j in jobs if store.status(j.key) == "running" and store.get(j.key).get("slurm_job_name")
        ]
        unknown = [j for j in running if not store.get(j.key).get("slurm_job_id")]
        bases = slurm_state.base_ids_by_name(store.get(j.key)["slurm_job_name"] for j in unknown)
        for job in running:
            record = store.get(job.key)
            slurm_id = record.get("slurm_job_id")
            if not slurm_id:
                base = bases.get(record["slurm_job_name"])
                if base is None:
                    continue  # never reached Slurm: runs again
                index = record.get("slurm_array_index")
                slurm_id = base if index is None else f"{base}_{index}"
            handle = self._submitit.SlurmJob(folder=self.folder, job_id=slurm_id)
            store.update(job.key, slurm_job_id=slurm_id, slurm_log=str(handle.paths.stdout))
            since = record.get("slurm_submitted_at") or time.time()
            self._submitted[job.key] = _Submitted(job, record.get("attempts") or 1, handle, since)
        return set(self._submitted)

    def try_start(self, job: Job, number: int) -> bool:
        """Queue ``job`` for the next submission (at the start of :meth:`wait`)."""
        if self.full():
            return False
        self._queued.append((job, number))
        return True

    def wait(self, timeout_s: float) -> list[Outcome]:
        """Submit what was queued, then the outcomes of jobs that ended, waiting up to ``timeout_s``."""
        if self._queued:
            queued, self._queued = self._queued, []
            for chunk in self._chunks(queued):
                self._submit(chunk)
        outcomes = self._collect()
        if not outcomes:
            time.sleep(timeout_s)
            outcomes = self._collect()
        return outcomes

    def stop(self) -> list[str]:
        """Stop waiting: submitted jobs stay with Slurm (a rerun takes them over); the keys of the ones
        never submitted."""
        if self._submitted:
            ids = " ".join(s.handle.job_id for s in self._submitted.values())
            print(
                f"{len(self._submitted)} Slurm jobs keep running; a rerun of the same command waits for "
                f"them, scancel {ids} stops them",
                file=sys.stderr,
            )
        keys = [job.key for job, _ in self._queued]
        self._queued.clear()
        return keys

    def dry_run(self, jobs: list[Job]) -> str:
        """The ``sbatch`` command lines that running ``jobs`` would submit, and what each job runs."""
        lines, body = [], ""
        for chunk in self._chunks([(job, 1) for job in jobs]):
            executor = self._executor(chunk)
            if len(chunk) > 1:
                executor.parameters["map_count"] = len(chunk)  # as submitit sets it for an array
            # submitit's own script text (a private method): the lines it would submit, exactly
            script = executor._make_submission_file_text(executor._submitit_command_str, "dry-run")
            flags = [line[len("#SBATCH ") :] for line in script.splitlines() if line.startswith("#SBATCH ")]
            what = chunk[0][0].key if len(chunk) == 1 else f"{len(chunk)} jobs: {chunk[0][0].key} ..."
            lines.append(f"sbatch {' '.join(flags)}  # {what}")
            body = "\n".join(f"  {line}" for line in script.splitlines() if line and not line.startswith("#"))
        if not lines:
            return ""
        return "\n".join([f"{len(lines)} sbatch submissions:", *lines, "each job's script runs:", body])

    def _parameters(self, job: Job) -> dict:
        """submitit's SlurmExecutor parameters for ``job`` (the job name aside)."""
        spec = self.spec
        minutes = spec.time_limit_min or math.ceil(job.timeout_s / 60) + GRACE_MIN  # type: ignore[operator]
        given = {
            "partition": spec.partition,
            "account": spec.account,
            "mem": None if spec.mem_gb is None else _megabytes(spec.mem_gb),
            "cpus_per_task": spec.cpus_per_job,
            "gpus_per_node": job.gpus or None,
            "array_parallelism": spec.array_parallelism,
            "setup": list(spec.setup) or None,
            "additional_parameters": dict(spec.sbatch) or None,
        }
        given = {k: v for k, v in given.items() if v is not None}
        return {"time": minutes, "stderr_to_stdout": True, **given}

    def _chunks(self, queued: list[tuple[Job, int]]) -> list[list[tuple[Job, int]]]:
        """The submissions: one job each, or with arrays jobs of equal parameters (MAX_ARRAY at most)."""
        if not self.spec.array_parallelism:
            return [[item] for item in queued]
        groups: dict[str, list[tuple[Job, int]]] = {}
        for item in queued:
            groups.setdefault(json.dumps(self._parameters(item[0]), sort_keys=True), []).append(item)
        return [g[i : i + MAX_ARRAY] for g in groups.values() for i in range(0, len(g), MAX_ARRAY)]

    def _executor(self, chunk: list[tuple[Job, int]]):
        """A submitit SlurmExecutor set up for ``chunk`` (one submission), under a new job name."""
        executor = self._submitit.SlurmExecutor(folder=self.folder)
        executor.update_parameters(**self._parameters(chunk[0][0]), job_name=_job_name(chunk))
        return executor

    def _submit(self, chunk: list[tuple[Job, int]]) -> None:
        """One ``sbatch`` (an array if ``chunk`` has several jobs), recorded in the store before and after."""
        store = self.store
        executor = self._executor(chunk)
        for index, (job, _) in enumerate(chunk):
            store.update(
                job.key,
                slurm_job_name=executor.parameters["job_name"],
                slurm_array_index=index if len(chunk) > 1 else None,
                slurm_job_id=None,
                slurm_log=None,
                slurm_state=None,
                slurm_submitted_at=time.time(),
            )
        store.save()
        try:
            with executor.batch():
                handles = [executor.submit(attempt, job, self.layout, number) for job, number in chunk]
        except self._submitit.core.utils.FailedJobError as exc:
            raise UserInputError(f"sbatch failed: {str(exc).strip().splitlines()[-1]}") from exc
        now = time.time()
        for (job, number), handle in zip(chunk, handles):
            self._submitted[job.key] = _Submitted(job, number, handle, now)
            store.update(job.key, slurm_job_id=handle.job_id, slurm_log=str(handle.paths.stdout))
        store.save()

    def _collect(self) -> list[Outcome]:
        """Outcomes of ended jobs: a success as soon as its result file is there; anything else once
        Slurm says the job ended, with its state (Slurm may be what killed the attempt)."""
        outcomes = []
        for submitted in list(self._submitted.values()):
            if submitted.result is None and submitted.handle.paths.result_pickle.exists():
                submitted.result = self._read(submitted)
                if submitted.result.status == "done":
                    del self._submitted[submitted.job.key]
                    outcomes.append(submitted.result)
                else:
                    self._next_poll = min(self._next_poll, time.monotonic() + RECHECK_S)
        if not self._submitted or time.monotonic() < self._next_poll:
            return outcomes
        known = slurm_state.states(s.handle.job_id for s in self._submitted.values())
        self._next_poll = time.monotonic() + STATE_POLL_S
        if known is None:  # the controller did not answer: ask again next time
            return outcomes
        for submitted in list(self._submitted.values()):
            state = known[submitted.handle.job_id]
            if state in slurm_state.ALIVE:
                continue
            if submitted.result is None and submitted.handle.paths.result_pickle.exists():
                submitted.result = self._read(submitted)
            if submitted.result is None and not submitted.seen_ended:
                submitted.seen_ended = True  # a result file may still be on its way (shared FS)
                self._next_poll = time.monotonic() + RECHECK_S
                continue
            outcomes.append(self._judged(submitted, state))
        return outcomes

    def _read(self, submitted: _Submitted) -> Outcome:
        """The outcome the attempt wrote (its own, or the failure it raised)."""
        try:
            return submitted.handle.result()
        except Exception as exc:  # whatever the attempt raised, as submitit hands it back
            job, number = submitted.job, submitted.number
            error = f"Slurm job {submitted.handle.job_id}: the attempt raised {type(exc).__name__}"
            return runner.not_run(job, self.layout, number, submitted.since, error, str(exc))

    def _judged(self, submitted: _Submitted, state: str | None) -> Outcome:
        """The outcome of a job Slurm says ended in ``state`` (None: unknown) that did not succeed:
        the attempt's own failure, unless Slurm ended the job (or it left no result), then a failure
        naming the Slurm job, its state and Slurm's log - or, preempted, ``pending`` to run again."""
        job, slurm_id, log = submitted.job, submitted.handle.job_id, submitted.handle.paths.stdout
        del self._submitted[job.key]
        self.store.update(job.key, slurm_state=state or "UNKNOWN")
        outcome = submitted.result
        if outcome is not None and state not in slurm_state.BY_SLURM:
            return outcome
        for folder in self.layout.stale_staging_dirs(job.key):
            shutil.rmtree(folder, ignore_errors=True)
        if state is None:
            error = f"Slurm job {slurm_id} ended in a state Slurm no longer tells (not in squeue or sacct)"
        else:
            meaning = slurm_state.MEANING.get(state)
            error = f"Slurm job {slurm_id} ended {state}" + (f": {meaning}" if meaning else "")
        detail = runner.log_tail(log) if log.is_file() else ""
        if outcome is None:
            outcome = runner.not_run(job, self.layout, submitted.number, submitted.since, error, detail)
        else:
            error = f"{error} (the attempt: {outcome.error})"
            outcome = replace(outcome, error=error, tail=detail or outcome.tail)
        return replace(outcome, status="pending") if state in slurm_state.RESUBMIT else outcome


def _megabytes(gb: float) -> str:
    """``--mem`` for ``gb`` (Slurm's units are powers of 1024): ``32G``, ``1536M``."""
    return f"{int(gb)}G" if gb == int(gb) else f"{round(gb * 1024)}M"


def _job_name(chunk: list[tuple[Job, int]]) -> str:
    """A name unique to one submission (how a rerun finds it), readable in ``squeue``."""
    what = chunk[0][0].key if len(chunk) == 1 else f"array-of-{len(chunk)}"
    return f"lep-{uuid.uuid4().hex[:12]}-{re.sub(r'[^A-Za-z0-9._@-]+', '_', what)}"
