"""Random-weight models of the architecture presets in ``configs/``, shared by the benches."""

from __future__ import annotations

import torch


def random_model(arch: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """The preset ``arch`` (e.g. ``qwen2.5-7b``; a sequence classifier for ``distilbert-base``) with
    random weights, built on ``device``, in eval mode."""
    import transformers

    from lm_eval_perf.models.classifier import has_classification_head
    from lm_eval_perf.models.sources import load_architecture, transformers_config

    config = transformers_config(load_architecture(arch))
    auto = transformers.AutoModelForCausalLM
    if has_classification_head(config, "auto"):
        auto = transformers.AutoModelForSequenceClassification
    with torch.device(device):
        return auto.from_config(config, dtype=dtype).eval()
