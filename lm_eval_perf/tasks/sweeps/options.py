"""Option values of a sweep task, checked one by one: every error is one line naming the task and option.

Options come from the task YAML's ``metadata`` merged with ``--metadata '{...}'``; lm-eval also copies
every ``--model_args`` entry into it, so keys that are not options are ignored - unless they look
like a misspelt option (:func:`check_names`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from lm_eval_perf.errors import UserInputError

T = TypeVar("T")
P = TypeVar("P")


def check_names(
    task: str, options: Mapping[str, Any], names: Iterable[str], ignore: frozenset[str] = frozenset()
) -> None:
    """One-line error for a key that looks like a misspelt option of ``task``.

    ``ignore``: names of model arguments (lm-eval copies ``--model_args`` into the metadata): not an
    error even when close to an option's name - unless the value is a list, which a model argument
    never is (``{"batch_size": [1, 8]}`` is a misspelt ``batch_sizes``).
    """
    names = list(names)
    for key, value in options.items():
        if key in names or (key in ignore and not isinstance(value, (list, tuple))):
            continue
        hint = difflib.get_close_matches(key, names, n=1, cutoff=0.85)
        if hint:
            raise UserInputError(f"unknown {task} option {key!r} (did you mean {hint[0]!r}?)")


def integer(task: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise UserInputError(f"{task} option {name}={value!r} must be an integer")
    if value < minimum:
        raise UserInputError(f"{task} option {name}={value!r} must be >= {minimum}")
    return int(value)


def number(task: str, name: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise UserInputError(f"{task} option {name}={value!r} must be a number >= {minimum}")
    return float(value)


def int_list(task: str, name: str, value: Any, minimum: int) -> tuple[int, ...]:
    """A list of distinct integers (a single integer is a list of one)."""
    items = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise UserInputError(f"{task} option {name}={value!r} must be a list of integers")
    parsed = tuple(integer(task, name, v, minimum) for v in items)
    if len(set(parsed)) != len(parsed):
        raise UserInputError(f"{task} option {name}={value!r} repeats a value")
    return parsed


def choice(task: str, name: str, value: Any, allowed: tuple) -> Any:
    """One of ``allowed`` (``"true"``/``"false"`` strings count as booleans)."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if not any(type(value) is type(a) and value == a for a in allowed):
        shown = ", ".join(str(a).lower() if isinstance(a, bool) else a for a in allowed)
        raise UserInputError(f"{task} option {name}={value!r}: use one of {shown}")
    return value


def optional(value: Any, parse: Callable[[Any], T]) -> T | None:
    """``parse(value)``, or ``None`` for an option left unset."""
    return None if value is None else parse(value)


def grid(point: Callable[[int, int], P], lengths: Iterable[int], batch_sizes: Iterable[int]) -> Iterator[P]:
    """A sweep's points in running order: lengths as given, batch sizes ascending at each (so the
    batch sizes above one that ran out of memory can be skipped)."""
    for length in lengths:
        for batch_size in sorted(batch_sizes):
            yield point(batch_size, length)


def named_point(task: str, text: str | None, axes: tuple[str, str], points: Iterable[P]) -> P | None:
    """The point of ``points`` that ``text`` names (``"bs=8,seq=128"`` with ``axes = ("bs", "seq")``;
    ``profile_point``), or ``None`` without a name; one-line error for a malformed or unknown point."""
    if text is None:
        return None
    parts = dict(p.split("=", 1) for p in text.replace(" ", "").split(",") if "=" in p)
    try:
        wanted = int(parts[axes[0]]), int(parts[axes[1]])
    except (KeyError, ValueError):
        raise UserInputError(
            f"{task} option profile_point={text!r}: write it as '{axes[0]}=<batch size>,{axes[1]}=<tokens>'"
        ) from None
    for point in points:
        if (point.batch_size, point.length) == wanted:  # type: ignore[attr-defined]
            return point
    raise UserInputError(f"{task} profile_point={text!r} is not a point of the sweep")


def digest(data: Any) -> str:
    """A short stable hash of JSON-able ``data`` (sorted keys)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
