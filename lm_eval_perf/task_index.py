"""A cache of lm-eval's index of its own task folder, so that a run does not parse it every time.

lm-eval's ``TaskManager`` parses every task YAML file it knows before it looks at ``--tasks`` (about
14,000 files of lm-eval 0.4.13's own folder: 5-6 s on one core, paid by every ``lm_eval`` command, a
failing one included). The index of that folder - lm-eval's installed ``lm_eval/tasks`` - is kept in
``<cache>/task_index/lm_eval-<digest>.pickle`` (``$LM_EVAL_PERF_CACHE``, default
``~/.cache/lm_eval_perf``) beside a fingerprint of the folder: every ``.yaml`` file's path, size and
modification time (0.1 s to take). A changed, added or removed file changes the fingerprint and the
folder is parsed afresh, as lm-eval would, and the cache rewritten (atomically; one file per folder,
so the cache does not grow). Other folders (this project's tasks, ``--include_path``) are indexed by
lm-eval as before. Merging follows lm-eval: a later folder's task overrides an earlier one's.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path

from lm_eval_perf.atomic import write_atomic
from lm_eval_perf.models.bundled import cache_root

FORMAT = 1  # of the cache file
_IGNORE_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints"})  # as lm-eval's index walk
log = logging.getLogger(__name__)


def fingerprint(folder: Path) -> str:
    """A digest of every ``.yaml`` file below ``folder``: relative path, size and mtime (ns)."""
    digest = hashlib.sha256()
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORE_DIRS)
        for name in sorted(f for f in files if f.endswith(".yaml")):
            path = os.path.join(parent, name)
            stat = os.stat(path)
            digest.update(f"{os.path.relpath(path, folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cache_file(folder: Path, version: str) -> Path:
    key = hashlib.sha256(f"{FORMAT}\0{version}\0{folder}".encode()).hexdigest()[:16]
    return cache_root() / "task_index" / f"lm_eval-{key}.pickle"


def _folder_index(build: Callable, folder: Path, version: str) -> dict:
    """lm-eval's index of ``folder`` alone, from the cache when the folder's fingerprint matches."""
    cache, stamp = _cache_file(folder, version), fingerprint(folder)
    try:
        saved_stamp, index = pickle.loads(cache.read_bytes())
        if saved_stamp == stamp:
            return index
    except Exception:  # no cache yet, or a file this lm-eval cannot unpickle (any error): parse afresh
        pass
    index = build([folder])
    try:  # write_atomic makes the cache folder
        write_atomic(cache, pickle.dumps((stamp, index), protocol=pickle.HIGHEST_PROTOCOL))
    except OSError as exc:  # a read-only cache costs the parse next time, nothing else
        log.debug("task index not cached in %s: %s", cache, exc)
    return index


def cached_build(original: Callable, lm_eval_tasks_dir: Path, version: str) -> Callable:
    """``original`` (lm-eval's ``TaskIndex.build``) with ``lm_eval_tasks_dir``'s index read from the
    cache; every other folder is built by ``original``."""
    own = lm_eval_tasks_dir.resolve()

    @functools.wraps(original)
    def build(paths: Iterable[Path], *, resolve_includes: bool = True) -> dict:
        paths = [Path(p) for p in paths]
        if not resolve_includes or all(p.resolve() != own for p in paths):
            return original(paths, resolve_includes=resolve_includes)
        index: dict = {}
        for folder in paths:
            part = _folder_index(original, own, version) if folder.resolve() == own else original([folder])
            for name, entry in part.items():
                if name in index:
                    logging.getLogger("lm_eval.tasks._index").warning(
                        "Task '%s' from %s overrides existing task from %s",
                        name,
                        entry.yaml_path,
                        index[name].yaml_path,
                    )
                index[name] = entry
        return index

    build._lm_eval_perf = True  # type: ignore[attr-defined]
    return build


def install(task_index_cls: type, lm_eval_tasks_dir: Path, version: str) -> None:
    """Replace ``task_index_cls.build`` (lm-eval's ``TaskIndex.build``) by :func:`cached_build` of it."""
    if not getattr(task_index_cls.build, "_lm_eval_perf", False):
        task_index_cls.build = staticmethod(cached_build(task_index_cls.build, lm_eval_tasks_dir, version))
