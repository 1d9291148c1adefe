"""precision= in perf-hf: dtype casts, calibration-free int4 on CPU, AWQ checkpoints, records, MCR."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import transformers

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models.perf_hf import PerfHFLM
from lm_eval_perf.models.precision import resolve_precision
from lm_eval_perf.models.quant.int4 import from_awq_tensors, quantize_rtn, to_awq_tensors
from lm_eval_perf.models.quant.kernels import TinyGemmInt4Linear, quantize_model
from lm_eval_perf.models.shape import weight_bytes
from lm_eval_perf.models.sources import load_architecture, transformers_config
from lm_eval_perf.report.mcr import mcr_from_results
from lm_eval_perf.tasks.perplexity_local.data import DEFAULT_TEXT

TINY = load_architecture("tiny-llama")
GROUP = 32


def _load(**args) -> PerfHFLM:
    return PerfHFLM(pretrained="arch:tiny-llama", device="cpu", batch_size=1, print_summary=False, **args)


def _next_token_accuracy(lm: PerfHFLM) -> float:
    """Fraction of the local text's tokens the model predicts (argmax of the previous position)."""
    ids = lm.tokenizer(DEFAULT_TEXT.read_text()[:2000], return_tensors="pt")["input_ids"][:, :256]
    with torch.no_grad():
        logits = lm.model(ids).logits
    return float((logits[0, :-1].argmax(-1) == ids[0, 1:]).float().mean())


