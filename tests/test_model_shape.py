"""What MFU and MBU count of a model, read from real transformers models built from configs (on the
meta device where only the shape matters): embedding and lm_head sizes, attention layout, sliding
windows, latent attention, the KV cache's dtype; decode bytes and FLOPs recomputed by hand."""

from __future__ import annotations

import pytest
import torch
import transformers

from lm_eval_perf.models.precision import resolve_precision
from lm_eval_perf.models.quant.kernels import quantize_model
from lm_eval_perf.models.shape import model_shape
from lm_eval_perf.models.sources import load_architecture, transformers_config
from lm_eval_perf.monitor import metrics

SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
}


def _shape(config, dtype=torch.float32, **kwargs):
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model_shape(model, **kwargs)


def test_presets_split_params_into_layers_embedding_and_lm_head():
    # Qwen2.5-7B: untied, vocabulary 152064 x hidden 3584 in both the embedding and lm_head
    untied = _shape(transformers_config(load_architecture("qwen2.5-7b")), torch.bfloat16)
    assert untied.embedding_params == untied.lm_head_params == 152064 * 3584 and not untied.lm_head_tied
    assert untied.body_params == untied.params - 2 * 152064 * 3584
    # Qwen2.5-0.5B ties them: one matrix of 151936 x 896, counted once in params
    tied = _shape(transformers_config(load_architecture("qwen2.5-0.5b")), torch.bfloat16)
    assert tied.lm_head_tied and tied.body_params == tied.params - 151936 * 896
    # a prefill of 128 tokens: the old 2 * params * tokens overstated Qwen2.5-0.5B by more than a third
    assert 2 * tied.params * 128 / metrics.forward_flops(tied, [128], all_logits=False) > 1.35
    assert (tied.n_heads, tied.head_dim, tied.compute_dtype) == (14, 64, "bfloat16")


def test_a_quantized_lm_head_counts_its_logical_parameters():
    config = transformers_config({**load_architecture("tiny-llama"), "tie_word_embeddings": False})
    model = transformers.AutoModelForCausalLM.from_config(config)
    spec = resolve_precision("int4", "tinygemm", 32, "float32", quantize_lm_head=True)
    quantize_model(model, spec)
    shape = model_shape(model)
    assert shape.lm_head_params == shape.embedding_params == 49152 * 64
    assert not shape.lm_head_tied and shape.compute_dtype == "float32"


def test_kv_bytes_use_the_cache_dtype_not_the_weights_dtype():
    config = transformers_config(load_architecture("tiny-llama"))
    fp32 = _shape(config, torch.float32)
    under_autocast = _shape(config, torch.float32, autocast_dtype=torch.bfloat16)
    # 2 layers x 2 KV heads x 16 dims x (K and V)
    assert fp32.kv_bytes_per_token == 2 * 2 * 16 * 2 * 4
    assert under_autocast.kv_bytes_per_token == 2 * 2 * 16 * 2 * 2
    assert under_autocast.compute_dtype == "bfloat16"


def test_mistral_sliding_window_caps_the_kv_each_decode_step_reads():
    shape = _shape(transformers.MistralConfig(sliding_window=8, **SMALL))
    assert shape.layer_windows == (8, 8, 8)
    per_layer = 2 * 2 * 16 * 4  # K and V of 2 heads x 16 dims, fp32
    # prompt 6, 4 steps: positions 7, 8, 9, 10 read 7, 8, 8, 8 keys in each of the 3 layers
    assert (
        metrics.decode_bytes(shape, 2, 6, 4) == 4 * shape.weight_bytes + 2 * 3 * (7 + 8 + 8 + 8) * per_layer
    )
    # FLOPs of the same steps: per token the layers and lm_head, per (query, key) pair 4 heads x 2 x (16 + 16)
    per_token = 2 * shape.body_params + 2 * shape.lm_head_params
    pairs = 3 * (7 + 8 + 8 + 8)
    assert metrics.decode_flops(shape, 2, 6, 4) == 2 * (4 * per_token + 4 * 2 * 32 * pairs)


def test_qwen2_max_window_layers_and_gemma3_layer_types_give_per_layer_windows():
    qwen = _shape(
        transformers.Qwen2Config(use_sliding_window=True, sliding_window=8, max_window_layers=1, **SMALL)
    )
    assert qwen.layer_windows == (None, 8, 8)
    gemma = _shape(
        transformers.Gemma3TextConfig(sliding_window=8, head_dim=16, **{**SMALL, "num_hidden_layers": 6})
    )
    assert gemma.layer_windows == (8, 8, 8, 8, 8, None)
    # a prefill of 10 tokens: full layers hold 10 positions, sliding ones 8
    assert metrics.cached_tokens(gemma, 10) == 5 * 8 + 10
    # causal pairs of a 10-token prompt: 55 on the full layer, 1+...+8 + 8 + 8 = 52 on a sliding one
    assert metrics.key_reads(gemma, 1, 10) == 55 + 5 * 52


