"""One error type for bad input, and the one-line report of it on the command line.

Library callers get an ordinary exception (:class:`UserInputError` is a ``ValueError``). Command-line
entry points (``lm_eval --model perf-hf``, ``lm-eval-perf``, ``batch_eval.py``, ``process_results.py``)
print ``lm-eval-perf: error: <message>`` on one line and exit non-zero instead of a traceback.
"""

from __future__ import annotations

import sys
from types import TracebackType


class UserInputError(ValueError):
    """Input the user can fix: a bad model argument, path, config key or value. One line of text."""


def find_user_error(exc: BaseException | None) -> UserInputError | None:
    """``exc`` if it is a :class:`UserInputError`, else the first one it was raised from, else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def one_line(exc: BaseException) -> str:
    """The message printed for ``exc``: its first line, prefixed with the program name."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"lm-eval-perf: error: {text}"


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    user_error = find_user_error(exc)
    if user_error is None:
        _previous_hook(kind, exc, tb)
        return
    print(one_line(user_error), file=sys.stderr)


_previous_hook = sys.excepthook


def install_excepthook() -> None:
    """Make an uncaught :class:`UserInputError` print one line (the exit status stays 1)."""
    if sys.excepthook is not _excepthook:
        global _previous_hook
        _previous_hook = sys.excepthook
        sys.excepthook = _excepthook
