"""``batch_eval.py`` / ``lm-eval-perf batch``: run a config's matrix, resumably.

    python batch_eval.py --config configs/demo.yaml                    # local GPUs (or CPU)
    python batch_eval.py --config configs/demo.yaml --dry-run          # list the jobs and their state
    python batch_eval.py --config ... --only task=bbh --only precision=bfloat16
    python batch_eval.py --config ... --retry-failed                   # run failed jobs again too
    python batch_eval.py --config ... --executor ray --ray-address auto
    python batch_eval.py --config ... --executor slurm                 # sbatch jobs (config's slurm:)

Rerunning the same command resumes: finished jobs are skipped, interrupted ones run again (on Slurm,
jobs still queued or running are waited for, not submitted again). Exit
status: 0 when every job of the (filtered) matrix is done, 1 when any failed, 2 for bad input
(one line on stderr, nothing written), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lm_eval_perf.atomic import check_writable
from lm_eval_perf.batch.config import EXECUTORS, BatchConfig, load_config
from lm_eval_perf.batch.gpus import DEFAULT_FREE_MIB
from lm_eval_perf.batch.matrix import Job, expand, select
from lm_eval_perf.batch.progress import Progress, matrix_table, summary_table
from lm_eval_perf.batch.scheduler import Executor, Plan, plan, prepare, run
from lm_eval_perf.batch.store import JobStore, locked
from lm_eval_perf.batch.task_names import check_task_names
from lm_eval_perf.errors import UserInputError, install_excepthook, one_line
from lm_eval_perf.records.layout import Layout


@dataclass(frozen=True)
class Options:
    """What to do with the matrix (the command-line switches beyond the config)."""

    retry_failed: bool = False
    dry_run: bool = False
    only: list[str] = field(default_factory=list)
    progress: bool = True


def make_executor(config: BatchConfig, gpu_free_mib: float = DEFAULT_FREE_MIB) -> Executor:
    """The config's executor: the local pool over this machine's GPUs (or CPU), a Ray cluster, or Slurm."""
    layout = Layout(config.output_dir)
    if config.executor == "slurm":
        from lm_eval_perf.batch.slurm import SlurmPool

        return SlurmPool(layout, config.slurm, config.workers)
    if config.executor == "ray":
        from lm_eval_perf.batch.ray_pool import RayPool

        return RayPool(layout, config.ray_address, config.workers, config.jobs_per_gpu)
    from lm_eval_perf.batch.gpus import detect
    from lm_eval_perf.batch.local import GpuPolicy, LocalPool

    policy = GpuPolicy(
        config.jobs_per_gpu, config.gpu_memory_budget_gb, config.isolation, config.isolation_wait_s
    )
    return LocalPool(layout, detect(gpu_free_mib), config.workers, policy)


def run_batch(config: BatchConfig, executor: Executor, options: Options) -> int:
    """Run (or with ``dry_run`` list) the matrix of ``config``; the exit status."""
    layout = Layout(config.output_dir)
    check_writable(layout.root, "output_dir")
    matrix = expand(config, executor.on_gpu)
    jobs = select(matrix, options.only)
    if not jobs:
        raise UserInputError(f"--only {' '.join(options.only)}: no job of the matrix matches")
    executor.check(jobs)
    store = JobStore(layout)
    todo = plan(jobs, store, layout, options.retry_failed)
    where = {t.name: f"{t.where}.name" for t in config.tasks}
    check_task_names({j.task: where[j.task] for j in todo.run}, config.include_path)
    if options.dry_run:
        attached = _attach(executor, todo, store)
        states = {j.key: "done" for j in todo.done} | {j.key: "failed" for j in todo.failed}
        states |= {j.key: "done (other settings)" for j in todo.changed}
        states |= {k: f"run ({why})" for k, why in todo.reasons.items()}
        refused = {j.key: f"will fail: {why}" for j in todo.run if (why := executor.cannot_run(j))}
        print(matrix_table(jobs, states | refused))
        print(_counts(jobs, todo, executor))
        submissions = executor.dry_run([j for j in todo.run if j.key not in attached])
        if submissions:
            print(submissions)
        return 0
    with locked(layout):
        store = JobStore(layout)
        store.set_matrix(config.source, [job.identity() for job in matrix])
        todo = plan(jobs, store, layout, options.retry_failed)
        attached = _attach(executor, todo, store)
        prepare(todo, store, layout, attached)
        print(_counts(jobs, todo, executor), flush=True)
        if todo.changed:
            print(
                f"note: {len(todo.changed)} finished jobs ran with other settings than the config asks now "
                f"(e.g. {todo.changed[0].key}); delete their result folders to run them again"
            )
        progress = Progress(len(todo.run), options.progress)
        run(todo.run, store, executor, config.retries, progress, attached)
        merged = _esd_tables(jobs, store, layout)
    print(summary_table(jobs, store))
    if merged:
        print(merged)
    failed = sum(store.status(j.key) == "failed" for j in jobs)
    done = sum(store.status(j.key) == "done" for j in jobs)
    print(f"{done} of {len(jobs)} jobs done, {failed} failed; results in {layout.root / 'results'}")
    if failed:
        print(f"failures (error, log tail, log path): {layout.failures}")
    return 1 if failed else 0


def _esd_tables(jobs: list[Job], store: JobStore, layout: Layout) -> str | None:
    """Merge the finished ``esd`` jobs' per-layer CSVs (see :mod:`lm_eval_perf.tasks.esd.merge`);
    what was done, in words (None: no finished ESD job)."""
    done = [j for j in jobs if j.task == "esd" and store.status(j.key) == "done"]
    if not done:
        return None
    from lm_eval_perf.tasks.esd.merge import FOLDER, ModelRun, write_tables  # imports torch

    write_tables(
        [ModelRun(j.model, j.key.split("/")[1], layout.result_dir(j.key)) for j in done], layout.root / FOLDER
    )
    return f"ESD layers of {len(done)} finished esd jobs merged into {layout.root / FOLDER}"


def _attach(executor: Executor, todo: Plan, store: JobStore) -> set[str]:
    """The jobs the executor takes over from an earlier run (Slurm), marked so in ``todo.reasons``."""
    attached = executor.attach(todo.run, store)
    todo.reasons |= dict.fromkeys(attached, "still on the cluster, waited for")
    return attached


def _counts(jobs, todo, executor: Executor) -> str:
    reasons = Counter(todo.reasons.values())
    detail = ", ".join(f"{n} {why}" for why, n in reasons.items())
    text = f"{len(jobs)} jobs on {executor.description}: {len(todo.done)} done before, {len(todo.run)} to run"
    text += f" ({detail})" if detail else ""
    if todo.failed:
        text += f", {len(todo.failed)} failed before (--retry-failed runs them again)"
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(  # prog: from sys.argv[0], see lm_eval_perf.cli
        description="Run models × precisions × ratios × tasks with lm-eval and perf-hf, resumably.",
    )
    parser.add_argument("--config", required=True, help="the batch YAML (see lm_eval_perf/batch/config.py)")
    parser.add_argument("--output-dir", help="override the config's output_dir")
    parser.add_argument("--executor", choices=EXECUTORS, help="override the config's executor")
    parser.add_argument("--ray-address", help="Ray cluster: auto, host:port, ray://host:10001 or local")
    parser.add_argument("--workers", type=int, help="at most this many jobs at once (CPU: default 1)")
    parser.add_argument("--retry-failed", action="store_true", help="run jobs that failed before again")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the matrix and each job's state; run nothing"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="FILTER",
        help="run only matching jobs: model=SUBSTR, task=LABEL, precision=NAME, ratio=R (comma: any "
        "of several) or a substring of model/precision/task; repeat to narrow further",
    )
    parser.add_argument(
        "--gpu-free-mib",
        type=float,
        default=DEFAULT_FREE_MIB,
        help=f"a GPU with more memory in use than this is busy (default {DEFAULT_FREE_MIB})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    install_excepthook()
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args.config)
        overrides = {
            "executor": args.executor or ("ray" if args.ray_address else None),
            "ray_address": args.ray_address,
            "workers": args.workers,
        }
        if args.workers is not None and args.workers < 1:
            raise UserInputError(f"--workers {args.workers}: expected 1 or more")
        if args.output_dir:
            overrides["output_dir"] = Path(args.output_dir).expanduser().resolve()
        config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
        options = Options(args.retry_failed, args.dry_run, args.only, not args.no_progress)
        return run_batch(config, make_executor(config, args.gpu_free_mib), options)
    except UserInputError as exc:
        print(one_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: a rerun of the same command resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
