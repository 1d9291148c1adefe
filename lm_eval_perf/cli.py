"""``lm-eval-perf``: lm-eval's command line with this project's model and tasks registered.

    lm-eval-perf --model perf-hf --model_args pretrained=... --tasks ...   # same flags as lm_eval
    lm-eval-perf <subcommand> ...                                          # this project's tools

Without a subcommand every argument goes to lm-eval's own CLI (``lm_eval``), after
:func:`lm_eval_perf.registration.ensure_registered` - so it works even with the start-up hook
switched off (``LM_EVAL_PERF_NO_AUTOLOAD=1``).

Bad input ends in one line, ``lm-eval-perf: error: ...``, and exit status 2 - this project's own
errors and the input errors lm-eval itself raises as tracebacks: an unknown task name (with the
closest known names) and ``--model_args`` / ``--metadata`` / ``--gen_kwargs`` that are not JSON.
Plain ``lm_eval`` keeps lm-eval's tracebacks for those two.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from lm_eval_perf.errors import UserInputError, find_user_error, install_excepthook, one_line
from lm_eval_perf.orphans import PARENT_ENV, die_with_parent

# name -> "module:function"; each function takes the remaining argv and returns an exit status.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "lm_eval_perf.demo:main",
        "run the bundled SmolLM2 model on local BBH and print accuracy + efficiency",
    ),
    "quantize": ("lm_eval_perf.models.quant.cli:main", "write an AWQ int4 checkpoint (BBH-calibrated)"),
    "compress": ("lm_eval_perf.models.compress.cli:main", "SVD-truncate a model, save a HF directory"),
    "esd": ("lm_eval_perf.tasks.esd.cli:main", "ESD of a checkpoint streamed from its files (no model load)"),
    "batch": ("lm_eval_perf.batch.cli:main", "run a config's models × precisions × tasks matrix, resumably"),
    "report": ("lm_eval_perf.report.cli:main", "results directory -> LaTeX tables, CSV, plots, HTML report"),
}


def _usage() -> str:
    lines = ["usage: lm-eval-perf [lm_eval arguments] | lm-eval-perf <subcommand> [-h]", "", "subcommands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Anything else is passed to lm-eval's CLI (see lm-eval-perf --help-lm-eval)."]
    return "\n".join(lines)


JSON_FLAGS = ("--model_args", "--metadata", "--gen_kwargs")


def _flags(argv: list[str]) -> list[tuple[str, str]]:
    """(flag, value) pairs of ``argv``, for ``--flag value`` and ``--flag=value`` alike."""
    pairs = []
    for i, arg in enumerate(argv):
        flag, sep, value = arg.partition("=")
        if sep and flag.startswith("--"):
            pairs.append((flag, value))
        elif arg.startswith("--") and i + 1 < len(argv):
            pairs.append((arg, argv[i + 1]))
    return pairs


def lm_eval_input_error(exc: ValueError, argv: list[str]) -> UserInputError | None:
    """One of lm-eval's own input errors as a one-line error with a hint; None for anything else."""
    text = str(exc)
    if text.startswith("Tasks not found: "):
        from lm_eval_perf.batch.task_names import closest_tasks, known_tasks

        include = next((value for flag, value in _flags(argv) if flag == "--include_path"), None)
        known = known_tasks(include)
        names = [name.strip() for name in text.removeprefix("Tasks not found: ").split(",")]
        unknown = "; ".join(f"unknown task {name!r}{closest_tasks(name, known)}" for name in names)
        return UserInputError(f"{unknown} (lm-eval-perf ls tasks lists every task)")
    if text.startswith("Invalid JSON: "):
        for flag, value in _flags(argv):
            if flag in JSON_FLAGS and "{" in value:
                try:
                    json.loads(value)
                except ValueError as parse:
                    return UserInputError(
                        f"{flag} {value} is not JSON ({parse}): keys and strings need double quotes, "
                        f'e.g. {flag} \'{{"key": "value"}}\''
                    )
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if PARENT_ENV in os.environ:  # a batch_eval job: end with the batch (see lm_eval_perf.orphans)
        die_with_parent()
    install_excepthook()
    if argv and argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    try:
        if argv and argv[0] in SUBCOMMANDS:
            module, _, attr = SUBCOMMANDS[argv[0]][0].partition(":")
            sys.argv[0] = f"lm-eval-perf {argv[0]}"  # the subcommand's usage line names it so
            return int(getattr(importlib.import_module(module), attr)(argv[1:]) or 0)
        from lm_eval_perf.registration import ensure_registered

        ensure_registered()
        from lm_eval.__main__ import cli_evaluate

        sys.argv = ["lm-eval-perf", *(["--help"] if argv == ["--help-lm-eval"] else argv)]
        try:
            cli_evaluate()
        except ValueError as exc:
            error = lm_eval_input_error(exc, argv)
            if error is None:
                raise
            raise error from exc
    except Exception as exc:
        error = find_user_error(exc)
        if error is None:
            raise
        print(one_line(error), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
