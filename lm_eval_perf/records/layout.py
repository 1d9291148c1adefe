"""Where a batch keeps its files, all under the config's ``output_dir``, and the matrix plan:

    <output_dir>/
      matrix.json                        the matrix plan: every job of the config and its state (below)
      jobs.json                          job store: status of every job (see store.py)
      failures.jsonl                     one line per failed job: error, log tail, log path
      .lock                              held by the running batch_eval (a second one is refused)
      logs/<model>/<precision>/<task>.log    the job's stdout+stderr, one section per attempt
      results/<model>/<precision>/<task>/    a finished job: lm-eval's output and job.json
      results/<model>/<precision>/.<task>.staging-<id>/   a running (or killed) attempt

A job writes into its staging folder; only when it succeeded is the folder renamed to its final
name (one atomic ``rename`` on the same file system), so a result folder is always complete and a
killed attempt leaves only a staging folder, which the next run deletes.

The matrix plan (``matrix.json``, :data:`PLAN_FILE`) is written for readers such as
``process_results.py``, which lists the planned cells that have no result. batch_eval rewrites it
atomically whenever the job store changes (never on ``--dry-run``); it holds the whole matrix of the
config last run on the folder, ``--only`` filters included::

    {"schema": "lm-eval-perf/matrix/1", "config": "/abs/path/batch.yaml", "updated_at": <Unix s>,
     "jobs": [{"key": "<model>/<precision>/<task>", "model": ..., "precision": "bfloat16" | null,
               "compression_ratio": 0.6 | null, "device": "cpu" | "cuda" | null,
               "task": "<lm-eval task>", "task_label": "<label>",
               "state": "pending" | "running" | "done" | "failed"}, ...]}

``device`` is the cell's place on the config's ``devices`` axis (null: the config has none; plans
written before the axis existed lack the field, which reads as null).

``state``: ``done`` - its result folder ``results/<key>/`` exists; ``failed`` - its last attempt
failed (``failures.jsonl`` says why); ``running`` - an attempt was started and has not ended (or
the batch_eval running it was killed: the next run starts it again); ``pending`` - not run yet.
:func:`read_plan` reads the file.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

JOB_FILE = "job.json"
PLAN_FILE = "matrix.json"
PLAN_SCHEMA = "lm-eval-perf/matrix/1"
PLAN_STATES = ("pending", "running", "done", "failed")
STAGING_MARK = ".staging-"


@dataclass(frozen=True)
class Layout:
    """The file layout of one batch output folder."""

    root: Path

    @property
    def store(self) -> Path:
        return self.root / "jobs.json"

    @property
    def plan(self) -> Path:
        return self.root / PLAN_FILE

    @property
    def failures(self) -> Path:
        return self.root / "failures.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def result_dir(self, key: str) -> Path:
        return self.root / "results" / key

    def log_path(self, key: str) -> Path:
        return self.root / "logs" / f"{key}.log"

    def new_staging_dir(self, key: str) -> Path:
        final = self.result_dir(key)
        return final.parent / f".{final.name}{STAGING_MARK}{uuid.uuid4().hex[:8]}"

    def stale_staging_dirs(self, key: str) -> list[Path]:
        final = self.result_dir(key)
        return sorted(final.parent.glob(f".{final.name}{STAGING_MARK}*")) if final.parent.is_dir() else []

    def is_done(self, key: str) -> bool:
        """A job is done when its result folder exists: folders appear complete, by rename.

        (String paths: a 10,000-job plan asks this for every job, and ``pathlib`` costs 0.3 s there.)"""
        return os.path.isfile(os.path.join(self.root, "results", key, JOB_FILE))


PLANNED_FIELDS = ("key", "model", "precision", "compression_ratio", "device", "task", "task_label")


@dataclass(frozen=True)
class PlannedJob:
    """One job of a matrix plan (the fields of ``matrix.json``'s ``jobs``)."""

    key: str
    model: str
    precision: str | None
    compression_ratio: float | None
    task: str
    task_label: str
    state: str
    device: str | None = None


@dataclass(frozen=True)
class MatrixPlan:
    """A read matrix plan: ``root`` is the batch output folder it lies in."""

    root: Path
    config: str
    updated_at: float
    jobs: tuple[PlannedJob, ...]


def plan_text(config: Path, identities: Iterable[dict], states: dict[str, str]) -> str:
    """The text of ``matrix.json`` for jobs given by their identity (``Job.identity()``) and states."""
    jobs = [{**{k: job[k] for k in PLANNED_FIELDS}, "state": states[job["key"]]} for job in identities]
    record = {"schema": PLAN_SCHEMA, "config": str(config), "updated_at": time.time(), "jobs": jobs}
    return json.dumps(record, indent=1) + "\n"


def read_plan(path: Path) -> MatrixPlan:
    """The matrix plan in ``path``; ``ValueError`` (with the reason) when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ValueError(f"corrupt or truncated JSON ({exc})") from exc
    if (
        not isinstance(data, dict)
        or data.get("schema") != PLAN_SCHEMA
        or not isinstance(data.get("jobs"), list)
    ):
        raise ValueError(f"not a matrix plan (schema {PLAN_SCHEMA})")
    jobs = []
    for i, job in enumerate(data["jobs"]):
        if (
            not isinstance(job, dict)
            or job.get("state") not in PLAN_STATES
            or not isinstance(job.get("key"), str)
        ):
            raise ValueError(f"jobs[{i}] is malformed")
        ratio = job.get("compression_ratio")
        jobs.append(
            PlannedJob(
                key=job["key"],
                model=str(job.get("model") or job["key"].split("/")[0]),
                precision=None if job.get("precision") is None else str(job["precision"]),
                compression_ratio=float(ratio) if isinstance(ratio, (int, float)) else None,
                task=str(job.get("task") or ""),
                task_label=str(job.get("task_label") or job["key"].rsplit("/", 1)[-1]),
                state=job["state"],
                device=None if job.get("device") is None else str(job["device"]),
            )
        )
    return MatrixPlan(
        path.parent, str(data.get("config") or ""), float(data.get("updated_at") or 0), tuple(jobs)
    )
