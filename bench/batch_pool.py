"""Benchmark of batch_eval's local pool: how fully it keeps the GPUs busy, and how fast it resumes.

    python bench/batch_pool.py            # GPU machine: 4 jobs per GPU (at least 8), e.g. nvidia-h200-x2
    python bench/batch_pool.py --small    # CPU: 4 tiny jobs on 2 workers (same table)

The matrix is real: ``batch_eval.py`` runs perf-hf jobs (a random-weight architecture, the
``perf_throughput`` task with a fixed small sweep, so every job takes about the same time) as
subprocesses, one per free GPU. Reported:

* utilization = Σ job wall time / (slots × makespan), makespan from the first job's start to the
  last job's end (slots: GPUs, or workers on a CPU). Goal: >= 0.95 with 4 jobs per slot.
* resume time: wall time of rerunning the same ``batch_eval.py`` command once every job is done
  (a new Python process: start-up, config, job store, result folders, summary). Goal: <= 2 s.

Checks: every job done, each on its own GPU(s) (no two jobs on one GPU at once), and the resume
runs nothing and rewrites no result. Full JSON (every job's record) goes to ``$OUT/batch_pool.json``
when ``$OUT`` is set.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _out import save  # noqa: E402

from lm_eval_perf.batch.gpus import detect  # noqa: E402
from lm_eval_perf.batch.layout import Layout  # noqa: E402
from lm_eval_perf.report.console import fmt, markdown_table  # noqa: E402

FULL = {
    "model": "arch:qwen2.5-0.5b",
    "precisions": ["bfloat16", "float16"],
    "sweep": {
        "batch_sizes": [1, 16],
        "gen_lengths": [64],
        "prompt_len": 128,
        "min_iterations": 3,
        "min_seconds": 3,
    },
    "jobs_per_slot": 4,
}
SMALL = {
    "model": "arch:tiny-llama",
    "precisions": ["float32", "bfloat16"],
    "sweep": {
        "batch_sizes": [1],
        "gen_lengths": [8],
        "prompt_len": 16,
        "min_iterations": 2,
        "min_seconds": 0.5,
    },
    "jobs_per_slot": 2,
}


HEADER = [
    "executor",
    "model",
    "jobs",
    "jobs/slot",
    "makespan s",
    "Σ job s",
    "utilization",
    "goal",
    "resume s",
    "goal",
]


def write_config(folder: Path, setup: dict, jobs: int, workers: int | None) -> Path:
    """A batch config of ``jobs`` equal throughput jobs (labels tp1.., split over the precisions)."""
    count = -(-jobs // len(setup["precisions"]))  # tasks per precision
    sweep = setup["sweep"]
    tasks = [{"name": "perf_throughput", "label": f"tp{i + 1}", "metadata": sweep} for i in range(count)]
    config = {
        "output_dir": str(folder / "out"),
        "timeout": 1200,
        "precisions": setup["precisions"],
        "models": [{"pretrained": setup["model"], "name": "bench"}],
        "tasks": tasks,
    }
    if workers:
        config["workers"] = workers
    path = folder / "batch.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return path


def batch(config: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "batch_eval.py"), "--config", str(config), "--no-progress"],
        capture_output=True,
        text=True,
    )
    return proc, time.perf_counter() - started


def result_files(root: Path) -> dict[str, tuple[int, int]]:
    files = (p for p in (root / "results").rglob("*") if p.is_file())
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}


def check_gpu_exclusive(records: list[dict]) -> None:
    """No GPU held by two jobs at once (jobs' CUDA_VISIBLE_DEVICES and start/end times)."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        for gpu in (record.get("cuda_visible_devices") or "").split(","):
            if gpu:
                spans.setdefault(gpu, []).append((record["started_at"], record["finished_at"]))
    for gpu, intervals in spans.items():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert start >= end, f"two jobs overlapped on GPU {gpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="CPU size: tiny model, 2 workers, 4 jobs")
    parser.add_argument("--jobs-per-slot", type=int, help="jobs per GPU (default 4; --small: 2 per worker)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    probe = None if args.small else detect()
    slots = len(probe.indices()) if probe else 2
    setup = SMALL if args.small or probe is None else FULL
    jobs = max(8 if probe else 4, (args.jobs_per_slot or setup["jobs_per_slot"]) * slots)
    with tempfile.TemporaryDirectory(prefix="batch_pool_") as tmp:
        config = write_config(Path(tmp), setup, jobs, None if probe else slots)
        first, wall = batch(config)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        layout = Layout(Path(tmp) / "out")
        records = list(json.loads(layout.store.read_text())["jobs"].values())
        assert len(records) >= jobs and all(r["status"] == "done" for r in records)
        check_gpu_exclusive(records)
        finished = result_files(layout.root)
        resume, resume_s = batch(config)
        resumed = resume.returncode == 0 and f"{len(records)} done before, 0 to run" in resume.stdout
        assert resumed, resume.stdout + resume.stderr
        assert result_files(layout.root) == finished, "the resume rewrote results"

    makespan = max(r["finished_at"] for r in records) - min(r["started_at"] for r in records)
    busy = sum(r["duration_s"] for r in records)
    utilization = busy / (slots * makespan)
    row = {
        "executor": f"local pool, {slots} GPUs" if probe else f"local CPU, {slots} workers",
        "model": setup["model"],
        "slots": slots,
        "jobs": len(records),
        "jobs_per_slot": len(records) / slots,
        "makespan_s": makespan,
        "job_time_sum_s": busy,
        "utilization": utilization,
        "batch_wall_s": wall,
        "resume_s": resume_s,
    }
    print(
        markdown_table(
            HEADER,
            [
                [
                    row["executor"],
                    setup["model"],
                    fmt(row["jobs"]),
                    fmt(row["jobs_per_slot"], 1),
                    fmt(makespan, 1),
                    fmt(busy, 1),
                    fmt(utilization),
                    ">= 0.95 (at 4:1)",
                    fmt(resume_s, 2),
                    "<= 2",
                ]
            ],
        )
    )
    print(f"\nbatch_eval.py end to end (incl. task-name check and start-up): {fmt(wall, 1)} s")
    save("batch_pool", {**row, "records": records})


if __name__ == "__main__":
    main()
