"""The precision names of a study's matrix (``precision=``, batch configs' ``precisions``, report rows)."""

from __future__ import annotations

from lm_eval_perf.errors import UserInputError

# name -> one-line description (shown in errors and the README), in the order reports list rows
PRECISIONS: dict[str, str] = {
    "bfloat16": "bf16 cast of the checkpoint's weights",
    "float16": "fp16 cast of the checkpoint's weights",
    "float32": "fp32 cast of the checkpoint's weights",
    "int4": "4-bit weight-only round-to-nearest at load time, no calibration (any model, also arch:)",
    "awq": "a pre-quantized AWQ int4 checkpoint (quant_method: awq; see lm-eval-perf quantize)",
    "nf4": "bitsandbytes 4-bit NormalFloat at load time (GPU)",
}
CASTS = ("bfloat16", "float16", "float32")


def validate_precision(name: str) -> str:
    """``name`` if it is a known precision, else a :class:`UserInputError` listing the known ones."""
    if name not in PRECISIONS:
        raise UserInputError(f"unknown precision {name!r}: use one of {', '.join(PRECISIONS)}")
    return name
