"""Parameter count, weight bytes as held in memory, and KV layout of a loaded model."""

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


def model_shape(model: torch.nn.Module) -> ModelShape:
    """The :class:`ModelShape` of a transformers causal LM (KV layout from its config)."""
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    n_heads = getattr(text, "num_attention_heads", None)
    n_kv = getattr(text, "num_key_value_heads", None) or n_heads
    head_dim = getattr(text, "head_dim", None)
    if head_dim is None and n_heads:
        head_dim = getattr(text, "hidden_size", 0) // n_heads or None
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    compute_dtype = getattr(model, "dtype", dtype)
    return ModelShape(
        params=parameter_count(model),
        weight_bytes=weight_bytes(model),
        n_layers=getattr(text, "num_hidden_layers", None),
        n_kv_heads=n_kv,
        head_dim=head_dim,
        kv_bytes_per_element=torch.empty((), dtype=compute_dtype).element_size(),
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
