"""Benchmark of batch_eval's local pool: how fully it keeps the GPUs busy, how fast it resumes, what
packing small jobs onto one GPU gains, and what the pool costs per job.

    python -m bench.batch_pool            # GPU machine: 4 jobs per GPU (at least 8), e.g. nvidia-h200-x2
    python -m bench.batch_pool --small    # CPU: 4 tiny jobs on 2 workers (same table)
    python -m bench.batch_pool --part packing   # one GPU: SmolLM2 × 3 precisions × (BBH, ESD), packed vs not
    python -m bench.batch_pool --part overhead  # scheduling overhead per job of the local pool
    python -m bench.batch_pool --part overhead --executor slurm   # ... of Slurm (where sbatch submits)
    # on a machine without a cluster: the tests' one-node cluster around the same command
    python tests/slurm_cluster.py -- python -m bench.batch_pool --part overhead --executor slurm

The matrix is real: ``batch_eval.py`` runs perf-hf jobs (a random-weight architecture, the
``perf_throughput`` task with a fixed small sweep, so every job takes about the same time) as
subprocesses, one per free GPU. Reported:

* utilization = Σ job wall time / (slots × makespan), makespan from the first job's start to the
  last job's end (slots: GPUs, or workers on a CPU). Goal: >= 0.95 with 4 jobs per slot.
* resume time: wall time of rerunning the same ``batch_eval.py`` command once every job is done
  (a new Python process: start-up, config, job store, result folders, summary). Goal: <= 2 s.

Checks: every job done, each on its own GPU(s) (no two jobs on one GPU at once), and the resume
runs nothing and rewrites no result.

``--part packing``: the same matrix - ``--model`` (default ``bundled:smollm2``, SmolLM2-135M-Instruct;
``arch:smollm2-135m`` has its shapes with random weights, so the same work) in bfloat16,
float16 and int4 × (BBH: ``leaderboard_bbh_local``, 3-shot, ``--limit 20`` per subtask, batch 16;
ESD) - run by ``batch_eval.py`` twice on the first GPU: one job at a time (``jobs_per_gpu: 1``) and
packed (``jobs_per_gpu: 6``, memory-aware). Reported: both wall times, their ratio (goal >= 2×) and
whether every job's scores are identical (ESD's ``eig_seconds``/``fit_seconds`` left out: they are
times). ``--small`` (CPU): ``arch:tiny-llama`` in float32 and bfloat16 × (BBH zero-shot ``--limit
1``, ESD), one job at a time against ``workers: 4`` (on a CPU "packing" is running jobs side by side
on the cores). BBH is read from ``--bbh-dir`` (default ``$LM_EVAL_PERF_BBH_DIR``, else
``../shared/data/bbh`` from the repository root).

``--part overhead``: jobs that do nothing but write their results file, one at a time, through the
pool's own Python API (as ``batch_eval.py`` runs it): 40 on the local pool, 10 with ``--executor
slurm``. Per job, the seconds from submission (the local pool's launch; Slurm: ``sbatch``) to the
job's first line (``submit -> start``: process creation and Python start-up; on Slurm also scheduling,
the job's launch on its node and submitit loading the attempt - ``of it to launch``: up to the
attempt starting the job's process), and the executor's share of the
makespan beyond the jobs' own time, per job (on Slurm it includes the pool's polling: result files
every ~2 s).

Full JSON (every job's record) goes to ``$OUT/batch_pool.json`` when ``$OUT`` is set.
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

from bench._out import save
from lm_eval_perf.batch.gpus import detect
from lm_eval_perf.bbh import default_directory
from lm_eval_perf.records.console import fmt, markdown_table
from lm_eval_perf.records.layout import Layout

REPO = Path(__file__).resolve().parents[1]

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


def utilization(args: argparse.Namespace) -> dict:
    """The utilization and resume table (the first part)."""
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
                    fmt(makespan),
                    fmt(busy),
                    fmt(utilization),
                    ">= 0.95 (at 4:1)",
                    fmt(resume_s, 2),
                    "<= 2",
                ]
            ],
        )
    )
    print(f"\nbatch_eval.py end to end (incl. task-name check and start-up): {fmt(wall)} s")
    return {**row, "records": records}


def packing_config(folder: Path, small: bool, bbh_dir: str, packed: bool, model: str) -> Path:
    """The packing matrix of ``model``: one job at a time, or packed (GPU: jobs_per_gpu; CPU: workers)."""
    bbh = {"name": "leaderboard_bbh_local", "label": "bbh", "metadata": {"bbh_dir": bbh_dir}}
    bbh |= {"num_fewshot": 0, "limit": 1, "batch_size": 4} if small else {"limit": 20, "batch_size": 16}
    config = {
        "output_dir": str(folder / "out"),
        "timeout": 3600,
        "precisions": ["float32", "bfloat16"] if small else ["bfloat16", "float16", "int4"],
        "models": [{"pretrained": "arch:tiny-llama" if small else model, "name": "smollm2"}],
        "tasks": [bbh, {"name": "esd", "metadata": {"eig_dtype": "float32"} if small else {}}],
    }
    config |= {"workers": 4 if packed else 1} if small else {"jobs_per_gpu": 6 if packed else 1}
    path = folder / "batch.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


def scores(root: Path) -> dict[str, dict]:
    """Each job's lm-eval results, times left out."""
    out = {}
    for job_file in (root / "results").rglob("job.json"):
        results = json.loads(next(job_file.parent.rglob("results_*.json")).read_text())["results"]
        out[str(job_file.parent.relative_to(root))] = {
            task: {k: v for k, v in metrics.items() if "seconds" not in k}
            for task, metrics in results.items()
        }
    return out


