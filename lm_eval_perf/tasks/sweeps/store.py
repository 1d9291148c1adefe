"""A sweep's results file: one JSON record per finished point, the resume state of the sweep.

Every append rewrites the whole file atomically (:func:`lm_eval_perf.atomic.write_atomic`: the
current lines plus the new one go to a temporary file in the same folder, are flushed and fsync'ed,
and ``os.replace`` puts them in place).
A reader therefore sees the file before or after an append, never half of it - a sweep killed at
any moment loses at most the point it was measuring. (The file holds one line per point, a few
kB each, so rewriting it costs nothing next to measuring a point.) Lines that are not JSON records
with a ``key_id`` (e.g. edited by hand) are kept as they are and otherwise ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

from lm_eval_perf.atomic import write_atomic
from lm_eval_perf.errors import UserInputError


class ResultsFile:
    """Append-only JSONL records of finished points, keyed by ``key_id``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _lines(self) -> list[str]:
        if not self.path.exists():
            return []
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UserInputError(f"cannot read the sweep results {self.path}: {exc.strerror}") from exc

    def records(self) -> dict[str, dict]:
        """Finished points by ``key_id`` (the last record wins if a key appears twice)."""
        found: dict[str, dict] = {}
        for line in self._lines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("key_id"), str):
                found[record["key_id"]] = record
        return found

    def append(self, record: dict) -> None:
        """Add ``record`` as one line; atomic (see the module docstring)."""
        lines = [*self._lines(), json.dumps(record, sort_keys=True)]
        try:
            write_atomic(self.path, "\n".join(lines) + "\n")
        except OSError as exc:
            raise UserInputError(f"cannot write the sweep results {self.path}: {exc.strerror}") from exc
