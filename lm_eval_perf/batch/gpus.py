"""Which GPUs this machine has and which of them other processes are using (NVML).

A GPU counts as busy when more than ``free_mib`` MiB of its memory are in use (NVML's ``used``
figure, which sees every process - also those of other containers, whose pids NVML cannot map).
The local pool asks :meth:`GpuProbe.busy` only about GPUs none of its own jobs holds, and
:meth:`GpuProbe.processes` (the compute processes on each GPU, with their memory) on every round, to
record what else ran on a job's GPUs and to keep timing-sensitive jobs isolated.

Indices are NVML's (PCI bus order); jobs get ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that CUDA counts
the same way. If ``batch_eval.py`` itself runs with ``CUDA_VISIBLE_DEVICES`` set (indices or
``GPU-...`` UUIDs), only those GPUs are used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from lm_eval_perf.errors import UserInputError

DEFAULT_FREE_MIB = 1024


@dataclass(frozen=True)
class GpuProcess:
    """A compute process NVML lists on a GPU; ``used_bytes`` None where NVML cannot tell (containers)."""

    pid: int  # as NVML reports it: the host's pid, which a container may not see
    used_bytes: int | None


class GpuProbe(Protocol):
    """The GPU pool's view of the machine; tests pass a fake one."""

    def indices(self) -> list[int]:
        """The GPUs jobs may use."""
        ...

    def busy(self) -> set[int]:
        """The GPUs (of :meth:`indices`) that other processes hold memory on now."""
        ...

    def memory_total_bytes(self) -> dict[int, int | None]:
        """Each GPU's memory in bytes (None: unknown)."""
        ...

    def processes(self) -> dict[int, list[GpuProcess] | None]:
        """The compute processes on each GPU now (None: NVML could not list them)."""
        ...


class NvmlProbe:
    """:class:`GpuProbe` over NVML."""

    def __init__(self, pynvml, handles: dict[int, object], free_mib: float) -> None:
        self._nvml = pynvml
        self._handles = handles
        self.free_mib = free_mib

    def indices(self) -> list[int]:
        return sorted(self._handles)

    def busy(self) -> set[int]:
        limit = self.free_mib * 2**20
        busy = set()
        for index, handle in self._handles.items():
            try:
                if self._nvml.nvmlDeviceGetMemoryInfo(handle).used > limit:
                    busy.add(index)
            except self._nvml.NVMLError:
                busy.add(index)  # a GPU NVML cannot read is not handed out
        return busy

    def memory_total_bytes(self) -> dict[int, int | None]:
        totals: dict[int, int | None] = {}
        for index, handle in self._handles.items():
            try:
                totals[index] = int(self._nvml.nvmlDeviceGetMemoryInfo(handle).total)
            except self._nvml.NVMLError:
                totals[index] = None
        return totals

    def processes(self) -> dict[int, list[GpuProcess] | None]:
        found: dict[int, list[GpuProcess] | None] = {}
        for index, handle in self._handles.items():
            try:
                listed = self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except self._nvml.NVMLError:
                found[index] = None
                continue
            found[index] = [
                GpuProcess(int(p.pid), int(p.usedGpuMemory) if p.usedGpuMemory else None) for p in listed
            ]
        return found


def _visible(pynvml, count: int) -> list[int]:
    """The NVML indices named by this process's ``CUDA_VISIBLE_DEVICES`` (all when it is unset)."""
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return list(range(count))
    uuids = {str(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))): i for i in range(count)}
    chosen = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item.lstrip("-").isdigit():
            if int(item) < 0:
                break  # CUDA stops at the first invalid entry
            if int(item) >= count:
                raise UserInputError(f"CUDA_VISIBLE_DEVICES={spec}: this machine has {count} GPUs")
            chosen.append(int(item))
        else:
            matches = [i for u, i in uuids.items() if u.startswith(item)]
            if len(matches) != 1:
                raise UserInputError(f"CUDA_VISIBLE_DEVICES={spec}: {item} names no single GPU")
            chosen.append(matches[0])
    return chosen


def detect(free_mib: float = DEFAULT_FREE_MIB) -> NvmlProbe | None:
    """The NVML probe of this machine, or None when it has no usable GPU (NVML missing, no devices)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError:  # no driver or no NVML library: a CPU machine
        return None
    indices = _visible(pynvml, count)
    if not indices:
        return None
    return NvmlProbe(pynvml, {i: pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices}, free_mib)
