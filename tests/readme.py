"""The shell commands of README.md, exactly as printed, for the tests that run them verbatim."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"


def readme_block(first: str) -> str:
    """The bash block of the README that holds a line starting with ``first``, as bash runs it."""
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        if any(line.startswith(first) for line in block.splitlines()):
            joined = block.replace("\\\n", " ")
            return "\n".join(line.split("  #")[0].strip() for line in joined.splitlines() if line.strip())
    raise AssertionError(f"no README bash block with a line starting {first!r}")


def readme_commands() -> list[str]:
    """Every command of the README's ``bash`` blocks: continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def readme_command(prefix: str, containing: str = "") -> str:
    """The one README command that starts with ``prefix`` and contains ``containing``."""
    found = [c for c in readme_commands() if c.startswith(prefix) and containing in c]
    if len(found) != 1:
        raise LookupError(f"README has {len(found)} commands starting {prefix!r} with {containing!r}")
    return found[0]


def run_as_printed(command: str, cwd: Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    """Run ``command`` with bash in ``cwd`` as a user would after ``source .venv/bin/activate``: the
    virtual environment first on PATH, nothing else added."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
