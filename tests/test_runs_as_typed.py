"""`lm_eval --model perf-hf` runs as users type it on a CPU-only machine, and its record is the whole
run's: no `--device` (the README's data-parallel command, run as printed; the demo's in test_readme),
data parallel over two processes, `--batch_size auto`, a plugin task after an evaluation task (two
BBH subtasks: what these pin does not depend on how many).

Real parts: lm-eval's CLI in a subprocess, the bundled SmolLM2 weights, tiny-llama built from its config
(lm-eval seeds torch before the model is made, so every process builds the same weights), BBH files
from the shared data folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bbh_group_yaml

from lm_eval_perf.records.artifacts import FORWARD
from tests.readme import readme_command, run_as_printed


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, bbh_dir) -> Path:
    """A folder laid out as the README assumes: the checkout's working directory beside ``shared/``."""
    base = tmp_path_factory.mktemp("typed")
    (base / "shared").symlink_to(bbh_dir.parent.parent)
    (base / "work").mkdir()
    return base / "work"


@pytest.fixture(scope="module")
def bbh_pair(tmp_path_factory) -> Path:
    """The include folder of ``bbh_pair``: two of leaderboard_bbh_local's 24 subtasks (3-shot, local
    files), the evaluation task of the tests about what else runs in the same process."""
    include = tmp_path_factory.mktemp("bbh_pair")
    (include / "bbh_pair.yaml").write_text(bbh_group_yaml("bbh_pair", ["boolean_expressions", "navigate"]))
    return include


