"""Every monitor metric recomputed by hand from a synthetic sample trace."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from lm_eval_perf.monitor import ModelShape, PerformanceMonitor, Stats, model_compression_rate
from lm_eval_perf.monitor.peaks import DevicePeaks, peaks_for
from lm_eval_perf.monitor.requests import BatchRecord, summarize
from lm_eval_perf.monitor.sources import GpuInfo, GpuReading, HostReading, HostSource, NoGpuSource, Sample
from lm_eval_perf.monitor.timeline import integral, time_average
from lm_eval_perf.monitor.window import measure, merge

GIB = 1024**3


def gpu(index, used, total, util, power, energy, process=None) -> GpuReading:
    return GpuReading(index, used, total, util, power, energy, process)


def trace() -> list[Sample]:
    """Two GPUs sampled at t = 0, 1, 2, 4 s with known memory, utilization, power and energy."""
    host = HostReading(rss_bytes=GIB, cpu_pct=50.0, rapl_energy_j=None)
    rows = [
        # t, (used0, util0, power0, energy0), (used1, util1, power1, energy1)
        (0.0, (10, 0, 100, 1000.0), (20, 50, 200, 5000.0)),
        (1.0, (30, 100, 300, 1200.0), (20, 50, 200, 5200.0)),
        (2.0, (30, 100, 300, 1500.0), (40, 100, 400, 5500.0)),
        (4.0, (10, 0, 100, 1900.0), (20, 0, 200, 6100.0)),
    ]
    return [
        Sample(
            t,
            (gpu(0, a[0] * GIB, 80 * GIB, a[1], a[2], a[3]), gpu(1, b[0] * GIB, 80 * GIB, b[1], b[2], b[3])),
            host,
        )
        for t, a, b in rows
    ]


def test_amu_pcu_aec_and_energy_equal_hand_computed_trapezoids():
    samples = trace()
    m = measure("w", samples, samples[0], samples[-1], {})
    # GPU0 memory used (GiB): trapezoids 0-1: (10+30)/2, 1-2: 30, 2-4: (30+10)/2*2 -> 20+30+40 = 90 GiB·s
    # GPU1: 1-: 20, 20, (20+40)/2=30... 0-1: 20, 1-2: 30, 2-4: 60 -> 110 GiB·s
    assert m.amu == pytest.approx(((90 / 80) / 4 + (110 / 80) / 4) / 2, rel=1e-12)
    assert m.memory_used_avg_gib == pytest.approx((90 + 110) / 4, rel=1e-12)
    assert m.memory_used_peak_gib == pytest.approx(30 + 40, rel=1e-12)
    # util (fraction): GPU0 0-1: 0.5, 1-2: 1, 2-4: 1 -> 2.5/4; GPU1 0-1: .5, 1-2: .75, 2-4: 1 -> 2.25/4
    assert m.pcu == pytest.approx((2.5 / 4 + 2.25 / 4) / 2, rel=1e-12)
    assert m.pcu_peak == 1.0
    # power W: GPU0 200+300+400 = 900 J; GPU1 200+300+600 = 1100 J
    assert m.energy_integrated_j == pytest.approx(2000.0, rel=1e-12)
    assert m.aec_w == pytest.approx(2000.0 / 4, rel=1e-12)
    # the counter: (1900-1000) + (6100-5000)
    assert m.energy_j == pytest.approx(2000.0, rel=1e-12)
    assert m.energy_source == "nvml_energy_counter"
    assert m.host_rss_peak_gib == pytest.approx(1.0)
    assert m.host_cpu_avg_pct == pytest.approx(50.0)


def test_window_edges_inside_the_trace_are_interpolated_linearly():
    samples = trace()
    power = [(s.t_s, s.gpus[0].power_w) for s in samples]
    # from 0.5 s (200 W) to 3 s (200 W): 0.5-1: (200+300)/2*0.5 = 125, 1-2: 300, 2-3: (300+200)/2 = 250
    assert integral(power, 0.5, 3.0) == pytest.approx(675.0, rel=1e-12)
    assert time_average(power, 0.5, 3.0) == pytest.approx(675.0 / 2.5, rel=1e-12)


def test_short_window_integrates_power_and_says_why():
    samples = trace()
    short = [Sample(0.0, samples[0].gpus, None), Sample(0.05, samples[1].gpus, None)]
    m = measure("short", short, short[0], short[-1], {})
    assert m.energy_source == "integrated_power"
    assert "shorter than" in m.unavailable["energy_j"]
    assert m.energy_j == pytest.approx(0.05 * (100 + 300) / 2 + 0.05 * 200, rel=1e-12)


def test_merged_windows_add_energy_and_weight_averages_by_duration():
    samples = trace()
    a = measure("k", samples, samples[0], samples[1], {})
    b = measure("k", samples, samples[2], samples[3], {})
    both = merge("k", [a, b])
    assert both.duration_s == pytest.approx(3.0)
    assert both.energy_j == pytest.approx(a.energy_j + b.energy_j)
    assert both.aec_w == pytest.approx((a.aec_w * 1 + b.aec_w * 2) / 3)
    assert both.memory_used_peak_gib == max(a.memory_used_peak_gib, b.memory_used_peak_gib)


def test_stats_match_numpy_percentiles_and_population_std():
    values = [0.3, 0.1, 0.9, 0.5, 0.7, 0.2, 1.3, 0.4, 0.8, 0.6]
    s = Stats.from_values(values, "s")
    assert s.count == 10 and s.unit == "s"
    for q, got in zip((50, 90, 95, 99), (s.p50, s.p90, s.p95, s.p99)):
        assert got == pytest.approx(float(np.percentile(values, q)), rel=1e-12)
    # by hand: sorted = .1 .2 .3 .4 .5 .6 .7 .8 .9 1.3; p90 at position 8.1 -> .9 + .1*(1.3-.9)
    assert s.p90 == pytest.approx(0.94, rel=1e-12)
    assert s.std == pytest.approx(float(np.std(values)), rel=1e-12)
    assert s.mean == pytest.approx(sum(values) / 10)
    assert Stats.from_values([], "s").mean is None


def test_al_percentiles_throughputs_mfu_and_mbu_follow_their_definitions():
    shape = ModelShape(
        params=1_000_000, weight_bytes=2_000_000, n_layers=2, n_kv_heads=2, head_dim=8, kv_bytes_per_element=2
    )
    peaks = DevicePeaks("test", flops=1e12, bandwidth=1e9, source="test")
    batches = [
        BatchRecord(
            "generate_until",
            1.0,
            2,
            prompt_tokens=20,
            generated_tokens=8,
            prompt_len=10,
            decode_steps=4,
            ttft_s=0.2,
            tpot_s=0.25,
            warmup=True,
        ),
        BatchRecord(
            "generate_until",
            2.0,
            2,
            prompt_tokens=20,
            generated_tokens=8,
            prompt_len=10,
            decode_steps=4,
            ttft_s=0.5,
            tpot_s=0.5,
        ),
        BatchRecord(
            "generate_until",
            4.0,
            4,
            prompt_tokens=40,
            generated_tokens=16,
            prompt_len=10,
            decode_steps=4,
            ttft_s=1.0,
            tpot_s=1.0,
        ),
    ]
    block = summarize("generate_until", batches, None, shape, peaks)
    assert block["batches"] == 2 and block["warmup_batches"] == 1
    assert block["al_s"] == pytest.approx(3.0)  # (2 + 4) / 2, warm-up excluded
    assert block["latency_s"]["p90"] == pytest.approx(2.0 + 0.9 * 2.0)
    assert block["it_tokens_per_s"] == pytest.approx((8 + 16) / 6.0)
    assert block["tt_tokens_per_s_per_param"] == pytest.approx(((20 + 8 + 40 + 16) / 1e6) / 6.0)
    assert block["tt_tokens_per_s_per_billion_params"] == pytest.approx(((20 + 8 + 40 + 16) / 1e-3) / 6.0)
    assert block["st_samples_per_s_per_param"] == pytest.approx((6 / 1e6) / 6.0)
    # prefill: 2 * params * prompt tokens over the TTFTs
    assert block["mfu"] == pytest.approx((2 * 1e6 * 60 / 1.5) / 1e12)
    # decode: 3 steps per batch; bytes/step = weights + batch * mean context * kv bytes/token (2*2*2*8*2=128)
    kv = 2 * 2 * 2 * 8 * 2
    moved = 3 * (2e6 + 2 * 12 * kv) + 3 * (2e6 + 4 * 12 * kv)
    assert block["mbu"] == pytest.approx(moved / (1.5 + 3.0) / 1e9)
    assert block["decode_tokens_per_s"] == pytest.approx((2 * 3 + 4 * 3) / 4.5)


def test_loglikelihood_reports_prompt_rate_and_says_it_is_undefined():
    block = summarize(
        "loglikelihood", [BatchRecord("loglikelihood", 0.5, 4, prompt_tokens=100)], None, None, None
    )
    assert block["prompt_tokens_per_s"] == pytest.approx(200.0)
    assert block["it_tokens_per_s"] is None
    assert "generation only" in block["unavailable"]["it_tokens_per_s"]
    assert block["mfu"] is None and "model size unknown" in block["unavailable"]["mfu"]


def test_mcr_is_size_gain_times_kept_accuracy_and_undefined_not_zero():
    assert model_compression_rate(16e9, 4e9, 0.60, 0.57) == pytest.approx(4.0 * 0.95)
    assert model_compression_rate(16e9, 4e9, 0.0, 0.5) is None
    assert model_compression_rate(None, 4e9, 0.6, 0.5) is None


class LinearEnergyGpu:
    """A GPU source whose counter grows at exactly ``power_w``: energy must equal power × time."""

    def __init__(self, power_w: float):
        self.power_w = power_w
        self.unavailable: dict[str, str] = {}
        self.t0 = time.perf_counter()
        self.counter_threads: list[str] = []  # the thread of every counter read

    def open(self):
        return [GpuInfo(0, "fake"), GpuInfo(1, "fake")]

    def read(self, energy: bool = True):
        if energy:
            self.counter_threads.append(threading.current_thread().name)
        e = self.power_w * (time.perf_counter() - self.t0) if energy else None
        return (
            gpu(0, 40 * GIB, 80 * GIB, 75.0, self.power_w, e),
            gpu(1, 20 * GIB, 80 * GIB, 25.0, self.power_w, e),
        )

    def close(self):
        pass


def test_monitor_with_a_known_source_reports_exact_constants_through_the_sampler_thread():
    with (
        PerformanceMonitor(interval_s=0.01, gpu_source=LinearEnergyGpu(250.0)) as monitor,
        monitor.window("work"),
    ):
        time.sleep(0.3)
    m = monitor.measurement("work")
    assert m is not None and m.gpu_count == 2
    assert m.amu == pytest.approx((0.5 + 0.25) / 2, rel=1e-12)
    assert m.pcu == pytest.approx((0.75 + 0.25) / 2, rel=1e-12)
    assert m.aec_w == pytest.approx(500.0, rel=1e-9)
    # the fake counter is read a few microseconds away from each sample's time stamp
    assert m.energy_j == pytest.approx(500.0 * m.duration_s, rel=1e-3)
    assert m.energy_integrated_j == pytest.approx(500.0 * m.duration_s, rel=1e-9)


def test_the_energy_counter_is_read_for_window_edges_only_and_never_on_the_callers_thread():
    source = LinearEnergyGpu(250.0)
    with PerformanceMonitor(interval_s=0.01, gpu_source=source) as monitor:
        time.sleep(0.05)
        with monitor.window("work"):
            time.sleep(0.15)  # a window under ten counter update periods (1 s) integrates power instead
            deadline = time.perf_counter() + 10.0
            while len(monitor.timeline) < 12 and time.perf_counter() < deadline:
                time.sleep(0.01)
        time.sleep(0.05)
    with_counter = [s for s in monitor.timeline if s.gpus[0].energy_j is not None]
    # four edges, 50 ms apart or more: "total" opens, "work" opens and closes, "total" closes; the
    # sampler's last sample has no counter (no window ends there)
    assert len(with_counter) == len(source.counter_threads) == 4
    assert set(source.counter_threads) == {"lm-eval-perf-sampler"}
    assert len(monitor.timeline) - len(with_counter) >= 10
    m = monitor.measurement("work")
    assert m is not None and m.energy_source == "integrated_power" and m.energy_counter_j > 0
    assert (m.start_s, m.end_s) == (with_counter[1].t_s, with_counter[2].t_s)


class GatedGpu(LinearEnergyGpu):
    """The first counter read waits until the test opens the gate."""

    def __init__(self, power_w: float):
        super().__init__(power_w)
        self.reading, self.gate = threading.Event(), threading.Event()

    def read(self, energy: bool = True):
        if energy and not self.gate.is_set():
            self.reading.set()
            self.gate.wait(10.0)
        return super().read(energy)


def test_edges_asked_for_during_one_read_share_the_next_read():
    from lm_eval_perf.monitor.sampler import Sampler

    source = GatedGpu(100.0)
    sampler = Sampler(source, None, interval_s=10.0)
    sampler.start()
    first = sampler.edge()
    assert source.reading.wait(10.0)  # the sampler thread is inside the first edge's read
    second, third = sampler.edge(), sampler.edge()
    source.gate.set()
    a, b, c = first.sample(), second.sample(), third.sample()
    sampler.stop()
    assert a is not b and b is c
    assert source.counter_threads == ["lm-eval-perf-sampler"] * 2
    assert sampler.timeline[-1].gpus[0].energy_j is None  # the last sample, taken at stop()


def test_stopping_reads_the_edges_asked_for_while_the_last_edge_was_read():
    from lm_eval_perf.monitor.sampler import Sampler

    source = GatedGpu(100.0)
    sampler = Sampler(source, None, interval_s=10.0)
    sampler.start()
    first = sampler.edge()
    assert source.reading.wait(10.0)
    last = sampler.edge()  # as in __exit__: the last edge, then stop() while the first is still read
    threading.Timer(0.2, source.gate.set).start()
    sampler.stop()
    assert first.ready and last.ready
    assert last.sample() is not first.sample() and last.sample().gpus[0].energy_j is not None


class FailingGpu(LinearEnergyGpu):
    def read(self, energy: bool = True):
        if energy:
            raise OSError("device lost")
        return super().read(energy)


def test_a_source_that_fails_in_the_sampler_thread_fails_the_edge_that_waits_for_it():
    from lm_eval_perf.monitor.sampler import Sampler

    sampler = Sampler(FailingGpu(1.0), None, interval_s=10.0)
    sampler.start()
    edge = sampler.edge()
    with pytest.raises(RuntimeError, match="the sampler thread failed: device lost"):
        edge.sample()
    sampler.stop()


def test_without_a_gpu_gpu_metrics_are_null_with_a_reason_and_nothing_crashes():
    with (
        PerformanceMonitor(gpu_source=NoGpuSource("no GPU in this test")) as monitor,
        monitor.window("loglikelihood"),
    ):
        monitor.record_request("loglikelihood", 0.01, batch_size=1, prompt_tokens=3)
    record = monitor.summary()
    overall = record["overall"]
    for key in ("amu", "pcu", "aec_w", "energy_j", "memory_peak_gib"):
        assert overall[key] is None
    assert record["unavailable"]["gpu"] == "no GPU in this test"
    assert record["kinds"]["loglikelihood"]["window"]["unavailable"]["energy_j"] == "no GPU in this test"
    assert overall["host_rss_peak_gib"] > 0


def test_real_nvml_source_degrades_to_a_reason_where_nvml_or_gpus_are_missing():
    from lm_eval_perf.monitor.sources import NvmlSource

    source = NvmlSource()
    infos = source.open()
    if infos:
        pytest.skip("this machine has an NVML GPU; the no-NVML path is not reachable here")
    assert "gpu" in source.unavailable and source.read() == ()
    source.close()


def test_rapl_counters_add_package_domains_and_survive_wraparound(tmp_path):
    for name, start in (("intel-rapl:0", 900), ("intel-rapl:1", 100)):
        d = tmp_path / name
        d.mkdir()
        (d / "max_energy_range_uj").write_text("1000\n")
        (d / "energy_uj").write_text(f"{start}\n")
    (tmp_path / "intel-rapl:0:0").mkdir()  # a sub-domain: must be ignored
    host = HostSource(rapl_root=tmp_path)
    host.open()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("100\n")  # wrapped: +200 uJ
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("400\n")  # +300 uJ
    assert host.read().rapl_energy_j == pytest.approx(500e-6)
    assert math.isclose(host.read().rapl_energy_j, 500e-6)  # unchanged counters add nothing


# -- issue 22: every figure faithful -------------------------------------------------------------


def gen(latency_s: float, batch_size: int, **fields) -> BatchRecord:
    """One timed ``generate_until`` batch."""
    return BatchRecord("generate_until", latency_s, batch_size, **fields)


def test_a_zero_length_window_has_no_energy_and_says_why_never_zero():
    samples = trace()
    host = HostReading(rss_bytes=GIB, cpu_pct=5.0, rapl_energy_j=12.0)
    edge = Sample(1.0, samples[1].gpus, host)  # both edges share this one reading
    m = measure("instant", [edge], edge, edge, {})
    assert m.duration_s == 0.0
    assert m.energy_j is None and m.aec_w is None and m.energy_integrated_j is None
    assert m.host_rapl_energy_j is None
    assert "zero length" in m.unavailable["energy_j"]
    batches = [gen(0.0, 1, prompt_tokens=4, generated_tokens=2, decode_steps=2)]
    block = summarize("generate_until", batches, m, None, None)
    assert block["energy_j"] is None and block["energy_per_token_j"] is None
    assert "zero length" in block["unavailable"]["energy_per_token_j"]


def test_energy_counter_is_used_from_ten_update_periods_on_with_an_error_bound():
    samples = trace()
    m = measure("w", samples, samples[0], samples[-1], {})  # 4 s: the counter, bound 0.1 s / 4 s
    assert m.energy_source == "nvml_energy_counter"
    assert m.energy_error_bound == pytest.approx(0.1 / 4.0)
    assert m.energy_counter_j == pytest.approx(2000.0)
    half = [Sample(0.0, samples[0].gpus, None), Sample(0.5, samples[1].gpus, None)]
    short = measure("short", half, half[0], half[-1], {})  # 0.5 s: under ten periods
    # GPU0 100 -> 300 W, GPU1 200 W over 0.5 s
    assert short.energy_source == "integrated_power"
    assert short.energy_j == pytest.approx(0.5 * (100 + 300) / 2 + 0.5 * 200)
    assert short.energy_counter_j == pytest.approx((1200 - 1000) + (5200 - 5000))
    assert short.energy_error_bound is None and "no error bound" in short.unavailable["energy_error_bound"]
    both = merge("w", [m, measure("w", samples, samples[0], samples[2], {})])  # 4 s and 2 s windows
    # absolute bounds add: 0.025 * 2000 J + 0.05 * (500 + 500) J over 3000 J
    assert both.energy_error_bound == pytest.approx((0.025 * 2000 + 0.05 * 1000) / 3000)


def test_aec_is_counter_energy_over_time_when_the_counter_is_used():
    samples = trace()
    last = samples[-1]
    # counters 400 J above the power integral: AEC follows the counter, not the (lagging) power
    busier = Sample(
        last.t_s, tuple(g.__class__(**{**g.__dict__, "energy_j": g.energy_j + 200}) for g in last.gpus), None
    )
    m = measure("w", [*samples[:-1], busier], samples[0], busier, {})
    assert m.energy_j == pytest.approx(2400.0) and m.energy_integrated_j == pytest.approx(2000.0)
    assert m.aec_w == pytest.approx(2400.0 / 4.0)


def test_window_names_the_power_reading_its_timeline_holds():
    samples = trace()
    instant = [
        Sample(
            s.t_s,
            tuple(g.__class__(**{**g.__dict__, "power_source": "nvml_power_instant"}) for g in s.gpus),
            None,
        )
        for s in samples
    ]
    assert measure("w", instant, instant[0], instant[-1], {}).power_source == "nvml_power_instant"


class FakeNvml:
    """NVML as the driver answers it (the CPU test machine has none): one GPU whose instantaneous
    power field is offered or not."""

    def __init__(self, instant_supported: bool):
        import pynvml

        self.pynvml = pynvml
        self.instant_supported = instant_supported

    def __getattr__(self, name):
        return getattr(self.pynvml, name)

    def nvmlDeviceGetFieldValues(self, handle, field_ids):
        value = self.pynvml.c_nvmlFieldValue_t()
        value.fieldId = field_ids[0]
        value.valueType = self.pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
        value.value.uiVal = 312_500  # mW
        value.nvmlReturn = 0 if self.instant_supported else self.pynvml.NVML_ERROR_NOT_SUPPORTED
        return [value]

    def nvmlDeviceGetPowerUsage(self, handle):
        return 250_000  # mW, the 1-s average

    def nvmlDeviceGetMemoryInfo(self, handle):
        raise self.pynvml.NVMLError(self.pynvml.NVML_ERROR_NOT_SUPPORTED)

    nvmlDeviceGetUtilizationRates = nvmlDeviceGetMemoryInfo
    nvmlDeviceGetTotalEnergyConsumption = nvmlDeviceGetMemoryInfo
    nvmlDeviceGetComputeRunningProcesses = nvmlDeviceGetMemoryInfo


@pytest.mark.parametrize(
    ("supported", "watts", "source"),
    [(True, 312.5, "nvml_power_instant"), (False, 250.0, "nvml_power_usage")],
)
def test_nvml_power_is_the_instantaneous_field_where_offered_else_the_one_second_average(
    supported, watts, source
):
    from lm_eval_perf.monitor.sources import NvmlSource

    nvml = NvmlSource()
    nvml._nvml = FakeNvml(supported)
    nvml._handles = [(0, "handle")]
    for _ in range(2):  # an unsupported field is asked once, then the average is read directly
        (reading,) = nvml.read(energy=False)
        assert (reading.power_w, reading.power_source) == (watts, source)
    assert ("power_instant" in nvml.unavailable) is not supported


def test_single_step_generations_leave_mbu_null_with_a_reason_and_out_of_the_decode_figures():
    shape = ModelShape(
        params=1000, weight_bytes=2000, n_layers=1, n_kv_heads=1, head_dim=4, kv_bytes_per_element=2
    )
    peaks = DevicePeaks("test", flops=1e12, bandwidth=1e9, source="test")
    one = gen(1.0, 2, prompt_tokens=8, generated_tokens=2, prompt_len=4, decode_steps=1, ttft_s=0.9)
    block = summarize("generate_until", [one], None, shape, peaks)
    assert block["mbu"] is None and block["decode_tokens_per_s"] is None
    assert "single step" in block["unavailable"]["mbu"]
    three = gen(2.0, 2, prompt_tokens=8, generated_tokens=6, prompt_len=4, decode_steps=3, ttft_s=1.0)
    block = summarize("generate_until", [one, three], None, shape, peaks)
    # only the 3-step batch decodes: 2 steps of (2000 B + 2 rows x the K/V of 5 and 6 positions x 16 B)
    assert block["mbu"] == pytest.approx((2 * 2000 + 2 * (5 + 6) * 16) / 1.0 / 1e9)
    assert block["decode_tokens_per_s"] == pytest.approx(2 * 2 / 1.0)


def full_shape() -> ModelShape:
    """2 layers of 2 query heads and 1 KV head of 4 dims; 3000-parameter embedding and lm_head, untied."""
    return ModelShape(
        params=10_000,
        weight_bytes=20_000,
        n_layers=2,
        n_kv_heads=1,
        head_dim=4,
        kv_bytes_per_element=2,
        n_heads=2,
        embedding_params=3000,
        lm_head_params=3000,
        lm_head_tied=False,
        compute_dtype="bfloat16",
    )


def test_generation_mfu_counts_lm_head_once_per_row_and_causal_attention():
    peaks = DevicePeaks("test", flops=1e9, bandwidth=1e9, source="test")
    batch = gen(
        1.0,
        2,
        prompt_tokens=7,
        generated_tokens=4,
        prompt_len=4,
        decode_steps=2,
        ttft_s=0.5,
        row_tokens=(4, 3),
    )
    block = summarize("generate_until", [batch], None, full_shape(), peaks)
    body = 10_000 - 3000 - 3000
    # per (query, key) pair and layer: 2 heads x 2 x (4 + 4) = 32 FLOPs, 2 layers; causal pairs 10 and 6
    flops = 2 * body * 7 + 2 * 3000 * 2 + 2 * 32 * (10 + 6)
    assert block["mfu"] == pytest.approx(flops / 0.5 / 1e9)
    assert block["estimates"] == {}


def test_loglikelihood_mfu_counts_logits_at_every_position():
    peaks = DevicePeaks("test", flops=1e9, bandwidth=None, source="test")
    batch = BatchRecord("loglikelihood", 0.25, 2, prompt_tokens=7, prompt_len=4, row_tokens=(4, 3))
    block = summarize("loglikelihood", [batch], None, full_shape(), peaks)
    flops = 2 * (10_000 - 6000) * 7 + 2 * 3000 * 7 + 2 * 32 * (10 + 6)
    assert block["mfu"] == pytest.approx(flops / 0.25 / 1e9)


def test_it_and_energy_per_token_count_kept_tokens_with_the_computed_ones_beside():
    samples = trace()
    window = measure("generate_until", samples, samples[0], samples[-1], {})  # 2000 J over 4 s
    # 2 rows x 10 steps computed; the rows kept 3 and 10 tokens
    batch = gen(2.0, 2, prompt_tokens=8, generated_tokens=13, prompt_len=4, decode_steps=10)
    block = summarize("generate_until", [batch], window, None, None)
    assert block["generated_tokens"] == 13 and block["generated_tokens_computed"] == 20
    assert block["it_tokens_per_s"] == pytest.approx(13 / 2.0)
    assert block["it_computed_tokens_per_s"] == pytest.approx(20 / 2.0)
    assert block["energy_per_token_j"] == pytest.approx(2000.0 / 13)
    assert block["energy_per_computed_token_j"] == pytest.approx(2000.0 / 20)
    assert block["energy_error_bound"] == pytest.approx(0.1 / 4.0)
    assert "kept" in block["definitions"]["generated_tokens"]


def test_overall_block_has_wall_time_and_totals_but_no_mixed_kind_latency():
    with PerformanceMonitor(gpu_source=NoGpuSource("no GPU in this test")) as monitor:
        monitor.record_request("loglikelihood", 0.5, batch_size=8, prompt_tokens=100)
        monitor.record_request("generate_until", 3.0, batch_size=2, prompt_tokens=10, generated_tokens=4)
    record = monitor.summary()
    overall = record["overall"]
    assert "al_s" not in overall and "latency_s" not in overall
    assert overall["busy_s"] == pytest.approx(3.5) and overall["samples"] == 10 and overall["batches"] == 2
    assert overall["wall_s"] == pytest.approx(overall["window"]["duration_s"])
    assert record["kinds"]["loglikelihood"]["al_s"] == 0.5
    assert record["kinds"]["generate_until"]["al_s"] == 3.0


@pytest.mark.parametrize(
    ("name", "flops", "bandwidth"),
    [
        ("NVIDIA GH200 480GB", 989.4e12, 4.0e12),
        ("NVIDIA H200 NVL", 835e12, 4.8e12),
        ("NVIDIA H200", 989.4e12, 4.8e12),
        ("NVIDIA H100 NVL", 835e12, 3.9e12),
        ("NVIDIA H100 80GB HBM3", 989.4e12, 3.35e12),
        ("NVIDIA L40S", 362e12, 0.864e12),
        ("NVIDIA L4", 121e12, 0.3e12),
        ("NVIDIA A100-SXM4-80GB", 312e12, 2.039e12),
    ],
)
def test_peaks_match_the_most_specific_device_name(name, flops, bandwidth):
    peaks = peaks_for(name)
    assert (peaks.flops, peaks.bandwidth, peaks.flops_dtype) == (flops, bandwidth, "bfloat16")


def test_peak_flops_follow_the_compute_dtype():
    assert peaks_for("NVIDIA H100 80GB HBM3", dtype="float32").flops == 66.9e12
    assert peaks_for("NVIDIA H100 80GB HBM3", dtype="tf32").flops == 494.7e12
    v100 = peaks_for("Tesla V100-SXM2-16GB", dtype="bfloat16")  # no bf16 tensor cores: no peak
    assert v100.flops is None and v100.bandwidth == 0.9e12
    assert peaks_for("Tesla V100-SXM2-16GB", dtype="float16").flops == 125e12


def test_unknown_card_gives_null_mfu_and_mbu_with_a_reason_unless_peaks_are_given():
    peaks = peaks_for("Imaginary Accelerator 9000")
    assert peaks.flops is None and peaks.bandwidth is None
    batch = gen(1.0, 1, prompt_tokens=4, generated_tokens=3, prompt_len=4, decode_steps=3, ttft_s=0.5)
    block = summarize("generate_until", [batch], None, full_shape(), peaks)
    assert block["mfu"] is None and "Imaginary Accelerator 9000" in block["unavailable"]["mfu"]
    assert block["mbu"] is None and "Imaginary Accelerator 9000" in block["unavailable"]["mbu"]
    given = peaks_for("Imaginary Accelerator 9000", flops=1e12, bandwidth=1e11, dtype="float16")
    assert (given.flops, given.flops_dtype, given.source) == (1e12, "float16", "model_args")
