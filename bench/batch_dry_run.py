"""How long ``batch_eval.py --dry-run`` takes on a 10,000-job matrix, without and with the task-name cache.

    python -m bench.batch_dry_run              # 100 models × 4 precisions × 5 ratios × 5 tasks
    python -m bench.batch_dry_run --models 10  # 1,000 jobs

Each row is one ``batch_eval.py --config ... --dry-run`` process, timed from start to exit (Python
start-up, imports, config, expansion, plan, task-name check and the printed table of every job):

* ``cold`` - an empty cache folder (``$LM_EVAL_PERF_CACHE``): lm-eval's ``TaskManager`` indexes every
  task YAML it ships (about 14,000 files) to check the matrix's task names, and the index is cached;
* ``warm`` - the same command again: the names are checked against the cached index.

Goal: <= 2 s for the warm 10,000-job dry-run (a fixed cost every invocation pays, a finished matrix's
rerun included). The full record goes to ``$OUT/batch_dry_run.json`` when ``$OUT`` is set. Nothing is
downloaded: the models are hub ids that a dry-run never loads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._out import save
from lm_eval_perf.records.console import fmt, markdown_table

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ["bfloat16", "float16", "float32", "int4"]
RATIOS = [1.0, 0.8, 0.6, 0.4, 0.2]
TASKS = [
    {"name": "leaderboard_bbh_local", "label": "bbh", "metadata": {"bbh_dir": "/data/bbh"}},
    {"name": "perf_throughput", "label": "throughput"},
    {"name": "esd"},
    {"name": "perplexity_local", "label": "ppl"},
    {"name": "hellaswag"},
]


def write_config(folder: Path, models: int) -> Path:
    config = {
        "output_dir": str(folder / "out"),
        "precisions": PRECISIONS,
        "ratios": RATIOS,
        "models": [f"org/model-{i:03d}" for i in range(models)],
        "tasks": TASKS,
    }
    path = folder / "batch.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def dry_run(config: Path, cache: Path) -> float:
    """Seconds of one ``--dry-run`` process (asserts it succeeded)."""
    env = {**os.environ, "LM_EVAL_PERF_CACHE": str(cache)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "batch_eval.py"), "--config", str(config), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=100, help="models in the matrix (default 100)")
    args = parser.parse_args()
    jobs = args.models * len(PRECISIONS) * len(RATIOS) * len(TASKS)
    with tempfile.TemporaryDirectory(prefix="batch_dry_run_") as tmp:
        config = write_config(Path(tmp), args.models)
        cache = Path(tmp) / "cache"
        rows = {"cold": dry_run(config, cache), "warm": dry_run(config, cache)}
    print(
        markdown_table(
            ["jobs", "task-name index", "dry-run s", "goal"],
            [[fmt(jobs), case, fmt(s, 2), "<= 2" if case == "warm" else "--"] for case, s in rows.items()],
        )
    )
    save("batch_dry_run", {"jobs": jobs, "seconds": rows, "cpus": os.cpu_count()})


if __name__ == "__main__":
    main()
