"""batch_eval through ``--executor slurm`` on a real single-node Slurm cluster (tests/slurm_cluster.py).

A 3-cell tiny-llama matrix (the ``batch_tiny`` task, ``--limit 1``, zero-shot) goes as one job array
with 2 tasks at a time. Once two cells run, the submitting ``batch_eval.py`` is SIGKILLed and one of
the running Slurm jobs is cancelled (``scancel``, mid-evaluation: it leaves a partial staging folder).
The rerun takes over the jobs Slurm still holds and waits for them, records the cancelled one as a
Slurm failure, and a ``--retry-failed`` rerun completes the matrix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from slurm_cluster import slurm_cluster, unavailable

from lm_eval_perf.batch.config import SlurmSpec, load_config
from lm_eval_perf.batch.matrix import Job
from lm_eval_perf.batch.scheduler import plan, prepare
from lm_eval_perf.batch.store import JobStore
from lm_eval_perf.records.layout import Layout

REPO = Path(__file__).resolve().parents[1]
WRITE_RESULT = (
    "import pathlib, sys; out = pathlib.Path(sys.argv[sys.argv.index('--output_path') + 1]); "
    "(out / 'results_x.json').write_text('{}')"
)
CELLS = [f"arch_tiny-llama/default/{label}" for label in "abc"]
CANCELLED = CELLS[1]


def config_file(folder: Path, tiny: Path) -> Path:
    path = folder / "slurm.yaml"
    path.write_text(
        f"""
output_dir: ./out
executor: slurm
include_path: {tiny / "tasks"}
gpus_per_job: 0
timeout: 600
slurm: {{cpus_per_job: 1, mem_gb: 1.5, array_parallelism: 2, sbatch: {{comment: lm-eval-perf-test}}}}
models: [arch:tiny-llama]
tasks:
  - {{name: batch_tiny, label: a, limit: 1, num_fewshot: 0}}
  - {{name: batch_tiny, label: b, limit: 1, num_fewshot: 0}}
  - {{name: batch_tiny, label: c, limit: 1, num_fewshot: 0}}
