"""Streamed ESD (``lm-eval-perf esd``, ``esd`` task with ``stream: true``) against the loaded-model path.

Real parts only: the bundled SmolLM2 (its converted safetensors folder and its GGUF file), tiny models
saved by transformers (sharded with a small ``max_shard_size``), LoRA adapters saved by peft and merged
by peft's ``merge_and_unload`` for the reference, and the CLI run as a child process whose peak resident
memory the parent reads from the kernel (``os.wait4``). The streamed SmolLM2 against the loaded one is
in test_esd_task.py, against the rows of that file's ``--tasks esd`` run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.tasks.esd.adapter import open_adapter
from lm_eval_perf.tasks.esd.checkpoint import build_skeleton, open_checkpoint
from lm_eval_perf.tasks.esd.estimator import COLUMNS, analyze
from lm_eval_perf.tasks.esd.stream import analyze_checkpoint, plan_layers

NUMERIC = [c for c in COLUMNS if c not in ("longname", "M", "N", "params", "num_evals", "matrix_rank")]


def assert_same_rows(streamed: list[dict], loaded: list[dict], rel: float = 1e-9) -> None:
    """Same layers in the same order, integer columns equal, every other column within ``rel``."""
    assert [r["longname"] for r in streamed] == [r["longname"] for r in loaded]
    for a, b in zip(streamed, loaded):
        for column in ("M", "N", "params", "num_evals", "matrix_rank"):
            assert a[column] == b[column], (a["longname"], column)
        for column in NUMERIC:
            if math.isnan(b[column]):
                assert math.isnan(a[column]), (a["longname"], column)
            else:
                assert a[column] == pytest.approx(b[column], rel=rel, abs=0), (a["longname"], column)


def save_tiny(folder: Path, *, layers: int = 2, shard: str = "2GB", **overrides) -> Path:
    """A tiny-llama variant with seeded random float32 weights saved by transformers."""
    import transformers

    from lm_eval_perf.models.sources import load_architecture, transformers_config

    config = transformers_config(
        {**load_architecture("tiny-llama"), "num_hidden_layers": layers, **overrides}
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder, max_shard_size=shard)
    return folder


# -- the bundled SmolLM2: safetensors folder and GGUF file -----------------------------------------


def test_gguf_tensors_are_those_of_the_converted_folder(smollm2_dir):
    """The GGUF reader dequantizes each analysed weight to exactly the tensor the bundled conversion
    (transformers loading the whole GGUF) saved, so every ESD column is the same."""
    from lm_eval_perf.models.bundled import smollm2_gguf

    gguf, folder = open_checkpoint(str(smollm2_gguf())), open_checkpoint(str(smollm2_dir))
    skeleton = build_skeleton(gguf.config())
    from_gguf = plan_layers(skeleton, gguf.tensors(skeleton))
    skeleton = build_skeleton(folder.config())
    from_folder = plan_layers(skeleton, folder.tensors(skeleton))
    assert [(x.name, x.M, x.N, x.params) for x in from_gguf] == [
        (x.name, x.M, x.N, x.params) for x in from_folder
    ]
    assert {x.ref.dtype for x in from_gguf} <= {"gguf:Q4_1", "gguf:Q8_0", "gguf:Q6_K", "gguf:F16"}
    cpu = torch.device("cpu")
    for a, b in zip(from_gguf, from_folder):
        assert torch.equal(gguf.read(a.ref, cpu), folder.read(b.ref, cpu)), a.name


# -- shards and memory -----------------------------------------------------------------------------


def _esd_child(model: Path, out: Path, metadata: str) -> tuple[int, int]:
    """``lm-eval-perf esd`` in a child process on the CPU: (exit status, its peak RSS in bytes)."""
    command = [sys.executable, "-m", "lm_eval_perf.cli", "esd", "--model", str(model), "--out", str(out)]
    with (out.parent / f"{out.name}.log").open("w+") as log:  # a file: a full pipe cannot block it
        child = subprocess.Popen([*command, "--device", "cpu", "--metadata", metadata], stderr=log)
        _, status, usage = os.wait4(child.pid, 0)  # reaped here, with its resource usage
        child.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        assert status == 0, log.read()[-2000:]
    return status, usage.ru_maxrss * 1024  # Linux reports kilobytes


def _csv_values(out: Path) -> list[list[str]]:
    (path,) = out.glob("esd_layers_*.csv")
    with path.open(newline="") as handle:
        return [[row[c] for c in COLUMNS] for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_sharded_checkpoint_streams_in_memory_far_below_its_size(tmp_path):
    shape = {"hidden_size": 128, "intermediate_size": 8192, "vocab_size": 256, "tie_word_embeddings": False}
    sharded = save_tiny(tmp_path / "sharded", layers=24, shard="8MB", **shape)
    whole = save_tiny(tmp_path / "whole", layers=24, **shape)
    small = save_tiny(tmp_path / "small", layers=1, **shape)
    size = sum(p.stat().st_size for p in sharded.glob("*.safetensors"))
    assert size > 250e6 and len(list(sharded.glob("*.safetensors"))) > 30
    metadata = json.dumps({"batch_gib": 0.01})  # on a CPU the pending batch is host memory too
    _, peak_sharded = _esd_child(sharded, tmp_path / "out-sharded", metadata)
    _, peak_whole = _esd_child(whole, tmp_path / "out-whole", metadata)
    _, peak_small = _esd_child(small, tmp_path / "out-small", metadata)  # imports, skeleton, one layer
    # Holding the model, or a file open while its tensors are read (its pages stay resident), fails.
    assert peak_sharded - peak_small < size / 4 and peak_whole - peak_small < size / 4
    assert _csv_values(tmp_path / "out-sharded") == _csv_values(tmp_path / "out-whole")
    (results,) = (tmp_path / "out-sharded").glob("results_*.json")
    stats = json.loads(results.read_text())["esd_stream"]
    assert stats["files"] == len(list(sharded.glob("*.safetensors"))) and stats["layers"] == 24 * 7 + 1


# -- adapters --------------------------------------------------------------------------------------

ADAPTERS = {
    "llama-rslora-patterns": (
        None,
        {
            "r": 4,
            "lora_alpha": 8,
            "target_modules": ["q_proj", "v_proj", "down_proj"],
            "use_rslora": True,
            "rank_pattern": {"down_proj": 2},
            "alpha_pattern": {"v_proj": 3},
        },
    ),
    "gpt2-fan-in-fan-out": (
        {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 320, "n_positions": 64},
        {"r": 4, "lora_alpha": 16, "target_modules": ["c_attn", "c_fc"], "fan_in_fan_out": True},
    ),
}


@pytest.mark.parametrize("case", list(ADAPTERS))
def test_adapter_merged_per_tensor_equals_merge_and_unload(tmp_path, case):
    peft = pytest.importorskip("peft")
    import transformers

    arch, lora = ADAPTERS[case]
    if arch is None:
        base = save_tiny(tmp_path / "base", vocab_size=320)
    else:
        values = dict(arch)
        config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
        torch.manual_seed(0)
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "base")
        base = tmp_path / "base"
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft.get_peft_model(model, peft.LoraConfig(init_lora_weights=False, **lora)).save_pretrained(
        tmp_path / "adapter"
    )
    fresh = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").merge_and_unload()
    expected = analyze(merged).rows

    checkpoint = open_checkpoint(str(base))
    streamed = analyze_checkpoint(checkpoint, adapter=open_adapter(str(tmp_path / "adapter"))).result.rows
    plain = analyze_checkpoint(checkpoint).result.rows
    assert_same_rows(streamed, expected, rel=1e-12)
    changed = {a["longname"].rsplit(".", 1)[-1] for a, b in zip(streamed, plain) if a["norm"] != b["norm"]}
    assert changed == set(lora["target_modules"])


def test_adapters_that_cannot_merge_per_tensor_are_refused(tmp_path):
    (tmp_path / "dora").mkdir()
    (tmp_path / "dora" / "adapter_config.json").write_text('{"peft_type": "LORA", "use_dora": true}')
    (tmp_path / "ia3").mkdir()
    (tmp_path / "ia3" / "adapter_config.json").write_text('{"peft_type": "IA3"}')
    for name, message in (("dora", "DoRA"), ("ia3", "only LoRA"), ("nothing-here", "does not exist")):
        with pytest.raises(UserInputError, match=message):
            open_adapter(str(tmp_path / name))


# -- the esd task with stream: true ----------------------------------------------------------------


def test_task_with_stream_true_reads_the_checkpoint_and_gives_the_same_rows(tiny_model_dir, tmp_path):
    from lm_eval_perf.models.perf_hf import PerfHFLM
    from lm_eval_perf.tasks.esd import runner

    lm = PerfHFLM(
        pretrained=str(tiny_model_dir),
        device="cpu",
        dtype="float32",
        artifacts_dir=str(tmp_path),
        print_summary=False,
    )
    loaded, streamed = runner.run(lm, {}), runner.run(lm, {"stream": True, "batch_gib": 0.001})
    tables = []
    for result in (loaded, streamed):
        with open(result["artifacts"]["esd_layers_csv"], newline="") as handle:
            tables.append([{k: v for k, v in row.items()} for row in csv.DictReader(handle)])
    assert tables[0] == tables[1]
    assert streamed["metrics"]["read_seconds"] >= 0 and streamed["metrics"]["host_rss_peak_gib"] > 0
    assert "read_seconds" not in loaded["metrics"]
    with pytest.raises(UserInputError, match="stream"):
        runner.run(lm, {"stream": "maybe"})


# -- bad input -------------------------------------------------------------------------------------


def test_a_checkpoint_missing_quantizing_or_garbling_a_layer_weight_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_tiny(tmp_path / "model")
    weights = load_file(folder / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if "layers.1.mlp.up_proj" not in k}, folder / "model.safetensors"
    )
    with pytest.raises(UserInputError, match=r"no weight for layer model\.layers\.1\.mlp\.up_proj"):
        analyze_checkpoint(open_checkpoint(str(folder)))
    weights["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(64, 64, dtype=torch.int8)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(UserInputError, match="stored as I8"):
        analyze_checkpoint(open_checkpoint(str(folder)))
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)  # a truncated or foreign file
    with pytest.raises(UserInputError, match="not a readable safetensors file"):
        analyze_checkpoint(open_checkpoint(str(folder)))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "./no-such-model"], "model path ./no-such-model does not exist"),
        (["--model", "arch:tiny-llama"], "random weights and no checkpoint"),
        (["--model", "bundled:smollm2", "--metadata", "{not json"], "--metadata is not valid JSON"),
        (["--model", "bundled:smollm2", "--metadata", '{"fix_finger": "xmin_mid"}'], "did you mean"),
        (["--model", "bundled:smollm2", "--metadata", '{"eig_solver": "magic"}'], "eig_solver"),
        (["--model", "bundled:smollm2", "--device", "cpu", "--gpu-memory-fraction", "0.5"], "CUDA --device"),
        (["--model", "org/not-cached-here"], "cannot fetch org/not-cached-here"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "lm_eval_perf.cli", "esd", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lm-eval-perf: error: ") and message in lines[0]
    assert not out.exists()


# -- a model list through batch_eval ---------------------------------------------------------------


@pytest.mark.slow
def test_model_list_runs_as_streamed_jobs_merges_tables_and_resumes(tmp_path):
    from lm_eval_perf.records.layout import Layout

    save_tiny(tmp_path / "one", layers=1)
    save_tiny(tmp_path / "two", layers=2)
    save_tiny(tmp_path / "cut", layers=1)  # a download that stopped half-way: fails as a job, not as input
    (shard,) = (tmp_path / "cut").glob("*.safetensors")
    shard.write_bytes(shard.read_bytes()[:1000])
    (tmp_path / "models.csv").write_text(
        "model,revision,source_model,name\n./one,,,\n./two,,,two\n./cut,,,\n"
    )
    config = tmp_path / "esd.yaml"
    config.write_text(
        "output_dir: ./out\nworkers: 2\nprecisions: [bfloat16]\nmodels: [{models_csv: models.csv}]\n"
        "tasks: [{name: esd, metadata: {stream: true, fix_fingers: xmin_mid}}]\n"
    )
    command = [sys.executable, str(Path(__file__).parents[1] / "batch_eval.py"), "--config", str(config)]
    first = subprocess.run([*command, "--no-progress"], capture_output=True, text=True)
    assert first.returncode == 1, first.stdout + first.stderr
    layout = Layout(tmp_path / "out")
    for name, layers in (("one", 1), ("two", 2)):
        folder = layout.result_dir(f"{name}/default/esd")
        (table,) = folder.glob("esd_layers_*.csv")
        assert len(list(csv.DictReader(table.open()))) == 7 * layers + 1
        (results,) = folder.glob("results_*.json")
        assert json.loads(results.read_text())["results"]["esd"]["num_layers,none"] == 7 * layers + 1
    (failure,) = [json.loads(line) for line in layout.failures.read_text().splitlines()]
    assert failure["key"] == "cut/default/esd" and "safetensors" in failure["error"], failure

    merged = {p.name: list(csv.DictReader(p.open())) for p in (layout.root / "esd").glob("*.csv")}
    assert sorted(merged) == [
        "esd_alpha_histograms.csv",
        "esd_layer_types.csv",
        "esd_layers.csv",
        "esd_models.csv",
    ]
    assert len(merged["esd_layers.csv"]) == 8 + 15 and {r["model"] for r in merged["esd_models.csv"]} == {
        "one",
        "two",
    }
    types = {r["model"]: r for r in merged["esd_layer_types.csv"]}
    two = [r for r in merged["esd_layers.csv"] if r["model"] == "two" and r["layer_type"] == "mlp.up_proj"]
    assert len(two) == 2
    assert float(types["two"]["mlp.up_proj"]) == pytest.approx(sum(float(r["alpha"]) for r in two) / 2)
    histogram = {r["model"]: r for r in merged["esd_alpha_histograms.csv"]}
    assert sum(int(v) for k, v in histogram["two"].items() if k.startswith("alpha_")) == 15

    finished = sorted(p.stat().st_mtime_ns for p in (layout.root / "results").rglob("*") if p.is_file())
    again = subprocess.run([*command, "--no-progress"], capture_output=True, text=True)
    assert "3 jobs on local CPU, 2 at a time: 2 done before, 0 to run, 1 failed before" in again.stdout
    assert again.returncode == 1
    assert (
        sorted(p.stat().st_mtime_ns for p in (layout.root / "results").rglob("*") if p.is_file()) == finished
    )


def test_a_hub_id_resolves_through_the_hub_snapshot_and_reads_only_indexed_shards(tmp_path):
    """``--model org/name`` goes through huggingface_hub's snapshot download; offline it resolves from
    a hub cache laid out here (no network): the shards the index names are read, not an extra copy."""
    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "0123abcd"
    save_tiny(snapshot, shard="300KB", vocab_size=320)
    shards = sorted(snapshot.glob("model-*.safetensors"))
    assert len(shards) > 1
    (snapshot / "consolidated.safetensors").write_bytes(b"not read: not in the index")
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("0123abcd")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "lm_eval_perf.cli", "esd", "--model", "org/tiny", "--device", "cpu"]
    done = subprocess.run([*command, "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (results,) = (tmp_path / "out").glob("results_*.json")
    record = json.loads(results.read_text())
    assert record["config"]["model_args"] == {"pretrained": "org/tiny"}
    assert record["esd_stream"]["files"] == len(shards) and record["esd_stream"]["layers"] == 2 * 7 + 1
