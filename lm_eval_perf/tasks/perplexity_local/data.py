"""Documents of ``perplexity_local``: the paragraphs of a local text file, scored with
``loglikelihood_rolling`` (word/byte perplexity and bits per byte, as lm-eval's wikitext task)."""

from __future__ import annotations

import re
from pathlib import Path

import datasets

from lm_eval_perf.errors import UserInputError

DEFAULT_TEXT = Path(__file__).resolve().parent / "text.txt"


def load(text_file: str | None = None, **_metadata) -> datasets.DatasetDict:
    """lm-eval ``custom_dataset`` hook: one document per blank-line separated paragraph."""
    path = Path(text_file).expanduser() if text_file else DEFAULT_TEXT
    if not path.is_file():
        raise UserInputError(f"perplexity text file {path} does not exist")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")) if p.strip()]
    if not paragraphs:
        raise UserInputError(f"perplexity text file {path} is empty")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([{"text": p} for p in paragraphs])})


def process_results(doc: dict, results: list[float]) -> dict:
    """(log-likelihood, count) pairs that lm-eval's weighted perplexity aggregations sum up."""
    (loglikelihood,) = results
    words = len(re.split(r"\s+", doc["text"]))
    size = len(doc["text"].encode("utf-8"))
    return {
        "word_perplexity": (loglikelihood, words),
        "byte_perplexity": (loglikelihood, size),
        "bits_per_byte": (loglikelihood, size),
    }