"""
    )
    return path


def batch(config: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "batch_eval.py"), "--config", str(config), "--no-progress", *extra]


def store_of(layout: Layout) -> dict:
    return json.loads(layout.store.read_text())["jobs"] if layout.store.exists() else {}


def child_starts(layout: Layout, key: str) -> int:
    """How many times the job's lm-eval process was started (each start logs its command line)."""
    log = layout.log_path(key)
    return sum(line.startswith("$ ") for line in log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield {**os.environ, **env}


@pytest.fixture(scope="module")
def killed_run(cluster, tiny, tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("slurm_batch")
    config = config_file(root, tiny)
    layout = Layout(root / "out")
    dry = subprocess.run(batch(config, "--dry-run"), env=cluster, capture_output=True, text=True)
    dry_run_wrote = sorted(p.name for p in layout.root.iterdir()) if layout.root.exists() else []
    with open(root / "first.log", "w") as log:
        first = subprocess.Popen(batch(config), env=cluster, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            submitted = all(r.get("slurm_job_id") for r in store_of(layout).values())
            if submitted and sum(child_starts(layout, key) for key in CELLS) >= 2:
                break
            time.sleep(0.2)
        assert first.poll() is None, (root / "first.log").read_text()
        first.send_signal(signal.SIGKILL)
        first.wait()
    at_kill = store_of(layout)
    staging_at_cancel = list(layout.result_dir(CANCELLED).parent.glob(f".{CANCELLED[-1]}.staging-*"))
    subprocess.run(["scancel", at_kill[CANCELLED]["slurm_job_id"]], env=cluster, check=True)
    # as if the process had died between sbatch and saving the job id: the rerun finds it by name
    store = json.loads(layout.store.read_text())
    store["jobs"][CELLS[2]]["slurm_job_id"] = None
    layout.store.write_text(json.dumps(store))
    second = subprocess.run(batch(config), env=cluster, capture_output=True, text=True, timeout=300)
    after_second = store_of(layout)
    failures_after_second = layout.failures.read_text() if layout.failures.exists() else ""
    third = subprocess.run(
        batch(config, "--retry-failed"), env=cluster, capture_output=True, text=True, timeout=300
    )
    return SimpleNamespace(
        dry=dry,
        dry_run_wrote=dry_run_wrote,
        layout=layout,
        at_kill=at_kill,
        staging_at_cancel=staging_at_cancel,
        second=second,
        after_second=after_second,
        third=third,
        failures_after_second=failures_after_second,
    )


def test_slurm_block_parses_and_names_its_key_path_in_errors(tmp_path, tiny):
    config = load_config(config_file(tmp_path, tiny))
    assert config.executor == "slurm"
    sbatch = {"comment": "lm-eval-perf-test"}
    expected = SlurmSpec(cpus_per_job=1, mem_gb=1.5, array_parallelism=2, sbatch=sbatch)
    assert config.slurm == expected


def test_slurm_job_that_finds_its_result_there_runs_nothing(tmp_path):
    """The guard every Slurm job runs first: a duplicate of a finished cell reports its result."""
    from lm_eval_perf.batch.runner import run_job
    from lm_eval_perf.batch.slurm import attempt

    layout = Layout(tmp_path)
    job = Job("m/p/t", "m", "noop", None, None, "noop", "t", program=(sys.executable, "-c", WRITE_RESULT))
    first = run_job(job, layout, 1)
    assert first.status == "done"
    usr2 = signal.getsignal(signal.SIGUSR2)
    try:
        again = attempt(job, layout, 2)
    finally:
        signal.signal(signal.SIGUSR2, usr2)
    assert again == first and child_starts(layout, job.key) == 1


def test_job_that_finished_unwatched_keeps_its_slurm_id(tmp_path):
    """The submitter died, its Slurm job finished: the rerun adopts the result and keeps the job id."""
    from lm_eval_perf.batch.runner import run_job

    layout = Layout(tmp_path)
    job = Job("m/p/t", "m", "noop", None, None, "noop", "t", program=(sys.executable, "-c", WRITE_RESULT))
    store = JobStore(layout)
    store.update(job.key, status="running", attempts=1, slurm_job_name="lep-x", slurm_job_id="7_1")
    store.save()
    assert run_job(job, layout, 1).status == "done"
    store = JobStore(layout)
    prepare(plan([job], store, layout, False), store, layout)
    assert store.status(job.key) == "done" and store.get(job.key)["slurm_job_id"] == "7_1"


@pytest.mark.slow
def test_dry_run_prints_the_sbatch_lines_and_submits_nothing(killed_run):
    dry = killed_run.dry
    assert dry.returncode == 0, dry.stdout + dry.stderr
    (line,) = [line for line in dry.stdout.splitlines() if line.startswith("sbatch ")]
    flags = ("--array=0-2%2", "--cpus-per-task=1", "--mem=1536M", "--time=15", "--comment=lm-eval-perf-test")
    assert set(flags) <= set(line.split()), line
    assert "--job-name=lep-" in line and "3 jobs: arch_tiny-llama/default/a" in line
    assert "-m submitit.core._submit" in dry.stdout and "srun" in dry.stdout
    assert killed_run.dry_run_wrote == []


@pytest.mark.slow
def test_killed_submitter_loses_nothing_and_no_cell_runs_twice(killed_run):
    run, layout = killed_run, killed_run.layout
    ids = {key: run.at_kill[key]["slurm_job_id"] for key in CELLS}
    assert len({i.split("_")[0] for i in ids.values()}) == 1, ids  # one job array
    assert run.second.returncode == 1, run.second.stdout + run.second.stderr
    store = store_of(layout)
    for key in (CELLS[0], CELLS[2]):  # taken over (c found by its Slurm job name), not submitted again
        assert store[key]["status"] == "done" and store[key]["attempts"] == 1
        assert run.after_second[key]["slurm_job_id"] == ids[key]
        assert child_starts(layout, key) == 1
    for key in CELLS:
        assert len(list(layout.result_dir(key).rglob("results_*.json"))) == 1
    assert not list(layout.root.rglob(".*.staging-*"))
    assert "3 jobs on Slurm" in run.second.stdout and "still on the cluster, waited for" in run.second.stdout


@pytest.mark.slow
def test_cancelled_slurm_job_is_a_failure_with_its_id_state_and_log(killed_run):
    run, layout = killed_run, killed_run.layout
    assert run.staging_at_cancel, "the cancelled job had not started writing"
    (failure,) = [json.loads(line) for line in run.failures_after_second.splitlines()]
    assert failure["key"] == CANCELLED
    assert failure["slurm_job_id"] == run.at_kill[CANCELLED]["slurm_job_id"]
    assert failure["slurm_state"] == "CANCELLED" and "CANCELLED" in failure["error"]
    assert "CANCELLED" in Path(failure["slurm_log"]).read_text()
    assert Path(failure["log"]) == layout.log_path(CANCELLED)
    assert run.after_second[CANCELLED]["status"] == "failed"  # the partial result was not counted
    # --retry-failed submits it again, alone, and the matrix completes
    assert run.third.returncode == 0, run.third.stdout + run.third.stderr
    store = store_of(layout)
    assert {store[key]["status"] for key in CELLS} == {"done"}
    assert store[CANCELLED]["attempts"] == 2 and "_" not in store[CANCELLED]["slurm_job_id"]
    assert child_starts(layout, CANCELLED) == 2
    assert not layout.failures.read_text()


@pytest.mark.slow
def test_rerun_of_a_finished_slurm_matrix_submits_nothing(killed_run, cluster):
    layout = killed_run.layout
    config = layout.root.parent / "slurm.yaml"
    scripts = sorted((layout.root / "slurm").glob("*_submission.sh"))
    again = subprocess.run(batch(config), env=cluster, capture_output=True, text=True)
    assert again.returncode == 0 and "3 done before, 0 to run" in again.stdout
    assert sorted((layout.root / "slurm").glob("*_submission.sh")) == scripts
