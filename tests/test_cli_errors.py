"""Bad input through the ``lm-eval-perf`` console script: one line, a non-zero exit, nothing written.

lm-eval's own input errors (an unknown task, ``--metadata`` that is not JSON) and the inputs this
project checks before loading anything (a truncated weights file, a missing adapter folder or BBH
folder, an output path that cannot be created) each end the same way: one ``lm-eval-perf: error:``
line and no folder or file left behind in the output path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def lm_eval_perf(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``lm-eval-perf ARGS`` (the console script's module) in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "lm_eval_perf.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=600,
    )


def evaluate(model_args: str, tasks: str, metadata: str, cwd: Path) -> subprocess.CompletedProcess:
    return lm_eval_perf(
        "--model", "perf-hf", "--model_args", model_args, "--tasks", tasks, "--limit", "1",
        "--device", "cpu", "--metadata", metadata, "--output_path", "out", cwd=cwd,
    )  # fmt: skip


def files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def assert_one_line_and_nothing_written(proc: subprocess.CompletedProcess, before: list[Path], folder: Path):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lm-eval-perf: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert files(folder) == before  # no output folder, no half-written file
    return errors[0]


@pytest.fixture
def bbh_metadata(bbh_dir) -> str:
    return json.dumps({"bbh_dir": str(bbh_dir)})


def test_an_unknown_task_is_one_line_naming_the_closest_tasks(tmp_path, bbh_metadata):
    proc = evaluate("pretrained=arch:tiny-llama", "leaderbord_bbh_local,esdd", bbh_metadata, tmp_path)
    line = assert_one_line_and_nothing_written(proc, [], tmp_path)
    assert "unknown task 'leaderbord_bbh_local' (did you mean 'leaderboard_bbh_local'" in line
    assert "unknown task 'esdd' (did you mean 'esd'" in line


def test_metadata_that_is_not_json_is_one_line_with_the_fix(tmp_path):
    proc = evaluate("pretrained=arch:tiny-llama", "leaderboard_bbh_local", "{bbh_dir: ../bbh}", tmp_path)
    line = assert_one_line_and_nothing_written(proc, [], tmp_path)
    assert "--metadata {bbh_dir: ../bbh} is not JSON" in line and "double quotes" in line


def test_a_truncated_safetensors_file_is_one_line_before_loading(tmp_path, tiny_model_dir, bbh_metadata):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    before = files(tmp_path)
    proc = evaluate("pretrained=./model", "leaderboard_bbh_local", bbh_metadata, tmp_path)
    line = assert_one_line_and_nothing_written(proc, before, tmp_path)
    assert "model ./model: model.safetensors is truncated or corrupt" in line
    assert "Initializing perf-hf model" in proc.stderr and "Using device" not in proc.stderr  # before HFLM


def test_a_peft_folder_that_does_not_exist_is_one_line(tmp_path, tiny_model_dir, bbh_metadata):
    proc = evaluate(
        f"pretrained={tiny_model_dir},peft=./no-adapter", "leaderboard_bbh_local", bbh_metadata, tmp_path
    )
    line = assert_one_line_and_nothing_written(proc, [], tmp_path)
    assert "peft adapter folder ./no-adapter does not exist" in line


def test_a_missing_bbh_folder_is_one_line_before_the_model_loads(tmp_path):
    proc = evaluate("pretrained=bundled:smollm2", "leaderboard_bbh_local", '{"bbh_dir": "./nope"}', tmp_path)
    line = assert_one_line_and_nothing_written(proc, [], tmp_path)
    assert "BBH directory ./nope does not exist" in line
    assert "Initializing perf-hf model" not in proc.stderr  # checked when the task was selected


def test_an_unknown_model_argument_leaves_no_output_folder(tmp_path, bbh_metadata):
    proc = evaluate(
        "pretrained=arch:tiny-llama,num_hidden_layerz=3", "leaderboard_bbh_local", bbh_metadata, tmp_path
    )
    assert "unknown model_args key 'num_hidden_layerz'" in assert_one_line_and_nothing_written(
        proc, [], tmp_path
    )


def test_an_output_path_that_cannot_be_created_is_one_line(tmp_path, bbh_metadata):
    too_long = "x" * 300  # longer than a file name may be: mkdir fails although the parent is writable
    proc = lm_eval_perf(
        "--model", "perf-hf", "--model_args", "pretrained=arch:tiny-llama", "--tasks",
        "leaderboard_bbh_local", "--device", "cpu", "--metadata", bbh_metadata,
        "--output_path", f"out/{too_long}/results", cwd=tmp_path,
    )  # fmt: skip
    line = assert_one_line_and_nothing_written(proc, [], tmp_path)
    assert "--output_path:" in line and "is not writable: File name too long" in line


def test_subcommand_usage_names_the_command_the_user_typed(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    batch = lm_eval_perf("batch", "--help", cwd=tmp_path)
    assert batch.returncode == 0 and batch.stdout.startswith("usage: lm-eval-perf batch ")
    report = lm_eval_perf("report", "--help", cwd=tmp_path)
    assert report.returncode == 0 and report.stdout.startswith("usage: lm-eval-perf report ")
    script = subprocess.run(
        [sys.executable, str(repo / "batch_eval.py"), "--help"], capture_output=True, text=True, env=ENV
    )
    assert script.stdout.startswith("usage: batch_eval.py ")


@pytest.mark.parametrize(
    "module",
    [
        "lm_eval_perf.models.quant.cli",
        "lm_eval_perf.models.compress.cli",
        "lm_eval_perf.batch.cli",
        "lm_eval_perf.report.cli",
    ],
)
def test_every_subcommand_option_has_a_help_text(module):
    import importlib

    parser = importlib.import_module(module)._parser()
    undocumented = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert undocumented == []
