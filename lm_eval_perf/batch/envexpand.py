"""``${VAR}`` and ``${VAR:-default}`` in config strings.

Every string in a batch config may name environment variables: ``${HOME}`` is replaced by the
variable's value, ``${BBH:-../data/bbh}`` by the value or, when the variable is unset or empty, by
the default (which may itself contain ``${...}``). ``CONFIG_DIR`` is always defined: the absolute
folder of the config file. An unset variable without a default is an error; ``$`` not followed by
``{`` is kept as it is.
"""

from __future__ import annotations

from collections.abc import Mapping

from lm_eval_perf.errors import UserInputError


def expand(text: str, variables: Mapping[str, str], where: str) -> str:
    """``text`` with every ``${NAME}`` / ``${NAME:-default}`` replaced; ``where`` names it in errors."""
    out: list[str] = []
    i = 0
    while i < len(text):
        start = text.find("${", i)
        if start < 0:
            out.append(text[i:])
            break
        out.append(text[i:start])
        end = _closing_brace(text, start + 2, where)
        name, sep, default = text[start + 2 : end].partition(":-")
        if not name.isidentifier():
            raise UserInputError(f"{where}: ${{{name}}} is not a variable name")
        value = variables.get(name)
        if value:
            out.append(value)
        elif sep:
            out.append(expand(default, variables, where))
        else:
            raise UserInputError(
                f"{where}: environment variable {name} is not set (write ${{{name}:-default}})"
            )
        i = end + 1
    return "".join(out)


def _closing_brace(text: str, pos: int, where: str) -> int:
    depth = 1
    for i in range(pos, len(text)):
        if text.startswith("${", i):
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise UserInputError(f"{where}: unclosed ${{ in {text!r}")
