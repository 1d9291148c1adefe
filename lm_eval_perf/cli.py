"""``lm-eval-perf``: lm-eval's command line with this project's model and tasks registered.

    lm-eval-perf --model perf-hf --model_args pretrained=... --tasks ...   # same flags as lm_eval
    lm-eval-perf <subcommand> ...                                          # this project's tools

Without a subcommand every argument goes to lm-eval's own CLI (``lm_eval``), after
:func:`lm_eval_perf.registration.ensure_registered` - so it works even with the start-up hook
switched off (``LM_EVAL_PERF_NO_AUTOLOAD=1``).
"""

from __future__ import annotations

import importlib
import sys

from lm_eval_perf.errors import UserInputError, install_excepthook, one_line

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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    install_excepthook()
    if argv and argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv and argv[0] in SUBCOMMANDS:
        module, _, attr = SUBCOMMANDS[argv[0]][0].partition(":")
        try:
            return int(getattr(importlib.import_module(module), attr)(argv[1:]) or 0)
        except UserInputError as exc:
            print(one_line(exc), file=sys.stderr)
            return 2
    from lm_eval_perf.registration import ensure_registered

    ensure_registered()
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval-perf", *(["--help"] if argv == ["--help-lm-eval"] else argv)]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
