"""Check task names against lm-eval's task index before any job starts.

Indexing every lm-eval task takes several seconds, so only the names of jobs that will actually
run are checked: resuming a finished matrix costs nothing here.
"""

from __future__ import annotations

import difflib
import functools
import logging
from collections.abc import Mapping
from pathlib import Path

from lm_eval_perf.errors import UserInputError


@functools.lru_cache(maxsize=4)
def known_tasks(include_path: str | None) -> frozenset[str]:
    """Every task, group and tag name lm-eval (with this project's tasks and ``include_path``) knows."""
    from lm_eval_perf.registration import ensure_registered

    ensure_registered()
    from lm_eval.tasks import TaskManager

    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return frozenset(TaskManager(include_path=include_path).all_tasks)
    finally:
        quiet.setLevel(level)


def closest_tasks(name: str, known: frozenset[str], n: int = 3) -> str:
    """`` (did you mean 'a', 'b'?)``: the known task names closest to ``name``; ``''`` if none is close."""
    hint = difflib.get_close_matches(name, sorted(known), n=n)
    return f" (did you mean {', '.join(map(repr, hint))}?)" if hint else ""


def check_task_names(names: Mapping[str, str], include_path: Path | None) -> None:
    """One-line error for the first unknown task; ``names`` maps task name -> config key path."""
    if not names:
        return
    known = known_tasks(str(include_path) if include_path else None)
    for name, where in names.items():
        if name not in known:
            raise UserInputError(
                f"{where}: unknown task {name!r}"
                + closest_tasks(name, known, n=1)
                + ("" if include_path else "; add include_path: for a task folder of your own")
            )
