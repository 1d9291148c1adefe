"""Random-weight models of the architecture presets in ``configs/``, shared by the benches."""

from __future__ import annotations

import torch


def random_model(arch: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """The preset ``arch`` (e.g. ``qwen2.5-7b``) with random weights, built on ``device``, in eval mode."""
    import transformers

    from lm_eval_perf.models.sources import load_architecture, transformers_config

    config = transformers_config(load_architecture(arch))
    with torch.device(device):
        return transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
