"""One attempt of one job: start its process, wait with a timeout, promote or discard its results.

:func:`launch` creates a fresh staging folder and starts ``job.program job.args --output_path
<staging> --device cpu|cuda`` in its own process group (so a timeout kills everything it started),
with stdout and stderr appended to the job's log file. :func:`finish` decides: exit status 0 and a
``results_*.json`` in the staging folder make the job done - ``job.json`` is written into the
staging folder, which is then renamed to the result folder in one step; anything else is a failure
whose staging folder is deleted. :func:`run_job` chains the three (a Ray task runs it); the local
pool calls them separately so that one thread can watch many jobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from lm_eval_perf.atomic import write_atomic
from lm_eval_perf.batch.matrix import Job
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.orphans import PARENT_ENV
from lm_eval_perf.records.layout import JOB_FILE, Layout

TAIL_LINES = 30
ATTEMPT_MARK = "\n===== attempt "  # starts each attempt's section of the log
TERM_GRACE_S = 10.0


@dataclass
class Attempt:
    """A started job process."""

    job: Job
    number: int  # 1 for the first attempt
    proc: subprocess.Popen
    staging: Path
    log: Path
    cuda_visible_devices: str | None  # given to it (None: inherited, e.g. from Ray)
    started_at: float  # Unix seconds
    started: float  # time.monotonic()


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended; ``duration_s`` is its wall time in seconds."""

    key: str
    status: str  # "done" | "failed" | "pending" (stopped by the pool, to run again: isolation: wait)
    attempts: int
    started_at: float  # Unix seconds
    finished_at: float  # Unix seconds
    duration_s: float
    exit_code: int | None
    error: str | None
    tail: str | None
    log: str
    cuda_visible_devices: str | None
    host: str
    gpu_sharing: dict | None = None  # what else ran on its GPUs (batch.sharing); None: CPU or Ray
    warning: str | None = None

    def record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> Outcome:
        """The outcome a job record (``job.json``) holds."""
        return cls(**{f.name: record.get(f.name) for f in fields(cls)})


def launch(
    job: Job, layout: Layout, number: int, gpus: list[int] | None = None, env: dict[str, str] | None = None
) -> Attempt:
    """Start attempt ``number`` of ``job``; ``gpus`` pins it by ``CUDA_VISIBLE_DEVICES`` (NVML order;
    ``[]`` hides every GPU, None leaves the variable as it is), ``env`` adds environment variables."""
    staging = layout.new_staging_dir(job.key)
    log = layout.log_path(job.key)
    argv = [*job.program, *job.args, "--output_path", str(staging), "--device", "cuda" if job.gpus else "cpu"]
    env = {**os.environ, **(env or {}), PARENT_ENV: str(os.getpid())}
    visible = None
    if gpus is not None:
        visible = ",".join(map(str, gpus))
        env.update(CUDA_VISIBLE_DEVICES=visible, CUDA_DEVICE_ORDER="PCI_BUS_ID")
    started_at = time.time()
    try:
        staging.mkdir(parents=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as handle:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started_at))
            handle.write(
                f"{ATTEMPT_MARK}{number} of {job.key} at {stamp} on {socket.gethostname()}"
                f" (CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '')})\n$ {shlex.join(argv)}\n"
            )
            handle.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
    except OSError as exc:  # no space, no permission, no such program: every job would fail alike
        raise UserInputError(f"cannot start job {job.key}: {exc}") from exc
    return Attempt(job, number, proc, staging, log, visible, started_at, time.monotonic())


