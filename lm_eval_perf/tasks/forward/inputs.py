"""The rows of the forward sweep's batches: ``batch_size`` rows of exactly ``seq_len`` positions.

``csv``: row ``r`` is example ``r`` of the labelled file (wrapping around), tokenized as the model's
tokenizer does by default (a BERT-like one adds its ``[CLS]``/``[SEP]``), cut to ``seq_len`` tokens
and right-padded to it; the attention mask marks the padding, and the row's real tokens are
counted. ``text``, ``bbh``, ``random``: rows filled with tokens
(:func:`lm_eval_perf.tasks.sweeps.tokens.token_rows`), no padding, no mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lm_eval_perf.tasks.forward.options import ForwardOptions
from lm_eval_perf.tasks.labelled import read_examples
from lm_eval_perf.tasks.sweeps.options import digest
from lm_eval_perf.tasks.sweeps.tokens import token_rows


@dataclass(frozen=True)
class Rows:
    """One batch: ids ``(batch, seq_len)`` on the CPU; the mask (``None`` when every position is a
    token); each row's number of real tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    row_tokens: tuple[int, ...]


class ForwardInputs:
    """Where a sweep's rows come from, read once per sweep (the labelled file's texts)."""

    def __init__(self, lm, options: ForwardOptions):
        self.tokenizer = lm.tokenizer
        self.vocab_size = lm.model.config.get_text_config().vocab_size
        self.options = options
        self.texts: list[str] = []
        if options.input_source == "csv":
            self.texts = [e.text for e in read_examples(options.path, options.text_column, None)]  # type: ignore[arg-type]

    @property
    def sha(self) -> str | None:
        """A hash of the file's texts (``csv``): a point measured on other texts is measured again."""
        return digest(self.texts) if self.texts else None

    def rows(self, batch_size: int, seq_len: int) -> Rows:
        options = self.options
        if not self.texts:
            ids = token_rows(
                self.tokenizer,
                self.vocab_size,
                options.input_source,
                seq_len,
                batch_size,
                options.seed,
                options.bbh_dir,
            )
            return Rows(ids, None, (seq_len,) * batch_size)
        texts = [self.texts[r % len(self.texts)] for r in range(batch_size)]
        batch = self.tokenizer(
            texts,
            truncation=True,
            max_length=seq_len,
            padding="max_length",
            padding_side="right",
            return_tensors="pt",
        )
        mask = batch["attention_mask"]
        tokens = tuple(int(n) for n in mask.sum(dim=1).tolist())
        return Rows(batch["input_ids"], None if all(n == seq_len for n in tokens) else mask, tokens)
