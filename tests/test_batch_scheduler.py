"""The batch scheduler with sleep jobs: GPU-pool placement, resume semantics, retries, timeouts, lock.

Sleep jobs are small Python processes that honour the job contract of lm-eval (``--output_path
DIR``: write ``results_*.json`` there) and record when they ran and which ``CUDA_VISIBLE_DEVICES``
they got, so the pool's decisions can be checked without models. The GPU list is a fake one
(3 "GPUs", GPU 1 busy with another process), as the local pool accepts any :class:`GpuProbe`.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lm_eval_perf.batch.local import LocalPool
from lm_eval_perf.batch.matrix import Job
from lm_eval_perf.batch.progress import Progress
from lm_eval_perf.batch.scheduler import plan, prepare, run
from lm_eval_perf.batch.store import JobStore, locked
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.layout import Layout

# argv: key=value options, then --output_path DIR --device cpu|cuda (appended by the runner)
SLEEP_JOB = r"""
import json, os, subprocess, sys, time
args = sys.argv[1:]
out = args[args.index("--output_path") + 1]
opts = dict(a.split("=", 1) for a in args if "=" in a)
if "fail_if" in opts and os.path.exists(opts["fail_if"]):
    print("failing on purpose: " + opts["fail_if"] + " exists", flush=True)
    sys.exit(3)
if "flaky" in opts and not os.path.exists(opts["flaky"]):
    open(opts["flaky"], "w").close()
    print("first attempt fails", flush=True)
    sys.exit(4)
if "touch" in opts:
    open(opts["touch"], "w").close()
if "grandchild" in opts:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    open(opts["grandchild"], "w").write(str(child.pid))
start = time.time()
time.sleep(float(opts.get("sleep", "0")))
with open(os.path.join(out, "results_sleep.json"), "w") as f:
    json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}, f)
