"""A ``perf_throughput`` sweep killed mid-way (SIGKILL) resumes: no point lost, none duplicated."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from lm_eval_perf.records.artifacts import THROUGHPUT

POINTS = 6  # 2 batch sizes x 3 generation lengths
OPTIONS = {
    "batch_sizes": [1, 2],
    "gen_lengths": [3, 4, 5],
    "prompt_len": 16,
    "min_iterations": 1,
    "min_seconds": 0.5,  # every point takes at least half a second: time to kill the sweep between points
    "warmup_iterations": 0,
}


def _command(artifacts, output) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "perf-hf",
        "--model_args",
        f"pretrained=arch:tiny-llama,dtype=float32,artifacts_dir={artifacts}",
        "--tasks",
        "perf_throughput",
        "--device",
        "cpu",
        "--metadata",
        json.dumps(OPTIONS),
        "--output_path",
        str(output),
    ]


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_killed_sweep_resumes_without_losing_or_repeating_points(tmp_path):
    results = tmp_path / "artifacts" / THROUGHPUT.filename
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = _command(tmp_path / "artifacts", tmp_path / "out")
    sweep = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(_records(results)) < 2 and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    before = _records(results)
    assert 2 <= len(before) < POINTS, "the sweep was not killed mid-way"

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = _records(results)
    keys = [r["key_id"] for r in after]
    assert len(after) == POINTS and len(set(keys)) == POINTS
    assert after[: len(before)] == before  # finished points kept as they were, not measured again
    measured_again = re.findall(rf"perf_throughput: \d+/{POINTS} ", rerun.stderr)
    assert len(measured_again) == POINTS - len(before), rerun.stderr[-2000:]
    assert {(r["key"]["batch_size"], r["key"]["new_tokens"]) for r in after} == {
        (b, g) for b in OPTIONS["batch_sizes"] for g in OPTIONS["gen_lengths"]
    }
