"""SVD truncation (svd_ratio / svd_rank / svd_targets), compressed checkpoints, the compress command."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import transformers
from safetensors.torch import save_file

from lm_eval_perf.cli import main
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models.compress.svd import LowRankLinear
from lm_eval_perf.models.perf_hf import PerfHFLM
from lm_eval_perf.models.shape import parameter_count, weight_bytes
from lm_eval_perf.models.sources import load_architecture

TINY = load_architecture("tiny-llama")


def _load(path, **args) -> PerfHFLM:
    return PerfHFLM(
        pretrained=str(path), dtype="float32", device="cpu", batch_size=1, print_summary=False, **args
    )


IDS = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))


def _logits(lm: PerfHFLM) -> torch.Tensor:
    with torch.no_grad():
        return lm.model(IDS).logits


def _linear_shapes() -> list[tuple[int, int]]:
    """(out, in) of the seven linears of one tiny-llama layer, from its config."""
    h, i = TINY["hidden_size"], TINY["intermediate_size"]
    kv = TINY["num_key_value_heads"] * h // TINY["num_attention_heads"]
    return [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]


def test_full_rank_factorization_reproduces_base_logits(tiny_model_dir):
    base, full = _load(tiny_model_dir), _load(tiny_model_dir, svd_rank=10_000)
    assert sum(isinstance(m, LowRankLinear) for m in full.model.modules()) == 7 * TINY["num_hidden_layers"]
    assert torch.allclose(_logits(full), _logits(base), atol=1e-4, rtol=1e-4)


def _compiled_ops(layer: torch.nn.Module, *inputs: torch.Tensor) -> list[set[str]]:
    """The call targets of the graph Dynamo captures for each input, after checking the compiled
    output against the eager one."""
    graphs: list[set[str]] = []

    def capture(gm, example_inputs):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op.startswith("call_")})
        return gm.forward

    compiled = torch.compile(layer, backend=capture, fullgraph=True)
    with torch.no_grad():
        for x in inputs:
            assert torch.allclose(compiled(x), layer(x), atol=1e-5, rtol=1e-5)
    return graphs


def test_compiled_single_token_path_is_a_float32_reduction_with_the_eager_result():
    layer = LowRankLinear(64, 48, 7, bias=True)
    graphs = _compiled_ops(layer, torch.randn(1, 1, 64), torch.randn(2, 3, 64))
    single, batched = graphs[0], graphs[-1]
    assert not any("linear" in t for t in single) and any("sum" in t for t in single)
    assert any("pad" in t for t in single)  # rank 7 reduces over the aligned width 8
    assert any("linear" in t for t in batched)


def test_compiled_single_token_path_computes_a_normed_input_once_not_per_output_row(monkeypatch):
    """Inductor (CPU code here) would redo the RMSNorm inside every reduction that reads its output."""
    from torch._inductor.utils import run_and_get_code

    from lm_eval_perf.models.compress import svd

    torch.manual_seed(0)
    layers = [LowRankLinear(64, m, r, bias=False) for m, r in ((48, 7), (16, 5), (16, 5))]  # q, k, v
    gain, h = torch.randn(64), torch.randn(1, 1, 64)

    def block(x):
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * gain
        return [layer(normed) for layer in layers]

    def norms_in_compiled_code() -> int:
        torch._dynamo.reset()
        with torch.no_grad():
            out, (code,) = run_and_get_code(torch.compile(block, fullgraph=True), h)
            assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out, block(h)))
        return code.count("std::sqrt(")

    assert norms_in_compiled_code() == 1
    monkeypatch.setattr(svd, "stored_once", lambda x: x)
    assert norms_in_compiled_code() > 1


def test_odd_rank_up_factor_rows_are_aligned_with_zero_padding_counted_in_bytes_not_parameters():
    layer = LowRankLinear(64, 48, 7, bias=True)
    with torch.no_grad():
        layer.up.weight.copy_(torch.randn(48, 7))
        layer.down.weight.copy_(torch.randn(7, 64))
    assert layer.up.weight.shape == (48, 7) and layer.up.weight.stride() == (8, 1)
    assert torch.count_nonzero(layer.up.weight.as_strided((48, 8), (8, 1))[:, 7]) == 0
    assert parameter_count(layer) == 7 * (64 + 48) + 48
    assert weight_bytes(layer) == (7 * 64 + (47 * 8 + 7) + 48) * 4  # up spans 47 padded rows + 7
    dense = LowRankLinear(64, 48, 8, bias=False)
    assert dense.up.weight.is_contiguous() and weight_bytes(dense) == 8 * (64 + 48) * 4


def test_dense_copy_of_a_padded_layer_takes_the_unpadded_compiled_path():
    layer = LowRankLinear(64, 48, 7, bias=True).to(torch.float64)
    assert layer.up.weight.is_contiguous()
    (single,) = _compiled_ops(layer, torch.randn(1, 1, 64, dtype=torch.float64))
    assert not any("pad" in t for t in single) and any("sum" in t for t in single)


def test_ratio_one_is_the_untouched_model(tiny_model_dir):
    base, same = _load(tiny_model_dir), _load(tiny_model_dir, svd_ratio=1.0)
    assert not any(isinstance(m, LowRankLinear) for m in same.model.modules())
    assert torch.equal(_logits(same), _logits(base))
    block = same.plan.record(same.model)["compression"]
    assert block["compression_ratio"] == 1.0 and block["params"] == base.shape.params


def test_half_ratio_keeps_linear_parameters_of_the_rank_formula(tiny_model_dir):
    base, half = _load(tiny_model_dir), _load(tiny_model_dir, svd_ratio=0.5)
    per_layer = sum(math.floor(0.5 * m * n / (m + n)) * (m + n) - m * n for m, n in _linear_shapes())
    assert half.shape.params == base.shape.params + TINY["num_hidden_layers"] * per_layer
    block = half.plan.record(half.model)["compression"]
    assert block["compression_ratio"] == 0.5 and block["layers"] == 7 * TINY["num_hidden_layers"]
    assert block["params"] == half.shape.params and block["weight_bytes"] == half.shape.weight_bytes


def test_targets_select_layers_by_pattern(tiny_model_dir):
    lm = _load(tiny_model_dir, svd_ratio=0.5, svd_targets="*.mlp.*|re:.*\\.q_proj")
    names = {n for n, m in lm.model.named_modules() if isinstance(m, LowRankLinear)}
    assert names and all(n.endswith(("gate_proj", "up_proj", "down_proj", "q_proj")) for n in names)
    assert len(names) == 4 * TINY["num_hidden_layers"]


@pytest.mark.parametrize(
    "args",
    [
        {"svd_ratio": 0.0},
        {"svd_ratio": 1.5},
        {"svd_ratio": -0.2},
        {"svd_targets": "*.nothing_here", "svd_ratio": 0.5},
    ],
)
def test_bad_ratio_or_unmatched_target_is_one_line_error(tiny_model_dir, args):
    with pytest.raises(UserInputError) as error:
        _load(tiny_model_dir, **args)
    assert "\n" not in str(error.value) and (
        "svd_ratio" in str(error.value) or "svd_targets" in str(error.value)
    )


def test_compress_command_output_reloads_to_identical_outputs(tmp_path, tiny_model_dir):
    out = tmp_path / "svd"
    assert (
        main(
            [
                "compress",
                "--model",
                str(tiny_model_dir),
                "--svd-ratio",
                "0.5",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    config = transformers.AutoConfig.from_pretrained(out)
    assert config.lm_eval_perf_compression["ratio"] == 0.5
    computed, reloaded = _load(tiny_model_dir, svd_ratio=0.5), _load(out)
    assert torch.equal(_logits(reloaded), _logits(computed))
    block = reloaded.plan.record(reloaded.model)["compression"]
    assert block["source"] == "hf_dir" and block["compression_ratio"] == 0.5
    # (b) the low-rank factors as a state dict applied to the base model
    factors = {k: v for k, v in reloaded.model.state_dict().items() if ".down." in k or ".up." in k}
    save_file({k: v.contiguous() for k, v in factors.items()}, str(tmp_path / "factors.safetensors"))
    applied = _load(tiny_model_dir, compressed=str(tmp_path / "factors.safetensors"))
    assert torch.equal(_logits(applied), _logits(reloaded))
    assert applied.plan.record(applied.model)["compression"]["source"] == "state_dict"


def test_the_compressed_folder_gets_the_modes_of_new_files_under_the_umask(tmp_path, tiny_model_dir):
    out = tmp_path / "svd"
    previous = os.umask(0o027)  # not the usual 022: the modes must follow the umask, not be fixed
    try:
        argv = ["compress", "--model", str(tiny_model_dir), "--svd-ratio", "0.5", "--out", str(out)]
        assert main([*argv, "--device", "cpu"]) == 0
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [out, *out.iterdir()]}
    assert modes.pop("svd") == 0o750  # mkdtemp's private 0700 was not kept
    assert modes["model.safetensors"] == 0o640  # safetensors writes 0600
    assert set(modes.values()) == {0o640}


@pytest.mark.slow  # runs the lm_eval CLI
def test_pickled_model_needs_allow_pickle(tmp_path, tiny_model_dir):
    compressed = _load(tiny_model_dir, svd_ratio=0.5)
    path = tmp_path / "svd_llm.pt"
    torch.save({"model": compressed.model, "tokenizer": None}, path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval_perf.cli",
            "--model",
            "perf-hf",
            "--model_args",
            f"pretrained={tiny_model_dir},compressed={path}",
            "--device",
            "cpu",
            "--tasks",
            "perplexity_local",
            "--limit",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("lm-eval-perf: error:") and "allow_pickle=true" in last and "runs code" in last
    trusted = _load(tiny_model_dir, compressed=str(path), allow_pickle=True)
    assert torch.equal(_logits(trusted), _logits(compressed))
    assert trusted.plan.record(trusted.model)["compression"]["source"] == "pickle"


@pytest.mark.slow
def test_smollm2_perplexity_worsens_as_ratio_falls(capsys):
    """Real weights at ratios 1.0, 0.8, 0.6: word perplexity of the local text (perplexity_local, sized
    for a 2-core CPU: a SmolLM2 forward pass of 300 tokens takes seconds there). BBH accuracy of a
    135M model is at chance level even uncompressed, so no accuracy is measured here."""
    import lm_eval

    from lm_eval_perf.registration import ensure_registered

    ensure_registered()
    perplexity = {}
    for ratio in (1.0, 0.8, 0.6):
        lm = PerfHFLM(
            pretrained="bundled:smollm2",
            dtype="float32",
            svd_ratio=ratio,
            device="cpu",
            batch_size=16,
            print_summary=False,
        )
        results = lm_eval.simple_evaluate(model=lm, tasks=["perplexity_local"], limit=10)["results"]
        perplexity[ratio] = results["perplexity_local"]["word_perplexity,none"]
    with capsys.disabled():
        print("\nSmolLM2 svd_ratio -> word perplexity:", perplexity)
    assert perplexity[1.0] < perplexity[0.8] < perplexity[0.6]
