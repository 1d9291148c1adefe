"""Timed batches (requests to the model), their per-kind summary, and the run's overall block.

A *batch* is one call into the model: one forward pass of a loglikelihood batch or one
``generate`` call. N in AL = Σ latency_i / N is the number of measured batches of one request kind;
AL is per kind only (a loglikelihood forward and a generate call are different things to average),
and the overall block holds wall time and totals. Batches flagged as warm-up are counted but left out
of every latency and throughput figure. Each block's ``definitions`` say what its figures count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lm_eval_perf.monitor import metrics
from lm_eval_perf.monitor.metrics import ModelShape
from lm_eval_perf.monitor.peaks import DevicePeaks, missing_bandwidth_reason, missing_flops_reason
from lm_eval_perf.monitor.window import Measurement
from lm_eval_perf.records.efficiency import Kind, Overall
from lm_eval_perf.records.stats import Stats

GENERATION_KINDS = frozenset({"generate_until", "generate"})

GENERATION_DEFINITIONS = {
    "generated_tokens": "tokens kept: each row up to the token that completes its first stop string, "
    "or its end-of-sequence token, as lm-eval cuts the row's text",
    "generated_tokens_computed": "batch size x decode steps of each batch: what the model computed, "
    "the tokens of rows that had already stopped included",
    "it_tokens_per_s": "generated_tokens / seconds",
    "it_computed_tokens_per_s": "generated_tokens_computed / seconds",
    "energy_per_token_j": "energy_j / kept generated tokens of every batch in the window (warm-up too)",
    "energy_per_computed_token_j": "energy_j / computed generated tokens of every batch in the window",
    "mfu": "prefill FLOPs (2 x (params - embedding - lm_head) per prompt token + 2 x lm_head per row "
    "+ causal attention) / sum of TTFT / peak FLOP/s of the compute dtype (peaks.flops_dtype)",
    "mbu": "bytes per decode step (all weight bytes + the K/V read, in the cache's dtype, at most the "
    "window on sliding-window layers) / decode time / peak bandwidth; batches of one step left out",
    "decode_tokens_per_s": "computed decode tokens (batch x (decode steps - 1)) / decode time",
}
FORWARD_DEFINITIONS = {
    "prompt_tokens_per_s": "unpadded prompt tokens / seconds",
    "energy_per_token_j": "energy_j / prompt tokens of every batch in the window (warm-up too)",
    "mfu": "FLOPs with logits at every position (2 x (params - embedding - lm_head) + 2 x lm_head per "
    "token, per row for an encoder's pooled classification head, + attention: causal, or every pair "
    "of a row for an encoder) / seconds / peak FLOP/s of the compute dtype (peaks.flops_dtype)",
}
OVERALL_DEFINITIONS = {
    "busy_s": "sum of the latencies of the measured batches of every kind",
    "wall_s": "duration of the whole monitored window",
    "al_s": "not given here: AL is per request kind (kinds.<kind>.al_s), kinds are not averaged together",
}


@dataclass(frozen=True)
class BatchRecord:
    """One timed batch. Seconds for times; tokens are counts over the whole batch.

    ``prompt_tokens`` excludes padding; ``row_tokens`` (when reported) is each row's unpadded prompt
    length; ``prompt_len`` is the padded prompt length of each row, so ``batch_size * prompt_len``
    tokens were computed. ``generated_tokens`` counts the tokens kept: per row, up to and including
    the one that completed its first stop string or end-of-sequence; ``decode_steps`` the model's
    steps, so ``batch_size * decode_steps`` tokens were computed.
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
    row_tokens: tuple[int, ...] | None = None

    @property
    def computed_tokens(self) -> int | None:
        """Generated tokens the model computed: batch size x decode steps (``None`` if not reported)."""
        return None if self.decode_steps is None else self.batch_size * self.decode_steps

    def rows(self) -> Sequence[float]:
        """Each row's unpadded prompt length; the mean length for each row when not reported."""
        if self.row_tokens is not None:
            return self.row_tokens
        return [self.prompt_tokens / self.batch_size] * self.batch_size if self.batch_size else []

    def cache_len(self) -> float:
        """Prompt positions each row holds in the KV cache: the padded length (padding is cached)."""
        if self.prompt_len is not None:
            return self.prompt_len
        return max(self.rows(), default=0)


