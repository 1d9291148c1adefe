"""Calibration tokens for AWQ from local text: the ``input`` fields of the BBH files."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lm_eval_perf.errors import UserInputError


def bbh_texts(bbh_dir: Path) -> list[str]:
    """Every example's ``input`` of every ``<bbh_dir>/*.json`` (sorted by file name)."""
    texts = []
    for path in sorted(bbh_dir.glob("*.json")):
        try:
            texts += [example["input"] for example in json.loads(path.read_text())["examples"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserInputError(f"{path} is not a BIG-Bench Hard task file: {exc}") from exc
    if not texts:
        raise UserInputError(f"no BBH .json files in {bbh_dir}")
    return texts


def token_blocks(tokenizer, texts: list[str], samples: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """``samples`` blocks of ``seq_len`` tokens [samples, seq_len], drawn (seeded) from the texts
    joined by blank lines; fewer when the text is short, one-line error when it has no full block."""
    ids = tokenizer("\n\n".join(texts), return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    count = ids.numel() // seq_len
    if count == 0:
        raise UserInputError(f"calibration text has {ids.numel()} tokens, fewer than one block of {seq_len}")
    blocks = ids[: count * seq_len].view(count, seq_len)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:samples]
    return blocks[order]
