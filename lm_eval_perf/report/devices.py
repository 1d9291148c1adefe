"""The CPU and the GPU side by side: one model, precision and ratio measured on two (or more) devices.

Where the study tells rows apart by device (:mod:`.identity`), the rows of one model, precision and
ratio form a *group*; a group with a CPU row and at least one other device's row is compared, each
other device against the CPU. Two tables (:class:`~lm_eval_perf.report.tables.Table`, one row per
figure of a group, the ``item`` column naming it):

* ``devices_forward`` - the forward sweep (``perf_forward``): samples/s of every (sequence length,
  batch size) point measured on either device, the CPU's, each other device's and its speed-up
  (device samples/s ÷ CPU samples/s, > 1: faster than the CPU). A point that ran out of memory or
  was skipped after one shows its status, and no speed-up;
* ``devices_evaluation`` - the evaluation's efficiency figures of the group's rows
  (:data:`COMPARED`; :mod:`.efficiency`): each device's value and its gain over the CPU - CPU ÷
  device for a cost (latency, energy), device ÷ CPU for a rate (tokens/s) - so > 1 always means the
  device does better. Peak memory has no gain: a GPU's allocator peak and the host's RSS are
  different memories. A figure no device of the group has is left out.

No group (a single device, or no CPU row), no table: :func:`device_tables` gives none.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from lm_eval_perf.monitor.metrics import ratio
from lm_eval_perf.records.console import fmt
from lm_eval_perf.report.efficiency import METRICS, RowEfficiency
from lm_eval_perf.report.identity import CPU, RowKey, device_order
from lm_eval_perf.report.study import Study
from lm_eval_perf.report.sweeps import SweepPoint
from lm_eval_perf.report.tables import Header, Table, TableCell, TableRow, table_row

# efficiency figures compared, and whether a gain over the CPU is defined for them
COMPARED = (
    ("al_s", True),
    ("it_tokens_per_s", True),
    ("decode_tokens_per_s", True),
    ("energy_per_token_j", True),
    ("peak_memory_gib", False),
)
STATUS_TEXT = {"oom": "OOM", "skipped_after_oom": "skipped"}

Group = dict[str, RowKey]  # device -> the group's row on it


def groups(study: Study) -> dict[RowKey, Group]:
    """The comparable groups: (model, precision, ratio) without device -> its rows by device, only
    groups with a CPU row and another device's row."""
    found: dict[RowKey, Group] = defaultdict(dict)
    for row in study.rows:
        if row.device is not None:
            found[replace(row, device=None)][row.device] = row
    return {key: rows for key, rows in found.items() if CPU in rows and len(rows) > 1}


def accelerators(found: dict[RowKey, Group]) -> list[str]:
    """The devices compared with the CPU, in :func:`device_order`."""
    return sorted({d for rows in found.values() for d in rows if d != CPU}, key=device_order)


def _headers(devices: list[str], unit: str) -> list[Header]:
    headers = [Header(CPU, unit)]
    for device in devices:
        headers += [Header(device, unit), Header(f"{device}/{CPU}", "x, > 1: faster")]
    return headers


def _forward_cells(points: dict[str, SweepPoint], devices: list[str]) -> list[TableCell]:
    """One point's cells: samples/s on the CPU, then on each device and its speed-up."""

    def shown(point: SweepPoint | None) -> TableCell:
        if point is None:
            return TableCell(None, "--")
        value = point.value("samples_per_s")
        return TableCell(value, STATUS_TEXT.get(point.status, fmt(value)))

    cpu = points.get(CPU)
    cells = [shown(cpu)]
    for device in devices:
        mine, gain = points.get(device), None
        if cpu is not None and mine is not None and cpu.status == mine.status == "ok":
            gain = ratio(mine.value("samples_per_s"), cpu.value("samples_per_s"))
        cells += [shown(mine), TableCell(gain, fmt(gain))]
    return cells


