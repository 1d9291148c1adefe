"""``--tasks esd`` end to end: real SmolLM2 weights through the CLI (and the streamed path, which must give
the same rows), a LoRA adapter merged, bad options."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.artifacts import ESD_LAYERS
from lm_eval_perf.tasks.esd import runner
from lm_eval_perf.tasks.esd.estimator import COLUMNS
from lm_eval_perf.tasks.esd.records import IDENTITY_COLUMNS

METRICS = (
    "alpha_mean",
    "alpha_median",
    "alpha_std",
    "alpha_min",
    "alpha_max",
    "alpha_q25",
    "alpha_q75",
    "alpha_weighted_mean",
    "spectral_norm_mean",
    "spectral_norm_max",
    "stable_rank_mean",
    "stable_rank_median",
    "entropy_mean",
    "entropy_median",
    "total_params",
    "num_layers",
    "eig_seconds",
)


def _lm_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "lm_eval", "--model", "perf-hf", "--device", "cpu", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def smollm2_esd(tmp_path_factory) -> tuple[dict, Path, list[dict[str, str]]]:
    """``lm_eval --tasks esd`` on the bundled SmolLM2 (the loaded-model path): its results JSON, the
    JSON's path and the rows of the layer table it names."""
    out = tmp_path_factory.mktemp("smollm2_esd")
    done = _lm_eval(
        "--model_args", "pretrained=bundled:smollm2", "--tasks", "esd", "--output_path", str(out), cwd=out
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [results_json] = out.glob("*/results_*.json")
    results = json.loads(results_json.read_text())
    return results, results_json, _read_csv(Path(results["config"]["lm_eval_perf_artifacts"][ESD_LAYERS.key]))


@pytest.mark.slow
def test_smollm2_runs_end_to_end_with_finite_metrics_for_every_layer(smollm2_esd):
    results, results_json, rows = smollm2_esd
    layers_csv = Path(results["config"]["lm_eval_perf_artifacts"][ESD_LAYERS.key])
    assert layers_csv.parent == results_json.parent and layers_csv.name.startswith("esd_layers_")
    assert len(rows) >= 200
    assert list(rows[0]) == [*IDENTITY_COLUMNS, *COLUMNS]
    for row in rows:
        assert row["model_id"] == "bundled:smollm2" and row["is_adapter"] == "False"
        for column in COLUMNS[1:]:
            assert math.isfinite(float(row[column])), (row["longname"], column)
    metrics = results["results"]["esd"]
    for name in METRICS:
        assert math.isfinite(metrics[f"{name},none"]), name
    assert metrics["num_layers,none"] == len(rows)
    assert metrics["total_params,none"] == sum(int(r["params"]) for r in rows)
    alphas = sorted(float(r["alpha"]) for r in rows)
    assert metrics["alpha_median,none"] == pytest.approx(float(np.median(alphas)), rel=1e-12)


@pytest.mark.slow
def test_streamed_smollm2_gives_the_rows_of_the_loaded_model(smollm2_esd, smollm2_dir):
    """The streamed path (safetensors read tensor by tensor) against the task's loaded-model rows."""
    from test_esd_stream import assert_same_rows

    from lm_eval_perf.tasks.esd.checkpoint import open_checkpoint
    from lm_eval_perf.tasks.esd.stream import analyze_checkpoint

    whole = {"longname": str, "M": int, "N": int, "params": int, "num_evals": int, "matrix_rank": int}
    loaded = [{c: whole.get(c, float)(row[c]) for c in COLUMNS} for row in smollm2_esd[2]]  # floats repr'd
    streamed = analyze_checkpoint(open_checkpoint(str(smollm2_dir)))
    assert len(streamed.result.rows) == len(loaded) >= 200
    assert streamed.result.rows[-1]["longname"] == "lm_head"  # tied to the embedding: read once, from it
    assert_same_rows(streamed.result.rows, loaded)
    assert streamed.stats.files == 1 and streamed.stats.stored_dtypes == ("float32",)


@pytest.mark.slow
def test_a_bad_option_is_one_line_on_the_command_line(tmp_path):
    done = _lm_eval(
        "--model_args", "pretrained=arch:tiny-llama", "--tasks", "esd",
        "--metadata", '{"fix_fingers": "xmin_median"}', "--output_path", str(tmp_path),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("lm-eval-perf: error: esd fix_fingers=")
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def lora_adapter(tmp_path_factory, smollm2_dir):
    """A tiny Llama saved as a model folder and a LoRA adapter on it with non-zero weights (peft)."""
    peft = pytest.importorskip("peft")
    import transformers

    from lm_eval_perf.models.sources import load_architecture, transformers_config

    root = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    config = transformers_config(load_architecture("tiny-llama"))
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(root / "base")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    wrapped = peft.get_peft_model(model, lora)
    wrapped.save_pretrained(root / "adapter")
    q_proj = wrapped.base_model.model.model.layers[0].self_attn.q_proj
    delta = q_proj.lora_B["default"].weight @ q_proj.lora_A["default"].weight * (8 / 4)
    merged = (q_proj.base_layer.weight + delta).detach().double().numpy()
    return root, merged, smollm2_dir


def test_a_lora_adapter_is_merged_and_reported_as_adapter(lora_adapter):
    from lm_eval_perf.models.perf_hf import PerfHFLM

    root, merged_q_proj, tokenizer = lora_adapter
    lm = PerfHFLM(
        pretrained=str(root / "base"),
        peft=str(root / "adapter"),
        tokenizer=str(tokenizer),
        device="cpu",
        dtype="float32",
        artifacts_dir=str(root / "out"),
        print_summary=False,
    )
    for options, message in (
        ({"eig_dtype": "float16"}, "eig_dtype"),
        ({"fix_finger": "xmin_mid"}, "did you mean 'fix_fingers'"),
        ({"merge_device": "gpu-please"}, "merge_device"),
    ):
        with pytest.raises(UserInputError, match=message) as caught:
            runner.run(lm, options)
        assert "\n" not in str(caught.value)
    assert hasattr(lm.model, "merge_and_unload")  # refused before anything was merged

    result = runner.run(lm, {"merge_device": "cpu"})
    layers_csv = Path(result["artifacts"][ESD_LAYERS.key])
    assert layers_csv.parent == root / "out"
    rows = {r["longname"]: r for r in _read_csv(layers_csv)}
    assert not any("lora" in name for name in rows)  # merged: no separate LoRA matrices left
    q_proj = rows["model.layers.0.self_attn.q_proj"]
    assert q_proj["is_adapter"] == "True"
    assert q_proj["model_id"] == str(root / "adapter") and q_proj["source_model"] == str(root / "base")
    expected = np.linalg.svd(merged_q_proj, compute_uv=False)[0] ** 2  # λmax of the merged weight
    assert float(q_proj["spectral_norm"]) == pytest.approx(expected, rel=1e-9)
    assert result["is_adapter"] is True and result["metrics"]["num_layers"] == len(rows)

    # batch_eval names the model itself; a second run finds the adapter already merged
    second = runner.run(lm, {"model_id": "org/adapter-7", "source_model": "org/base"})
    again = _read_csv(Path(second["artifacts"][ESD_LAYERS.key]))
    assert {(r["model_id"], r["source_model"], r["is_adapter"]) for r in again} == {
        ("org/adapter-7", "org/base", "True")
    }
    assert [r["spectral_norm"] for r in again] == [r["spectral_norm"] for r in rows.values()]
