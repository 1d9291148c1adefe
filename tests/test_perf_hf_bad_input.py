"""Bad input to `lm_eval --model perf-hf` is one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lm_eval_perf.errors import UserInputError


def lm_eval(model_args: str, output: str, bbh_dir) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "perf-hf",
        "--model_args",
        model_args,
        "--tasks",
        "leaderboard_bbh_local",
        "--limit",
        "1",
        "--device",
        "cpu",
        "--output_path",
        output,
        "--metadata",
        json.dumps({"bbh_dir": str(bbh_dir)}),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lm-eval-perf: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0]


@pytest.mark.parametrize(
    ("model_args", "fragments"),
    [
        (
            "pretrained=arch:tiny-llama,dtype=float32,num_hidden_layerz=3",
            ("unknown model_args key", "layerz"),
        ),
        ("pretrained=arch:tiny-llama,dtype=float17", ("dtype='float17'", "bfloat16")),
        ("pretrained=./no/such/model", ("model path ./no/such/model does not exist",)),
        ("pretrained=arch:no-such-arch", ("unknown architecture 'no-such-arch'", "qwen2.5-7b")),
        ("pretrained=arch:tiny-llama,monitor_interval=0", ("monitor_interval must be > 0",)),
    ],
    ids=["unknown-key", "bad-dtype", "missing-path", "unknown-arch", "bad-interval"],
)
def test_bad_model_args_fail_with_one_line(tmp_path, bbh_dir, model_args, fragments):
    proc = lm_eval(model_args, str(tmp_path / "out"), bbh_dir)
    assert_one_line_error(proc, *fragments)
    assert list(tmp_path.iterdir()) == []  # not even an empty output folder


def test_a_folder_that_holds_no_model_is_one_line(tmp_path, bbh_dir):
    (tmp_path / "empty").mkdir()
    proc = lm_eval(f"pretrained={tmp_path / 'empty'}", str(tmp_path / "out"), bbh_dir)
    assert_one_line_error(proc, f"cannot load model {tmp_path / 'empty'}: ", "config.json")
    assert list(tmp_path.iterdir()) == [tmp_path / "empty"]


def test_unwritable_output_path_fails_before_evaluating(tmp_path, bbh_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = lm_eval("pretrained=arch:tiny-llama,dtype=float32", str(blocker / "results"), bbh_dir)
    assert_one_line_error(proc, "is not writable")
    assert "Running loglikelihood requests" not in proc.stderr


def test_missing_bbh_directory_is_one_line_before_the_model_loads(tmp_path):
    proc = lm_eval("pretrained=arch:tiny-llama,dtype=float32", str(tmp_path / "out"), tmp_path / "nope")
    assert_one_line_error(proc, "BBH directory", "does not exist")
    assert "Initializing perf-hf model" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_library_callers_get_an_ordinary_value_error():
    from lm_eval_perf.models.perf_hf import PerfHFLM

    with pytest.raises(UserInputError, match="unknown architecture") as info:
        PerfHFLM(pretrained="arch:nope", device="cpu")
    assert isinstance(info.value, ValueError)


def test_perf_hf_own_argument_names_are_those_of_its_constructor():
    import inspect

    from lm_eval_perf.model_args import PERF_HF_ARGS
    from lm_eval_perf.models.perf_hf import PerfHFLM

    own = set(inspect.signature(PerfHFLM.__init__).parameters) - {"self", "pretrained", "kwargs"}
    assert own == set(PERF_HF_ARGS)
