"""Where samples come from: NVML for GPUs, psutil and RAPL for the host.

A source is opened once (device discovery happens there, not in a constructor), read many times by
the sampler thread (background samples and window edges), and closed. Every reading is a plain
frozen dataclass. A quantity a device cannot report is ``None``; the source says why in
``unavailable`` (metric name -> reason), so that no missing value is ever mistaken for a zero.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

MIB = 1024**2


@dataclass(frozen=True)
class GpuInfo:
    """Static facts of one GPU, for provenance and peak look-up."""

    index: int  # the framework's index (after CUDA_VISIBLE_DEVICES)
    name: str
    uuid: str | None = None
    pci_bus_id: str | None = None
    memory_total_bytes: int | None = None
    power_limit_w: float | None = None
    max_sm_clock_mhz: int | None = None
    max_memory_clock_mhz: int | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None


POWER_INSTANT = "nvml_power_instant"  # NVML_FI_DEV_POWER_INSTANT: the power at the moment of the read
POWER_AVERAGE = "nvml_power_usage"  # nvmlDeviceGetPowerUsage: a 1-s average on Ampere and newer


@dataclass(frozen=True)
class GpuReading:
    """One poll of one GPU. Units: bytes, percent (0..100), watts, joules.

    ``power_source`` says which NVML reading ``power_w`` is (:data:`POWER_INSTANT` or
    :data:`POWER_AVERAGE`); ``None`` for sources that do not say.
    """

    index: int
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    utilization_pct: float | None  # NVML utilization.gpu: share of time a kernel was running
    power_w: float | None
    energy_j: float | None  # NVML total-energy counter since driver load (Volta and newer)
    process_memory_bytes: int | None  # this process's VRAM as NVML reports it; None in many containers
    power_source: str | None = None


@dataclass(frozen=True)
class HostReading:
    """One poll of the host. ``cpu_pct`` is this process's CPU time share in percent of one core."""

    rss_bytes: int | None
    cpu_pct: float | None
    rapl_energy_j: float | None  # sum of package domains, wrap-around corrected; None if unreadable


@dataclass(frozen=True)
class Sample:
    """All readings of one poll, stamped with ``time.perf_counter()`` seconds."""

    t_s: float
    gpus: tuple[GpuReading, ...]
    host: HostReading | None


class GpuSource(Protocol):
    """What the sampler needs of a GPU source (NVML in production, a fake in tests)."""

    unavailable: dict[str, str]

    def open(self) -> list[GpuInfo]: ...

    def read(self, energy: bool = True) -> tuple[GpuReading, ...]:
        """One reading per GPU; ``energy=False`` may leave ``energy_j`` out (``None``)."""
        ...

    def close(self) -> None: ...


@dataclass
class NoGpuSource:
    """The source used when there is no GPU to watch: every GPU metric is null with ``reason``."""

    reason: str
    unavailable: dict[str, str] = field(default_factory=dict)

    def open(self) -> list[GpuInfo]:
        self.unavailable = {"gpu": self.reason}
        return []

    def read(self, energy: bool = True) -> tuple[GpuReading, ...]:
        return ()

    def close(self) -> None:
        pass


