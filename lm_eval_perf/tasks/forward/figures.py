"""The measured figures of one forward point, from its timed runs - plain arithmetic, no torch calls.

With ``n`` measured runs of ``B`` rows of ``P`` positions, ``T`` real (unpadded) tokens per batch
and run latencies ``l_i`` (seconds, one forward pass each):

* ``latency_per_batch_s`` = Stats(l_i); ``latency_per_sample_s`` = Stats(l_i / B);
* ``samples_per_s`` = n·B / Σ l_i; ``batches_per_s`` = n / Σ l_i; ``tokens_per_s`` = n·T / Σ l_i
  (real tokens); ``positions_per_s`` = n·B·P / Σ l_i (padding included); ``pad_fraction`` = 1 − T/(B·P);
* ``mfu`` = n · FLOPs of the batch's real rows / Σ l_i / peak FLOP/s of the compute dtype
  (:func:`lm_eval_perf.monitor.metrics.forward_flops`: the body's matrix multiplies, the output
  head at the positions it runs on - every position, the last one only for a causal LM's prefill
  with ``logits: last``, once per row for an encoder's pooled classification head - and attention,
  causal or bidirectional); ``mbu`` = n · (weight bytes + the rows' K/V, as a prefill's) / Σ l_i /
  peak bytes/s; ``bottleneck`` by the roofline rule (:mod:`lm_eval_perf.tasks.sweeps.bottleneck`).
"""

from __future__ import annotations

from collections.abc import Sequence

from lm_eval_perf.monitor import DevicePeaks, ModelShape, Stats, metrics
from lm_eval_perf.monitor.peaks import missing_bandwidth_reason, missing_flops_reason
from lm_eval_perf.tasks.forward.options import Point
from lm_eval_perf.tasks.sweeps import bottleneck


def point_figures(
    point: Point,
    row_tokens: Sequence[int],
    latencies: Sequence[float],
    shape: ModelShape,
    peaks: DevicePeaks,
    all_logits: bool,
    overhead_threshold: float,
) -> tuple[dict, dict[str, str]]:
    """(figures, unavailable): the latency/throughput/utilization fields of a point and why any is None."""
    batch, n, total = point.batch_size, len(latencies), sum(latencies)
    tokens = sum(row_tokens)
    flops = metrics.forward_flops(shape, row_tokens, all_logits=all_logits)
    moved = metrics.prefill_bytes(shape, batch, point.seq_len)
    mfu = metrics.utilization(n * flops, total, peaks.flops)
    mbu = metrics.utilization(None if moved is None else n * moved, total, peaks.bandwidth)
    label = bottleneck.phase_bottleneck(mfu, mbu, overhead_threshold)
    figures = {
        "runs": n,
        "latency_per_batch_s": Stats.from_values(latencies, "s").to_dict(),
        "latency_per_sample_s": Stats.from_values([s / batch for s in latencies], "s").to_dict(),
        "samples_per_s": metrics.ratio(n * batch, total),
        "batches_per_s": metrics.ratio(n, total),
        "tokens_per_s": metrics.ratio(n * tokens, total),
        "positions_per_s": metrics.ratio(n * batch * point.seq_len, total),
        "pad_fraction": 1.0 - tokens / (batch * point.seq_len),
        "flops_per_batch": flops,
        "mfu": mfu,
        "mbu": mbu,
        "roofline_fraction": bottleneck.roofline_fraction(mfu, mbu),
        "bottleneck": label,
        "estimates": {figure: why for figure, why in shape.estimates().items() if figure in ("mfu", "mbu")},
    }
    unavailable: dict[str, str] = {}
    if peaks.flops is None:
        unavailable["mfu"] = missing_flops_reason(peaks)
    if peaks.bandwidth is None:
        unavailable["mbu"] = missing_bandwidth_reason(peaks)
    if moved is None:
        unavailable["mbu"] = "attention layout of the model unknown: bytes moved cannot be counted"
    if label is None:
        unavailable["bottleneck"] = "needs both MFU and MBU (device peaks and attention layout)"
    return figures, unavailable