def _total(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Phases:
    """Prefill and decode of the measured generate calls: ``timed`` reported a TTFT, ``decoding``
    are those of them that decoded more than one step (one step has no decode time)."""

    timed: list[BatchRecord]
    decoding: list[BatchRecord]

    @classmethod
    def of(cls, measured: Sequence[BatchRecord]) -> _Phases:
        timed = [b for b in measured if b.ttft_s is not None]
        return cls(timed, [b for b in timed if (b.decode_steps or 0) > 1])

    @property
    def prefill_s(self) -> float:
        return sum(b.ttft_s for b in self.timed)  # type: ignore[misc]

    @property
    def decode_s(self) -> float:
        return sum(b.latency_s - b.ttft_s for b in self.decoding)  # type: ignore[operator]

    def rates(self, unavailable: dict[str, str]) -> dict:
        """Prefill and decode tokens/s (computed tokens); why any is missing goes to ``unavailable``."""
        decode_tokens = sum(b.batch_size * (b.decode_steps - 1) for b in self.decoding)  # type: ignore[operator]
        if not self.timed:
            unavailable["ttft_s"] = unavailable["mfu"] = "no batch reported its time to first token"
        elif not self.decoding:
            reason = "every timed batch decoded a single step: there is no decode time to measure"
            unavailable["mbu"] = unavailable["decode_tokens_per_s"] = reason
        return {
            "prefill_tokens_per_s": metrics.ratio(sum(b.prompt_tokens for b in self.timed), self.prefill_s),
            "decode_tokens_per_s": metrics.ratio(decode_tokens or None, self.decode_s),
        }


def _utilization(
    kind: str, measured: list[BatchRecord], shape: ModelShape, peaks: DevicePeaks | None
) -> tuple[dict, dict[str, str], dict[str, str]]:
    """(figures, unavailable, estimates): MFU and MBU of one kind."""
    unavailable: dict[str, str] = {}
    estimates = shape.estimates()
    if any(b.row_tokens is None for b in measured):
        note = "row lengths not reported: attention FLOPs of rows of the mean length"
        estimates["mfu"] = "; ".join(filter(None, [estimates.get("mfu"), note]))
    peak_flops = None if peaks is None else peaks.flops
    peak_bw = None if peaks is None else peaks.bandwidth
    figures: dict = {"mfu": None, "mbu": None}
    if kind not in GENERATION_KINDS:
        flops = sum(metrics.forward_flops(shape, b.rows(), all_logits=True) for b in measured)
        figures["mfu"] = metrics.utilization(flops, sum(b.latency_s for b in measured), peak_flops)
        unavailable["mbu"] = "MBU is a decode metric; loglikelihood batches are compute-bound prefill"
    else:
        phases = _Phases.of(measured)
        flops = sum(metrics.forward_flops(shape, b.rows(), all_logits=False) for b in phases.timed)
        figures["mfu"] = metrics.utilization(flops, phases.prefill_s, peak_flops) if phases.timed else None
        moved = [
            metrics.decode_bytes(shape, b.batch_size, b.cache_len(), b.decode_steps - 1)  # type: ignore[operator]
            for b in phases.decoding
        ]
        if moved and all(m is not None for m in moved):
            figures["mbu"] = metrics.utilization(sum(moved), phases.decode_s, peak_bw)  # type: ignore[arg-type]
        elif moved:
            unavailable["mbu"] = "KV-cache layout unknown: decode bytes cannot be counted"
        if peak_bw is None:
            unavailable["mbu"] = missing_bandwidth_reason(peaks)
    if peak_flops is None:
        unavailable["mfu"] = missing_flops_reason(peaks)
    estimates = {k: v for k, v in estimates.items() if figures.get(k) is not None}
    return figures, unavailable, estimates


def summarize(
    kind: str,
    batches: Sequence[BatchRecord],
    window: Measurement | None,
    shape: ModelShape | None,
    peaks: DevicePeaks | None,
) -> Kind:
    """The efficiency block of one request kind (see :mod:`lm_eval_perf.monitor.metrics`)."""
    measured = [b for b in batches if not b.warmup]
    unavailable: dict[str, str] = {}
    seconds = sum(b.latency_s for b in measured)
    samples = sum(b.batch_size for b in measured)
    prompt = sum(b.prompt_tokens for b in measured)
    kept = sum(b.generated_tokens for b in measured)
    computed = _total([b.computed_tokens for b in measured])
    is_generation = kind in GENERATION_KINDS
    latency = Stats.from_values([b.latency_s for b in measured], "s")

    block: dict = {
        "batches": len(measured),
        "warmup_batches": len(batches) - len(measured),
        "samples": samples,
        "prompt_tokens": prompt,
        "generated_tokens": kept if is_generation else None,
        "generated_tokens_computed": computed if is_generation else None,
        "seconds": seconds,
        "al_s": latency.mean,
        "latency_s": latency.to_dict(),
        "latency_per_sample_s": metrics.ratio(seconds, samples),
        "prompt_tokens_per_s": None if is_generation else metrics.ratio(prompt, seconds),
        "it_tokens_per_s": metrics.ratio(kept, seconds) if is_generation else None,
        "it_computed_tokens_per_s": metrics.ratio(computed, seconds) if is_generation else None,
        "tt_tokens_per_s_per_param": None,
        "tt_tokens_per_s_per_billion_params": None,
        "st_samples_per_s_per_param": None,
        "mfu": None,
        "mbu": None,
        "estimates": {},
        "definitions": GENERATION_DEFINITIONS if is_generation else FORWARD_DEFINITIONS,
    }
    if not is_generation:
        unavailable["it_tokens_per_s"] = "IT is defined for generation only; see prompt_tokens_per_s"
        unavailable["generated_tokens"] = "loglikelihood requests generate nothing"
    elif computed is None:
        unavailable["generated_tokens_computed"] = "a batch did not report its decode steps"
    if is_generation:
        ttft = [b.ttft_s for b in measured if b.ttft_s is not None]
        tpot = [b.tpot_s for b in measured if b.tpot_s is not None]
        block["ttft_s"] = Stats.from_values(ttft, "s").to_dict()
        block["tpot_s"] = Stats.from_values(tpot, "s").to_dict()
        block.update(_Phases.of(measured).rates(unavailable))
    if shape is not None:
        block["tt_tokens_per_s_per_param"] = metrics.token_throughput(prompt + kept, shape.params, seconds)
        block["tt_tokens_per_s_per_billion_params"] = metrics.ratio(block["tt_tokens_per_s_per_param"], 1e-9)
        block["st_samples_per_s_per_param"] = metrics.sample_throughput(samples, shape.params, seconds)
        figures, notes, estimates = _utilization(kind, measured, shape, peaks)
        block.update(figures)
        block["estimates"] = estimates
        unavailable.update(notes)
    else:
        for key in (
            "tt_tokens_per_s_per_param",
            "tt_tokens_per_s_per_billion_params",
            "st_samples_per_s_per_param",
            "mfu",
            "mbu",
        ):
            unavailable[key] = "model size unknown (no model shape given to the monitor)"
    if window is not None:
        block.update(_energy(window, batches, is_generation, unavailable))
    block["unavailable"] = unavailable
    return block


def _energy(
    window: Measurement, batches: Sequence[BatchRecord], is_generation: bool, unavailable: dict[str, str]
) -> dict:
    """Energy of a kind's window, per token (kept and computed) and per request. The window holds
    every batch, warm-up ones too, so the counts are over all of them."""
    energy = window.energy_j
    if is_generation:
        tokens: int | None = sum(b.generated_tokens for b in batches)
        computed = _total([b.computed_tokens for b in batches])
    else:
        tokens, computed = sum(b.prompt_tokens for b in batches), None
    fields = {
        "window": window.to_dict(),
        "energy_j": energy,
        "energy_error_bound": window.energy_error_bound,
        "energy_source": window.energy_source,
        "energy_per_token_j": metrics.ratio(energy, tokens),
        "energy_per_computed_token_j": metrics.ratio(energy, computed) if is_generation else None,
        "energy_per_request_j": metrics.ratio(energy, sum(b.batch_size for b in batches)),
        "energy_per_token_basis": "kept generated tokens" if is_generation else "prompt tokens",
    }
    if energy is None:
        reason = window.unavailable.get("energy_j") or window.unavailable.get("gpu", "no energy source")
        for key in ("energy_j", "energy_per_token_j", "energy_per_request_j"):
            unavailable[key] = reason
    elif window.energy_error_bound is None:
        unavailable["energy_error_bound"] = window.unavailable.get("energy_error_bound", "no bound known")
    return fields


def overall(batches: Sequence[BatchRecord], total: Measurement | None, torch_memory: dict | None) -> Overall:
    """The run's overall block: wall time and totals over every kind (no mixed-kind AL)."""
    measured = [b for b in batches if not b.warmup]
    return {
        "batches": len(measured),
        "samples": sum(b.batch_size for b in measured),
        "busy_s": sum(b.latency_s for b in measured),
        "wall_s": None if total is None else total.duration_s,
        "window": None if total is None else total.to_dict(),
        "amu": None if total is None else total.amu,
        "pcu": None if total is None else total.pcu,
        "aec_w": None if total is None else total.aec_w,
        "energy_j": None if total is None else total.energy_j,
        "energy_error_bound": None if total is None else total.energy_error_bound,
        "memory_peak_gib": None if total is None else total.memory_used_peak_gib,
        "torch_memory": torch_memory,
        "host_rss_peak_gib": None if total is None else total.host_rss_peak_gib,
        "definitions": OVERALL_DEFINITIONS,
    }
