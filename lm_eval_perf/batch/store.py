"""The job store (``jobs.json``), the failures file and the output-folder lock.

``jobs.json`` maps each job key to its record: ``status`` (``pending`` | ``running`` | ``done`` |
``failed``), ``attempts``, the job's identity (:meth:`Job.identity`) and the last attempt's
outcome (times in Unix seconds, ``duration_s``, ``exit_code``, ``error``, ``log``); a Slurm job's
record also holds what Slurm knows of its latest attempt (``slurm_job_name``, ``slurm_array_index``,
``slurm_job_id``, ``slurm_log``, ``slurm_submitted_at``; ``slurm_state`` once Slurm ended it without a
result; see :mod:`lm_eval_perf.batch.slurm`). It is rewritten
atomically (temporary file + ``os.replace``) after every change, by the one process that holds the
output folder's lock. The result folders are the ground truth for "done" (they appear complete, by
rename; see :mod:`lm_eval_perf.records.layout`): a record saying ``done`` whose folder is gone is run
again, and a finished folder the store does not know about (the process died right after the
rename) is adopted from its ``job.json``.

``failures.jsonl`` is derived from the store: one JSON line per job whose status is ``failed``
(key, model, precision, compression_ratio, device, task, attempts, error, tail of the log, log path; Slurm job
id, state and log, null for other executors), rewritten atomically whenever it changes. So is the
matrix plan ``matrix.json`` (see :mod:`lm_eval_perf.records.layout`), once :meth:`JobStore.set_matrix`
has given the store the whole matrix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from lm_eval_perf.atomic import write_atomic
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.layout import JOB_FILE, Layout, plan_text

FAILURE_FIELDS = (
    "key",
    "model",
    "precision",
    "compression_ratio",
    "device",
    "task",
    "attempts",
    "error",
    "tail",
    "log",
    "slurm_job_id",
    "slurm_state",
    "slurm_log",
)


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; a one-line error naming ``what`` if it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{what} {path} cannot be read ({exc}); move it away to start over") from exc
    if not isinstance(data, dict):
        raise UserInputError(f"{what} {path} is not a JSON object; move it away to start over")
    return data


class JobStore:
    """The records of ``jobs.json``; :meth:`save` writes them back."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.jobs: dict[str, dict] = (
            read_json(layout.store, "job store").get("jobs", {}) if layout.store.exists() else {}
        )
        self._failures_text: str | None = None
        self._matrix: list[dict] = []
        self._config: Path | None = None

    def set_matrix(self, config: Path, identities: list[dict]) -> None:
        """The config's whole matrix (each job's ``identity()``): :meth:`save` writes it with each job's
        state into the matrix plan."""
        self._config, self._matrix = config, identities

    def planned_state(self, key: str) -> str:
        """A job's state in the matrix plan: done (its result folder exists), failed, running or pending."""
        if self.layout.is_done(key):
            return "done"
        status = self.status(key)
        return status if status in ("failed", "running") else "pending"

    def get(self, key: str) -> dict:
        return self.jobs.get(key, {})

    def status(self, key: str) -> str | None:
        return self.jobs.get(key, {}).get("status")

    def update(self, key: str, /, **fields) -> None:
        """Change the record of ``key`` (not yet saved)."""
        self.jobs.setdefault(key, {}).update(fields)

    def adopt(self, key: str) -> None:
        """Take the record of a finished job from its ``job.json`` (the store missed the end), keeping
        what only the store knew (e.g. its Slurm job id)."""
        self.jobs[key] = {**self.get(key), **read_json(self.layout.result_dir(key) / JOB_FILE, "job file")}

    def save(self) -> None:
        """Write ``jobs.json`` and, if the set of failures changed, ``failures.jsonl``."""
        write_atomic(self.layout.store, json.dumps({"version": 1, "jobs": self.jobs}, indent=1) + "\n")
        failed = [
            {k: record.get(k) for k in FAILURE_FIELDS}
            for record in self.jobs.values()
            if record.get("status") == "failed"
        ]
        text = "".join(json.dumps(f) + "\n" for f in failed)
        if text != self._failures_text and (failed or self.layout.failures.exists()):
            write_atomic(self.layout.failures, text)
        self._failures_text = text
        if self._matrix:
            states = {job["key"]: self.planned_state(job["key"]) for job in self._matrix}
            write_atomic(self.layout.plan, plan_text(self._config, self._matrix, states))


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Hold the output folder's lock; a second batch on the same folder gets a one-line error.

    ``flock`` is released by the kernel when the holder dies, so a killed run never blocks the next.
    """
    layout.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = layout.lock.read_text().strip() or "?"
            raise UserInputError(
                f"another batch_eval (pid {holder}) is running on {layout.root}; wait for it or stop it"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)
