"""No orphaned jobs: a process that batch_eval (or a Ray worker) starts dies with it.

batch_eval starts each job as ``python -m lm_eval_perf.cli ...`` with its own pid in
``$LM_EVAL_PERF_BATCH_PARENT``; the CLI then calls :func:`die_with_parent` first: on Linux it asks the
kernel to SIGKILL it when the process that started it dies (``PR_SET_PDEATHSIG``), so a killed
``batch_eval.py`` never leaves an evaluation holding a GPU; if the parent is already gone, the job
exits at once.
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