def _expected_bytes(element: int, int4_compute: int | None = None) -> int:
    """Weight bytes from the tiny-llama config: embeddings (tied), norms, and per layer the seven
    linears - dense (element bytes each) or int4 (½ byte each + a scale and a zero per group)."""
    h, i, v, layers = (
        TINY["hidden_size"],
        TINY["intermediate_size"],
        TINY["vocab_size"],
        TINY["num_hidden_layers"],
    )
    kv = TINY["num_key_value_heads"] * h // TINY["num_attention_heads"]
    linears = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]  # (out, in)
    dense = v * h + (2 * layers + 1) * h
    if int4_compute is None:
        per_layer = sum(n * k for n, k in linears) * element
    else:
        per_layer = sum(n * k // 2 + (k // GROUP) * n * 2 * int4_compute for n, k in linears)
    return dense * element + layers * per_layer


def _rotary_bytes(lm: PerfHFLM) -> int:
    return sum(b.numel() * b.element_size() for name, b in lm.model.named_buffers() if "rotary" in name)


def test_casts_and_int4_weight_bytes_and_mcr_match_hand_computation():
    runs = {
        "float32": _load(precision="float32"),
        "bfloat16": _load(precision="bfloat16"),
        "int4": _load(precision="int4", group_size=GROUP, dtype="float32"),
    }
    expected = {
        "float32": _expected_bytes(4),
        "bfloat16": _expected_bytes(2),
        "int4": _expected_bytes(4, int4_compute=4),
    }
    records = {}
    for name, lm in runs.items():
        record = lm.plan.record(lm.model)
        records[name] = record
        assert record["precision"]["weight_bytes"] == expected[name] + _rotary_bytes(lm)
        assert lm.shape.weight_bytes == record["precision"]["weight_bytes"]
        assert record["precision"]["name"] == name
    int4 = records["int4"]["precision"]
    assert (int4["method"], int4["bits"], int4["group_size"], int4["backend"]) == (
        "rtn",
        4,
        GROUP,
        "tinygemm",
    )
    assert "_weight_int4pack_mm_for_cpu" in int4["kernel"]
    assert int4["quantized_layers"] == 7 * TINY["num_hidden_layers"]
    # logical parameter count is unchanged by packing
    assert runs["int4"].shape.params == runs["float32"].shape.params

    perf = {name: _next_token_accuracy(lm) for name, lm in runs.items()}
    results = {
        name: {
            "results": {"next_token": {"acc,none": perf[name]}},
            "config": {"efficiency": {"load": records[name]}},
        }
        for name in runs
    }
    got = mcr_from_results(results["float32"], results["int4"], "acc")
    by_hand = (expected["float32"] + _rotary_bytes(runs["float32"])) / (
        expected["int4"] + _rotary_bytes(runs["int4"])
    )
    if perf["float32"] > 0:
        assert got["mcr"] == pytest.approx(by_hand * perf["int4"] / perf["float32"])
    else:
        assert got["mcr"] is None


def test_unknown_precision_is_one_line_error():
    with pytest.raises(UserInputError) as error:
        _load(precision="int3")
    message = str(error.value)
    assert "\n" not in message and "int3" in message and "bfloat16" in message and "awq" in message


@pytest.mark.parametrize(
    ("args", "names"),
    [
        ({"precision": "nf4"}, ["CUDA", "tinygemm"]),
        ({"precision": "int4", "quant_backend": "gemlite"}, ["CUDA", "tinygemm"]),
        ({"precision": "awq", "quant_backend": "gptqmodel"}, ["CUDA", "tinygemm"]),
    ],
)
def test_gpu_only_method_on_cpu_names_alternatives(args, names):
    with pytest.raises(UserInputError) as error:
        _load(**args)
    message = str(error.value)
    assert "\n" not in message and all(name in message for name in names)


def test_awq_packing_roundtrips_and_cpu_kernel_matches_dequantized_weights():
    torch.manual_seed(0)
    weight, bias = torch.randn(96, 256), torch.randn(96)
    quantized = quantize_rtn(weight, 64)
    back = from_awq_tensors(**to_awq_tensors(quantized))
    assert torch.equal(back.q, quantized.q) and torch.equal(back.zeros, quantized.zeros)
    layer = TinyGemmInt4Linear(back, bias, torch.float32, "cpu")
    x = torch.randn(3, 5, 256)
    reference = torch.nn.functional.linear(x, back.dequantize(), bias)
    assert torch.allclose(layer(x), reference, atol=1e-4, rtol=1e-4)


def test_quantize_command_writes_awq_checkpoint_that_loads_as_int4(tmp_path, tiny_model_dir, bbh_dir):
    from lm_eval_perf.cli import main

    out = tmp_path / "awq"
    argv = ["quantize", "--method", "awq", "--model", str(tiny_model_dir), "--out", str(out)]
    argv += [
        "--bbh-dir",
        str(bbh_dir),
        "--group-size",
        str(GROUP),
        "--samples",
        "4",
        "--seq-len",
        "64",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    config = transformers.AutoConfig.from_pretrained(out).quantization_config
    assert (config["quant_method"], config["group_size"], config["version"]) == ("awq", GROUP, "gemm")
    lm = PerfHFLM(
        pretrained=str(out), precision="awq", dtype="float32", device="cpu", batch_size=1, print_summary=False
    )
    record = lm.plan.record(lm.model)["precision"]
    assert (record["method"], record["group_size"], record["backend"]) == ("awq", GROUP, "tinygemm")
    assert record["quantized_layers"] == 7 * TINY["num_hidden_layers"]
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.randint(0, 1000, (1, 32))
    with torch.no_grad():
        got, want = lm.model(ids).logits, base(ids).logits
    # int4 changes the logits, but a quantized model must stay close to the float one
    assert 0 < float((got - want).norm() / want.norm()) < 0.5
    assert main(argv) == 2  # --out exists now: one-line error, nothing overwritten


def test_quantize_of_random_weights_is_refused_on_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval_perf.cli",
            "quantize",
            "--method",
            "awq",
            "--model",
            "arch:tiny-llama",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "arch:" in result.stderr
    assert not (tmp_path / "x").exists()


def test_precision_math_of_rtn_group_quantizer():
    torch.manual_seed(1)
    weight = torch.randn(8, 64)
    quantized = quantize_rtn(weight, 32)
    step = quantized.scales.repeat_interleave(32, dim=1)
    assert quantized.q.max() <= 15 and quantized.zeros.max() <= 15
    # round-to-nearest: every weight is within half a step of its dequantized value (unless clamped)
    assert bool(((quantized.dequantize() - weight).abs() <= step / 2 + 1e-6).all())
    assert math.isclose(float(quantized.dequantize().abs().max()), float(weight.abs().max()), rel_tol=0.1)


def _tiny_model(tied: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers_config({**TINY, "tie_word_embeddings": tied})
    return transformers.AutoModelForCausalLM.from_config(config)


def test_quantize_lm_head_packs_an_untied_output_projection_and_keeps_a_tied_one():
    spec = resolve_precision("int4", "tinygemm", GROUP, "float32", quantize_lm_head=True)
    untied = _tiny_model(tied=False)
    dense_head = untied.lm_head.weight.detach().clone()
    before = weight_bytes(untied)
    result = quantize_model(untied, spec)
    assert "lm_head" in result.layers and isinstance(untied.lm_head, TinyGemmInt4Linear)
    h, v = TINY["hidden_size"], TINY["vocab_size"]
    int4_head = v * h // 2 + (h // GROUP) * v * 2 * 4  # packed nibbles + fp32 scale and zero per group
    without_head = _tiny_model(tied=False)
    quantize_model(without_head, resolve_precision("int4", "tinygemm", GROUP, "float32"))
    assert weight_bytes(untied) == weight_bytes(without_head) - v * h * 4 + int4_head < before
    x = torch.randn(3, h)
    expected = x @ quantize_rtn(dense_head, GROUP).dequantize().t()
    torch.testing.assert_close(untied.lm_head(x), expected, rtol=1e-3, atol=1e-3)

    tied = _tiny_model(tied=True)
    result = quantize_model(tied, spec)
    assert "lm_head" not in result.layers and result.skipped == {"lm_head": "tied to the input embeddings"}
    assert tied.lm_head.weight is tied.get_input_embeddings().weight


def test_quantize_lm_head_is_recorded_and_refused_for_casts():
    lm = _load(precision="int4", group_size=GROUP, dtype="float32", quantize_lm_head="true")
    precision = lm.plan.record(lm.model)["precision"]
    assert precision["lm_head_quantized"] is False  # tiny-llama ties lm_head to its embeddings
    assert precision["skipped_layers"] == {"lm_head": "tied to the input embeddings"}
    for args in ({"precision": "bfloat16"}, {}):
        with pytest.raises(UserInputError) as error:
            _load(quantize_lm_head="true", **args)
        assert "\n" not in str(error.value) and "quantize_lm_head" in str(error.value)


def _quantize(tmp_path, model, bbh_dir, *extra: str) -> subprocess.CompletedProcess:
    argv = ["quantize", "--method", "awq", "--model", str(model), "--out", str(tmp_path / "awq")]
    argv += ["--bbh-dir", str(bbh_dir), "--samples", "2", "--seq-len", "32", "--device", "cpu", *extra]
    return subprocess.run(
        [sys.executable, "-m", "lm_eval_perf.cli", *argv], capture_output=True, text=True, timeout=600
    )


def test_quantize_picks_the_largest_group_size_dividing_every_layer_and_says_which(
    tmp_path, tiny_model_dir, bbh_dir
):
    assert TINY["hidden_size"] == 64  # 128 does not divide it: the default must not be 128
    done = _quantize(tmp_path, tiny_model_dir, bbh_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "group size 64: the largest of 128, 64, 32 dividing every layer's in_features" in done.stdout
    config = transformers.AutoConfig.from_pretrained(tmp_path / "awq").quantization_config
    assert config["group_size"] == 64
    mode = 0o666 & ~_umask()  # what any new file gets, not safetensors' private 0600
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "awq").iterdir()}[
        "model.safetensors"
    ] == mode


def test_a_group_size_that_does_not_divide_a_layer_is_one_line_before_loading(
    tmp_path, tiny_model_dir, bbh_dir
):
    done = _quantize(tmp_path, tiny_model_dir, bbh_dir, "--group-size", "128")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "lm-eval-perf: error: --group-size 128 does not divide in_features 64 of "
        "model.layers.0.self_attn.q_proj; --group-size 64 divides every layer's"
    ]
    assert list(tmp_path.iterdir()) == []


def _umask() -> int:
    import os

    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_smollm2_s_layers_take_group_size_64_the_command_chooses_it_without_loading(smollm2_dir):
    from lm_eval_perf.models.quant.cli import choose_group_size, quantized_in_features

    features = quantized_in_features(str(smollm2_dir))  # a meta-device skeleton: no weights read
    assert set(features.values()) == {576, 1536} and len(features) == 7 * 30  # hidden 576: 128 cannot
    assert choose_group_size(features, None) == 64
