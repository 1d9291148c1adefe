"""The measured figures of one point, from its timed iterations - plain arithmetic, no torch calls.

With ``n`` measured iterations of batch ``B``, prompt ``P`` and ``G`` new tokens per row:

* ``ttft_s`` (prefill latency), ``tpot_s`` (one decode step: every step of every iteration) and
  ``e2e_latency_s`` are :class:`~lm_eval_perf.monitor.Stats` summaries in seconds;
* ``prefill_tokens_per_s`` = n·B·P / Σ TTFT; ``decode_tokens_per_s`` = n·B·(G-1) / Σ decode time;
  ``output_tokens_per_s`` = n·B·G / Σ end-to-end latency;
* ``prefill_mfu`` = n · prefill FLOPs / Σ TTFT / peak FLOP/s of the compute dtype, the prefill
  computing B rows of P positions with logits at the last one only (the static loop passes
  ``logits_to_keep=1``, ``generate`` does the same): 2·(params − embedding − lm_head)·B·P +
  2·lm_head·B + causal attention; ``decode_mbu`` = n · Σ over the G-1 decode steps of (weight bytes +
  the K/V the step reads: B rows of P + k positions at step k, at most the window on sliding-window
  layers, in the cache's dtype) / Σ decode time / peak bytes/s; ``prefill_mbu`` (weights once + the
  prompt's K/V) and ``decode_mfu`` (per decode token: 2·(params − embedding − lm_head) + 2·lm_head +
  attention over its P + k keys) complete the roofline. The arithmetic is
  :mod:`lm_eval_perf.monitor.metrics`'s, shared with the evaluation record; see also
  :mod:`lm_eval_perf.tasks.sweeps.bottleneck`.
* ``estimates``: figures that are estimates for this model and why (:meth:`ModelShape.estimates`).
"""

from __future__ import annotations

from collections.abc import Sequence

from lm_eval_perf.monitor import DevicePeaks, ModelShape, Stats, metrics
from lm_eval_perf.monitor.peaks import missing_bandwidth_reason, missing_flops_reason
from lm_eval_perf.tasks.sweeps import bottleneck
from lm_eval_perf.tasks.throughput.generation import Iteration
from lm_eval_perf.tasks.throughput.sweep import Point


def point_figures(
    point: Point,
    prompt_len: int,
    iterations: Sequence[Iteration],
    shape: ModelShape,
    peaks: DevicePeaks,
    overhead_threshold: float,
) -> tuple[dict, dict[str, str]]:
    """(figures, unavailable): the latency/throughput/utilization fields of a point and why any is None."""
    batch, new, n = point.batch_size, point.new_tokens, len(iterations)
    prefill_s = sum(it.ttft_s for it in iterations)
    decode_s = sum(it.decode_s for it in iterations)
    e2e_s = sum(it.e2e_s for it in iterations)
    prefill_tokens = n * batch * prompt_len
    decode_tokens = n * batch * (new - 1)
    prefill_bytes = metrics.prefill_bytes(shape, batch, prompt_len)
    decode_bytes = metrics.decode_bytes(shape, batch, prompt_len, new - 1)
    prefill_flops = n * metrics.forward_flops(shape, [prompt_len] * batch, all_logits=False)
    decode_flops = n * metrics.decode_flops(shape, batch, prompt_len, new - 1)

    prefill_mfu = metrics.utilization(prefill_flops, prefill_s, peaks.flops)
    prefill_mbu = metrics.utilization(
        None if prefill_bytes is None else n * prefill_bytes, prefill_s, peaks.bandwidth
    )
    decode_mfu = metrics.utilization(decode_flops, decode_s, peaks.flops)
    decode_mbu = metrics.utilization(
        None if decode_bytes is None else n * decode_bytes, decode_s, peaks.bandwidth
    )
    prefill_label = bottleneck.phase_bottleneck(prefill_mfu, prefill_mbu, overhead_threshold)
    decode_label = bottleneck.phase_bottleneck(decode_mfu, decode_mbu, overhead_threshold)
    label, phase = bottleneck.point_bottleneck(prefill_label, prefill_s, decode_label, decode_s)

    figures = {
        "iterations": n,
        "ttft_s": Stats.from_values([it.ttft_s for it in iterations], "s").to_dict(),
        "tpot_s": Stats.from_values([s for it in iterations for s in it.step_s], "s").to_dict(),
        "e2e_latency_s": Stats.from_values([it.e2e_s for it in iterations], "s").to_dict(),
        "prefill_tokens_per_s": metrics.ratio(prefill_tokens, prefill_s),
        "decode_tokens_per_s": metrics.ratio(decode_tokens, decode_s),
        "output_tokens_per_s": metrics.ratio(n * batch * new, e2e_s),
        "prefill_time_fraction": metrics.ratio(prefill_s, prefill_s + decode_s),
        "prefill_mfu": prefill_mfu,
        "prefill_mbu": prefill_mbu,
        "decode_mfu": decode_mfu,
        "decode_mbu": decode_mbu,
        "prefill_roofline_fraction": bottleneck.roofline_fraction(prefill_mfu, prefill_mbu),
        "decode_roofline_fraction": bottleneck.roofline_fraction(decode_mfu, decode_mbu),
        "prefill_bottleneck": prefill_label,
        "decode_bottleneck": decode_label,
        "bottleneck": label,
        "bottleneck_phase": phase,
        "estimates": {
            f"{phase_name}_{figure}": why
            for figure, why in shape.estimates().items()
            for phase_name in ("prefill", "decode")
        },
    }
    unavailable: dict[str, str] = {}
    if peaks.flops is None:
        for key in ("prefill_mfu", "decode_mfu"):
            unavailable[key] = missing_flops_reason(peaks)
    if peaks.bandwidth is None:
        for key in ("prefill_mbu", "decode_mbu"):
            unavailable[key] = missing_bandwidth_reason(peaks)
    if decode_bytes is None:
        for key in ("prefill_mbu", "decode_mbu"):
            unavailable[key] = "KV-cache layout of the model unknown: bytes read cannot be counted"
    if new < 2:
        for key in ("decode_tokens_per_s", "decode_mfu", "decode_mbu"):
            unavailable[key] = "one new token per row: no decode step to time"
    if label is None:
        unavailable["bottleneck"] = "needs both MFU and MBU of the phase (device peaks and KV layout)"
    return figures, unavailable
