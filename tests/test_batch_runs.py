"""batch_eval end to end with real lm-eval jobs on tiny random-weight models (CPU).

* a 5-job matrix (4 good, 1 with a model folder that holds no model) is SIGKILLed mid-run, once two
  jobs are done and two run while the failing one waits, and run again;
* an ESD model list (CSV of 2 tiny models and an empty folder) runs and resumes;
* the Ray executor (a local Ray instance) runs a matrix in two steps.

The jobs score a two-document multiple-choice task (``batch_tiny``, the ``tiny`` fixture of conftest.py)
with ``--limit 1``, so each job's time is mostly lm-eval's start-up.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from lm_eval_perf.records.layout import Layout

REPO = Path(__file__).resolve().parents[1]


def batch_command(config: Path) -> list[str]:
    return [sys.executable, str(REPO / "batch_eval.py"), "--config", str(config), "--no-progress"]


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: relative path -> (inode, mtime in ns)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


@pytest.fixture(scope="module")
def killed_and_resumed(tiny, tmp_path_factory) -> SimpleNamespace:
    """Start the matrix, SIGKILL batch_eval.py once 2 jobs are done and others run, run it twice more."""
    root = tmp_path_factory.mktemp("batch_kill")
    (root / "empty-model").mkdir()  # exists (the config is valid), holds no model (the job fails)
    config = root / "batch.yaml"
    config.write_text(
        f"""
output_dir: ./out
include_path: {tiny / "tasks"}
workers: 2
models:
  - arch:tiny-llama
  - {{pretrained: "arch:{tiny / "tiny-1layer.json"}", name: tiny-1layer}}
  - {{pretrained: ./empty-model, tasks: [a]}}
tasks:
  - {{name: batch_tiny, label: a, limit: 1}}
  - {{name: batch_tiny, label: b, limit: 1}}
