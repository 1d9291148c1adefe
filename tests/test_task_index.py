"""lm-eval's index of its own task folder is read from a cache while the folder's files are unchanged."""

from __future__ import annotations

import os
from pathlib import Path

from lm_eval.tasks._index import TaskIndex

from lm_eval_perf import task_index

TASK = "task: {name}\ndataset_path: json\noutput_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: [a]\n"


def names_and_paths(index: dict) -> dict:
    return {name: str(entry.yaml_path) for name, entry in index.items()}


def test_cached_index_equals_lm_evals_and_follows_every_file_change(tmp_path, monkeypatch):
    monkeypatch.setenv("LM_EVAL_PERF_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "tasks"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.yaml").write_text(TASK.format(name="one"))
    (folder / "sub" / "two.yaml").write_text(TASK.format(name="two"))
    other = tmp_path / "mine"
    other.mkdir()
    (other / "two.yaml").write_text(TASK.format(name="two"))  # overrides the folder's "two", as in lm-eval

    lm_evals = getattr(TaskIndex.build, "__wrapped__", TaskIndex.build)  # lm-eval's own, uncached
    build = task_index.cached_build(lm_evals, folder, "test")
    expected = {"one": str(folder / "one.yaml"), "two": str(other / "two.yaml")}
    assert names_and_paths(build([folder, other])) == names_and_paths(lm_evals([folder, other])) == expected
    (cached,) = (tmp_path / "cache" / "task_index").glob("lm_eval-*.pickle")

    one = folder / "one.yaml"
    stat = one.stat()
    one.write_text(TASK.format(name="uno"))  # same size, same mtime: the cache is what answers
    os.utime(one, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert set(build([folder])) == {"one", "two"}

    one.write_text(TASK.format(name="first"))  # another size and mtime: parsed afresh, cache rewritten
    (folder / "sub" / "three.yaml").write_text(TASK.format(name="three"))
    assert set(build([folder])) == {"first", "two", "three"} == set(lm_evals([folder]))
    assert list((tmp_path / "cache" / "task_index").glob("lm_eval-*.pickle")) == [cached]

    cached.write_bytes(b"not a pickle")  # a broken cache file is rebuilt, never an error
    assert set(build([folder])) == {"first", "two", "three"}


def test_lm_evals_task_manager_lists_the_same_tasks_with_and_without_the_cache(tmp_path, monkeypatch):
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    from lm_eval_perf.registration import ensure_registered

    monkeypatch.setenv("LM_EVAL_PERF_CACHE", str(tmp_path / "cache"))
    ensure_registered()
    assert getattr(TaskIndex.build, "_lm_eval_perf", False)  # installed by the registration hook
    first, second = TaskManager().all_tasks, TaskManager().all_tasks  # built and cached, then read
    lm_evals_own = TaskIndex.build.__wrapped__([Path(lm_eval.tasks.__file__).parent])
    assert first == second and set(lm_evals_own) <= set(first) and "leaderboard_bbh_local" in first
