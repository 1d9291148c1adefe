"""Packing jobs onto GPUs within a memory budget, timing-sensitive jobs alone, device isolation.

The GPU inventories are fake (the local pool takes any :class:`GpuProbe`); the jobs are the sleep
jobs of ``test_batch_scheduler`` (real processes that record when they ran and on which GPU); the
"other processes" on a GPU are real ``sleep`` processes of this test that the inventory lists.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_batch_scheduler import FakeGpus, ran, run_jobs, sleep_job

from lm_eval_perf.batch.config import load_config
from lm_eval_perf.batch.gpus import GpuProcess
from lm_eval_perf.batch.local import GpuPolicy
from lm_eval_perf.batch.matrix import expand
from lm_eval_perf.batch.memory import estimate, parameter_count
from lm_eval_perf.batch.sharing import SharingLog, foreign, identify
from lm_eval_perf.models.sources import architecture_presets, load_architecture
from lm_eval_perf.records.layout import Layout
from lm_eval_perf.tasks.traits import traits

PACKED = GpuPolicy(jobs_per_gpu=4)  # budget: 90 % of the fake GPUs' 80 GB = 72 GB


class Inventory(FakeGpus):
    """GPUs ``gpus`` (80 GB each), none busy; ``others`` lists the processes on them when asked."""

    def __init__(self, gpus: list[int], others=lambda: {}) -> None:
        super().__init__(busy=set())
        self._gpus, self._others = gpus, others

    def indices(self) -> list[int]:
        return list(self._gpus)

    def processes(self) -> dict[int, list[GpuProcess]]:
        return {g: list(self._others().get(g, [])) for g in self._gpus}


def job(key: str, *options: str, memory_gb: float | None = None, timing: bool = False):
    return dataclasses.replace(sleep_job(key, *options, gpus=1), memory_gb=memory_gb, timing_sensitive=timing)


def spans(root: Path, jobs) -> dict[str, tuple[str, float, float]]:
    """key -> (GPU, start, end) as the job itself recorded them."""
    return {
        j.key: (ran(root, j.key)["cuda"], ran(root, j.key)["start"], ran(root, j.key)["end"]) for j in jobs
    }


def test_packing_fills_each_gpu_to_its_budget_and_never_packs_a_timing_sensitive_job(tmp_path):
    jobs = [job("tp1/bf16/t", "sleep=1.5", timing=True)]
    jobs += [job(f"s{i}/bf16/t", "sleep=1.5", memory_gb=20) for i in range(8)]
    jobs += [job("big/bf16/t", "sleep=1.5", memory_gb=40), job("unknown/bf16/t", "sleep=1.5")]
    jobs += [job("tp2/bf16/t", "sleep=1.5", timing=True)]
    assert len(jobs) == 12
    _, store = run_jobs(jobs, tmp_path, Inventory([0, 1]), policy=PACKED)
    assert {store.status(j.key) for j in jobs} == {"done"}
    ran_at = spans(tmp_path, jobs)
    memory = {j.key: j.memory_gb for j in jobs}
    peak = dict.fromkeys(("0", "1"), 0)
    for key, (gpu, start, _) in ran_at.items():  # at every job's start: what ran on its GPU
        on = [k for k, (g, s, e) in ran_at.items() if g == gpu and s <= start < e]
        alone = memory[key] is None
        assert len(on) <= 4 and (not alone or on == [key]), (key, on)
        assert all(memory[k] is not None for k in on) or len(on) == 1
        assert sum(memory[k] or 0 for k in on) <= 72
        peak[gpu] = max(peak[gpu], len(on))
    assert peak == {"0": 3, "1": 3}  # three 20 GB jobs fill 72 GB; a fourth would not fit
    for key in ("tp1/bf16/t", "tp2/bf16/t", "unknown/bf16/t"):
        record = store.get(key)
        assert record["gpu_sharing"]["packed_with"] == [] and record["gpu_sharing"]["polls"] >= 1
        assert all(key not in store.get(j.key)["gpu_sharing"]["packed_with"] for j in jobs)
    assert any(len(store.get(f"s{i}/bf16/t")["gpu_sharing"]["packed_with"]) >= 2 for i in range(8))
    job_file = json.loads((Layout(tmp_path).result_dir("s0/bf16/t") / "job.json").read_text())
    assert job_file["gpu_memory_gb"] == 20 and "gpu_sharing" in job_file


def test_one_job_per_gpu_unless_the_config_packs(tmp_path):
    jobs = [job(f"s{i}/bf16/t", "sleep=0.5", memory_gb=1) for i in range(4)]
    run_jobs(jobs, tmp_path, Inventory([0]))
    intervals = sorted((s, e) for _, s, e in spans(tmp_path, jobs).values())
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(intervals))


@pytest.fixture
def other_process():
    """A real process that is no job of the pool (as another user's would be)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def listed_while(proc: subprocess.Popen, condition=lambda: True):
    """Processes on GPU 0: ``proc`` (1 GB) while it runs and ``condition()`` holds."""
    return lambda: {0: [GpuProcess(proc.pid, 10**9)]} if proc.poll() is None and condition() else {}


@pytest.mark.parametrize("mode", ["warn", "error", "wait"])
def test_isolation_before_the_start_of_a_timing_sensitive_job(tmp_path, monkeypatch, other_process, mode):
    monkeypatch.setattr("lm_eval_perf.batch.scheduler.POLL_S", 0.05)
    packed = job("packed/bf16/t", memory_gb=1)
    timed = job("timed/bf16/t", timing=True)
    if mode == "wait":
        threading.Timer(1.0, other_process.kill).start()
    policy = GpuPolicy(jobs_per_gpu=2, isolation=mode, isolation_wait_s=30)
    _, store = run_jobs([packed, timed], tmp_path, Inventory([0], listed_while(other_process)), policy=policy)
    # a job that is not timing-sensitive runs beside other processes; its record names them
    assert store.status(packed.key) == "done"
    (other,) = store.get(packed.key)["gpu_sharing"]["other_processes"]
    assert other["pid"] == other_process.pid and other["job"] is None and other["memory_gb_max"] == 1.0
    record = store.get(timed.key)
    if mode == "warn":
        assert record["status"] == "done"
        assert record["warning"].startswith(
            f"isolation: other processes on its GPUs at the start: pid {other_process.pid}"
        )
    elif mode == "error":
        assert record["status"] == "failed" and not Layout(tmp_path).is_done(timed.key)
        assert record["error"].startswith(
            f"isolation: its GPUs hold other processes: pid {other_process.pid}"
        )
        (failure,) = [json.loads(line) for line in Layout(tmp_path).failures.read_text().splitlines()]
        assert failure["key"] == timed.key and Path(failure["log"]).is_file()
    else:  # it waited until the other process was gone, then ran on a clean GPU
        assert record["status"] == "done" and record["warning"] is None
        assert ran(tmp_path, timed.key)["start"] > ran(tmp_path, packed.key)["start"]
        assert record["gpu_sharing"]["other_processes"] == []


def test_isolation_wait_gives_up_after_its_timeout(tmp_path, monkeypatch, other_process):
    monkeypatch.setattr("lm_eval_perf.batch.scheduler.POLL_S", 0.05)
    policy = GpuPolicy(isolation="wait", isolation_wait_s=0.5)
    _, store = run_jobs(
        [job("timed/bf16/t", timing=True)],
        tmp_path,
        Inventory([0], listed_while(other_process)),
        policy=policy,
    )
    record = store.get("timed/bf16/t")
    assert record["status"] == "failed" and record["attempts"] == 1
    assert record["error"].startswith("isolation: waited 0.5 s for GPUs free of other processes")


@pytest.mark.parametrize("mode", ["warn", "error", "wait"])
def test_isolation_while_a_timing_sensitive_job_runs(tmp_path, monkeypatch, other_process, mode):
    """The other process shows up once the job has started (the job touches ``started``); with
    ``wait`` it ends 1 s later."""
    monkeypatch.setattr("lm_eval_perf.batch.scheduler.POLL_S", 0.05)
    started = tmp_path / "started"
    timed = job("timed/bf16/t", "sleep=3", f"touch={started}", timing=True)
    policy = GpuPolicy(isolation=mode, isolation_wait_s=60)
    inventory = Inventory([0], listed_while(other_process, started.exists))
    if mode == "wait":

        def end_it() -> None:
            while not started.exists():
                time.sleep(0.01)
            time.sleep(1.0)
            other_process.kill()

        threading.Thread(target=end_it, daemon=True).start()
    _, store = run_jobs([timed], tmp_path / "out", inventory, policy=policy, retries=0)
    record = store.get(timed.key)
    seen = f"pid {other_process.pid}"
    if mode == "warn":
        assert record["status"] == "done" and record["attempts"] == 1
        assert record["warning"].startswith(f"isolation: other processes on its GPUs during the job: {seen}")
        (other,) = record["gpu_sharing"]["other_processes"]
        assert other["pid"] == other_process.pid and other["job"] is None
    elif mode == "error":
        assert record["status"] == "failed" and record["attempts"] == 1
        assert record["error"].startswith(
            f"isolation: another process appeared on its GPUs during the job: {seen}"
        )
        assert not Layout(tmp_path / "out").is_done(timed.key)
    else:  # stopped, then run again on the freed GPU; not counted as a retry (retries: 0)
        assert record["status"] == "done" and record["attempts"] == 2
        log = Layout(tmp_path / "out").log_path(timed.key).read_text()
        assert log.count("===== attempt ") == 2


def test_task_traits_and_memory_of_the_config_reach_the_jobs(tmp_path):
    (tmp_path / "b.yaml").write_text(
        "jobs_per_gpu: 4\nprecisions: [bfloat16, float32]\n"
        "models: [arch:tiny-llama, {pretrained: arch:smollm2-135m, gpu_memory_gb: 3}, org/not-cached]\n"
        "tasks: [esd, perf_throughput, {name: leaderboard_bbh_local, label: bbh, batch_size: 4},\n"
        "  {name: esd, label: esd_timed, timing_sensitive: true, gpu_memory_gb: 5}, "
        "{name: perf_throughput, label: tp_free, timing_sensitive: false}, "
        "{name: esd, label: esd_auto, batch_size: auto}]\n"
    )
    jobs = {j.key: j for j in expand(load_config(tmp_path / "b.yaml"), on_gpu=True)}
    assert jobs["arch_tiny-llama/bfloat16/perf_throughput"].timing_sensitive
    assert not jobs["arch_tiny-llama/bfloat16/tp_free"].timing_sensitive
    assert jobs["arch_tiny-llama/bfloat16/esd_timed"].timing_sensitive
    assert not jobs["arch_tiny-llama/bfloat16/esd"].timing_sensitive
    assert jobs["arch_smollm2-135m/bfloat16/esd"].memory_gb == 3  # the model's gpu_memory_gb
    assert jobs["arch_smollm2-135m/bfloat16/esd_timed"].memory_gb == 5  # the larger of model's and task's
    assert jobs["arch_tiny-llama/bfloat16/esd_auto"].memory_gb is None
    assert "org/not-cached" in jobs["org__not-cached/bfloat16/esd"].memory_basis
    # bbh at batch 4 in float32: weights 4 B/param, logits and log-softmax at 4 B per vocabulary id
    bbh = jobs["arch_tiny-llama/float32/bbh"]
    arch = load_architecture("tiny-llama")
    weights = parameter_count(arch) * 4
    kv = 2 * 2 * 2 * 16 * 4  # layers × (k, v) × kv heads × head dim × bytes
    activations = 4 * 2048 * (2 * 4 * 49152 + kv)
    assert bbh.memory_gb == pytest.approx((weights + activations) / 1e9 + 0.8)
    half = jobs["arch_tiny-llama/bfloat16/bbh"].memory_gb
    assert half == pytest.approx((weights / 2 + 4 * 2048 * (2 * 2 * 49152 + kv / 2)) / 1e9 + 0.8)
    on_one_gpu = {
        j.key: j for j in expand(dataclasses.replace(load_config(tmp_path / "b.yaml"), jobs_per_gpu=1), True)
    }
    assert on_one_gpu["arch_tiny-llama/float32/bbh"].memory_gb is None  # not packed: not estimated


def test_parameter_count_from_config_matches_the_built_models():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    for preset in architecture_presets():
        config = load_architecture(preset)
        if not config["architectures"][0].endswith("ForCausalLM"):
            continue  # the formula is the dense decoder-only LM's; the classifier presets are not one
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config))
        assert parameter_count(config) == sum(p.numel() for p in model.parameters()), preset
    assert parameter_count({**load_architecture("tiny-llama"), "num_local_experts": 8}) is None
    esd = estimate("arch:tiny-llama", None, "float32", {}, None, traits("esd"))
    assert esd.gb == pytest.approx(parameter_count(load_architecture("tiny-llama")) * 4 / 1e9 + 2.0 + 0.8)


