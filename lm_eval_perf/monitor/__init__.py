"""Performance monitor: samplers (NVML, psutil, RAPL) -> windows -> metrics. No lm-eval import here."""

from lm_eval_perf.monitor.clock import Clock, CudaClock
from lm_eval_perf.monitor.metrics import ModelShape, model_compression_rate
from lm_eval_perf.monitor.monitor import PerformanceMonitor
from lm_eval_perf.monitor.peaks import DevicePeaks, peaks_for
from lm_eval_perf.monitor.requests import BatchRecord
from lm_eval_perf.monitor.sources import GpuInfo, GpuReading, HostReading, Sample
from lm_eval_perf.monitor.window import Measurement
from lm_eval_perf.records.stats import Stats

__all__ = [
    "BatchRecord",
    "Clock",
    "CudaClock",
    "DevicePeaks",
    "GpuInfo",
    "GpuReading",
    "HostReading",
    "Measurement",
    "ModelShape",
    "PerformanceMonitor",
    "Sample",
    "Stats",
    "model_compression_rate",
    "peaks_for",
]
