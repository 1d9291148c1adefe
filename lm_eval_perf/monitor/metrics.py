"""The paper's efficiency metrics and the honest quantities beside them, as plain arithmetic.

Notation: params = number of model parameters; tokens, samples and seconds are sums over the
measured (non-warm-up) batches of one request kind.

* TT  (token throughput)     = Σ(tokens_i / params) / Σ time_i   [tokens / (s · parameter)]
* ST  (sample throughput)    = Σ(samples_i / params) / Σ time_i  [samples / (s · parameter)]
* IT  (inference throughput) = Σ generated tokens / Σ generation time  [tokens / s]; defined only for
  generation: for loglikelihood requests the prompt tokens / s are reported instead.
* MFU (model FLOP utilization) = achieved FLOP/s / peak FLOP/s of the compute dtype. FLOPs of a
  forward pass over P new positions of a row (DESIGN.md): 2 · (params − embedding − lm_head) · P
  (the matrix multiplies; the embedding is a gather) + 2 · lm_head · (positions whose logits are
  computed: all P for loglikelihood, 1 for a generation prefill or decode step, as transformers'
  ``logits_to_keep`` does) + attention 2 · heads · (q·k dim + v dim) per (query, key) pair and layer,
  i.e. 4 · layers · heads · head_dim · P²/2 for a causal prompt. The pairs are counted exactly
  (Σ over positions p of the keys p reads: p, or at most the window on a sliding-window layer), so a
  prompt from an empty cache has P(P+1)/2 of them per layer. An encoder (bidirectional attention:
  BERT, DistilBERT, RoBERTa, ModernBERT) has P² pairs per layer (a sliding-window layer: the keys
  within the half-window on either side); a sequence classifier's head (``lm_head`` in these
  formulas) runs at every position of a decoder (its logits are pooled at the last token
  afterwards) but once per row of an encoder (on the pooled first-token or mean vector).
* MBU (model bandwidth utilization) = bytes that must be read / time / peak bytes/s; for one decode
  step: all weight bytes plus the K/V the step reads: for every sequence of the batch, per layer, the
  cache up to the step's position (at most the window on a sliding-window layer), in the cache's dtype.
* MCR (model compression rate) = (size_orig / size_comp) · (perf_comp / perf_orig); size is the
  bytes of the weights as held in memory, perf the task's primary accuracy metric.

Where a model's shape leaves a term unknown (no embedding or lm_head size, no attention layout) the
figure is still computed from what is known and :meth:`ModelShape.estimates` says which figure is an
estimate and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ModelShape:
    """What MFU/MBU need to know of a model. Bytes are as held in memory (quantized if quantized).

    ``params`` counts a tied embedding / lm_head matrix once. ``n_kv_heads`` and ``head_dim`` give
    the K/V of one token and layer (2 · n_kv_heads · head_dim elements) unless ``kv_latent_dim`` is
    set (multi-head latent attention: one latent of that many elements per token and layer).
    ``attention_dim`` is the q·k dimension plus the v dimension of one query head (default
    2 · head_dim). ``layer_windows`` has one entry per layer: the sliding window in tokens, or
    ``None`` for full attention (empty: every layer full). ``kv_bytes_per_element`` is the element
    size of the KV cache's dtype; ``compute_dtype`` the dtype the matrix multiplies run in (the
    activations' dtype: ``bfloat16``, ``float16``, ``float32`` or ``tf32``). ``notes`` maps a figure
    (``mfu``, ``mbu``) to why it is an estimate for this model (e.g. mixture of experts).
    ``bidirectional``: every position attends to every key of its row (an encoder), not only the
    earlier ones; on a sliding-window layer its window is the half-window on either side.
    ``head_pooled``: the output head (``lm_head_params``) is a classification head that runs once
    per row on a pooled vector, however many positions have logits.
    """

    params: int
    weight_bytes: int
    n_layers: int | None = None
    n_kv_heads: int | None = None
    head_dim: int | None = None
    kv_bytes_per_element: int | None = None
    n_heads: int | None = None
    attention_dim: int | None = None
    kv_latent_dim: int | None = None
    layer_windows: tuple[int | None, ...] = ()
    embedding_params: int | None = None
    lm_head_params: int | None = None
    lm_head_tied: bool = False
    compute_dtype: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    bidirectional: bool = False
    head_pooled: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def kv_elements_per_layer(self) -> int | None:
        """K and V elements one token adds to the cache of one layer."""
        if self.kv_latent_dim is not None:
            return self.kv_latent_dim
        if self.n_kv_heads is None or self.head_dim is None:
            return None
        return 2 * self.n_kv_heads * self.head_dim

    @property
    def kv_bytes_per_token(self) -> int | None:
        """Bytes of K and V one token adds to the cache over all layers (no window reached)."""
        per_layer = self.kv_elements_per_layer
        if per_layer is None or self.n_layers is None or self.kv_bytes_per_element is None:
            return None
        return self.n_layers * per_layer * self.kv_bytes_per_element

    @property
    def body_params(self) -> int:
        """Parameters of the matrix multiplies every position runs: params − embedding − lm_head
        (a tied lm_head is the embedding matrix, counted once in ``params``)."""
        untied_head = 0 if self.lm_head_tied else (self.lm_head_params or 0)
        return self.params - (self.embedding_params or 0) - untied_head

    def windows(self) -> tuple[int | None, ...]:
        """One entry per layer: its sliding window in tokens or ``None`` (full attention)."""
        return self.layer_windows or (None,) * (self.n_layers or 0)

    def estimates(self) -> dict[str, str]:
        """Figure (``mfu``, ``mbu``) -> why it is an estimate for this shape; empty when exact."""
        out = dict(self.notes)
        flops = []
        if self.embedding_params is None or self.lm_head_params is None:
            flops.append("embedding and lm_head sizes unknown: 2 · params FLOPs counted per position")
        if _attention_per_pair(self) is None:
            flops.append("attention layout unknown: attention score/value FLOPs not counted")
        if flops:
            out["mfu"] = "; ".join([*([out["mfu"]] if "mfu" in out else []), *flops])
        return out


def _attention_per_pair(shape: ModelShape) -> float | None:
    """FLOPs of one (query, key) pair in one layer: 2 · heads · (q·k dim + v dim)."""
    dim = shape.attention_dim
    if dim is None and shape.head_dim is not None:
        dim = 2 * shape.head_dim
    if dim is None or shape.n_heads is None or not shape.windows():
        return None
    return 2.0 * shape.n_heads * dim


def _keys_read(first: float, last: float, window: int | None) -> float:
    """Σ over positions p = first..last (1-based, step 1) of the keys position p attends to: p, or at
    most ``window`` on a sliding-window layer. A fractional ``last`` (a mean row length) interpolates."""
    if last < first:
        return 0.0
    cap = last if window is None else min(last, window)
    below = 0.0 if cap < first else (first + cap) * (cap - first + 1) / 2.0  # positions p <= window
    above = 0.0 if window is None else max(0.0, last - max(first, window + 1) + 1)  # positions p > window
    return below + (0.0 if window is None else window * above)


def key_reads(shape: ModelShape, first: float, last: float) -> float:
    """Σ over layers and over positions ``first..last`` of one row of the keys each position reads."""
    return sum(_keys_read(first, last, window) for window in shape.windows())


def _bidirectional_pairs(positions: float, half_window: int | None) -> float:
    """(query, key) pairs of one layer of a row of ``positions`` when every position attends to
    every key within ``half_window`` on either side (all keys when ``None``): P², or
    P·(2h + 1) − h·(h + 1) when the window does not span the row (each edge loses 1 + ... + h)."""
    if half_window is None or half_window >= positions - 1:
        return positions * positions
    return positions * (2 * half_window + 1) - half_window * (half_window + 1)


def attention_pairs(shape: ModelShape, positions: float) -> float:
    """Σ over layers of the (query, key) pairs of a row of ``positions`` from an empty cache: causal
    (each position reads the keys up to itself) or bidirectional (``shape.bidirectional``)."""
    if shape.bidirectional:
        return sum(_bidirectional_pairs(positions, window) for window in shape.windows())
    return key_reads(shape, 1, positions)


def cached_tokens(shape: ModelShape, tokens: int) -> float:
    """Σ over layers of the tokens a row of ``tokens`` positions holds in the cache (window-capped)."""
    return float(sum(tokens if w is None else min(tokens, w) for w in shape.windows()))


def forward_flops(shape: ModelShape, row_tokens: Sequence[float], all_logits: bool) -> float:
    """FLOPs of a forward pass over rows of ``row_tokens`` positions each, from an empty cache.

    ``all_logits``: logits at every position (loglikelihood) or at the last one only (a generation
    prefill: transformers' ``logits_to_keep=1``); a pooled classification head
    (``shape.head_pooled``) runs once per row either way.
    """
    tokens = float(sum(row_tokens))
    logit_positions = tokens if all_logits and not shape.head_pooled else float(len(row_tokens))
    flops = _linear_flops(shape, tokens, logit_positions)
    per_pair = _attention_per_pair(shape)
    if per_pair is not None:
        flops += per_pair * sum(attention_pairs(shape, p) for p in row_tokens)
    return flops


def _linear_flops(shape: ModelShape, tokens: float, logit_positions: float) -> float:
    """2 · (params − embedding − lm_head) · tokens + 2 · lm_head · logit positions; with the
    embedding or lm_head size unknown, 2 · params · tokens."""
    if shape.embedding_params is None or shape.lm_head_params is None:
        return 2.0 * shape.params * tokens
    return 2.0 * shape.body_params * tokens + 2.0 * shape.lm_head_params * logit_positions


def decode_flops(shape: ModelShape, batch_size: int, prompt_len: int, steps: int) -> float:
    """FLOPs of ``steps`` decode steps of ``batch_size`` rows after a prompt of ``prompt_len``:
    step k (1..steps) runs one position per row at position ``prompt_len + k``, one logit each."""
    tokens = float(batch_size * steps)
    flops = _linear_flops(shape, tokens, tokens)
    per_pair = _attention_per_pair(shape)
    if per_pair is not None:
        flops += per_pair * batch_size * key_reads(shape, prompt_len + 1, prompt_len + steps)
    return flops


def _kv_bytes_per_token_layer(shape: ModelShape) -> float | None:
    per_layer = shape.kv_elements_per_layer
    if per_layer is None or shape.kv_bytes_per_element is None or not shape.windows():
        return None
    return float(per_layer * shape.kv_bytes_per_element)


def decode_bytes(shape: ModelShape, batch_size: int, prompt_len: int, steps: int) -> float | None:
    """Bytes read by ``steps`` decode steps of ``batch_size`` rows after a (padded) prompt of
    ``prompt_len`` tokens.

    Step k reads every weight once and, per row and layer, the K/V of positions 1..prompt_len + k (at
    most the window). ``None`` when the KV layout is unknown. "Every weight" is ``shape.weight_bytes``
    (DESIGN.md's MBU): the input-embedding table counts whole, although a step gathers only
    ``batch_size`` rows of it.
    """
    per_token = _kv_bytes_per_token_layer(shape)
    if per_token is None:
        return None
    kv = batch_size * key_reads(shape, prompt_len + 1, prompt_len + steps) * per_token
    return steps * shape.weight_bytes + kv


def prefill_bytes(shape: ModelShape, batch_size: int, prompt_len: int) -> float | None:
    """Bytes of one prefill pass: every weight once plus the prompt's K/V the cache keeps."""
    per_token = _kv_bytes_per_token_layer(shape)
    if per_token is None:
        return None
    return shape.weight_bytes + batch_size * cached_tokens(shape, prompt_len) * per_token


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
