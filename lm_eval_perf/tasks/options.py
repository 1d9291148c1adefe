"""Option values as YAML, JSON and command lines spell them; imports nothing heavy (batch_eval uses it)."""

from __future__ import annotations

from typing import Any

from lm_eval_perf.errors import UserInputError


def boolean_option(where: str, value: Any) -> bool:
    """A boolean given as one (YAML/JSON) or spelt ``true/false``, ``1/0``, ``yes/no``; ``where`` names
    the option in the one-line error."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise UserInputError(f"{where}={value!r}: use true or false")
