"""Labelled text files: one example per row, a text and its label - CSV (``.csv``; ``.tsv`` tab
separated) with a header row, or JSON lines (``.jsonl``: one object per line). The columns are
``text`` and ``label`` unless named otherwise. ``classification_local`` reads its documents from
such a file, ``perf_forward`` (``input_source: csv``) its inputs."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from lm_eval_perf.errors import UserInputError

SUFFIXES = (".csv", ".tsv", ".jsonl")


@dataclass(frozen=True)
class Example:
    text: str
    label: str | None  # None when no label column was asked for


def _rows(path: Path) -> list[dict]:
    try:
        content = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UserInputError(f"cannot read the labelled file {path}: {exc.strerror or exc}") from exc
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UserInputError(f"{path} line {number} is not JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise UserInputError(f"{path} line {number} is not a JSON object")
            rows.append(row)
        return rows
    return list(csv.DictReader(content.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ","))


def read_examples(
    path: str | Path, text_column: str = "text", label_column: str | None = "label"
) -> list[Example]:
    """The examples of the file at ``path`` (labels as strings; ``label_column=None``: texts only);
    a one-line error for a missing file, an unknown format, a missing column or an empty cell."""
    file = Path(path).expanduser()
    if file.suffix not in SUFFIXES:
        raise UserInputError(f"labelled file {path}: use a {', '.join(SUFFIXES)} file")
    if not file.is_file():
        raise UserInputError(f"labelled file {path} does not exist")
    rows = _rows(file)
    if not rows:
        raise UserInputError(f"labelled file {path} has no examples")
    columns = [text_column] + ([label_column] if label_column is not None else [])
    examples = []
    for number, row in enumerate(rows, 1):
        for column in columns:
            if column not in row:
                raise UserInputError(
                    f"labelled file {path} has no column {column!r} (it has {', '.join(map(str, row))}): "
                    "name yours with text_column / label_column"
                )
            if row[column] is None or str(row[column]).strip() == "":
                raise UserInputError(f"labelled file {path}, example {number}: {column!r} is empty")
        label = None if label_column is None else str(row[label_column]).strip()
        examples.append(Example(str(row[text_column]), label))
    return examples
