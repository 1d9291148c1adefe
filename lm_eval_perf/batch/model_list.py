"""A CSV list of models (``models_csv:``), for running one task - typically ``esd`` - over many models.

    model,revision,source_model,name
    HuggingFaceTB/SmolLM2-135M,,,
    ./adapters/lora-r8,,HuggingFaceTB/SmolLM2-135M,smollm2-lora-r8

* ``model`` (required; ``model_id`` is accepted too) - hub id, ``./local/path``, ``arch:<preset>``,
  ``bundled:<name>``; with ``source_model`` set it is a PEFT adapter applied to ``source_model``
  (``pretrained=<source_model>,peft=<model>``, reported by ESD with ``is_adapter=True``).
* ``revision`` (optional) - hub revision of ``model`` (of ``source_model`` for adapters).
* ``source_model`` (optional) - the base model of an adapter.
* ``name`` (optional) - result-folder name (default: derived from ``model``).

The first row is the header. Empty lines and lines starting with ``#`` are skipped. Relative paths
(``./``, ``../``) are relative to the CSV file's folder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.names import folder_name, local_path, model_name

COLUMNS = ("model", "revision", "source_model", "name")


@dataclass(frozen=True)
class ModelRow:
    """One CSV row as ``pretrained``/``peft`` model arguments and a result-folder name."""

    pretrained: str
    peft: str | None
    revision: str | None
    name: str
    line: int


def read_model_list(path: Path, where: str) -> list[ModelRow]:
    """The rows of the CSV at ``path``; ``where`` (the config key) prefixes every error."""
    where = f"{where} ({path.name})"
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{where}: cannot read {path}: {exc.strerror or exc}") from exc
    numbered = [
        (n, line) for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")
    ]
    if not numbered:
        raise UserInputError(f"{where}: the file has no header row (model,revision,source_model,name)")
    reader = csv.reader(line for _, line in numbered)
    header = [h.strip().lower() for h in next(reader)]
    header = ["model" if h == "model_id" else h for h in header]
    for column in header:
        if column not in COLUMNS:
            raise UserInputError(f"{where}: unknown column {column!r} (use {', '.join(COLUMNS)})")
    if "model" not in header:
        raise UserInputError(f"{where}: the header row has no 'model' column")
    rows = []
    for (number, _), cells in zip(numbered[1:], reader):
        if len(cells) > len(header):
            raise UserInputError(f"{where} line {number}: {len(cells)} cells for {len(header)} columns")
        row = {k: v.strip() for k, v in zip(header, cells) if v.strip()}
        if "model" not in row:
            raise UserInputError(f"{where} line {number}: no model")
        at = f"{where} line {number}"
        model = local_path(row["model"], path.parent, f"{at}: model")
        source = (
            local_path(row["source_model"], path.parent, f"{at}: source_model")
            if "source_model" in row
            else None
        )
        name = (
            folder_name(row["name"], f"{where} line {number}: name")
            if "name" in row
            else model_name(row["model"], row.get("revision"))
        )
        rows.append(
            ModelRow(
                pretrained=source or model,
                peft=model if source else None,
                revision=row.get("revision"),
                name=name,
                line=number,
            )
        )
    if not rows:
        raise UserInputError(f"{where}: no models listed")
    return rows