def packing(args: argparse.Namespace) -> dict:
    """Packed against one job at a time on one GPU (CPU: one worker against four)."""
    probe = None if args.small else detect()
    small = args.small or probe is None
    if not small and args.model == "bundled:smollm2":
        from lm_eval_perf.models.bundled import smollm2_hf_dir

        smollm2_hf_dir()  # converted once, before either run is timed
        os.environ["CUDA_VISIBLE_DEVICES"] = str(probe.indices()[0])
    runs = {}
    with tempfile.TemporaryDirectory(prefix="batch_packing_") as tmp:
        for packed in (False, True):
            folder = Path(tmp) / ("packed" if packed else "alone")
            folder.mkdir()
            proc, wall = batch(packing_config(folder, small, args.bbh_dir, packed, args.model))
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            store = json.loads(Layout(folder / "out").store.read_text())["jobs"]
            runs["packed" if packed else "alone"] = {
                "wall_s": wall,
                "scores": scores(folder / "out"),
                "jobs": store,
            }
    identical = runs["alone"]["scores"] == runs["packed"]["scores"]
    ratio = runs["alone"]["wall_s"] / runs["packed"]["wall_s"]
    where = "CPU: workers 1 vs 4" if small else "1 GPU: jobs_per_gpu 1 vs 6"
    print(
        markdown_table(
            [
                "matrix",
                "where",
                "jobs",
                "one at a time s",
                "packed s",
                "speed-up",
                "goal",
                "scores identical",
            ],
            [
                [
                    "tiny-llama" if small else args.model,
                    where,
                    fmt(len(runs["alone"]["jobs"])),
                    fmt(runs["alone"]["wall_s"]),
                    fmt(runs["packed"]["wall_s"]),
                    fmt(ratio, 2),
                    ">= 2" if not small else "--",
                    "yes" if identical else "NO",
                ]
            ],
        )
    )
    return {"where": where, "speedup": ratio, "identical": identical, **runs}


OVERHEAD_JOB = r"""
import json, os, sys, time
start = time.time()
out = sys.argv[sys.argv.index("--output_path") + 1]
with open(os.path.join(out, "results_noop.json"), "w") as f:
    json.dump({"start": start, "end": time.time()}, f)
"""


def overhead_pool(args: argparse.Namespace, layout: Layout):
    """The executor ``--part overhead`` measures: the local pool on the CPU, or Slurm, one job at a time."""
    if args.executor == "slurm":
        from lm_eval_perf.batch.config import SlurmSpec
        from lm_eval_perf.batch.slurm import SlurmPool

        return SlurmPool(layout, SlurmSpec(partition=args.partition, cpus_per_job=1), workers=1)
    from lm_eval_perf.batch.local import LocalPool

    return LocalPool(layout, None, 1)