def _torch_cuda_devices() -> list[tuple[int, str | None]]:
    """(torch index, NVML-style UUID) of each CUDA device torch sees, or [] without torch/CUDA."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        devices.append((index, f"GPU-{uuid}" if uuid is not None else None))
    return devices


@functools.cache
def _nvml():
    """``pynvml``, initialized once per process, or the one-line reason NVML is unavailable (a str).

    NVML stays initialized until the process exits: an evaluation that opened and shut it down again
    paid the library's start-up (device enumeration) every time, a fixed per-evaluation cost.
    """
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # ImportError or any NVMLError: no NVML here
        return f"NVML unavailable: {type(exc).__name__}: {exc}".strip()
    return pynvml


def _try(pynvml, fn, *args):
    """``fn(*args)``, or ``None`` where NVML reports an error (a quantity this GPU does not have)."""
    try:
        return fn(*args)
    except pynvml.NVMLError:
        return None


_DESCRIPTIONS: dict[tuple[int, str | None], GpuInfo] = {}


def _describe(pynvml, index: int, uuid: str | None, handle) -> GpuInfo:
    """The static facts of one GPU, read once per process (about 2.2 ms of NVML calls on an H100)."""
    key = (index, uuid)
    if key not in _DESCRIPTIONS:
        memory = _try(pynvml, pynvml.nvmlDeviceGetMemoryInfo, handle)
        limit = _try(pynvml, pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        cuda = _try(pynvml, pynvml.nvmlSystemGetCudaDriverVersion)
        clock = functools.partial(_try, pynvml, pynvml.nvmlDeviceGetMaxClockInfo, handle)
        _DESCRIPTIONS[key] = GpuInfo(
            index=index,
            name=str(_try(pynvml, pynvml.nvmlDeviceGetName, handle)),
            uuid=_try(pynvml, pynvml.nvmlDeviceGetUUID, handle),
            pci_bus_id=getattr(_try(pynvml, pynvml.nvmlDeviceGetPciInfo, handle), "busId", None),
            memory_total_bytes=None if memory is None else int(memory.total),
            power_limit_w=None if limit is None else limit / 1000.0,
            max_sm_clock_mhz=clock(pynvml.NVML_CLOCK_SM),
            max_memory_clock_mhz=clock(pynvml.NVML_CLOCK_MEM),
            driver_version=_try(pynvml, pynvml.nvmlSystemGetDriverVersion),
            cuda_driver_version=None if cuda is None else f"{cuda // 1000}.{(cuda % 1000) // 10}",
        )
    return _DESCRIPTIONS[key]


class NvmlSource:
    """Polls GPUs through NVML (``nvidia-ml-py``).

    ``devices`` are torch CUDA indices; ``None`` means every CUDA device this process can see.
    Indices are mapped to NVML handles by UUID, so ``CUDA_VISIBLE_DEVICES`` and a
    ``CUDA_DEVICE_ORDER`` that differs from NVML's PCI order are both handled. NVML itself is
    initialized once per process (:func:`_nvml`); :meth:`close` only drops this source's handles.

    The total-energy counter is by far the costliest read: about 3.4 ms of CPU per call on an H100
    (driver 580), against 2-35 µs for each of the others (``bench`` figures in BENCHMARKS.md). Energy
    is a difference of two counter readings, so :meth:`read` takes it only when asked (the window
    edges); the background samples leave it out.

    Power is NVML's instantaneous reading (field ``NVML_FI_DEV_POWER_INSTANT`` through
    ``nvmlDeviceGetFieldValues``) where the driver offers it: ``nvmlDeviceGetPowerUsage`` is a
    one-second average on Ampere and newer, so its integral lags a window's edges. Where the field is
    not supported the average is read instead, and each reading's ``power_source`` says which.
    """

    def __init__(self, devices: Sequence[int] | None = None):
        self.devices = None if devices is None else tuple(devices)
        self.unavailable: dict[str, str] = {}
        self._handles: list[tuple[int, object]] = []
        self._nvml = None
        self._energy_ok: dict[int, bool] = {}
        self._instant_ok: dict[int, bool] = {}
        self._process_memory_ok = True

    def open(self) -> list[GpuInfo]:
        pynvml = _nvml()
        if isinstance(pynvml, str):
            self.unavailable["gpu"] = pynvml
            return []
        self._nvml = pynvml
        torch_devices = _torch_cuda_devices()
        if self.devices is not None:
            wanted = set(self.devices)
            torch_devices = [(i, u) for i, u in torch_devices if i in wanted]
        if not torch_devices:
            self.unavailable["gpu"] = "no CUDA device is visible to this process"
            return []
        infos = []
        for index, uuid in torch_devices:
            try:
                handle = (
                    pynvml.nvmlDeviceGetHandleByUUID(uuid)
                    if uuid is not None
                    else pynvml.nvmlDeviceGetHandleByIndex(index)
                )
            except pynvml.NVMLError as exc:
                self.unavailable[f"gpu{index}"] = f"NVML has no handle for cuda:{index}: {exc}"
                continue
            self._handles.append((index, handle))
            infos.append(_describe(pynvml, index, uuid, handle))
        if not self._handles:
            self.unavailable["gpu"] = "NVML could not open any of the process's CUDA devices"
        return infos

    def _call(self, fn, *args):
        return _try(self._nvml, fn, *args)

    def _process_memory(self, handle) -> int | None:
        if not self._process_memory_ok:
            return None
        processes = self._call(self._nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
        pid = os.getpid()
        for proc in processes:
            if proc.pid == pid and proc.usedGpuMemory:
                return int(proc.usedGpuMemory)
        self._process_memory_ok = False
        self.unavailable["process_memory"] = (
            "NVML lists no memory for this process (usual in containers): device memory is reported"
        )
        return None

    def _power_instant_mw(self, index: int, handle) -> float | None:
        """The instantaneous power field in mW, or ``None`` (then never asked again for this GPU)."""
        if not self._instant_ok.get(index, True):
            return None
        n = self._nvml
        values = self._call(n.nvmlDeviceGetFieldValues, handle, [n.NVML_FI_DEV_POWER_INSTANT])
        field = None if not values else values[0]
        if field is None or field.nvmlReturn != n.NVML_SUCCESS:
            self._instant_ok[index] = False
            self.unavailable["power_instant"] = (
                "NVML_FI_DEV_POWER_INSTANT not offered by this driver/GPU: power is "
                "nvmlDeviceGetPowerUsage (a 1-s average on Ampere and newer)"
            )
            return None
        kind = {
            n.NVML_VALUE_TYPE_DOUBLE: "dVal",
            n.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
            n.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
            n.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
            n.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
        }.get(field.valueType, "uiVal")
        return float(getattr(field.value, kind))

    def _power(self, index: int, handle) -> tuple[float | None, str]:
        """(watts, which reading): instantaneous where offered, else the 1-s average."""
        instant = self._power_instant_mw(index, handle)
        if instant is not None:
            return instant / 1000.0, POWER_INSTANT
        average = self._call(self._nvml.nvmlDeviceGetPowerUsage, handle)
        return (None if average is None else average / 1000.0), POWER_AVERAGE

    def read(self, energy: bool = True) -> tuple[GpuReading, ...]:
        n = self._nvml
        readings = []
        for index, handle in self._handles:
            memory = self._call(n.nvmlDeviceGetMemoryInfo, handle)
            util = self._call(n.nvmlDeviceGetUtilizationRates, handle)
            power_w, power_source = self._power(index, handle)
            energy_mj = None
            if energy and self._energy_ok.get(index, True):
                energy_mj = self._call(n.nvmlDeviceGetTotalEnergyConsumption, handle)
                if energy_mj is None:
                    self._energy_ok[index] = False
                    self.unavailable["energy_counter"] = (
                        "NVML total-energy counter not supported (pre-Volta GPU): energy integrates power"
                    )
            readings.append(
                GpuReading(
                    index=index,
                    memory_used_bytes=None if memory is None else int(memory.used),
                    memory_total_bytes=None if memory is None else int(memory.total),
                    utilization_pct=None if util is None else float(util.gpu),
                    power_w=power_w,
                    energy_j=None if energy_mj is None else energy_mj / 1000.0,
                    process_memory_bytes=self._process_memory(handle),
                    power_source=power_source,
                )
            )
        return tuple(readings)

    def close(self) -> None:
        self._nvml = None
        self._handles = []


RAPL_ROOT = Path("/sys/class/powercap")


class HostSource:
    """This process's RSS and CPU share (psutil) and the package energy counters (RAPL)."""

    def __init__(self, rapl_root: Path = RAPL_ROOT):
        self.rapl_root = rapl_root
        self.unavailable: dict[str, str] = {}
        self._process = None
        self._rapl: list[tuple[Path, float]] = []  # (energy_uj file, wrap range in J)
        self._rapl_last: list[float] = []
        self._rapl_total_j = 0.0

    def open(self) -> None:
        try:
            import psutil

            self._process = psutil.Process()
            self._process.cpu_percent(None)  # the first call only starts psutil's interval
        except Exception as exc:
            self.unavailable["host"] = f"psutil unavailable: {exc}"
        domains = sorted(self.rapl_root.glob("intel-rapl:*")) if self.rapl_root.exists() else []
        for domain in domains:
            if domain.name.count(":") != 1:  # sub-domains (core, uncore, dram) are inside packages
                continue
            try:
                wrap_j = int((domain / "max_energy_range_uj").read_text()) / 1e6
                first = int((domain / "energy_uj").read_text()) / 1e6
            except (OSError, ValueError):
                continue
            self._rapl.append((domain / "energy_uj", wrap_j))
            self._rapl_last.append(first)
        if not self._rapl:
            self.unavailable["rapl_energy"] = f"no readable RAPL package counter under {self.rapl_root}"

    def _read_rapl(self) -> float | None:
        if not self._rapl:
            return None
        for i, (path, wrap_j) in enumerate(self._rapl):
            try:
                value = int(path.read_text()) / 1e6
            except (OSError, ValueError):
                return None
            delta = value - self._rapl_last[i]
            self._rapl_total_j += delta if delta >= 0 else delta + wrap_j
            self._rapl_last[i] = value
        return self._rapl_total_j

    def read(self) -> HostReading:
        rss = cpu = None
        if self._process is not None:
            try:
                rss = int(self._process.memory_info().rss)
                cpu = float(self._process.cpu_percent(None))
            except Exception:
                pass
        return HostReading(rss_bytes=rss, cpu_pct=cpu, rapl_energy_j=self._read_rapl())

    def close(self) -> None:
        self._process = None
