"""`perf-hf` and the project's tasks are found by lm-eval without a flag, and start-up stays clean."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**ENV, **env}, timeout=300
    )


def test_lm_eval_registry_resolves_perf_hf_and_still_resolves_its_own_models():
    proc = python(
        "from lm_eval.api.registry import get_model\n"
        "print(get_model('perf-hf').__module__, get_model('perf-hf').__name__)\n"
        "print(get_model('hf').__name__)"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["lm_eval_perf.models.perf_hf", "PerfHFLM", "HFLM"]


def test_python_start_up_imports_only_the_tiny_hook_when_lm_eval_is_never_imported():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    ours = {name for name in imported if name.startswith("lm_eval_perf")}
    assert ours == {"lm_eval_perf", "lm_eval_perf._autoload"}
    assert not {name for name in imported if name.startswith(("lm_eval.", "torch", "transformers"))}
    assert "lm_eval" not in imported


def test_autoload_can_be_switched_off_and_the_console_script_still_registers():
    off = python(
        "from lm_eval.api.registry import get_model; get_model('perf-hf')", LM_EVAL_PERF_NO_AUTOLOAD="1"
    )
    assert off.returncode != 0 and "perf-hf" in off.stderr
    on = python(
        "from lm_eval_perf.registration import ensure_registered; ensure_registered()\n"
        "from lm_eval.api.registry import get_model; print(get_model('perf-hf').__name__)",
        LM_EVAL_PERF_NO_AUTOLOAD="1",
    )
    assert on.returncode == 0 and on.stdout.strip() == "PerfHFLM", on.stderr


def test_task_manager_indexes_the_project_tasks_beside_lm_evals_own():
    from lm_eval.tasks import TaskManager

    manager = TaskManager()
    assert "leaderboard_bbh_local" in manager.all_groups
    assert "leaderboard_bbh" in manager.all_groups  # the hub version stays untouched
    assert "leaderboard_bbh_local" not in TaskManager(include_defaults=False).all_tasks


@pytest.mark.slow
def test_console_script_runs_lm_eval_with_the_plugins_loaded(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval_perf.cli", "ls", "groups"],
        capture_output=True,
        text=True,
        env={**ENV, "LM_EVAL_PERF_NO_AUTOLOAD": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "leaderboard_bbh_local" in proc.stdout


CUSTOM_DATA_TASK = """task: custom_data_task
custom_dataset: !function custom_data.load
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list: [{metric: word_perplexity}]
"""
CUSTOM_DATA = """import datasets


def load(**_metadata):
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([{"text": "a b c"}])})
"""


def test_lm_evals_custom_kwargs_notice_is_dropped_for_our_tasks_only(tmp_path, caplog):
    """lm-eval logs it for every task with a custom_dataset function: 24 times per BBH run."""
    from lm_eval.tasks import TaskManager

    (tmp_path / "custom_data_task.yaml").write_text(CUSTOM_DATA_TASK)
    (tmp_path / "custom_data.py").write_text(CUSTOM_DATA)
    manager = TaskManager(include_path=str(tmp_path), metadata={"bbh_dir": "unused"})
    with caplog.at_level("WARNING"):
        manager.load(["perplexity_local", "custom_data_task"])
    notices = [r.getMessage() for r in caplog.records if "Custom kwargs can be passed" in r.getMessage()]
    assert [n.split(":")[0] for n in notices] == ["custom_data_task"]  # a task of someone else keeps it