"""


class FakeGpus:
    """Three GPUs; GPU 1 is held by another process the whole time."""

    def __init__(self, busy: set[int] | None = None) -> None:
        self._busy = {1} if busy is None else busy

    def indices(self) -> list[int]:
        return [0, 1, 2]

    def busy(self) -> set[int]:
        return set(self._busy)

    def memory_total_bytes(self) -> dict[int, int | None]:
        return dict.fromkeys(self.indices(), 80 * 10**9)

    def processes(self) -> dict[int, list]:
        return {g: [] for g in self.indices()}


def sleep_job(key: str, *options: str, gpus: int = 0, timeout_s: float | None = None) -> Job:
    model, precision, task = key.split("/")
    return Job(
        key=key,
        model=model,
        pretrained="sleep",
        precision=precision,
        compression_ratio=None,
        task="sleep",
        task_label=task,
        args=options,
        gpus=gpus,
        timeout_s=timeout_s,
        program=(sys.executable, "-c", SLEEP_JOB),
    )


def run_jobs(jobs, root: Path, probe=None, workers=None, retry_failed=False, retries=0, policy=None):
    """One batch run over ``jobs`` as batch_eval does it; the plan and the store afterwards."""
    layout = Layout(root)
    pool = LocalPool(layout, probe, workers, policy)
    with locked(layout):
        store = JobStore(layout)
        todo = plan(jobs, store, layout, retry_failed)
        prepare(todo, store, layout)
        run(todo.run, store, pool, retries, Progress(len(todo.run), enabled=False))
    return todo, store


def ran(root: Path, key: str) -> dict:
    return json.loads((Layout(root).result_dir(key) / "results_sleep.json").read_text())


def test_gpu_pool_one_job_per_free_gpu_skips_busy_gpus(tmp_path):
    jobs = [sleep_job(f"m{i}/bf16/t", "sleep=0.4", gpus=1) for i in range(7)]
    jobs += [sleep_job(f"big{i}/bf16/t", "sleep=0.4", gpus=2) for i in range(2)]
    _, store = run_jobs(jobs, tmp_path, FakeGpus())
    assert {store.status(j.key) for j in jobs} == {"done"}
    per_gpu: dict[str, list[tuple[float, float]]] = {}
    for job in jobs:
        record = ran(tmp_path, job.key)
        gpus = record["cuda"].split(",")
        assert len(gpus) == job.gpus and len(set(gpus)) == job.gpus
        for gpu in gpus:
            per_gpu.setdefault(gpu, []).append((record["start"], record["end"]))
    assert set(per_gpu) == {"0", "2"}  # GPU 1 is busy with another process
    for intervals in per_gpu.values():
        intervals.sort()
        assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(intervals))
    # both free GPUs were used at the same time
    assert any(a[0] < b[1] and b[0] < a[1] for a in per_gpu["0"] for b in per_gpu["2"])


def test_gpu_pool_waits_while_every_gpu_is_busy(tmp_path, monkeypatch):
    monkeypatch.setattr("lm_eval_perf.batch.scheduler.POLL_S", 0.05)

    class FreedLater(FakeGpus):
        calls = 0

        def busy(self):
            FreedLater.calls += 1
            return {0, 1, 2} if FreedLater.calls <= 3 else {0, 1}

    jobs = [sleep_job(f"m{i}/bf16/t", gpus=1) for i in range(3)]
    run_jobs(jobs, tmp_path, FreedLater())
    assert FreedLater.calls > 3
    assert {ran(tmp_path, j.key)["cuda"] for j in jobs} == {"2"}


def test_cpu_pool_runs_at_most_workers_jobs_at_once(tmp_path):
    jobs = [sleep_job(f"m{i}/fp32/t", "sleep=0.3") for i in range(5)]
    run_jobs(jobs, tmp_path, None, workers=2)
    spans = [(ran(tmp_path, j.key)["start"], ran(tmp_path, j.key)["end"]) for j in jobs]
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2
    assert all(ran(tmp_path, j.key)["cuda"] is None for j in jobs)  # CPU jobs are not pinned


def test_cpu_cells_on_a_gpu_machine_see_no_gpu_and_take_no_gpu_slot(tmp_path):
    gpu_jobs = [replace(sleep_job(f"m{i}/bf16@cuda/t", "sleep=1.0", gpus=1), device="cuda") for i in range(2)]
    cpu_job = replace(sleep_job("m0/bf16@cpu/t", "sleep=0.3"), device="cpu")
    _, store = run_jobs([*gpu_jobs, cpu_job], tmp_path, FakeGpus())  # GPUs 0 and 2 free
    assert {store.status(j.key) for j in [*gpu_jobs, cpu_job]} == {"done"}
    assert sorted(ran(tmp_path, j.key)["cuda"] for j in gpu_jobs) == ["0", "2"]
    cpu = ran(tmp_path, cpu_job.key)
    assert cpu["cuda"] == ""  # CUDA_VISIBLE_DEVICES="": torch in it sees no GPU
    # it ran while both free GPUs were held: it waited for no GPU slot
    for job in gpu_jobs:
        gpu = ran(tmp_path, job.key)
        assert gpu["start"] < cpu["end"] and cpu["start"] < gpu["end"]


def test_a_gpu_cell_where_there_is_no_gpu_fails_at_once_in_one_line_and_the_rest_runs(tmp_path):
    cuda = replace(sleep_job("m/fp32@cuda/t", gpus=1), device="cuda")
    jobs = [replace(sleep_job("m/fp32@cpu/t"), device="cpu"), cuda]
    root = tmp_path / "out"
    _, store = run_jobs(jobs, root, retries=2)  # a CPU machine: no GPU probe
    assert store.status("m/fp32@cpu/t") == "done"
    record = store.get(cuda.key)
    assert record["status"] == "failed" and record["attempts"] == 1  # not retried: it cannot run here
    assert record["error"] == "device cuda: no GPU to run it on (local CPU, 1 at a time)"
    (failure,) = [json.loads(line) for line in Layout(root).failures.read_text().splitlines()]
    assert failure["key"] == cuda.key and failure["device"] == "cuda"
    assert not Layout(root).result_dir(cuda.key).exists() and not list(root.rglob(".*staging*"))
    todo, _ = run_jobs(jobs, root)  # a rerun: nothing runs again
    assert todo.run == [] and [j.key for j in todo.failed] == [cuda.key]


def test_rerun_resumes_interrupted_and_lost_jobs_and_skips_done_and_failed(tmp_path):
    flag = tmp_path / "fail-flag"
    flag.touch()
    jobs = [sleep_job(f"m{i}/fp32/t") for i in range(4)] + [sleep_job("bad/fp32/t", f"fail_if={flag}")]
    root = tmp_path / "out"
    run_jobs(jobs, root)
    layout = Layout(root)
    kept = layout.result_dir("m0/fp32/t") / "results_sleep.json"
    before = (kept.stat().st_ino, kept.stat().st_mtime_ns)
    # simulate a crash: m1 was running (no result folder), m2's result folder was lost, and the
    # process died right after m3's rename, before the store learned about it
    store = JobStore(layout)
    store.update("m1/fp32/t", status="running")
    store.jobs.pop("m3/fp32/t")
    store.save()
    os.rename(layout.result_dir("m1/fp32/t"), tmp_path / "gone1")
    os.rename(layout.result_dir("m2/fp32/t"), tmp_path / "gone2")
    (layout.result_dir("m1/fp32/t").parent / ".t.staging-deadbeef").mkdir()

    todo, store = run_jobs(jobs, root)
    assert sorted(j.key for j in todo.run) == ["m1/fp32/t", "m2/fp32/t"]
    assert todo.reasons == {"m1/fp32/t": "interrupted", "m2/fp32/t": "result folder missing"}
    assert [j.key for j in todo.failed] == ["bad/fp32/t"]
    assert store.status("m3/fp32/t") == "done"  # adopted from its job.json
    assert (kept.stat().st_ino, kept.stat().st_mtime_ns) == before
    assert not list(root.rglob(".*staging*"))
    assert store.status("bad/fp32/t") == "failed"

    flag.unlink()
    todo, store = run_jobs(jobs, root, retry_failed=True)
    assert [j.key for j in todo.run] == ["bad/fp32/t"]
    assert {store.status(j.key) for j in jobs} == {"done"}
    assert store.get("bad/fp32/t")["attempts"] == 2
    assert layout.failures.read_text() == ""


def test_failure_is_recorded_with_log_tail_and_others_finish(tmp_path):
    flag = tmp_path / "fail-flag"
    flag.touch()
    jobs = [sleep_job("ok/fp32/t"), sleep_job("bad/fp32/t", f"fail_if={flag}"), sleep_job("ok2/fp32/t")]
    _, store = run_jobs(jobs, tmp_path / "out")
    assert [store.status(j.key) for j in jobs] == ["done", "failed", "done"]
    (failure,) = [json.loads(line) for line in Layout(tmp_path / "out").failures.read_text().splitlines()]
    assert failure["key"] == "bad/fp32/t"
    assert failure["error"].startswith("exit status 3: failing on purpose")
    assert "failing on purpose" in failure["tail"]
    assert Path(failure["log"]).is_file() and "failing on purpose" in Path(failure["log"]).read_text()
    assert not Layout(tmp_path / "out").result_dir("bad/fp32/t").exists()


def test_retries_rerun_a_failed_job_within_one_run(tmp_path):
    jobs = [sleep_job("flaky/fp32/t", f"flaky={tmp_path / 'marker'}")]
    _, store = run_jobs(jobs, tmp_path / "out", retries=1)
    assert store.status("flaky/fp32/t") == "done"
    assert store.get("flaky/fp32/t")["attempts"] == 2
    log = Layout(tmp_path / "out").log_path("flaky/fp32/t").read_text()
    assert log.count("===== attempt ") == 2 and "first attempt fails" in log


def test_timeout_kills_the_jobs_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    jobs = [sleep_job("slow/fp32/t", "sleep=60", f"grandchild={pid_file}", timeout_s=1.0)]
    _, store = run_jobs(jobs, tmp_path / "out")
    record = store.get("slow/fp32/t")
    assert record["status"] == "failed" and record["error"].startswith("timed out after 1 s")
    grandchild = int(pid_file.read_text())
    for _ in range(50):
        if (
            not Path(f"/proc/{grandchild}").exists()
            or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]
        ):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the job's child process {grandchild} survived the timeout")


def test_second_batch_on_the_same_output_folder_is_refused(tmp_path):
    layout = Layout(tmp_path)
    with locked(layout), pytest.raises(UserInputError, match="another batch_eval"), locked(layout):
        pass


@pytest.fixture
def ctrl_c_as_in_a_fresh_process():
    """SIGINT as a freshly started batch_eval gets it: Python's KeyboardInterrupt handler, not blocked.

    Tests run in a long-lived pytest worker, where a library an earlier test loaded may have left
    SIGINT ignored or blocked (a run of the whole suite once slept through this test's signal)."""
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    signal.signal(signal.SIGINT, handler)


def test_ctrl_c_stops_running_jobs_and_leaves_them_pending(tmp_path, ctrl_c_as_in_a_fresh_process):
    jobs = [sleep_job(f"m{i}/fp32/t", "sleep=60") for i in range(3)]
    layout = Layout(tmp_path)
    pool = LocalPool(layout, None, workers=2)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    with locked(layout):
        store = JobStore(layout)
        prepare(plan(jobs, store, layout, False), store, layout)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            run(jobs, store, pool, 0, Progress(3, enabled=False))
    saved = JobStore(layout)
    assert {saved.status(j.key) for j in jobs} == {"pending"}
    assert pool.active == 0 and not list(tmp_path.rglob(".*staging*"))
    assert not any(layout.is_done(j.key) for j in jobs)
