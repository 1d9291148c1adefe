"""One forward pass of any model ``perf-hf`` loads (causal LM, encoder, sequence classifier), as the
forward sweep and the classifier's scoring run it: no gradient, no KV cache, autocast when HFLM's
``mixed_precision_dtype`` asks for it, and - for a causal LM's prefill - logits at the last position
only (transformers' ``logits_to_keep=1``, what ``generate`` does)."""

from __future__ import annotations

import contextlib
import inspect

import torch


def autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device_type`` (HFLM's ``mixed_precision_dtype``), or nothing."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype, cache_enabled=False)


class ForwardCall:
    """``model(input_ids, attention_mask)`` -> logits, with the keyword arguments the model's
    ``forward`` accepts worked out once (a sweep calls it thousands of times)."""

    def __init__(self, model: torch.nn.Module, autocast_dtype: torch.dtype | None, last_position_only: bool):
        self.model = model
        self.autocast_dtype = autocast_dtype
        accepted = inspect.signature(model.forward).parameters
        self.fixed: dict = {"use_cache": False} if "use_cache" in accepted else {}
        # whether the logits are made at the last position only: the model must accept logits_to_keep
        self.last_position_only = last_position_only and "logits_to_keep" in accepted
        if self.last_position_only:
            self.fixed["logits_to_keep"] = 1

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = {} if attention_mask is None else {"attention_mask": attention_mask}
        with torch.inference_mode(), autocast(input_ids.device.type, self.autocast_dtype):
            return self.model(input_ids=input_ids, **mask, **self.fixed).logits
