"""What else ran on a job's GPUs, and which of it disturbs a timing-sensitive job.

The local pool lists the compute processes on every GPU (NVML) once per scheduling round (at most
:data:`lm_eval_perf.batch.scheduler.POLL_S` apart) and when it starts a job. Each process is told
apart by its process group: every job runs in a process group of its own, so a process whose group
is a job's belongs to that job; any other process is *foreign*. A :class:`SharingLog` per job keeps
what its GPUs held besides the job itself; its :meth:`~SharingLog.record` is the ``gpu_sharing``
field of the job's record (``job.json``, ``jobs.json``):

    {"gpus": [0], "polls": 41, "packed_with": ["m/bfloat16/esd"],
     "other_processes": [{"gpu": 0, "pid": 4711, "name": "python", "job": null, "memory_gb_max": 1.2}],
     "unavailable": null}

``packed_with`` names the pool's jobs that shared a GPU with it (from the pool's own bookkeeping);
``other_processes`` every other process NVML listed, with the job it belongs to (null: foreign) and
the most memory NVML gave it (null where NVML does not say, as in many containers). A process that
started and ended between two polls is not seen.

Where NVML's pids belong to another pid namespace (a container without the host's pids), a process
cannot be looked up: its ``name`` is null and it cannot be attributed. Then, on each GPU of a running
job that shows none of the job's own processes, one such process (the largest) is taken to be the
job's own; the others count as foreign.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from lm_eval_perf.batch.gpus import GpuProcess


@dataclass(frozen=True)
class Neighbour:
    """A process NVML listed on one GPU, identified as far as this pid namespace allows."""

    gpu: int
    pid: int
    used_bytes: int | None
    job: str | None  # key of the pool's job whose process group it is in; None: foreign or unknown
    name: str | None  # its command name; None: not visible from here

    def describe(self) -> str:
        memory = "" if self.used_bytes is None else f", {self.used_bytes / 1e9:.2f} GB"
        return f"pid {self.pid} ({self.name or 'not visible here'}{memory}) on GPU {self.gpu}"


def identify(gpu: int, process: GpuProcess, groups: Mapping[int, str]) -> Neighbour:
    """Who ``process`` is; ``groups`` maps a job's process-group id to its key."""
    try:
        group = os.getpgid(process.pid)
        name = Path(f"/proc/{process.pid}/comm").read_text().strip()
    except OSError:  # gone, or not in this pid namespace
        return Neighbour(gpu, process.pid, process.used_bytes, None, None)
    return Neighbour(gpu, process.pid, process.used_bytes, groups.get(group), name)


def foreign(neighbours: Iterable[Neighbour], key: str, started: bool) -> list[Neighbour]:
    """The processes on job ``key``'s GPUs that are not its own (``started``: its process runs)."""
    listed = list(neighbours)
    out = []
    for gpu in sorted({n.gpu for n in listed}):
        on_gpu = [n for n in listed if n.gpu == gpu]
        others = [n for n in on_gpu if n.job != key]
        hidden = [n for n in others if n.name is None]
        if started and hidden and len(others) == len(on_gpu):  # none of the job's own is visible
            others.remove(max(hidden, key=lambda n: n.used_bytes or 0))
        out += others
    return out


class SharingLog:
    """What a job's GPUs held besides the job, over its run."""

    def __init__(self, key: str, gpus: list[int]) -> None:
        self.key = key
        self.gpus = gpus
        self.polls = 0
        self.unreadable = 0
        self.packed_with: set[str] = set()
        self._others: dict[tuple[int, int], Neighbour] = {}

    def observe(self, neighbours: Iterable[Neighbour], readable: bool, packed_with: Iterable[str]) -> None:
        """One poll: the processes on the job's GPUs (``readable`` False: NVML could not list them)."""
        self.polls += 1
        self.unreadable += not readable
        self.packed_with.update(packed_with)
        for n in neighbours:
            if n.job == self.key:
                continue
            seen = self._others.get((n.gpu, n.pid))
            if seen is not None:  # the most memory seen, and whatever either poll could identify
                sizes = [b for b in (seen.used_bytes, n.used_bytes) if b is not None]
                most = max(sizes) if sizes else None
                n = replace(n, used_bytes=most, job=seen.job or n.job, name=seen.name or n.name)
            self._others[(n.gpu, n.pid)] = n

    def record(self) -> dict:
        others = [self._others[k] for k in sorted(self._others)]
        return {
            "gpus": self.gpus,
            "polls": self.polls,
            "packed_with": sorted(self.packed_with),
            "other_processes": [
                {
                    "gpu": n.gpu,
                    "pid": n.pid,
                    "name": n.name,
                    "job": n.job,
                    "memory_gb_max": None if n.used_bytes is None else n.used_bytes / 1e9,
                }
                for n in others
            ],
            "unavailable": None
            if not self.unreadable
            else f"NVML could not list the GPU's processes in {self.unreadable} of {self.polls} polls",
        }
