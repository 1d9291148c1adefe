"""The efficiency record, built from what one or several processes measured.

Each process's :class:`~lm_eval_perf.monitor.PerformanceMonitor` hands over a :class:`MonitorState`
(plain, picklable data: its timed batches, its windows' measurements, allocator peaks, provenance).
:func:`build_record` turns one state into the record of a single-process run, or the states of all
data-parallel ranks into the record of the whole run: batches of every rank enter one latency
distribution and one sum of requests and tokens; windows of the same name are combined across ranks
(:func:`~lm_eval_perf.monitor.window.combine_parallel`: energy and power summed over all GPUs, wall
time the longest rank's); ``ranks`` keeps each rank's own share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lm_eval_perf.monitor.metrics import ModelShape
from lm_eval_perf.monitor.peaks import DevicePeaks
from lm_eval_perf.monitor.requests import BatchRecord, overall, summarize
from lm_eval_perf.monitor.window import Measurement, combine_parallel
from lm_eval_perf.records.efficiency import SCHEMA, EfficiencyRecord, Provenance, Rank

TOTAL = "total"


@dataclass
class MonitorState:
    """What one process measured: batches by request kind, one merged measurement per window name
    (``"total"`` = the monitor's whole life), allocator peaks (GiB, summed over its GPUs; ``None``
    without CUDA), the blocks left out of its windows (``{"what", "seconds"}``), the reasons for
    missing figures, and its provenance block."""

    batches: dict[str, list[BatchRecord]]
    windows: dict[str, Measurement]
    torch_memory: dict[str, float] | None
    excluded: list[dict]
    unavailable: dict[str, str]
    provenance: dict
    extra: dict = field(default_factory=dict)  # caller's per-process facts, copied into ``ranks``

    @property
    def host(self) -> str:
        return str(self.provenance.get("host", {}).get("hostname"))


def _kind_order(states: list[MonitorState]) -> list[str]:
    kinds: list[str] = []
    for state in states:
        kinds += [k for k in state.batches if k not in kinds]
    return kinds


def _window(states: list[MonitorState], name: str) -> Measurement | None:
    found = [(s.windows[name], s.host) for s in states if name in s.windows]
    if not found:
        return None
    return combine_parallel(name, [m for m, _ in found], [h for _, h in found])


def _torch_memory(states: list[MonitorState]) -> dict[str, float] | None:
    peaks = [s.torch_memory for s in states]
    if any(p is None for p in peaks):
        return None
    total = {key: sum(p[key] for p in peaks) for key in peaks[0]}  # type: ignore[index]
    if len(peaks) > 1:
        total["allocated_peak_gib_max_rank"] = max(p["allocated_peak_gib"] for p in peaks)  # type: ignore[index]
    return total


def _provenance(states: list[MonitorState]) -> Provenance:
    if len(states) == 1:
        return states[0].provenance
    first = dict(states[0].provenance)
    first["gpus"] = [
        {**gpu, "rank": rank} for rank, state in enumerate(states) for gpu in state.provenance["gpus"]
    ]
    first["started_utc"] = min(s.provenance["started_utc"] for s in states)
    first["ended_utc"] = max(s.provenance["ended_utc"] for s in states)
    first["hosts"] = sorted({s.host for s in states})
    return first


def _rank_block(rank: int, state: MonitorState) -> Rank:
    batches = [b for kind in state.batches.values() for b in kind if not b.warmup]
    total = state.windows.get(TOTAL)
    return {
        "rank": rank,
        "host": state.host,
        "gpus": [g.get("uuid") or g.get("index") for g in state.provenance["gpus"]],
        "batches": len(batches),
        "samples": sum(b.batch_size for b in batches),
        "prompt_tokens": sum(b.prompt_tokens for b in batches),
        "generated_tokens": sum(b.generated_tokens for b in batches),
        "seconds": None if total is None else total.duration_s,
        "energy_j": None if total is None else total.energy_j,
        "memory_peak_gib": None if total is None else total.memory_used_peak_gib,
        "host_rss_peak_gib": None if total is None else total.host_rss_peak_gib,
        "torch_memory": state.torch_memory,
        **state.extra,
    }


def build_record(
    states: list[MonitorState], shape: ModelShape | None, peaks: DevicePeaks | None
) -> EfficiencyRecord:
    """The efficiency record of a run made of ``states`` (one per process, rank order)."""
    if not states:
        raise ValueError("build_record needs the state of at least one process")
    kinds = {
        kind: summarize(
            kind,
            [b for s in states for b in s.batches.get(kind, [])],
            _window(states, kind),
            shape,
            peaks,
        )
        for kind in _kind_order(states)
    }
    unavailable: dict[str, str] = {}
    for state in states:
        unavailable.update(state.unavailable)
    torch_memory = _torch_memory(states)
    if torch_memory is None:
        unavailable.setdefault("torch_peak_memory", "no CUDA device watched by torch in this run")
    batches = [b for s in states for kind in s.batches.values() for b in kind]
    overall_block = overall(batches, _window(states, TOTAL), torch_memory)
    overall_block["excluded"] = [
        {**block, "rank": rank} if len(states) > 1 else block
        for rank, state in enumerate(states)
        for block in state.excluded
    ]
    return {
        "schema": SCHEMA,
        "world_size": len(states),
        "overall": overall_block,
        "kinds": kinds,
        "model": None if shape is None else shape.to_dict(),
        "peaks": None if peaks is None else peaks.to_dict(),
        "provenance": _provenance(states),
        "unavailable": unavailable,
        "ranks": [_rank_block(rank, state) for rank, state in enumerate(states)],
    }
