"""Rows of token ids for the sweeps: ``batch_size`` rows of exactly ``length`` tokens, no padding.

``text`` and ``bbh`` tokenize a stream of real text once and cut row ``r`` from token offset
``r * ROW_STRIDE`` (wrapping around the stream), so the rows of a batch differ and row ``r`` is the
same at every batch size. ``text`` is ``passage.txt`` (chapter 1 of Jane Austen's *Pride and
Prejudice*, 1813, public domain); ``bbh`` the BIG-Bench Hard inputs, files in name order, until
there is enough text. ``random`` draws ids uniformly from the vocabulary shared by tokenizer and
model, with a seeded generator.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lm_eval_perf.bbh import bbh_directory
from lm_eval_perf.errors import UserInputError

PASSAGE = Path(__file__).resolve().parent / "passage.txt"
PROMPT_SOURCES = ("text", "bbh", "random")
ROW_STRIDE = 97  # tokens between the starts of consecutive rows (prime: rows rarely coincide)


def _bbh_text(bbh_dir: str | None, tokens_needed: int, tokenizer) -> list[int]:
    files = sorted(bbh_directory(bbh_dir, "prompt source bbh").glob("*.json"))
    if not files:
        raise UserInputError(f"BBH directory {bbh_dir} holds no .json files")
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


def token_rows(
    tokenizer,
    vocab_size: int,
    source: str,
    length: int,
    batch_size: int,
    seed: int = 0,
    bbh_dir: str | None = None,
) -> torch.Tensor:
    """A CPU ``(batch_size, length)`` tensor of token ids (int64) from ``source`` (see the module
    docstring; ``bbh_dir`` or ``$LM_EVAL_PERF_BBH_DIR`` for ``bbh``, ``seed`` for ``random``)."""
    if source == "random":
        high = min(vocab_size, len(tokenizer))
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(0, high, (batch_size, length), generator=generator)
    needed = length + (batch_size - 1) * ROW_STRIDE
    if source == "text":
        stream = tokenizer(PASSAGE.read_text(encoding="utf-8"), add_special_tokens=False).input_ids
    else:
        stream = _bbh_text(bbh_dir, needed, tokenizer)
    if not stream:
        raise UserInputError(f"prompt source {source} gave no tokens")
    ids = torch.tensor(stream, dtype=torch.long)
    offsets = torch.arange(batch_size)[:, None] * ROW_STRIDE + torch.arange(length)[None, :]
    return ids[offsets % len(stream)]
