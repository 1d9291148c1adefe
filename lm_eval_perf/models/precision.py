"""Precisions ``perf-hf`` loads a model in: the ``precision=`` model argument.

Every name in :data:`PRECISIONS` is a row of a study's matrix. Unknown names are one-line errors.
"""

from __future__ import annotations

from lm_eval_perf.errors import UserInputError

# name -> one-line description (shown in errors and the README)
PRECISIONS: dict[str, str] = {
    "bfloat16": "bf16 cast of the checkpoint's weights",
    "float16": "fp16 cast of the checkpoint's weights",
    "float32": "fp32 cast of the checkpoint's weights",
}


def validate_precision(name: str) -> str:
    """``name`` if it is a known precision, else a :class:`UserInputError` listing the known ones."""
    if name not in PRECISIONS:
        raise UserInputError(f"unknown precision {name!r}: use one of {', '.join(PRECISIONS)}")
    return name
