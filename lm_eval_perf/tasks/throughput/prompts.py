"""Prompt token ids of the sweep: ``batch_size`` rows of exactly ``prompt_len`` tokens, no padding.

``text`` and ``bbh`` tokenize a stream of real text once and cut row ``r`` from token offset
``r * ROW_STRIDE`` (wrapping around the stream), so the rows of a batch differ and row ``r`` is the
same at every batch size. ``text`` is ``passage.txt`` (chapter 1 of Jane Austen's *Pride and
Prejudice*, 1813, public domain); ``bbh`` the BIG-Bench Hard inputs, files in name order, until
there is enough text. ``random`` draws ids uniformly from the vocabulary shared by tokenizer and
model, with a seeded generator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.tasks.throughput.sweep import SweepOptions

PASSAGE = Path(__file__).resolve().parent / "passage.txt"
ROW_STRIDE = 97  # tokens between the starts of consecutive rows (prime: rows rarely coincide)
BBH_ENV = "LM_EVAL_PERF_BBH_DIR"


def _bbh_text(bbh_dir: str | None, tokens_needed: int, tokenizer) -> list[int]:
    directory = bbh_dir or os.environ.get(BBH_ENV)
    if not directory:
        raise UserInputError(
            'perf_throughput prompt_source=bbh needs the BBH directory: --metadata \'{"bbh_dir": "PATH"}\' '
            f"or {BBH_ENV}=PATH"
        )
    files = sorted(Path(directory).expanduser().glob("*.json"))
    if not files:
        raise UserInputError(f"BBH directory {directory} holds no .json files")
    ids: list[int] = []
    for path in files:
        try:
            examples = json.loads(path.read_text())["examples"]
        except (ValueError, KeyError) as exc:
            raise UserInputError(f"BBH file {path} is not a BIG-Bench Hard task file: {exc}") from exc
        for example in examples:
            ids += tokenizer(example["input"] + "\n\n", add_special_tokens=False).input_ids
            if len(ids) >= tokens_needed:
                return ids
    return ids


def prompt_ids(tokenizer, vocab_size: int, options: SweepOptions, batch_size: int) -> torch.Tensor:
    """A CPU ``(batch_size, prompt_len)`` tensor of token ids (int64)."""
    length = options.prompt_len
    if options.prompt_source == "random":
        high = min(vocab_size, len(tokenizer))
        generator = torch.Generator().manual_seed(options.seed)
        return torch.randint(0, high, (batch_size, length), generator=generator)
    needed = length + (batch_size - 1) * ROW_STRIDE
    if options.prompt_source == "text":
        stream = tokenizer(PASSAGE.read_text(encoding="utf-8"), add_special_tokens=False).input_ids
    else:
        stream = _bbh_text(options.bbh_dir, needed, tokenizer)
    if not stream:
        raise UserInputError(f"prompt_source={options.prompt_source} gave no tokens")
    ids = torch.tensor(stream, dtype=torch.long)
    offsets = torch.arange(batch_size)[:, None] * ROW_STRIDE + torch.arange(length)[None, :]
    return ids[offsets % len(stream)]
