"""Where every bench script leaves its full record: ``$OUT/<name>.json`` (the device tool's folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lm_eval_perf.atomic import write_atomic


def save(name: str, record) -> Path | None:
    """Write ``record`` as JSON to ``$OUT/<name>.json`` (atomically) when ``$OUT`` is set."""
    if not os.environ.get("OUT"):
        return None
    return write_atomic(Path(os.environ["OUT"], f"{name}.json"), json.dumps(record, indent=2, default=str))
