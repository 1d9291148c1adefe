"""The paper's efficiency metrics and the honest quantities beside them, as plain arithmetic.

Notation: params = number of model parameters; tokens, samples and seconds are sums over the
measured (non-warm-up) batches of one request kind.

* TT  (token throughput)     = Σ(tokens_i / params) / Σ time_i   [tokens / (s · parameter)]
* ST  (sample throughput)    = Σ(samples_i / params) / Σ time_i  [samples / (s · parameter)]
* IT  (inference throughput) = Σ generated tokens / Σ generation time  [tokens / s]; defined only for
  generation: for loglikelihood requests the prompt tokens / s are reported instead.
* MFU (model FLOP utilization) = achieved FLOP/s / peak FLOP/s, FLOPs ≈ 2 · params · tokens
  (matrix multiplies of a forward pass; attention-score FLOPs are not counted).
* MBU (model bandwidth utilization) = bytes that must be read / time / peak bytes/s; for one decode
  step: all weight bytes plus the KV cache of every sequence in the batch.
* MCR (model compression rate) = (size_orig / size_comp) · (perf_comp / perf_orig); size is the
  bytes of the weights as held in memory, perf the task's primary accuracy metric.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelShape:
    """What MFU/MBU need to know of a model. Bytes are as held in memory (quantized if quantized)."""

    params: int
    weight_bytes: int
    n_layers: int | None = None
    n_kv_heads: int | None = None
    head_dim: int | None = None
    kv_bytes_per_element: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def kv_bytes_per_token(self) -> int | None:
        """Bytes of K and V one token adds to the cache over all layers."""
        parts = (self.n_layers, self.n_kv_heads, self.head_dim, self.kv_bytes_per_element)
        if any(p is None for p in parts):
            return None
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.kv_bytes_per_element  # type: ignore[operator]


def forward_flops(shape: ModelShape, tokens: float) -> float:
    """FLOPs of a forward pass over ``tokens`` tokens: 2 · params · tokens."""
    return 2.0 * shape.params * tokens


def decode_bytes(shape: ModelShape, batch_size: int, context_tokens: float, steps: int) -> float | None:
    """Bytes read by ``steps`` decode steps of a batch whose mean context is ``context_tokens``.

    Each step reads every weight once and the K/V of ``context_tokens`` tokens for each of the
    ``batch_size`` sequences. ``None`` when the KV layout is unknown. "Every weight" is
    ``shape.weight_bytes`` (DESIGN.md's MBU): the input-embedding table counts whole, although a step
    gathers only ``batch_size`` rows of it.
    """
    kv = shape.kv_bytes_per_token
    if kv is None:
        return None
    return steps * (shape.weight_bytes + batch_size * context_tokens * kv)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or the denominator is not > 0."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def utilization(amount: float | None, seconds: float | None, peak_per_s: float | None) -> float | None:
    """MFU or MBU: (amount / seconds) / peak_per_s; ``None`` if any term is missing."""
    rate = ratio(amount, seconds)
    return ratio(rate, peak_per_s)


def token_throughput(tokens: float, params: int, seconds: float) -> float | None:
    """TT in tokens / (s · parameter)."""
    return ratio(ratio(tokens, params), seconds)


def sample_throughput(samples: float, params: int, seconds: float) -> float | None:
    """ST in samples / (s · parameter)."""
    return ratio(ratio(samples, params), seconds)


def model_compression_rate(
    size_orig_bytes: float | None,
    size_comp_bytes: float | None,
    perf_orig: float | None,
    perf_comp: float | None,
) -> float | None:
    """MCR = (size_orig / size_comp) · (perf_comp / perf_orig); ``None`` when undefined (never 0)."""
    size_gain = ratio(size_orig_bytes, size_comp_bytes)
    kept = ratio(perf_comp, perf_orig)
    return None if size_gain is None or kept is None else size_gain * kept
