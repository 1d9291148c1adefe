"""Parameter count, weight bytes as held in memory, KV and attention layout (causal or bidirectional),
embedding and output-head sizes and compute dtype of a loaded model: what MFU and MBU count
(:mod:`lm_eval_perf.monitor.metrics`)."""

from __future__ import annotations

import torch

from lm_eval_perf.monitor.metrics import ModelShape


def _tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor`` in memory: the span from its first to its last element, so the gaps of a
    padded layout (a low-rank factor's aligned rows) count; quantized tensor subclasses count their
    inner (packed) tensors."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names)
    if tensor.numel() == 0:
        return 0
    span = 1 + sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    return span * tensor.element_size()


def _unique_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    seen: set[int] = set()
    out = []
    for tensor in [*model.parameters(), *model.buffers()]:
        key = id(tensor)
        if key not in seen:
            seen.add(key)
            out.append(tensor)
    return out


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of all parameters and non-trivial buffers (tied weights counted once)."""
    return sum(_tensor_bytes(t) for t in _unique_tensors(model))


def parameter_count(model: torch.nn.Module) -> int:
    """Number of logical parameters (tied weights counted once, quantized weights by their shape).

    A module with a ``logical_params`` attribute (packed 4-bit linear layers, whose tensors hold
    packed bytes) counts that number instead of its own tensors' elements.
    """
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        if getattr(module, "logical_params", None) is not None:
            total += int(module.logical_params)
            seen.update(id(p) for p in module.parameters())
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _module_params(module: torch.nn.Module) -> int:
    """Logical parameters of one module: packed 4-bit layers by their ``logical_params`` or their
    ``in_features`` x ``out_features`` shape, others by their tensors' elements."""
    logical = getattr(module, "logical_params", None)
    if logical is not None:
        return int(logical)
    rows, cols = getattr(module, "out_features", None), getattr(module, "in_features", None)
    if isinstance(rows, int) and isinstance(cols, int):
        bias = getattr(module, "bias", None)
        return rows * cols + (0 if bias is None else int(bias.numel()))
    return sum(p.numel() for p in module.parameters())


def _embedding_tables(model: torch.nn.Module, embedding: torch.nn.Module) -> int:
    """Parameters of every embedding table (``nn.Embedding``: a gather, no multiply): the token
    embedding ``embedding`` and learned position or token-type tables beside it (BERT, GPT-2)."""
    tables = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(tables.values()) or _module_params(embedding)


def _classification_head(model: torch.nn.Module) -> int | None:
    """Parameters of a sequence classifier's head: everything outside its base model (``score``;
    ``pre_classifier`` + ``classifier``), plus the base model's pooler (BERT's, applied to the first
    token only); ``None`` when the model has no separate base model."""
    base = getattr(model, "base_model", None)
    if not isinstance(base, torch.nn.Module) or base is model:
        return None
    head = parameter_count(model) - parameter_count(base)
    pooler = getattr(base, "pooler", None)
    if isinstance(pooler, torch.nn.Module):
        head += parameter_count(pooler)
    return head


def _bidirectional(model: torch.nn.Module) -> bool:
    """Whether the model's attention layers are all bidirectional (an encoder): transformers marks
    each attention module with ``is_causal``."""
    flags = {m.is_causal for m in model.modules() if isinstance(getattr(m, "is_causal", None), bool)}
    return flags == {False}


def _embedding_and_head(
    model: torch.nn.Module, bidirectional: bool
) -> tuple[int | None, int | None, bool, bool]:
    """(embedding-table params, output-head params, whether the two share one matrix, whether the
    head is a classification head run once per row on a pooled vector).

    The output head is ``lm_head`` (``get_output_embeddings``), or a sequence classifier's head: a
    decoder runs it at every position and pools the last token's logits; an encoder pools first
    (its first token or the mean) and runs it once per row."""
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    embedding = get_in() if get_in is not None else None
    head = get_out() if get_out is not None else None
    if embedding is None:
        return None, None, False, False
    tables = _embedding_tables(model, embedding)
    if head is None:
        classifier = _classification_head(model)
        return (
            (tables, classifier, False, bidirectional)
            if classifier is not None
            else (None, None, False, False)
        )
    tied = getattr(embedding, "weight", None) is not None and embedding.weight is getattr(
        head, "weight", None
    )
    return tables, _module_params(head), tied, False


_WINDOW_ATTRIBUTE = {"sliding_attention": "sliding_window", "chunked_attention": "attention_chunk_size"}


def _layer_windows(text, n_layers: int | None, notes: dict[str, str]) -> tuple[int | None, ...]:
    """Per layer: the window its cache and attention keep (tokens), or ``None`` for full attention.

    As transformers' caches read the config: ``layer_types`` when given (``sliding_attention`` ->
    ``sliding_window``, ``chunked_attention`` -> ``attention_chunk_size``), else every layer sliding
    when ``sliding_window`` is set (Mistral), chunked when ``attention_chunk_size`` is. Qwen2's
    ``use_sliding_window`` / ``max_window_layers`` are turned into ``layer_types`` by its config.
    """
    if not n_layers:
        return ()
    types = getattr(text, "layer_types", None)
    if types is None:
        kind = next(
            (k for k, attr in _WINDOW_ATTRIBUTE.items() if getattr(text, attr, None)), "full_attention"
        )
        types = [kind] * n_layers
    if len(types) != n_layers:
        notes["mbu"] = (
            f"config has {len(types)} layer_types for {n_layers} layers: every layer counted as full"
        )
        return ()
    windows: list[int | None] = []
    for kind in types:
        attr = _WINDOW_ATTRIBUTE.get(kind)
        if kind != "full_attention" and attr is None:
            note = f"layer type {kind!r} is counted as full attention"
            for figure in ("mfu", "mbu"):
                notes[figure] = note
        windows.append(getattr(text, attr, None) if attr is not None else None)
    return tuple(windows) if any(w is not None for w in windows) else ()


def _attention(text, notes: dict[str, str]) -> dict:
    """Heads, head and latent dims of the config (multi-head latent attention where it says so)."""
    n_heads = getattr(text, "num_attention_heads", None)
    head_dim = getattr(text, "head_dim", None)
    if head_dim is None and n_heads:
        head_dim = getattr(text, "hidden_size", 0) // n_heads or None
    layout = {
        "n_heads": n_heads,
        "n_kv_heads": getattr(text, "num_key_value_heads", None) or n_heads,
        "head_dim": head_dim,
    }
    latent = getattr(text, "kv_lora_rank", None)
    if latent:  # DeepSeek V2/V3: the cache holds one latent (+ the shared rotary key) per token and layer
        rope, nope = getattr(text, "qk_rope_head_dim", 0), getattr(text, "qk_nope_head_dim", 0)
        layout["kv_latent_dim"] = latent + rope
        layout["attention_dim"] = nope + rope + getattr(text, "v_head_dim", 0)
        note = (
            "multi-head latent attention: the cached latents are counted; their re-expansion through "
            "kv_b_proj at every step (FLOPs and intermediate bytes) is not"
        )
        for figure in ("mfu", "mbu"):
            notes[figure] = note
    return layout


def _mixture_of_experts(text, notes: dict[str, str]) -> None:
    experts = next(
        (
            getattr(text, a)
            for a in ("num_local_experts", "n_routed_experts", "num_experts")
            if getattr(text, a, None)
        ),
        None,
    )
    if experts:
        active = getattr(text, "num_experts_per_tok", None)
        note = f"mixture of experts: every expert's weights are counted, a token runs {active} of {experts}"
        for figure in ("mfu", "mbu"):
            notes[figure] = "; ".join(filter(None, [notes.get(figure), note]))


def compute_dtype(model: torch.nn.Module, autocast_dtype=None) -> torch.dtype:
    """The dtype activations (and so the KV cache) are in: the autocast dtype if the forward runs
    under one (HFLM's ``mixed_precision_dtype``), else the input embeddings' (a 4-bit model's packed
    weights are no guide; its activations are the embeddings' dtype)."""
    if autocast_dtype is not None:
        return getattr(torch, autocast_dtype) if isinstance(autocast_dtype, str) else autocast_dtype
    get_in = getattr(model, "get_input_embeddings", None)
    embedding = get_in() if get_in is not None else None
    weight = getattr(embedding, "weight", None)
    if weight is not None and weight.is_floating_point():
        return weight.dtype
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def dtype_label(dtype: torch.dtype) -> str:
    """``bfloat16``, ``float16``, ``float32``, or ``tf32`` where torch runs fp32 matmuls on tensor cores."""
    label = str(dtype).removeprefix("torch.")
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return label


def model_shape(model: torch.nn.Module, autocast_dtype=None) -> ModelShape:
    """The :class:`ModelShape` of a transformers causal LM, encoder or sequence classifier (KV and
    attention layout from its config).

    ``autocast_dtype``: the dtype the forward runs under autocast, if it does.
    """
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    notes: dict[str, str] = {}
    n_layers = getattr(text, "num_hidden_layers", None)
    layout = _attention(text, notes)
    windows = _layer_windows(text, n_layers, notes)
    _mixture_of_experts(text, notes)
    bidirectional = _bidirectional(model)
    embedding, head, tied, pooled = _embedding_and_head(model, bidirectional)
    activations = compute_dtype(model, autocast_dtype)
    return ModelShape(
        params=parameter_count(model),
        weight_bytes=weight_bytes(model),
        n_layers=n_layers,
        kv_bytes_per_element=torch.empty((), dtype=activations).element_size(),
        layer_windows=windows,
        embedding_params=embedding,
        lm_head_params=head,
        lm_head_tied=tied,
        compute_dtype=dtype_label(activations),
        notes=notes,
        bidirectional=bidirectional,
        head_pooled=pooled,
        **layout,
    )


def model_devices(model: torch.nn.Module) -> list[int]:
    """CUDA indices holding the model's parameters (empty on CPU)."""
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def logits_device(model: torch.nn.Module) -> int | None:
    """CUDA index of the GPU that makes the logits (where the output projection lives; for a model
    split over GPUs, the last of the pipeline), or ``None`` when the model is not on a GPU."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tensors = [] if head is None else [*head.parameters(), *head.buffers()]
    cuda = [t.device.index or 0 for t in tensors if t.device.type == "cuda"]
    if cuda:
        return cuda[0]
    devices = model_devices(model)
    return devices[-1] if devices else None
