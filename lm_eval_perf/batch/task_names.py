"""Check task names against lm-eval's task index before any job starts.

Indexing every lm-eval task (lm-eval's ``TaskManager`` parses about 14,000 task YAML files) takes
10-20 s on a busy 2-core machine, so:

* only the names of jobs that will actually run are checked (resuming a finished matrix checks none);
* the index is cached in ``<cache>/task_index/<key>.json`` (``$LM_EVAL_PERF_CACHE``, default
  ``~/.cache/lm_eval_perf``), keyed by lm-eval's version and install folder, this project's task
  folder and the config's ``include_path``. A name the cached index knows is accepted at once; a name
  it does not know makes the index be built afresh (and cached again) before it is called unknown,
  so a task added since the cache was written is found. A task removed since then passes the check
  and fails in its job, with lm-eval's own error in the log.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
from collections.abc import Mapping
from pathlib import Path

from lm_eval_perf.atomic import write_atomic
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models.bundled import cache_root

INDEX_VERSION = 1  # of the cache file's format


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


def index_key(include_path: str | None) -> dict:
    """What the task index depends on (besides the task files themselves); found without importing lm-eval."""
    spec = importlib.util.find_spec("lm_eval")
    return {
        "version": INDEX_VERSION,
        "lm_eval": importlib.metadata.version("lm_eval"),
        "lm_eval_dir": str(Path(spec.origin).parent) if spec and spec.origin else None,
        "project_tasks": str(Path(__file__).resolve().parents[1] / "tasks"),
        "include_path": include_path,
    }


def index_file(include_path: str | None) -> Path:
    """The cache file of the task index for ``include_path``."""
    digest = hashlib.sha1(json.dumps(index_key(include_path), sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "task_index" / f"{digest}.json"


def _cached(include_path: str | None) -> frozenset[str] | None:
    """The cached index, or None when there is none (or it cannot be read, or belongs to another key)."""
    try:
        data = json.loads(index_file(include_path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != index_key(include_path):
        return None
    names = data.get("names")
    return frozenset(names) if isinstance(names, list) else None


def _build(include_path: str | None) -> frozenset[str]:
    """Index the tasks now and cache the index (a cache folder that cannot be written is skipped)."""
    known = known_tasks(include_path)
    record = {"key": index_key(include_path), "names": sorted(known)}
    with contextlib.suppress(OSError):  # a read-only home: every run indexes afresh, as before the cache
        write_atomic(index_file(include_path), json.dumps(record) + "\n")
    return known


def closest_tasks(name: str, known: frozenset[str], n: int = 3) -> str:
    """`` (did you mean 'a', 'b'?)``: the known task names closest to ``name``; ``''`` if none is close."""
    hint = difflib.get_close_matches(name, sorted(known), n=n)
    return f" (did you mean {', '.join(map(repr, hint))}?)" if hint else ""


def check_task_names(names: Mapping[str, str], include_path: Path | None) -> None:
    """One-line error for the first unknown task; ``names`` maps task name -> config key path."""
    if not names:
        return
    include = str(include_path) if include_path else None
    known = _cached(include)
    if known is None or not set(names) <= known:
        known = _build(include)
    for name, where in names.items():
        if name not in known:
            raise UserInputError(
                f"{where}: unknown task {name!r}"
                + closest_tasks(name, known, n=1)
                + ("" if include_path else "; add include_path: for a task folder of your own")
            )
