"""Where a batch keeps its files, all under the config's ``output_dir``:

    <output_dir>/
      jobs.json                          job store: status of every job (see store.py)
      failures.jsonl                     one line per failed job: error, log tail, log path
      .lock                              held by the running batch_eval (a second one is refused)
      logs/<model>/<precision>/<task>.log    the job's stdout+stderr, one section per attempt
      results/<model>/<precision>/<task>/    a finished job: lm-eval's output and job.json
      results/<model>/<precision>/.<task>.staging-<id>/   a running (or killed) attempt

A job writes into its staging folder; only when it succeeded is the folder renamed to its final
name (one atomic ``rename`` on the same file system), so a result folder is always complete and a
killed attempt leaves only a staging folder, which the next run deletes.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from lm_eval_perf.errors import UserInputError

JOB_FILE = "job.json"
STAGING_MARK = ".staging-"


@dataclass(frozen=True)
class Layout:
    """The file layout of one batch output folder."""

    root: Path

    @property
    def store(self) -> Path:
        return self.root / "jobs.json"

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


def check_writable(root: Path, where: str = "output_dir") -> None:
    """One-line error unless ``root`` is (or can be created as) a writable folder; creates nothing."""
    probe = root
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UserInputError(f"{where}: {root} cannot be created: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserInputError(f"{where}: {root} is not writable ({probe} is read-only for this user)")
