"""Where the BIG-Bench Hard files are: ``--metadata '{"bbh_dir": PATH}'``, ``$LM_EVAL_PERF_BBH_DIR``.

Ground floor: the ``leaderboard_bbh_local`` task reads its documents from this folder, the AWQ
calibration its inputs, the demo and the benchmarks point at it.
"""

from __future__ import annotations

import os
from pathlib import Path

from lm_eval_perf.errors import UserInputError

ENV = "LM_EVAL_PERF_BBH_DIR"


def default_directory() -> str:
    """``$LM_EVAL_PERF_BBH_DIR``, else ``../shared/data/bbh`` from the current directory (the checkout's
    sibling ``shared/`` folder, as the README lays it out)."""
    return os.environ.get(ENV) or str(Path("..") / "shared" / "data" / "bbh")


def bbh_directory(bbh_dir: str | None = None, needed_by: str = "leaderboard_bbh_local") -> Path:
    """The BBH directory from the argument or ``$LM_EVAL_PERF_BBH_DIR``; one-line error (naming what
    ``needed_by`` it) if missing."""
    directory = bbh_dir or os.environ.get(ENV)
    if not directory:
        raise UserInputError(
            f'{needed_by} needs the BBH directory: --metadata \'{{"bbh_dir": "PATH"}}\' or {ENV}=PATH'
        )
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise UserInputError(f"BBH directory {directory} does not exist")
    return path