def results_of(folder: Path) -> dict:
    found = sorted(folder.rglob("results_*.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


def lm_eval(args: list[str], out: Path, bbh_dir: Path, **options) -> dict:
    """`lm_eval --model perf-hf` with ``args`` (no --device) and ``options`` in ``--metadata``, its
    results JSON."""
    metadata = json.dumps({"bbh_dir": str(bbh_dir), **options})
    command = [sys.executable, "-m", "lm_eval", "--model", "perf-hf", *args, "--metadata", metadata]
    proc = subprocess.run([*command, "--output_path", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results_of(out)


def assert_span_less_the_excluded_block(window: dict, excluded_s: float) -> None:
    """A window that closed for a block of ``excluded_s`` seconds and opened again lasts its span less
    the block. Window edges are stamped by the sampler thread, which a busy 2-core machine may delay
    by tenths of a second, so the check allows half the block either way."""
    span = window["end_s"] - window["start_s"]
    assert excluded_s > 0
    assert span - 1.5 * excluded_s <= window["duration_s"] <= span - 0.5 * excluded_s, (window, excluded_s)


@pytest.mark.slow
def test_readme_classifier_command_gives_accuracy_above_chance_and_a_forward_sweep(
    workdir, trained_classifier_dir, labelled_csv
):
    command = readme_command("lm_eval --model perf-hf", "classification_local")
    (workdir / "my-classifier").symlink_to(trained_classifier_dir)
    shutil.copy(labelled_csv, workdir / "intents.csv")
    proc = run_as_printed(command, workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = results_of(workdir / "results" / "classifier")
    scores = results["results"]["classification_local"]
    assert scores["acc,none"] > 0.6 and scores["f1_macro,none"] > 0.6  # 3 labels: chance is 1/3
    record = results["config"]["efficiency"]
    assert record["load"]["head"] == {
        "kind": "sequence_classification",
        "labels": ["music", "sport", "weather"],
    }
    ll = record["kinds"]["loglikelihood"]
    assert ll["samples"] == 60 and ll["requests"] == 180 and ll["batches"] == 4  # 60 texts, 16 a batch
    assert set(record["kinds"]) == {"loglikelihood"}  # the sweep measured itself
    (excluded,) = record["overall"]["excluded"]
    assert excluded["what"] == "plugin task perf_forward"
    sweep = workdir / results["config"]["lm_eval_perf_artifacts"][FORWARD.key]  # relative to where it ran
    points = [json.loads(line) for line in sweep.read_text().splitlines()]
    assert [(p["key"]["batch_size"], p["status"]) for p in points] == [
        (b, "ok") for b in (1, 4, 8, 16, 32, 64)
    ]
    assert all(p["key"]["seq_len"] == 128 and p["pad_fraction"] > 0.5 for p in points)  # short texts
    assert "perf_forward: best batch size at 128 tokens:" in proc.stderr


@pytest.mark.slow
def test_data_parallel_cpu_run_records_the_whole_run_like_one_process(workdir, bbh_dir):
    command = readme_command("ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2")
    proc = run_as_printed(command, workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    both = results_of(workdir / "results" / "data_parallel")
    # the same evaluation in one process (the README command without torchrun)
    args = command.split(" -m lm_eval --model perf-hf ", 1)[1].split(" --metadata ")[0].split()
    one = lm_eval(args, workdir / "one_process", bbh_dir)

    assert both["results"] == one["results"]  # lm-eval's own gather: identical accuracy
    dp, single = both["config"]["efficiency"], one["config"]["efficiency"]
    assert dp["world_size"] == 2 and single["world_size"] == 1
    assert [r["rank"] for r in dp["ranks"]] == [0, 1] and all(r["batches"] > 0 for r in dp["ranks"])
    assert {task: t["requests"] for task, t in dp["tasks"].items()} == {
        task: t["requests"] for task, t in single["tasks"].items()
    }
    for key in ("samples", "prompt_tokens"):
        assert dp["kinds"]["loglikelihood"][key] == single["kinds"]["loglikelihood"][key], key
        assert sum(r[key] for r in dp["ranks"]) == dp["kinds"]["loglikelihood"][key], key
    # --limit 3 gives one rank a document more: lm-eval pads the other with copies, not requests
    assert sum(sum(r["padding_requests"].values()) for r in dp["ranks"]) > 0
    latencies = dp["kinds"]["loglikelihood"]["latency_s"]
    assert latencies["count"] == sum(r["batches"] for r in dp["ranks"])
    assert dp["overall"]["window"]["duration_s"] == pytest.approx(max(r["seconds"] for r in dp["ranks"]))


@pytest.mark.slow
def test_batch_size_auto_probe_stays_out_of_the_record(tmp_path, bbh_dir, bbh_pair):
    common = ["--model_args", "pretrained=arch:tiny-llama", "--include_path", str(bbh_pair)]
    common += ["--tasks", "bbh_pair", "--limit", "1"]
    auto = lm_eval([*common, "--batch_size", "auto", "--max_batch_size", "4"], tmp_path / "auto", bbh_dir)
    fixed = lm_eval([*common, "--batch_size", "4"], tmp_path / "fixed", bbh_dir)
    record = auto["config"]["efficiency"]
    (probe,) = record["batch_size_probe"]
    assert probe["chosen_batch_size"] == 4 and probe["start_batch_size"] == 4 and probe["positions"] > 100
    assert fixed["config"]["efficiency"]["batch_size_probe"] is None
    # the probe's five forward passes are not batches of the evaluation
    ll = record["kinds"]["loglikelihood"]
    assert ll["batches"] == fixed["config"]["efficiency"]["kinds"]["loglikelihood"]["batches"]
    # the window closed for the probe and opened again: its span minus the probe's time
    (excluded,) = record["overall"]["excluded"]
    assert excluded["what"] == "batch_size_probe"
    assert_span_less_the_excluded_block(ll["window"], excluded["seconds"])
    assert auto["results"] == fixed["results"]


@pytest.mark.slow
def test_plugin_task_after_an_evaluation_task_stays_out_of_its_windows(tmp_path, bbh_dir, bbh_pair):
    args = ["--model_args", "pretrained=arch:tiny-llama", "--include_path", str(bbh_pair)]
    args += ["--tasks", "bbh_pair,perf_throughput"]
    sweep = {"batch_sizes": [1], "gen_lengths": [4], "prompt_len": 16, "min_iterations": 2, "min_seconds": 0}
    results = lm_eval([*args, "--limit", "1", "--batch_size", "4"], tmp_path, bbh_dir, **sweep)
    record = results["config"]["efficiency"]
    (excluded,) = record["overall"]["excluded"]
    assert excluded["what"] == "plugin task perf_throughput"
    assert_span_less_the_excluded_block(record["overall"]["window"], excluded["seconds"])
    assert set(record["kinds"]) == {"loglikelihood"}  # the sweep's generate calls are its own


def test_device_in_model_args_is_one_line_naming_the_device_flag(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "lm_eval", "--model", "perf-hf", "--model_args"]
    command += [
        "pretrained=arch:tiny-llama,device=cpu",
        "--tasks",
        "perplexity_local",
        "--output_path",
        str(out),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("lm-eval-perf: error:")]
    assert len(lines) == 1 and "use --device cpu" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_device_cuda_where_torch_has_no_cuda_is_one_line_naming_the_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda runs")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "perf-hf",
        "--model_args",
        "pretrained=arch:tiny-llama",
    ]
    command += ["--tasks", "perplexity_local", "--device", "cuda", "--output_path", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("lm-eval-perf: error:")]
    assert len(lines) == 1 and "--device cuda: torch" in lines[0] and "use --device cpu" in lines[0], (
        proc.stderr[-2000:]
    )
    assert "Traceback" not in proc.stderr and not out.exists()