def test_processes_are_told_apart_by_process_group_and_hidden_ones_by_count():
    me = identify(0, GpuProcess(os.getpid(), 3 * 10**9), {os.getpgid(0): "k"})
    assert me.job == "k" and me.name
    hidden = [identify(0, GpuProcess(2**22 + pid, size), {}) for pid, size in ((1, 2 * 10**9), (2, 10**9))]
    assert [n.name for n in hidden] == [None, None]  # beyond pid_max: not in this pid namespace
    assert foreign(hidden, "k", started=False) == hidden
    assert foreign(hidden, "k", started=True) == [hidden[1]]  # the largest is taken for the job's own
    assert foreign([me, *hidden], "k", started=True) == hidden
    log = SharingLog("other", [0])
    log.observe([hidden[1]], readable=True, packed_with=[])
    log.observe([dataclasses.replace(hidden[1], used_bytes=5 * 10**9), me], readable=False, packed_with=["k"])
    record = log.record()
    assert [(p["pid"], p["memory_gb_max"], p["job"]) for p in record["other_processes"]] == [
        (os.getpid(), 3.0, "k"),
        (2**22 + 2, 5.0, None),
    ]
    assert record["packed_with"] == ["k"] and record["polls"] == 2
    assert record["unavailable"] == "NVML could not list the GPU's processes in 1 of 2 polls"