def terminate(attempt: Attempt, grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM the attempt's process group, SIGKILL it after ``grace_s`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(attempt.proc.pid, sig)
        try:
            attempt.proc.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def wait(attempt: Attempt) -> tuple[int, bool]:
    """Block until the attempt ends or its job's timeout passes: (exit status, timed out)."""
    try:
        return attempt.proc.wait(timeout=attempt.job.timeout_s), False
    except subprocess.TimeoutExpired:
        terminate(attempt)
        return attempt.proc.wait(), True


def log_tail(log: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of the latest attempt's section of ``log`` (all of it without sections)."""
    with open(log, "rb") as handle:
        handle.seek(max(0, handle.seek(0, os.SEEK_END) - 16384))
        text = handle.read().decode(errors="replace")
    section = text[text.rfind(ATTEMPT_MARK) + 1 :] if ATTEMPT_MARK in text else text
    return "\n".join(section.splitlines()[-lines:])


def _error(exit_code: int, timed_out: bool, timeout_s: float | None, results: bool, tail: str) -> str | None:
    """Why an attempt failed (None: it did not); ``results``: it wrote a results file."""
    if timed_out:
        return f"timed out after {timeout_s:g} s (process group killed)"
    if exit_code < 0:
        name = signal.Signals(-exit_code).name
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    if exit_code:
        last = next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), "")
        return f"exit status {exit_code}" + (f": {last[:300]}" if last else "")
    return None if results else "exited 0 but wrote no results_*.json"


def finish(
    attempt: Attempt,
    layout: Layout,
    exit_code: int,
    timed_out: bool,
    gpu_sharing: dict | None = None,
    warning: str | None = None,
    stopped_for: str | None = None,
) -> Outcome:
    """Promote a successful attempt's staging folder to the result folder, or discard it.
    ``gpu_sharing`` and ``warning`` go into the job's record; ``stopped_for``: why the pool stopped
    the attempt (its error, if it failed)."""
    job, final = attempt.job, layout.result_dir(attempt.job.key)
    results = sorted(attempt.staging.rglob("results_*.json"))
    tail = log_tail(attempt.log)
    error = _error(exit_code, timed_out, job.timeout_s, bool(results), tail)
    if error and stopped_for:
        error = stopped_for
    outcome = Outcome(
        key=job.key,
        status="failed" if error else "done",
        attempts=attempt.number,
        started_at=attempt.started_at,
        finished_at=time.time(),
        duration_s=time.monotonic() - attempt.started,
        exit_code=exit_code,
        error=error,
        tail=tail if error else None,
        log=str(attempt.log),
        cuda_visible_devices=attempt.cuda_visible_devices,
        host=socket.gethostname(),
        gpu_sharing=gpu_sharing,
        warning=warning,
    )
    if error is None:
        record = {
            **job.identity(),
            **outcome.record(),
            "results": [str(p.relative_to(attempt.staging)) for p in results],
        }
        try:
            write_atomic(attempt.staging / JOB_FILE, json.dumps(record, indent=1) + "\n")
            attempt.staging.rename(final)
            return outcome
        except OSError as exc:
            # Done anyway if another attempt (e.g. a Ray task of a run that died) finished first.
            if not layout.is_done(job.key):
                message = f"could not move the results into {final}: {exc}"
                outcome = replace(outcome, status="failed", error=message, tail=message)
    discard(attempt)
    return outcome


def not_run(
    job: Job, layout: Layout, number: int, started_at: float, error: str, detail: str = ""
) -> Outcome:
    """A failed attempt that has no process of its own (refused) or whose process was lost (with its
    Ray worker, or ended by Slurm); its error and ``detail`` are appended to the job's log, whose path
    the outcome names."""
    log = layout.log_path(job.key)
    tail = "\n".join((detail or error).splitlines()[-TAIL_LINES:])
    header = f"{ATTEMPT_MARK}{number} of {job.key} on {socket.gethostname()}: no result: {error}\n"
    with contextlib.suppress(OSError):
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as handle:
            handle.write(header + (f"{tail}\n" if detail else ""))
    now = time.time()
    return Outcome(
        key=job.key,
        status="failed",
        attempts=number,
        started_at=started_at,
        finished_at=now,
        duration_s=now - started_at,
        exit_code=None,
        error=error,
        tail=tail,
        log=str(log),
        cuda_visible_devices=None,
        host=socket.gethostname(),
    )


def discard(attempt: Attempt) -> None:
    """Delete the staging folder of an attempt that did not succeed."""
    shutil.rmtree(attempt.staging, ignore_errors=True)


def run_job(job: Job, layout: Layout, number: int) -> Outcome:
    """Launch, wait for and finish one attempt (in the calling process; Ray runs this remotely)."""
    attempt = launch(job, layout, number)
    exit_code, timed_out = wait(attempt)
    return finish(attempt, layout, exit_code, timed_out)