def overhead(args: argparse.Namespace) -> dict:
    """Scheduling overhead per job, one job at a time (CPU; no model)."""
    from lm_eval_perf.batch.matrix import Job
    from lm_eval_perf.batch.progress import Progress
    from lm_eval_perf.batch.scheduler import plan, prepare, run
    from lm_eval_perf.batch.store import JobStore, locked

    slurm = args.executor == "slurm"
    jobs = 10 if slurm else 40
    program = (sys.executable, "-c", OVERHEAD_JOB)
    batch_jobs = [
        Job(f"m{i}/p/t", f"m{i}", "noop", None, None, "noop", "t", program=program, timeout_s=300)
        for i in range(jobs)
    ]
    # Slurm's nodes must see the folder: a temporary one in the current folder, not the node's /tmp
    with tempfile.TemporaryDirectory(prefix="batch_overhead_", dir=Path.cwd() if slurm else None) as tmp:
        layout = Layout(Path(tmp))
        with locked(layout):
            store = JobStore(layout)
            pool = overhead_pool(args, layout)
            todo = plan(batch_jobs, store, layout, False)
            prepare(todo, store, layout, pool.attach(todo.run, store))
            started = time.time()
            run(batch_jobs, store, pool, 0, Progress(jobs, enabled=False))
            ended = time.time()
        assert all(store.status(j.key) == "done" for j in batch_jobs), store.jobs
        inside = [
            json.loads((layout.result_dir(j.key) / "results_noop.json").read_text()) for j in batch_jobs
        ]
        records = [store.get(j.key) for j in batch_jobs]
    # submit: sbatch (Slurm) or the pool's launch (local); start: the job's first line
    submitted = [r.get("slurm_submitted_at") or r["started_at"] for r in records]
    submit_to_start = sorted(i["start"] - t for i, t in zip(inside, submitted))
    to_launch = sorted(r["started_at"] - t for r, t in zip(records, submitted))  # Slurm's part (local: 0)
    own = sum(r["end"] - r["start"] for r in inside)
    per_job = (ended - started - own) / jobs
    row = {
        "executor": pool.description,
        "jobs": jobs,
        "submit_to_start_s_median": submit_to_start[jobs // 2],
        "submit_to_start_s_max": submit_to_start[-1],
        "submit_to_attempt_launch_s_median": to_launch[jobs // 2],
        "pool_overhead_per_job_s": per_job,
    }
    print(
        markdown_table(
            [
                "executor, one job at a time",
                "jobs",
                "submit -> start s (median)",
                "max",
                "of it to launch s",
                "overhead/job s",
            ],
            [
                [
                    pool.description,
                    fmt(jobs),
                    fmt(row["submit_to_start_s_median"], 3),
                    fmt(row["submit_to_start_s_max"], 3),
                    fmt(row["submit_to_attempt_launch_s_median"], 3),
                    fmt(per_job, 3),
                ]
            ],
        )
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="CPU size: tiny model, 2 workers, 4 jobs")
    parser.add_argument("--jobs-per-slot", type=int, help="jobs per GPU (default 4; --small: 2 per worker)")
    parser.add_argument(
        "--part", choices=("utilization", "packing", "overhead"), action="append", help="default: all three"
    )
    parser.add_argument(
        "--executor", choices=("local", "slurm"), default="local", help="--part overhead: whose overhead"
    )
    parser.add_argument("--partition", help="--executor slurm: the partition (default: the cluster's)")
    parser.add_argument(
        "--model",
        default="bundled:smollm2",
        help="--part packing on a GPU: the model (arch:smollm2-135m: same shapes, random weights)",
    )
    parser.add_argument(
        "--bbh-dir",
        default=default_directory(),
        help="BBH folder for --part packing",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    parts = {"utilization": utilization, "packing": packing, "overhead": overhead}
    record = {}
    for name in args.part or list(parts):
        print(f"\n## {name}\n")
        record[name] = parts[name](args)
    save("batch_pool", record)


if __name__ == "__main__":
    main()