def forward_table(found: dict[RowKey, Group], forward: dict[RowKey, list[SweepPoint]]) -> Table | None:
    """The forward sweep's samples/s per device and point (see the module docstring)."""
    devices = accelerators(found)
    rows: list[TableRow] = []
    for key, group in sorted(found.items(), key=lambda item: item[0].sort_key()):
        by_point: dict[tuple[int, int], dict[str, SweepPoint]] = defaultdict(dict)
        for device, row in group.items():
            for point in forward.get(row, []):
                by_point[(point.length, point.batch_size)][device] = point
        for (length, batch), points in sorted(by_point.items()):
            first = not rows or rows[-1].model != key.model
            item = f"seq {length}, batch {batch}"
            rows.append(table_row(key, _forward_cells(points, devices), first, item))
    if not rows:
        return None
    return Table(
        "devices_forward",
        "Forward sweep (perf_forward) per device: samples/s at each sequence length and batch size, "
        f"and each device's speed-up over the CPU ({', '.join(f'{d}/{CPU}' for d in devices)}: samples/s "
        "on the device / on the CPU; > 1: faster). OOM: out of memory; skipped: a larger batch after "
        "one; -- not measured.",
        _headers(devices, "samples/s"),
        rows,
        with_ratio=any(k.compressed for k in found),
        item_header="point",
    )


def _evaluation_cell(row: RowEfficiency, name: str) -> TableCell:
    """One device's value of efficiency figure ``name`` (a peak memory with its source)."""
    value = row.values.get(name)
    basis = f" ({row.peak_memory_source})" if name == "peak_memory_gib" and value is not None else ""
    return TableCell(value, fmt(value) + basis)


def evaluation_table(found: dict[RowKey, Group], efficiency: dict[RowKey, RowEfficiency]) -> Table | None:
    """The evaluation's efficiency figures per device (see the module docstring)."""
    devices = accelerators(found)
    metrics = {m.key: m for m in METRICS}
    rows: list[TableRow] = []
    for key, group in sorted(found.items(), key=lambda item: item[0].sort_key()):
        for name, has_gain in COMPARED:
            metric = metrics[name]
            values = {d: efficiency[row].values.get(name) for d, row in group.items()}
            if all(v is None for v in values.values()):
                continue
            shown = {d: _evaluation_cell(efficiency[row], name) for d, row in group.items()}
            cells = [shown.get(CPU, TableCell(None, "--"))]
            for device in devices:
                cpu, mine = values.get(CPU), values.get(device)
                gain = None
                if has_gain:
                    gain = ratio(mine, cpu) if metric.higher_is_better else ratio(cpu, mine)
                cells += [shown.get(device, TableCell(None, "--")), TableCell(gain, fmt(gain))]
            first = not rows or rows[-1].model != key.model
            rows.append(table_row(key, cells, first, f"{metric.label} ({metric.unit})"))
    if not rows:
        return None
    headers = _headers(devices, "")
    for header in headers[2::2]:
        header.unit = "x, > 1: better"
    return Table(
        "devices_evaluation",
        "The evaluation per device: AL average latency per batch, IT generated tokens/s, Decode the best "
        "decode rate of the throughput sweep, energy per token, peak memory of the device (alloc: CUDA "
        "allocator, NVML: GPU memory, RSS: host memory of a CPU run); gain over the CPU: CPU/device "
        "for latency and energy, device/CPU for tokens/s (> 1: the device does better); none for peak "
        "memory (different memories).",
        headers,
        rows,
        with_ratio=any(k.compressed for k in found),
        item_header="figure",
    )


def device_tables(
    study: Study, efficiency: dict[RowKey, RowEfficiency], forward: dict[RowKey, list[SweepPoint]]
) -> list[Table]:
    """The side-by-side tables of a study (none where no group has a CPU and another device)."""
    found = groups(study)
    if not found:
        return []
    tables = (forward_table(found, forward), evaluation_table(found, efficiency))
    return [t for t in tables if t is not None]
