"""Grouped-query attention of one decoded token without copying the KV cache per query head.

transformers' ``sdpa`` attention, traced by ``torch.compile`` with an attention mask (a decode step
on a ``StaticCache`` always has one), repeats every key/value head for each query head that shares
it (``repeat_kv``) before calling ``scaled_dot_product_attention``. For Qwen2.5-7B (28 query heads
on 4 KV heads) that is two copies of 7 times the layer's whole cache in every decoder layer of every
step, and an attention kernel that reads them. In eager mode transformers avoids the copies for one
query token by folding each group's query heads into query rows of its KV head; it does not do so
under ``torch.compile``.

:func:`packed_decode_attention` makes a model use :data:`NAME` for the duration: the same
computation, with the query heads of a group passed as query rows of their KV head whenever one
token per sequence is decoded and the mask is shared by all heads. Every other call (prefill,
masks per head, models without grouped KV heads, position biases) goes to transformers' ``sdpa``
unchanged. The throughput task's static decode loop runs inside it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

NAME = "sdpa_packed_gqa"  # the name registered in transformers' attention and mask interfaces


def _packed_sdpa(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: ``query`` (batch, heads, q_len, dim), ``key`` and
    ``value`` (batch, kv_heads, kv_len, dim); returns (batch, q_len, heads, dim)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, q_len, dim = query.shape
    shared_mask = attention_mask is None or attention_mask.shape[1] == 1
    if groups == 1 or q_len != 1 or not shared_mask or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    rows = query.reshape(batch, heads // groups, groups, dim)  # query head h -> KV head h // groups
    out = F.scaled_dot_product_attention(
        rows, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
    )
    return out.reshape(batch, 1, heads, dim), None


@functools.cache
def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, _packed_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)


@contextlib.contextmanager
def packed_decode_attention(model: nn.Module) -> Iterator[None]:
    """Run ``model`` with :data:`NAME` in place of ``sdpa`` inside the block (other attention
    implementations are left alone); restores the previous one on exit."""
    previous = model.config._attn_implementation
    if previous != "sdpa" or not hasattr(model, "set_attn_implementation"):
        yield
        return
    _register()
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
