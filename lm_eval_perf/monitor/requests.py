"""Timed batches (requests to the model) and their per-kind summary.

A *batch* is one call into the model: one forward pass of a loglikelihood batch or one
``generate`` call. N in AL = Σ latency_i / N is the number of measured batches. Batches flagged as
warm-up are counted but left out of every latency and throughput figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lm_eval_perf.monitor import metrics
from lm_eval_perf.monitor.metrics import ModelShape
from lm_eval_perf.monitor.peaks import DevicePeaks
from lm_eval_perf.monitor.stats import Stats
from lm_eval_perf.monitor.window import Measurement

GENERATION_KINDS = frozenset({"generate_until", "generate"})


@dataclass(frozen=True)
class BatchRecord:
    """One timed batch. Seconds for times; tokens are counts over the whole batch.

    ``prompt_tokens`` excludes padding; ``prompt_len`` is the padded prompt length of each row, so
    ``batch_size * prompt_len`` tokens were computed. ``generated_tokens`` counts, per row, the tokens
    produced up to and including the one that ended the row; ``decode_steps`` the model's steps.
    """

    kind: str
    latency_s: float
    batch_size: int
    prompt_tokens: int
    generated_tokens: int = 0
    prompt_len: int | None = None
    decode_steps: int | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    warmup: bool = False


def summarize(
    kind: str,
    batches: Sequence[BatchRecord],
    window: Measurement | None,
    shape: ModelShape | None,
    peaks: DevicePeaks | None,
) -> dict:
    """The efficiency block of one request kind (see :mod:`lm_eval_perf.monitor.metrics`)."""
    measured = [b for b in batches if not b.warmup]
    unavailable: dict[str, str] = {}
    seconds = sum(b.latency_s for b in measured)
    samples = sum(b.batch_size for b in measured)
    prompt = sum(b.prompt_tokens for b in measured)
    generated = sum(b.generated_tokens for b in measured)
    is_generation = kind in GENERATION_KINDS
    latency = Stats.from_values([b.latency_s for b in measured], "s")
    tokens = prompt + generated

    block: dict = {
        "batches": len(measured),
        "warmup_batches": len(batches) - len(measured),
        "samples": samples,
        "prompt_tokens": prompt,
        "generated_tokens": generated if is_generation else None,
        "seconds": seconds,
        "al_s": latency.mean,
        "latency_s": latency.to_dict(),
        "latency_per_sample_s": metrics.ratio(seconds, samples),
        "prompt_tokens_per_s": None if is_generation else metrics.ratio(prompt, seconds),
        "it_tokens_per_s": metrics.ratio(generated, seconds) if is_generation else None,
        "tt_tokens_per_s_per_param": None,
        "st_samples_per_s_per_param": None,
        "mfu": None,
        "mbu": None,
    }
    if not is_generation:
        unavailable["it_tokens_per_s"] = "IT is defined for generation only; see prompt_tokens_per_s"
        unavailable["generated_tokens"] = "loglikelihood requests generate nothing"
    if shape is not None:
        block["tt_tokens_per_s_per_param"] = metrics.token_throughput(tokens, shape.params, seconds)
        block["st_samples_per_s_per_param"] = metrics.sample_throughput(samples, shape.params, seconds)
    else:
        for key in ("tt_tokens_per_s_per_param", "st_samples_per_s_per_param", "mfu", "mbu"):
            unavailable[key] = "model size unknown (no model shape given to the monitor)"

    peak_flops = None if peaks is None else peaks.flops
    peak_bw = None if peaks is None else peaks.bandwidth
    if is_generation:
        ttft = [b.ttft_s for b in measured if b.ttft_s is not None]
        tpot = [b.tpot_s for b in measured if b.tpot_s is not None]
        block["ttft_s"] = Stats.from_values(ttft, "s").to_dict()
        block["tpot_s"] = Stats.from_values(tpot, "s").to_dict()
        timed = [b for b in measured if b.ttft_s is not None and b.decode_steps]
        prefill_s = sum(b.ttft_s for b in timed)  # type: ignore[misc]
        decode_s = sum(b.latency_s - b.ttft_s for b in timed)  # type: ignore[operator]
        decode_tokens = sum(b.batch_size * (b.decode_steps - 1) for b in timed)  # type: ignore[operator]
        block["decode_tokens_per_s"] = metrics.ratio(decode_tokens or None, decode_s)
        block["prefill_tokens_per_s"] = metrics.ratio(sum(b.prompt_tokens for b in timed), prefill_s)
        if shape is not None:
            flops = metrics.forward_flops(shape, sum(b.prompt_tokens for b in timed))
            block["mfu"] = metrics.utilization(flops, prefill_s, peak_flops)
            moved = [
                metrics.decode_bytes(
                    shape, b.batch_size, (b.prompt_len or 0) + b.decode_steps / 2, b.decode_steps - 1
                )
                for b in timed
            ]
            if moved and all(m is not None for m in moved):
                block["mbu"] = metrics.utilization(sum(moved), decode_s, peak_bw)  # type: ignore[arg-type]
            elif moved:
                unavailable["mbu"] = "KV-cache layout unknown: decode bytes cannot be counted"
        if not timed:
            unavailable["ttft_s"] = "no batch reported its time to first token"
    elif shape is not None:
        block["mfu"] = metrics.utilization(metrics.forward_flops(shape, prompt), seconds, peak_flops)
        unavailable["mbu"] = "MBU is a decode metric; loglikelihood batches are compute-bound prefill"
    if shape is not None and (peaks is None or peaks.flops is None):
        unavailable["mfu"] = f"no peak FLOP/s known for {getattr(peaks, 'device', 'this device')}"
    if is_generation and shape is not None and (peaks is None or peaks.bandwidth is None):
        unavailable["mbu"] = f"no peak bandwidth known for {getattr(peaks, 'device', 'this device')}"

    if window is not None:
        energy = window.energy_j
        block["window"] = window.to_dict()
        block["energy_j"] = energy
        all_samples = sum(b.batch_size for b in batches)
        all_tokens = sum(b.generated_tokens if is_generation else b.prompt_tokens for b in batches)
        block["energy_per_token_j"] = metrics.ratio(energy, all_tokens)
        block["energy_per_request_j"] = metrics.ratio(energy, all_samples)
        block["energy_per_token_basis"] = "generated tokens" if is_generation else "prompt tokens"
        if energy is None:
            unavailable["energy_j"] = window.unavailable.get("energy_j") or window.unavailable.get(
                "gpu", "no energy source"
            )
    block["unavailable"] = unavailable
    return block
