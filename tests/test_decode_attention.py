"""Grouped-query attention of one decoded token under torch.compile (tasks/throughput/attention.py)."""

from __future__ import annotations

import pytest
import torch
import transformers

from lm_eval_perf.models.sources import load_architecture, transformers_config
from lm_eval_perf.tasks.throughput.attention import NAME, packed_decode_attention
from lm_eval_perf.tasks.throughput.generation import _decode_step

CONFIG = load_architecture("tiny-llama")
HEADS, KV_HEADS = CONFIG["num_attention_heads"], CONFIG["num_key_value_heads"]
PROMPT = torch.randint(0, 1000, (1, 7), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def model() -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    config = transformers_config(CONFIG)
    config._attn_implementation = "sdpa"
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _prefill_then_step(model) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a prompt on a static cache with room to spare, then of one decoded token."""
    cache = transformers.StaticCache(config=model.config, max_cache_len=16)
    with torch.no_grad():
        prefill = model(input_ids=PROMPT, past_key_values=cache, use_cache=True).logits
        token = prefill[:, -1:].argmax(-1)
        step = model(input_ids=token, past_key_values=cache, use_cache=True).logits
    return prefill, step


def _attention_key_heads(model) -> list[int]:
    """For each attention call in the graph Dynamo captures for one decode step: the key's heads."""
    heads: list[int] = []

    def capture(gm, example_inputs):
        for node in gm.graph.nodes:
            if node.target is torch._C._nn.scaled_dot_product_attention:
                heads.append(node.args[1].meta["example_value"].shape[1])
        return gm.forward

    cache = transformers.StaticCache(config=model.config, max_cache_len=16)
    eos = torch.tensor([2])
    with torch.no_grad():
        model(input_ids=PROMPT, past_key_values=cache, use_cache=True)
        torch._dynamo.reset()
        torch.compile(_decode_step, backend=capture, dynamic=False)(model, cache, PROMPT[:, :1], eos)
    torch._dynamo.reset()
    return heads


def test_packed_attention_gives_the_sdpa_logits_of_a_prefill_and_a_decoded_token(model):
    prefill, step = _prefill_then_step(model)
    with packed_decode_attention(model):
        packed_prefill, packed_step = _prefill_then_step(model)
    assert torch.equal(prefill, packed_prefill)  # several query tokens: transformers' sdpa itself
    torch.testing.assert_close(packed_step, step, rtol=1e-5, atol=1e-5)


def test_compiled_decode_step_attends_to_the_kv_heads_without_repeating_them(model):
    assert KV_HEADS < HEADS
    assert _attention_key_heads(model) == [HEADS] * CONFIG["num_hidden_layers"]  # transformers' repeat_kv
    with packed_decode_attention(model):
        assert _attention_key_heads(model) == [KV_HEADS] * CONFIG["num_hidden_layers"]


def test_the_model_gets_its_attention_back_and_other_implementations_are_left_alone(model):
    with packed_decode_attention(model):
        assert model.config._attn_implementation == NAME
    assert model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")
    try:
        with packed_decode_attention(model):
            assert model.config._attn_implementation == "eager"
    finally:
        model.set_attn_implementation("sdpa")