def test_latent_attention_counts_the_cached_latents_and_marks_the_figures_as_estimates():
    config = transformers.DeepseekV3Config(
        **{**SMALL, "num_key_value_heads": 4},
        kv_lora_rank=32,
        q_lora_rank=None,
        qk_rope_head_dim=8,
        qk_nope_head_dim=16,
        v_head_dim=16,
        n_routed_experts=4,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        moe_intermediate_size=32,
        n_group=1,
        topk_group=1,
    )
    shape = _shape(config)
    # one latent of kv_lora_rank + qk_rope_head_dim elements per token and layer, fp32
    assert shape.kv_bytes_per_token == 3 * (32 + 8) * 4
    assert shape.attention_dim == 16 + 8 + 16
    estimates = shape.estimates()
    assert "latent attention" in estimates["mbu"] and "mixture of experts" in estimates["mbu"]
    assert "2 of 4" in estimates["mfu"]


def test_a_shape_without_embedding_or_attention_layout_says_its_mfu_is_an_estimate():
    shape = metrics.ModelShape(params=1000, weight_bytes=2000)
    assert metrics.forward_flops(shape, [10], all_logits=False) == 2 * 1000 * 10
    assert "embedding and lm_head sizes unknown" in shape.estimates()["mfu"]
    assert "attention layout unknown" in shape.estimates()["mfu"]


@pytest.mark.parametrize(
    ("first", "last", "window", "expected"), [(1, 5, None, 15), (3, 6, 4, 3 + 4 + 4 + 4), (9, 10, 4, 8)]
)
def test_keys_read_by_positions_sum_min_of_position_and_window(first, last, window, expected):
    shape = metrics.ModelShape(params=1, weight_bytes=1, n_layers=1, layer_windows=(window,))
    assert metrics.key_reads(shape, first, last) == expected


def _classifier_shape(preset: str):
    config = transformers_config(load_architecture(preset))
    with torch.device("meta"):
        model = transformers.AutoModelForSequenceClassification.from_config(config, dtype=torch.bfloat16)
    return model_shape(model)


def test_an_encoder_classifier_counts_every_embedding_table_bidirectional_pairs_and_a_head_per_row():
    shape = _classifier_shape("distilbert-base")
    assert shape.params == 66_955_010 and shape.bidirectional and shape.head_pooled
    assert shape.embedding_params == (30522 + 512) * 768  # tokens and learned positions: gathers
    assert shape.lm_head_params == (768 * 768 + 768) + (768 * 2 + 2)  # pre_classifier + classifier
    rows = [128, 77]
    pairs = 6 * (128 * 128 + 77 * 77)  # every position attends to every key of its row, in 6 layers
    expected = 2 * shape.body_params * 205 + 2 * shape.lm_head_params * 2 + 2 * 12 * 128 * pairs
    assert metrics.forward_flops(shape, rows, all_logits=True) == pytest.approx(expected)
    assert metrics.forward_flops(shape, rows, all_logits=False) == pytest.approx(expected)


def test_a_decoder_classifier_runs_its_score_head_at_every_position_under_causal_attention():
    shape = _classifier_shape("qwen2.5-0.5b-cls")
    assert not shape.bidirectional and not shape.head_pooled and not shape.lm_head_tied
    assert shape.embedding_params == 151936 * 896 and shape.lm_head_params == 896 * 23
    expected = 2 * (shape.body_params + shape.lm_head_params) * 64 + 2 * 14 * 128 * 24 * 64 * 65 / 2
    assert metrics.forward_flops(shape, [64], all_logits=True) == pytest.approx(expected)


@pytest.mark.parametrize("half_window", [None, 0, 1, 3, 9, 20])
def test_bidirectional_window_pairs_match_a_count_of_the_mask(half_window):
    positions = 10
    mask = [(q, k) for q in range(positions) for k in range(positions)]
    allowed = sum(half_window is None or abs(q - k) <= half_window for q, k in mask)
    shape = metrics.ModelShape(
        params=0, weight_bytes=0, n_layers=1, layer_windows=(half_window,), bidirectional=True
    )
    assert metrics.attention_pairs(shape, positions) == allowed


def test_learned_position_tables_are_gathers_not_multiplies():
    config = transformers.GPT2Config(
        vocab_size=1000, n_positions=256, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
    )
    shape = _shape(config)
    assert shape.embedding_params == (1000 + 256) * 64  # wte and wpe: no FLOPs per position
    assert shape.lm_head_tied and shape.body_params == shape.params - (1000 + 256) * 64
