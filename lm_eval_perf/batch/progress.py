"""The progress bar while a batch runs, and the tables printed before and after."""

from __future__ import annotations

import json
import sys

from tqdm import tqdm

from lm_eval_perf.batch.matrix import Job
from lm_eval_perf.batch.runner import Outcome
from lm_eval_perf.batch.store import JobStore
from lm_eval_perf.records.console import markdown_table


class Progress:
    """A tqdm bar over the jobs to run, with done/failed/running counts; tqdm's ETA."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.done = self.failed = self.running = 0
        self._bar = tqdm(total=total, unit="job", file=sys.stderr, disable=not enabled, dynamic_ncols=True)
        self._show()

    def _show(self) -> None:
        self._bar.set_postfix_str(f"done={self.done} failed={self.failed} running={self.running}")

    def started(self, job: Job) -> None:
        self.running += 1
        self._show()

    def finished(self, outcome: Outcome, again: bool) -> None:
        """One attempt ended; ``again``: it failed and was queued for another attempt."""
        self.running -= 1
        if outcome.warning:
            self._bar.write(f"warning: {outcome.key}: {outcome.warning}")
        if outcome.status != "done":
            verb = "stopped" if outcome.status == "pending" else "failed"
            retry = ", will run again" if again else ""
            self._bar.write(f"{verb}: {outcome.key}: {outcome.error}{retry} (log: {outcome.log})")
        if not again:
            self.done += outcome.status == "done"
            self.failed += outcome.status == "failed"
            self._bar.update(1)
        self._show()

    def close(self) -> None:
        self._bar.close()


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``; ``--`` when unknown."""
    if seconds is None:
        return "--"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def matrix_table(jobs: list[Job], states: dict[str, str]) -> str:
    """The ``--dry-run`` listing: one row per job with its state, GPUs, GPU memory (for packing;
    ``alone``: a timing-sensitive job) and model arguments."""
    rows = [
        [
            job.key,
            states.get(job.key, "run"),
            str(job.gpus),
            _memory(job),
            json.dumps(job.model_args, separators=(",", ":")),
        ]
        for job in jobs
    ]
    return markdown_table(["job", "state", "GPUs", "GPU GB", "model_args"], rows)


def _memory(job: Job) -> str:
    if job.gpus and job.timing_sensitive:
        return "alone"
    return "--" if job.memory_gb is None else f"{job.memory_gb:.1f}"


def summary_table(jobs: list[Job], store: JobStore) -> str:
    """One row per model and precision, one column per task: status and wall time of each job."""
    labels = list(dict.fromkeys(j.task_label for j in jobs))
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for job in jobs:
        record = store.get(job.key)
        status = record.get("status") or "pending"
        cell = f"{status} {duration(record.get('duration_s'))}" if status == "done" else status.upper()
        model, precision, _ = job.key.split("/")
        rows.setdefault((model, precision), {})[job.task_label] = cell if status != "pending" else "pending"
    body = [[m, p, *(cells.get(label, "") for label in labels)] for (m, p), cells in rows.items()]
    return markdown_table(["model", "precision", *labels], body)
