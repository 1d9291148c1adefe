"""How much GPU memory a job will need, estimated before it runs, for packing jobs onto a GPU.

estimate = weights + activations + extra + context, in GB (10**9 bytes, as the config's ``*_gb`` keys):

* weights - parameters × bytes per parameter of the precision the model is loaded in: 2 for
  ``bfloat16``/``float16``, 4 for ``float32``, and 2 for ``int4``/``nf4``, which quantize at load
  time from 16-bit weights (the load is the peak); no precision: ``dtype=`` of the model arguments,
  else the checkpoint's ``torch_dtype``, else 4. ``svd_ratio`` compresses after the load: the
  uncompressed weights count. Parameters come from the model's ``config.json`` by the dense-decoder
  formula (:func:`parameter_count`): an ``arch:`` preset or file, ``bundled:smollm2`` (the shape of
  the ``smollm2-135m`` preset, float32 as converted), a local folder, or a hub model's cached
  ``config.json``.
* activations - batch rows × positions × (2 copies of the logits, the logits and their
  log-softmax, at the compute dtype's bytes × vocabulary + the KV cache's bytes per position); rows is
  the task's ``batch_size`` (1 when unset), positions its traits' (:mod:`lm_eval_perf.tasks.traits`).
* extra - the task's own (ESD's Gram batches), and ``CONTEXT_GB`` for the process's CUDA context,
  cuBLAS workspace and allocator slack.

It is an estimate, not a measurement: ``gpu_memory_gb:`` on a model or task replaces it. Unknown
(``None``, the reason beside it) for a GGUF or AWQ checkpoint, a hub model not in the local cache, a
config the formula does not fit (mixture of experts), and ``batch_size: auto`` - lm-eval then sizes
its batches to whatever memory is free, so such a job cannot share a GPU. A job whose memory is
unknown runs alone on its GPU.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from lm_eval_perf.tasks.traits import TaskTraits

GB = 1e9
CONTEXT_GB = 0.8  # CUDA context + cuBLAS workspace + allocator slack of one torch process
LOGIT_COPIES = 2  # lm-eval keeps the logits and their log_softmax
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "int4": 2, "nf4": 2}
BUNDLED_SHAPES = {"bundled:smollm2": ("smollm2-135m", "float32")}  # preset, dtype of the converted dir
MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")


@dataclass(frozen=True)
class Estimate:
    """A job's GPU memory need per GPU in GB (``None``: unknown) and how it was found."""

    gb: float | None
    basis: str


def parameter_count(config: dict) -> int | None:
    """Parameters of a dense decoder-only transformer (Llama, Qwen2, Mistral family) from its
    ``config.json``: embeddings, an untied ``lm_head``, per layer the q/k/v/o projections (q/k/v
    biases for Qwen2), a gated MLP and two norms, and the final norm. None if the config lacks a
    field or describes a mixture of experts."""
    try:
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or hidden // heads)
        inner = int(config["intermediate_size"])
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    if any(config.get(key) for key in MOE_KEYS):
        return None
    q, kv = heads * head_dim, kv_heads * head_dim
    bias = q + 2 * kv if config.get("attention_bias", config.get("model_type") == "qwen2") else 0
    layer = hidden * (q + 2 * kv) + bias + q * hidden + 3 * hidden * inner + 2 * hidden
    head = 0 if config.get("tie_word_embeddings", True) else vocab * hidden
    return vocab * hidden + head + layers * layer + hidden


def kv_bytes_per_position(config: dict, dtype_bytes: int) -> int:
    """Bytes of the KV cache per token position (keys and values of every layer)."""
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    return 2 * int(config["num_hidden_layers"]) * kv_heads * head_dim * dtype_bytes


@functools.lru_cache(maxsize=1024)
def _hub_config(repo: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    path = try_to_load_from_cache(repo, "config.json", revision=revision)
    return path if isinstance(path, str) else None


@functools.lru_cache(maxsize=1024)
def model_config(pretrained: str, revision: str | None) -> tuple[dict | None, str]:
    """The ``config.json`` of a model as a dict (None when it cannot be found offline; shared between
    calls: do not modify it) and where it came from, or why it is missing."""
    from lm_eval_perf.models.sources import ARCH_PREFIX, load_architecture

    if pretrained in BUNDLED_SHAPES:
        preset, dtype = BUNDLED_SHAPES[pretrained]
        return {**load_architecture(preset), "torch_dtype": dtype}, f"preset {preset}"
    if pretrained.startswith(ARCH_PREFIX):
        return load_architecture(pretrained[len(ARCH_PREFIX) :]), pretrained
    if pretrained.endswith(".gguf"):
        return None, "a GGUF file's size once loaded is not known before loading"
    local = Path(pretrained).expanduser()
    path = local / "config.json" if local.is_dir() else _hub_config(pretrained, revision)
    if path is None or not Path(path).is_file():
        return None, f"no config.json for {pretrained} in the local folder or the hub cache"
    try:
        return json.loads(Path(path).read_text()), str(path)
    except (OSError, ValueError) as exc:
        return None, f"{path} cannot be read: {exc}"


def estimate(
    pretrained: str,
    revision: str | None,
    precision: str | None,
    model_args: dict,
    batch_size: str | None,
    traits: TaskTraits,
) -> Estimate:
    """The GPU memory estimate of one job (see the module's docstring)."""
    if batch_size is not None and batch_size.startswith("auto"):
        return Estimate(None, "batch_size auto sizes its batches to the free memory")
    if precision == "awq":
        return Estimate(None, "an AWQ checkpoint's memory is not estimated")
    config, source = model_config(pretrained, revision)
    if config is None:
        return Estimate(None, source)
    params = parameter_count(config)
    if params is None:
        return Estimate(None, f"{source}: not a dense decoder config the estimate knows")
    dtype = precision or str(model_args.get("dtype") or config.get("torch_dtype") or "float32")
    weight_bytes = DTYPE_BYTES.get(dtype, 4)
    act_bytes = 4 if dtype == "float32" else 2
    positions = traits.positions
    if positions == "max_length":
        positions = int(config.get("max_position_embeddings") or 2048)
    rows = int(batch_size) if batch_size else 1
    per_position = LOGIT_COPIES * act_bytes * int(config["vocab_size"]) + kv_bytes_per_position(
        config, act_bytes
    )
    weights = params * weight_bytes / GB
    activations = rows * positions * per_position / GB
    gb = weights + activations + traits.extra_gb + CONTEXT_GB
    return Estimate(
        gb,
        f"estimate: weights {weights:.2f} ({params / 1e6:.0f}M × {weight_bytes} B, {source})"
        f" + activations {activations:.2f} ({rows} × {positions} positions) + extra {traits.extra_gb:g}"
        f" + context {CONTEXT_GB:g} GB",
    )
