"""The process of one batch job: ``python -m lm_eval_perf.batch.child <lm-eval arguments>``.

It is ``lm-eval-perf``'s CLI (lm-eval with ``perf-hf`` registered; started through
``sys.executable`` so no ``PATH`` look-up is involved) plus one guard: on Linux the process asks
the kernel to SIGKILL it when the process that started it dies (``PR_SET_PDEATHSIG``), so a killed
``batch_eval.py`` (or Ray worker) never leaves an orphaned evaluation holding a GPU. The parent's
pid comes in ``$LM_EVAL_PERF_BATCH_PARENT``; if the parent is already gone, the job exits at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "LM_EVAL_PERF_BATCH_PARENT"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Be killed with the parent process (Linux); exit now if it already died."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = os.environ.get(PARENT_ENV)
    if parent and os.getppid() != int(parent):
        os._exit(1)


def main() -> int:
    die_with_parent()
    from lm_eval_perf.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
