"""Activation-aware weight quantization (AWQ, Lin et al. 2023), the per-channel scale search.

For each decoder layer, in order, on the calibration activations that reach it:

1. every linear layer's input X is recorded (one forward pass of the layer);
2. for each group of linears that read the same input - (input_layernorm → q,k,v),
   (v → o, when their shapes allow), (post_attention_layernorm → gate,up), (up → down) - scales
   s = mean|X|^α / mean|Ŵ|^(1-α) (Ŵ = |W| normalised per quantization group; s divided by
   √(max s · min s)) are tried for α = 0, 1/n_grid, …, (n_grid-1)/n_grid and the one minimising
   ‖X·Wᵀ - (X/s)·Q(W·s)ᵀ‖² over the group's outputs is kept (Q = int4 round-to-nearest);
3. W·s goes into the linears and 1/s into the operator before them (norm weight or previous linear),
   which leaves the float model's function unchanged;
4. each linear is quantized with RTN; the layer's float output feeds the next layer.

This is AutoAWQ's search with the group's own outputs as the loss (AutoAWQ runs the whole attention
or MLP block for the first and third groups) and without its optional weight-clipping step.
Decoder layers must be llama-style (``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``):
Llama, Qwen2, Mistral, SmolLM2 and the DeepSeek-R1 distills qualify.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models.quant.int4 import GroupQuantized, quantize_rtn

ATTN, MLP = ("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj")


class _Captured(Exception):
    """Raised by the hook on layer 0 once its inputs are recorded."""


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """``model.model.layers`` of a llama-style causal LM; one-line error otherwise."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    first = layers[0] if layers else None
    ok = (
        first is not None
        and all(hasattr(first.self_attn, n) for n in ATTN)
        and all(hasattr(first.mlp, n) for n in MLP)
        and hasattr(first, "input_layernorm")
    )
    if not ok:
        raise UserInputError(
            f"AWQ here supports llama-style decoder layers (q/k/v/o_proj, gate/up/down_proj): "
            f"{type(model).__name__} is not one; use --backend autoawq"
        )
    return layers


def _groups(layer: nn.Module) -> list[tuple[nn.Module, list[str]]]:
    attn, mlp = layer.self_attn, layer.mlp
    groups = [(layer.input_layernorm, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"])]
    if attn.v_proj.weight.shape == attn.o_proj.weight.shape:
        groups.append((attn.v_proj, ["self_attn.o_proj"]))
    groups.append((layer.post_attention_layernorm, ["mlp.gate_proj", "mlp.up_proj"]))
    groups.append((mlp.up_proj, ["mlp.down_proj"]))
    return groups


def _layer_inputs(model: nn.Module, layer0: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    seen: dict = {}

    def hook(module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        seen["kwargs"] = kwargs
        raise _Captured

    handle = layer0.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(ids, use_cache=False)
    except _Captured:
        pass
    finally:
        handle.remove()
    return seen["hidden"], seen["kwargs"]


def _run_layer(layer: nn.Module, hidden: torch.Tensor, kwargs: dict, watch: list[str]):
    """The layer's output and the input of each watched linear, as [tokens, in_features]."""
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        layer.get_submodule(name).register_forward_hook(
            lambda m, args, out, name=name: inputs.__setitem__(name, args[0].reshape(-1, args[0].shape[-1]))
        )
        for name in watch
    ]
    try:
        out = layer(hidden, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return (out[0] if isinstance(out, tuple) else out), inputs


def _fake_quant(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    return quantize_rtn(weight, group_size).dequantize(weight.dtype)


@torch.no_grad()
def _best_scales(x: torch.Tensor, weights: list[torch.Tensor], group_size: int, n_grid: int) -> torch.Tensor:
    x = x.float()
    w = torch.cat([t.float() for t in weights], dim=0)
    x_mean = x.abs().mean(dim=0)
    grouped = w.abs().view(-1, group_size)
    w_mean = (grouped / (grouped.amax(dim=1, keepdim=True) + 1e-6)).view_as(w).mean(dim=0)
    reference = x @ w.t()
    best, best_loss = torch.ones_like(x_mean), float("inf")
    for step in range(n_grid):
        alpha = step / n_grid
        s = (x_mean.pow(alpha) / (w_mean.pow(1 - alpha) + 1e-4)).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        loss = (reference - (x / s) @ _fake_quant(w * s, group_size).t()).pow(2).mean().item()
        if loss < best_loss:
            best, best_loss = s, loss
    return best


@torch.no_grad()
def _fold(prev: nn.Module, linears: list[nn.Linear], s: torch.Tensor) -> None:
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s.view(-1, 1).to(prev.weight.dtype))
        if prev.bias is not None:
            prev.bias.div_(s.to(prev.bias.dtype))
    else:  # RMSNorm / LayerNorm: y = norm(x) · weight (+ bias)
        prev.weight.div_(s.to(prev.weight.dtype))
        if getattr(prev, "bias", None) is not None:
            prev.bias.div_(s.to(prev.bias.dtype))
    for linear in linears:
        linear.weight.mul_(s.view(1, -1).to(linear.weight.dtype))


@torch.no_grad()
def awq_quantize(
    model: nn.Module,
    ids: torch.Tensor,
    group_size: int,
    n_grid: int = 20,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, GroupQuantized]:
    """Search AWQ scales on calibration tokens ``ids`` [samples, seq_len], fold them into ``model``
    (in place) and return the int4 weights of every decoder linear layer by qualified name."""
    layers = decoder_layers(model)
    prefix = next(name for name, module in model.named_modules() if module is layers)
    names = [f"self_attn.{n}" for n in ATTN] + [f"mlp.{n}" for n in MLP]
    for name in names:
        k = layers[0].get_submodule(name).in_features
        if k % group_size:
            raise UserInputError(
                f"group size {group_size} does not divide in_features {k} of {name}: try 64 or 32"
            )
    device = next(model.parameters()).device
    hidden, kwargs = _layer_inputs(model, layers[0], ids.to(device))
    result: dict[str, GroupQuantized] = {}
    for index, layer in enumerate(layers):
        out, inputs = _run_layer(layer, hidden, kwargs, names)
        for prev, group in _groups(layer):
            linears = [layer.get_submodule(n) for n in group]
            s = _best_scales(inputs[group[0]], [lin.weight for lin in linears], group_size, n_grid)
            _fold(prev, linears, s)
        for name in names:
            result[f"{prefix}.{index}.{name}"] = quantize_rtn(
                layer.get_submodule(name).weight.data, group_size
            )
        hidden = out
        if progress:
            progress(index + 1, len(layers))
    return result