"""
    )
    layout = Layout(root / "out")
    with open(root / "first.log", "w") as log:
        first = subprocess.Popen(batch_command(config), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            jobs = json.loads(layout.store.read_text())["jobs"] if layout.store.exists() else {}
            done = [k for k, r in jobs.items() if r.get("status") == "done"]
            staging = list((root / "out" / "results").rglob(".*.staging-*"))
            if len(done) >= 2 and staging:
                break
            time.sleep(0.2)
        assert first.poll() is None, "the batch ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait()
    after_kill = SimpleNamespace(
        store=json.loads(layout.store.read_text())["jobs"],
        plan=json.loads(layout.plan.read_text()),
        staging=[p.relative_to(layout.root) for p in (root / "out" / "results").rglob(".*.staging-*")],
        files=files_of(layout.root / "results"),
    )
    for _ in range(50):
        orphans = processes_mentioning(str(layout.root))
        if not orphans:
            break
        time.sleep(0.1)
    second = subprocess.run(batch_command(config), capture_output=True, text=True)
    files_after_second = files_of(layout.root / "results")
    third = subprocess.run(batch_command(config), capture_output=True, text=True)
    return SimpleNamespace(
        layout=layout,
        after_kill=after_kill,
        orphans=orphans,
        second=second,
        files_after_second=files_after_second,
        third=third,
        good=[f"{m}/default/{t}" for m in ("arch_tiny-llama", "tiny-1layer") for t in "ab"],
        bad="empty-model/default/a",
    )


@pytest.mark.slow
def test_killed_batch_resumes_without_rewriting_or_duplicating(killed_and_resumed):
    run = killed_and_resumed
    layout, killed = run.layout, run.after_kill
    assert run.orphans == [], "jobs outlived the killed batch_eval.py"
    done_before = {k for k, r in killed.store.items() if r["status"] == "done"}
    running_at_kill = {k for k, r in killed.store.items() if r["status"] == "running"}
    assert len(done_before) >= 2 and running_at_kill and killed.staging
    assert f"{len(done_before)} done before" in run.second.stdout
    assert f"{len(running_at_kill)} interrupted" in run.second.stdout
    store = json.loads(layout.store.read_text())["jobs"]
    for key in run.good:
        folder = layout.result_dir(key)
        assert store[key]["status"] == "done"
        assert len(list(folder.rglob("results_*.json"))) == 1  # none duplicated
        job = json.loads((folder / "job.json").read_text())
        assert job["key"] == key and job["status"] == "done" and job["task"] == "batch_tiny"
        results = json.loads(next(folder.rglob("results_*.json")).read_text())
        assert results["results"]["batch_tiny"]["acc,none"] in (0.0, 1.0)
    for key in done_before:  # no finished result rewritten
        assert store[key]["attempts"] == 1
        prefix = f"{key}/"
        before = {p: v for p, v in killed.files.items() if p.startswith(prefix)}
        assert before and before == {p: v for p, v in run.files_after_second.items() if p.startswith(prefix)}
    for key in running_at_kill:  # the interrupted attempt ran again, logged as a second attempt
        assert store[key]["attempts"] == 2
        assert layout.log_path(key).read_text().count("===== attempt ") == 2
    assert not list(layout.root.rglob(".*.staging-*"))  # no partial folder left, none counted as done
    assert {k for k, r in store.items() if r["status"] == "done"} == set(run.good)


@pytest.mark.slow
def test_the_matrix_plan_gives_every_job_its_state_while_running_and_after(killed_and_resumed):
    run = killed_and_resumed
    killed = {job["key"]: job["state"] for job in run.after_kill.plan["jobs"]}
    assert sorted(killed) == sorted([*run.good, run.bad])  # the whole matrix, run or not
    assert set(killed.values()) <= {"pending", "running", "done", "failed"}
    # written with the store: the kill left jobs running and others not started (2 workers, 5 jobs)
    assert "running" in killed.values() and "pending" in killed.values()
    done_then = {k for k, v in killed.items() if v == "done"}
    assert done_then and all(f"{key}/job.json" in run.after_kill.files for key in done_then)
    final = {job["key"]: job["state"] for job in json.loads(run.layout.plan.read_text())["jobs"]}
    assert final == {**dict.fromkeys(run.good, "done"), run.bad: "failed"}


@pytest.mark.slow
def test_failed_job_lands_in_failures_file_and_others_finish(killed_and_resumed):
    run = killed_and_resumed
    assert run.second.returncode == 1
    (failure,) = [json.loads(line) for line in run.layout.failures.read_text().splitlines()]
    assert failure["key"] == run.bad
    assert "cannot load model" in failure["error"] and "empty-model" in failure["error"]
    assert "cannot load model" in failure["tail"] and Path(failure["log"]).is_file()
    assert not run.layout.result_dir(run.bad).exists()
    assert "4 of 5 jobs done, 1 failed" in run.second.stdout


@pytest.mark.slow
def test_rerun_of_a_finished_matrix_runs_nothing(killed_and_resumed):
    run = killed_and_resumed
    assert run.third.returncode == 1  # the failed job stays failed without --retry-failed
    assert "4 done before, 0 to run, 1 failed before (--retry-failed runs them again)" in run.third.stdout
    assert files_of(run.layout.root / "results") == run.files_after_second


@pytest.mark.slow
def test_esd_model_list_runs_resumes_and_records_failures(tiny, tmp_path):
    (tmp_path / "models.csv").write_text(
        "model,name\narch:tiny-llama,tiny-llama\n"
        f"arch:{tiny / 'tiny-1layer.json'},tiny-1layer\n./empty-model,\n"
    )
    (tmp_path / "empty-model").mkdir()  # exists (the config is valid), holds no model (the job fails)
    config = tmp_path / "esd.yaml"
    config.write_text(
        "output_dir: ./out\nworkers: 2\nprecisions: [float32]\n"
        "models: [{models_csv: models.csv}]\ntasks: [{name: esd, metadata: {dtype: float32}}]\n"
    )
    first = subprocess.run(batch_command(config), capture_output=True, text=True)
    assert first.returncode == 1, first.stdout + first.stderr
    layout = Layout(tmp_path / "out")
    for name, layers in (("tiny-llama", 2), ("tiny-1layer", 1)):
        (table,) = layout.result_dir(f"{name}/float32/esd").rglob("esd_layers_*.csv")
        rows = list(csv.DictReader(table.open()))
        assert len(rows) == 7 * layers + 1  # q, k, v, o, gate, up, down per decoder layer; lm_head
        assert {r["is_adapter"] for r in rows} == {"False"}
    (failure,) = [json.loads(line) for line in layout.failures.read_text().splitlines()]
    assert failure["key"] == "empty-model/float32/esd" and "cannot load model" in failure["error"]
    finished = files_of(layout.root / "results")
    again = subprocess.run(batch_command(config), capture_output=True, text=True)
    assert "3 jobs on local CPU, 2 at a time: 2 done before, 0 to run, 1 failed before" in again.stdout
    assert again.returncode == 1 and files_of(layout.root / "results") == finished


@pytest.mark.slow
def test_ray_executor_runs_and_resumes_a_matrix(tiny, tmp_path):
    ray = pytest.importorskip("ray")
    from lm_eval_perf.batch.cli import Options, run_batch
    from lm_eval_perf.batch.config import load_config
    from lm_eval_perf.batch.ray_pool import RayPool

    config_file = tmp_path / "ray.yaml"
    config_file.write_text(
        f"output_dir: ./out\nexecutor: ray\nray_address: local\ninclude_path: {tiny / 'tasks'}\n"
        "models: [arch:tiny-llama]\ntasks: [{name: batch_tiny, label: a, limit: 1}, "
        "{name: batch_tiny, label: b, limit: 1}]\n"
    )
    config = load_config(config_file)
    layout = Layout(config.output_dir)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        pool = RayPool(layout, config.ray_address, workers=2)
        assert not pool.on_gpu
        assert run_batch(config, pool, Options(only=["task=a"], progress=False)) == 0
        first = files_of(layout.result_dir("arch_tiny-llama/default/a"))
        assert not layout.is_done("arch_tiny-llama/default/b")
        assert run_batch(config, RayPool(layout, config.ray_address, workers=2), Options(progress=False)) == 0
        assert files_of(layout.result_dir("arch_tiny-llama/default/a")) == first
        assert layout.is_done("arch_tiny-llama/default/b")
        job = json.loads((layout.result_dir("arch_tiny-llama/default/b") / "job.json").read_text())
        assert job["status"] == "done" and job["attempts"] == 1
        store = json.loads(layout.store.read_text())["jobs"]
        assert {r["status"] for r in store.values()} == {"done"}
    finally:
        ray.shutdown()


# The job program of the packed run: lm-eval-perf's CLI, with the "GPU" the fake inventory handed out
# run on the CPU (this machine's torch has no CUDA).
ON_CPU = """
import runpy, sys
args = sys.argv[1:]
args[args.index("--device") + 1] = "cpu"
sys.argv = ["lm_eval_perf.cli", *args]
runpy.run_module("lm_eval_perf.cli", run_name="__main__")
"""


@pytest.mark.slow
def test_packed_jobs_give_the_results_of_unpacked_ones(tiny, killed_and_resumed, tmp_path):
    """Two tiny-llama cells of the killed matrix (run there one job per worker) again, both on one
    (fake) GPU at once: the same scores, and each record names the job it shared the GPU with."""
    from test_batch_packing import Inventory

    from lm_eval_perf.batch.config import load_config
    from lm_eval_perf.batch.local import GpuPolicy, LocalPool
    from lm_eval_perf.batch.matrix import expand
    from lm_eval_perf.batch.progress import Progress
    from lm_eval_perf.batch.scheduler import plan, prepare, run
    from lm_eval_perf.batch.store import JobStore

    config_file = tmp_path / "packed.yaml"
    config_file.write_text(
        f"output_dir: ./out\ninclude_path: {tiny / 'tasks'}\njobs_per_gpu: 2\nmodels: [arch:tiny-llama]\n"
        "tasks: [{name: batch_tiny, label: a, limit: 1}, {name: batch_tiny, label: b, limit: 1}]\n"
    )
    config = load_config(config_file)
    jobs = [replace(j, program=(sys.executable, "-c", ON_CPU)) for j in expand(config, on_gpu=True)]
    layout = Layout(config.output_dir)
    store = JobStore(layout)
    prepare(plan(jobs, store, layout, False), store, layout)
    pool = LocalPool(layout, Inventory([0]), policy=GpuPolicy(jobs_per_gpu=2))
    run(jobs, store, pool, 0, Progress(len(jobs), enabled=False))
    keys = [j.key for j in jobs]
    assert keys == [f"arch_tiny-llama/default/{t}" for t in "ab"]
    for key in keys:
        record = store.get(key)
        assert record["status"] == "done", record.get("tail")
        assert record["cuda_visible_devices"] == "0" and record["gpu_memory_gb"] < 3
        assert record["gpu_sharing"]["packed_with"] == sorted(set(keys) - {key})
        assert scores(layout.result_dir(key)) == scores(killed_and_resumed.layout.result_dir(key))


def scores(folder: Path) -> dict:
    return json.loads(next(folder.rglob("results_*.json")).read_text())["results"]
