"""Prompt token ids of the throughput sweep: ``batch_size`` rows of exactly ``prompt_len`` tokens from
the sweep's ``prompt_source`` (:func:`lm_eval_perf.tasks.sweeps.tokens.token_rows`)."""

from __future__ import annotations

import torch

from lm_eval_perf.tasks.sweeps.tokens import token_rows
from lm_eval_perf.tasks.throughput.sweep import SweepOptions


def prompt_ids(tokenizer, vocab_size: int, options: SweepOptions, batch_size: int) -> torch.Tensor:
    """A CPU ``(batch_size, prompt_len)`` tensor of token ids (int64)."""
    source, length = options.prompt_source, options.prompt_len
    return token_rows(tokenizer, vocab_size, source, length, batch_size, options.seed, options.bbh_dir)
