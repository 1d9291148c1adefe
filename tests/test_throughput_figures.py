"""The throughput task's arithmetic: MFU/MBU/rates of a point by hand, and the bottleneck rule."""

from __future__ import annotations

import pytest
import torch
import transformers

from lm_eval_perf.models.shape import model_shape
from lm_eval_perf.models.sources import load_architecture, transformers_config
from lm_eval_perf.monitor import DevicePeaks
from lm_eval_perf.tasks.sweeps import bottleneck
from lm_eval_perf.tasks.throughput.figures import point_figures
from lm_eval_perf.tasks.throughput.generation import Iteration
from lm_eval_perf.tasks.throughput.sweep import Point


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    config = transformers_config(load_architecture("tiny-llama"))
    return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def test_tiny_llama_shape_matches_its_config_by_hand(tiny_model):
    # tiny-llama.json: hidden 64, intermediate 128, 2 layers, 4 heads, 2 KV heads, vocab 49152, tied.
    hidden, inter, layers, heads, kv_heads, vocab = 64, 128, 2, 4, 2, 49152
    head_dim = hidden // heads
    per_layer = (
        hidden * heads * head_dim  # q
        + 2 * hidden * kv_heads * head_dim  # k, v
        + heads * head_dim * hidden  # o
        + 3 * hidden * inter  # gate, up, down
        + 2 * hidden  # two RMSNorm weights
    )
    params = vocab * hidden + layers * per_layer + hidden  # embedding (tied head) + layers + final norm
    shape = model_shape(tiny_model)
    assert shape.params == params == 3_219_776
    buffers = sum(b.numel() * b.element_size() for b in tiny_model.buffers())  # RoPE frequencies
    assert shape.weight_bytes == 4 * params + buffers
    assert shape.kv_bytes_per_token == 2 * layers * kv_heads * head_dim * 4 == 512


def test_point_figures_follow_the_formulas_by_hand(tiny_model):
    shape = model_shape(tiny_model)
    peaks = DevicePeaks("test device", flops=1e12, bandwidth=1e11, source="test")
    batch, prompt, new = 2, 16, 9
    iterations = [
        Iteration(ttft_s=0.01, step_s=(0.002,) * (new - 1), e2e_s=0.03, tokens=torch.zeros(batch, new)),
        Iteration(ttft_s=0.03, step_s=(0.004,) * (new - 1), e2e_s=0.07, tokens=torch.zeros(batch, new)),
    ]
    figures, unavailable = point_figures(Point(batch, new), prompt, iterations, shape, peaks, 0.5)

    prefill_s, decode_s = 0.01 + 0.03, 8 * 0.002 + 8 * 0.004
    assert figures["prefill_tokens_per_s"] == pytest.approx(2 * batch * prompt / prefill_s)
    assert figures["decode_tokens_per_s"] == pytest.approx(2 * batch * (new - 1) / decode_s)
    assert figures["output_tokens_per_s"] == pytest.approx(2 * batch * new / 0.10)
    # tiny-llama: params 3_219_776, of which the tied embedding / lm_head 49152 x 64 = 3_145_728, so
    # 74_048 in the layers; attention per (query, key) pair and layer 2 * 4 heads * (16 + 16) = 256 FLOPs.
    body, head, pair = 74_048, 3_145_728, 2 * 2 * 4 * (16 + 16)  # pair: both layers
    # prefill of one row: 2 * body * P + 2 * head (one logit) + pairs P(P+1)/2 = 136
    prefill_row = 2 * body * prompt + 2 * head + pair * 136
    assert figures["prefill_mfu"] == pytest.approx(2 * batch * prefill_row / prefill_s / 1e12)
    # each decode step reads all weights + the K/V of B sequences of mean length P + G/2 (512 B/token)
    step_bytes = shape.weight_bytes + batch * (prompt + new / 2) * 512
    assert figures["decode_mbu"] == pytest.approx(2 * (new - 1) * step_bytes / decode_s / 1e11)
    # decode step k (1..8) of one row: 2 * body + 2 * head + the P + k keys it reads: sum 8 * 16 + 36 = 164
    decode_row = (new - 1) * (2 * body + 2 * head) + pair * 164
    assert figures["decode_mfu"] == pytest.approx(2 * batch * decode_row / decode_s / 1e12)
    assert figures["prefill_mbu"] == pytest.approx(
        2 * (shape.weight_bytes + batch * prompt * 512) / prefill_s / 1e11
    )
    assert figures["ttft_s"]["unit"] == "s"
    assert figures["ttft_s"]["p50"] == pytest.approx(0.02)
    assert figures["tpot_s"]["count"] == 16
    assert figures["tpot_s"]["p50"] == pytest.approx(0.003)
    assert figures["e2e_latency_s"]["max"] == pytest.approx(0.07)
    assert figures["bottleneck_phase"] == "decode"  # 48 ms of decode vs 40 ms of prefill
    assert figures["bottleneck"] == bottleneck.phase_bottleneck(
        figures["decode_mfu"], figures["decode_mbu"], 0.5
    )
    assert unavailable == {}


def test_missing_peaks_leave_utilization_none_with_a_reason(tiny_model):
    peaks = DevicePeaks("cpu", flops=None, bandwidth=None, source="unknown device")
    iteration = Iteration(ttft_s=0.01, step_s=(0.002, 0.002), e2e_s=0.02, tokens=torch.zeros(1, 3))
    figures, unavailable = point_figures(Point(1, 3), 8, [iteration], model_shape(tiny_model), peaks, 0.5)
    for key in ("prefill_mfu", "prefill_mbu", "decode_mfu", "decode_mbu", "bottleneck"):
        assert figures[key] is None
        assert unavailable[key]
    assert figures["decode_tokens_per_s"] == pytest.approx(2 / 0.004)


@pytest.mark.parametrize(
    ("mfu", "mbu", "label"),
    [
        (0.05, 0.80, bottleneck.MEMORY_BOUND),
        (0.70, 0.30, bottleneck.COMPUTE_BOUND),
        (0.20, 0.45, bottleneck.OVERHEAD_BOUND),
        (None, 0.90, None),
    ],
)
def test_phase_bottleneck_follows_the_roofline_rule(mfu, mbu, label):
    assert bottleneck.phase_bottleneck(mfu, mbu, threshold=0.5) == label


def test_point_bottleneck_is_the_label_of_the_longer_phase():
    assert bottleneck.point_bottleneck("compute-bound", 2.0, "memory-bound", 1.0) == (
        "compute-bound",
        "prefill",
    )
    assert bottleneck.point_bottleneck("compute-bound", 1.0, "memory-bound", 2.0) == (
        "memory-bound",
        "decode",
    )
