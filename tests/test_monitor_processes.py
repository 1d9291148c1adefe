"""Records of runs that are more than one uninterrupted process: paused blocks, data-parallel ranks,
the device whose stream carries the clock's marks, lm-eval's rank padding, the CPU probe bound."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch

from lm_eval_perf.models.probe import row_bytes, rows_that_fit
from lm_eval_perf.models.session import SessionState, efficiency_record, rank_padding, task_counts
from lm_eval_perf.models.sources import load_architecture, transformers_config
from lm_eval_perf.monitor import PerformanceMonitor
from lm_eval_perf.monitor.clock import CudaClock
from lm_eval_perf.monitor.record import MonitorState, build_record
from lm_eval_perf.monitor.requests import BatchRecord
from lm_eval_perf.monitor.sources import GpuInfo, GpuReading
from lm_eval_perf.monitor.window import Measurement

GIB = 1024**3


class SteadyGpu:
    """One GPU drawing exactly ``power_w``: its energy counter is power × time since opening."""

    def __init__(self, power_w: float):
        self.power_w, self.unavailable, self.t0 = power_w, {}, time.perf_counter()

    def open(self):
        return [GpuInfo(0, "fake", uuid="GPU-fake")]

    def read(self, energy: bool = True):
        counter = self.power_w * (time.perf_counter() - self.t0) if energy else None
        return (GpuReading(0, 10 * GIB, 80 * GIB, 50.0, self.power_w, counter, None),)

    def close(self):
        pass


def test_a_paused_block_is_left_out_of_every_open_window_and_named_in_the_record():
    with PerformanceMonitor(interval_s=0.01, gpu_source=SteadyGpu(100.0)) as monitor:
        monitor.begin_window("loglikelihood")
        time.sleep(0.3)
        with monitor.paused("batch_size_probe"):
            time.sleep(0.6)
        time.sleep(0.3)
        monitor.end_window("loglikelihood")
    record = monitor.summary()
    window = monitor.measurement("loglikelihood")
    assert window is not None
    (excluded,) = record["overall"]["excluded"]
    assert excluded["what"] == "batch_size_probe" and excluded["seconds"] == pytest.approx(0.6, abs=0.05)
    # two parts of about 0.3 s: the 0.6 s block's time and its 60 J are in neither
    assert window.duration_s == pytest.approx(0.6, abs=0.06)
    assert window.energy_j == pytest.approx(100.0 * window.duration_s, rel=1e-3)
    assert window.end_s - window.start_s == pytest.approx(1.2, abs=0.06)
    total = record["overall"]["window"]
    assert total["duration_s"] == pytest.approx(
        total["end_s"] - total["start_s"] - excluded["seconds"], abs=0.03
    )


def measurement(
    duration_s: float, energy_j: float, gpus: int, amu: float, rapl_j: float | None
) -> Measurement:
    return Measurement(
        name="total",
        start_s=0.0,
        end_s=duration_s,
        duration_s=duration_s,
        gpu_count=gpus,
        amu=amu,
        memory_used_avg_gib=8.0 * gpus,
        memory_used_peak_gib=10.0 * gpus,
        process_memory_peak_gib=None,
        pcu=amu,
        pcu_peak=1.0,
        aec_w=energy_j / duration_s,
        energy_j=energy_j,
        energy_source="nvml_energy_counter",
        energy_error_bound=0.1 / duration_s,
        energy_counter_j=energy_j,
        energy_integrated_j=energy_j,
        power_source="instant",
        host_rss_peak_gib=2.0,
        host_cpu_avg_pct=100.0,
        host_rapl_energy_j=rapl_j,
    )


def state(batches: list[float], window: Measurement, host: str, allocated_gib: float) -> MonitorState:
    records = [BatchRecord("loglikelihood", s, batch_size=4, prompt_tokens=100) for s in batches]
    provenance = {
        "gpus": [{"index": 0, "uuid": f"GPU-{host}-{allocated_gib}"}],
        "host": {"hostname": host},
        "started_utc": "2026-12-07T10:00:00+00:00",
        "ended_utc": f"2026-12-07T10:00:{int(window.duration_s):02d}+00:00",
    }
    torch_memory = {"allocated_peak_gib": allocated_gib, "reserved_peak_gib": allocated_gib + 1}
    return MonitorState(
        batches={"loglikelihood": records},
        windows={"total": window, "loglikelihood": replace(window, name="loglikelihood")},
        torch_memory=torch_memory,
        excluded=[],
        unavailable={},
        provenance=provenance,
    )


def test_ranks_combine_into_one_record_summed_over_gpus_with_the_longest_wall_time():
    rank0 = state([1.0, 2.0, 3.0], measurement(10.0, 3000.0, 1, 0.5, 500.0), "node-a", 20.0)
    rank1 = state([4.0], measurement(8.0, 2000.0, 1, 0.3, 450.0), "node-a", 30.0)
    record = build_record([rank0, rank1], None, None)
    ll = record["kinds"]["loglikelihood"]
    assert record["world_size"] == 2
    assert ll["batches"] == 4 and ll["samples"] == 16 and ll["prompt_tokens"] == 400
    assert ll["latency_s"]["p50"] == pytest.approx(2.5) and ll["latency_s"]["max"] == 4.0  # one distribution
    window = record["overall"]["window"]
    assert window["duration_s"] == 10.0 and window["gpu_count"] == 2
    assert record["overall"]["energy_j"] == 5000.0 and record["overall"]["aec_w"] == pytest.approx(5000 / 10)
    # each rank's counter is off by up to one 0.1 s update: 300 J + 200 J of 5000 J
    assert record["overall"]["energy_error_bound"] == pytest.approx((0.01 * 3000 + 0.0125 * 2000) / 5000)
    assert record["overall"]["amu"] == pytest.approx(0.4) and window["memory_used_peak_gib"] == 20.0
    assert window["host_rapl_energy_j"] == 500.0  # one host's package counter, seen by both ranks: once
    assert record["overall"]["torch_memory"]["allocated_peak_gib"] == 50.0
    assert record["overall"]["torch_memory"]["allocated_peak_gib_max_rank"] == 30.0
    assert [r["energy_j"] for r in record["ranks"]] == [3000.0, 2000.0]
    assert len(record["provenance"]["gpus"]) == 2 and record["provenance"]["ended_utc"].endswith(":10+00:00")


def test_rapl_counts_once_per_host_and_sums_over_hosts():
    a = state([1.0], measurement(5.0, 100.0, 1, 0.5, 300.0), "node-a", 1.0)
    b = state([1.0], measurement(5.0, 100.0, 1, 0.5, 200.0), "node-b", 1.0)
    assert build_record([a, b], None, None)["overall"]["window"]["host_rapl_energy_j"] == 500.0


def test_per_task_request_counts_add_over_ranks():
    rank0 = state([1.0], measurement(4.0, 40.0, 1, 0.5, None), "h", 1.0)
    rank1 = state([1.0], measurement(4.0, 40.0, 1, 0.5, None), "h", 1.0)
    tasks0 = {"loglikelihood": {"bbh_a": [6, 600], "bbh_b": [2, 200]}}
    tasks1 = {"loglikelihood": {"bbh_a": [4, 400]}}
    record = efficiency_record([SessionState(rank0, tasks0), SessionState(rank1, tasks1)], None, None)
    assert record["tasks"]["bbh_a"]["requests"] == 10 and record["tasks"]["bbh_b"]["requests"] == 2
    assert record["tasks"]["bbh_a"]["kinds"]["loglikelihood"]["share"] == pytest.approx(1000 / 1200)
    assert record["tasks"]["bbh_a"]["energy_j"] == pytest.approx(80.0 * 1000 / 1200)


def test_task_counts_give_each_task_its_requests_and_the_characters_of_their_strings():
    from lm_eval.api.instance import Instance

    def ll(task, context, continuation):
        return Instance("loglikelihood", {}, (context, continuation), 0, (task, 0, 1))

    mixed = [ll("a", "12345", " x"), ll("b", "1", " yy"), ll("a", "123", " z"), ll(None, "", " w")]
    assert task_counts(mixed) == {"a": (2, 7 + 5), "b": (1, 4), "unknown": (1, 2)}
    assert task_counts(mixed[:1] * 3) == {"a": (3, 21)}
    generate = [Instance("generate_until", {}, ("hello", {"until": ["\n"]}), 0, ("g", 0, 1))]
    assert task_counts(generate) == {"g": (1, 5)}  # the generation kwargs are not characters
    assert task_counts([]) == {}


class Request:
    def __init__(self, repeats: int = 1):
        self.repeats = repeats


def test_rank_padding_counts_the_copies_lm_eval_appends_not_a_requests_own_repeats():
    a, b = Request(), Request(repeats=2)
    assert rank_padding([a, b, b]) == 0  # b's own two repeats
    assert rank_padding([a, b, b, b, b, b, b]) == 4  # two padding requests of two repeats each
    assert rank_padding([a, a]) == 1 and rank_padding([]) == 0


def test_cuda_clock_marks_on_the_stream_of_the_event_device(monkeypatch):
    streams, recorded = [], []

    class Event:
        def __init__(self, enable_timing: bool):
            assert enable_timing

        def record(self, stream=None):
            recorded.append(stream)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(
        torch.cuda, "current_stream", lambda device=None: streams.append(device) or f"s{device}"
    )
    CudaClock([0, 1], event_device=1).event()
    CudaClock([2, 3]).event()
    assert streams == [1, 2] and recorded == ["s1", "s2"]


def test_the_cpu_probe_starts_at_the_rows_that_fit_half_the_available_memory():
    config = transformers_config(load_architecture("tiny-llama"))
    per_row = row_bytes(config, 2048, torch.float32)
    # 3 logits tensors of 2048 × 49,152 float32 values dominate: about 1.2 GB a row
    assert per_row == 4 * 2048 * (3 * 49152 + 4 * 64 + 3 * 128)
    assert rows_that_fit(config, 2048, torch.float32, 64, available_bytes=24 * 10**9) == 8
    assert rows_that_fit(config, 2048, torch.float32, 4, available_bytes=24 * 10**9) == 4
    assert rows_that_fit(config, 2048, torch.float32, 64, available_bytes=10**6) == 1
