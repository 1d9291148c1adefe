"""Per-row efficiency, MCR and the comparison of every row with its baseline.

Per row, over the runs that give its cells (:meth:`Study.runs_of`), from each run's
``config.efficiency`` record (:mod:`lm_eval_perf.records.efficiency`, majors 1 and 2). Only the
request kinds that carried evaluation requests are used (the kinds named in the record's per-task block): the
throughput sweep and the ESD analysis measure themselves.

* AMU, PCU (fractions 0..1), AEC (W): means of the kinds' windows, weighted by window duration.
* AL (s): Σ batch latency / number of measured batches, over all those kinds.
* IT (tokens/s): Σ generated tokens / Σ seconds of the generation kinds (``generate_until``).
* Decode (tokens/s): the best decode rate of the row's throughput sweep (``best_decode_tokens_per_s``).
* Energy (J/token): Σ energy / Σ tokens of the kinds (generated tokens for generation, prompt
  tokens otherwise - each kind's ``energy_per_token_basis``).
* Peak memory (GiB) of the device the model ran on, with its source (:data:`PEAK_SOURCES`): on a
  GPU the CUDA allocator's peak, else NVML's device-memory peak; on the CPU the host RSS peak. The
  largest over the row's runs, of the first source every run with a record has.
* Weights (GiB): weight bytes as held in memory (:func:`lm_eval_perf.report.mcr.weight_bytes_of`).
* MCR per cell = (size_base / size) · (perf / perf_base) against the same model's baseline row
  (``--baseline-precision``, ratio 1.0, on the same device) and the column's primary metric; for a
  metric where lower is better (perplexity) the performance term is perf_base / perf. The row's MCR
  is the mean over its accuracy columns where MCR is defined. Undefined cases are ``None`` (``--``), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lm_eval_perf.monitor.metrics import model_compression_rate, ratio
from lm_eval_perf.records.efficiency import EfficiencyRecord
from lm_eval_perf.report.collect import Run
from lm_eval_perf.report.identity import UNCOMPRESSED, RowKey
from lm_eval_perf.report.mcr import weight_bytes_of
from lm_eval_perf.report.study import Cell, Study
from lm_eval_perf.report.tasks import ACCURACY, THROUGHPUT, Column

GIB = 1024**3
GENERATION_KINDS = ("generate_until", "generate")
# where a run's peak memory comes from, by the device of the model: (label, record field); the label
# is shown beside the value - alloc: CUDA allocator peak, NVML: GPU device memory, RSS: host memory
PEAK_SOURCES = {
    "gpu": (("alloc", "torch_memory.allocated_peak_gib"), ("NVML", "memory_peak_gib")),
    "cpu": (("RSS", "host_rss_peak_gib"),),
}
PLUGIN_ONLY = (
    "this row's perf-hf runs ran only plugin tasks (perf_throughput, esd), which measure themselves "
    "and write no efficiency record"
)


@dataclass(frozen=True)
class Metric:
    """An efficiency figure: its name, unit and which direction is better (None: neither)."""

    key: str
    label: str
    unit: str
    higher_is_better: bool | None
    percent: bool = False  # a fraction shown as a percentage


METRICS = (
    Metric("amu", "AMU", "%", None, percent=True),
    Metric("pcu", "PCU", "%", None, percent=True),
    Metric("al_s", "AL", "s", False),
    Metric("it_tokens_per_s", "IT", "tok/s", True),
    Metric("decode_tokens_per_s", "Decode", "tok/s", True),
    Metric("aec_w", "AEC", "W", False),
    Metric("energy_per_token_j", "Energy", "J/tok", False),
    Metric("peak_memory_gib", "Peak mem", "GiB", False),
    Metric("weight_gib", "Weights", "GiB", False),
    Metric("mcr", "MCR", "", True),
)


@dataclass
class RowEfficiency:
    """The efficiency figures of one row (``values`` keyed by :data:`METRICS` keys) and why any is None;
    ``peak_memory_source``: which peak ``values["peak_memory_gib"]`` is (a :data:`PEAK_SOURCES` label)."""

    row: RowKey
    values: dict[str, float | None]
    weight_bytes: int | None
    unavailable: dict[str, str] = field(default_factory=dict)
    mcr: dict[Column, float | None] = field(default_factory=dict)  # MCR of each accuracy cell
    peak_memory_source: str | None = None
    al_by_kind: dict[str, float | None] = field(default_factory=dict)  # s per batch, by request kind


def _efficiency(run: Run) -> EfficiencyRecord:
    """The run's efficiency record (major 1 or 2, checked when it was read; see
    :mod:`lm_eval_perf.records.efficiency`), ``{}`` for a run without one."""
    return (run.data.get("config") or {}).get("efficiency") or {}  # type: ignore[return-value]


def evaluation_kinds(record: dict) -> dict[str, dict]:
    """The kinds of an efficiency record that carried evaluation requests."""
    kinds = record.get("kinds") or {}
    tasks = record.get("tasks")
    if not isinstance(tasks, dict):
        return kinds
    used = {kind for block in tasks.values() for kind in (block.get("kinds") or {})}
    return {k: v for k, v in kinds.items() if k in used}


def _weighted(pairs: list[tuple[float | None, float | None]]) -> float | None:
    """Σ value·weight / Σ weight; None if any value or weight is missing or there is none."""
    if not pairs or any(v is None or w is None for v, w in pairs):
        return None
    return ratio(sum(v * w for v, w in pairs), sum(w for _, w in pairs))  # type: ignore[operator,misc]


def _sum(values: list[float | None]) -> float | None:
    return sum(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def _field(block: dict, path: str):
    for key in path.split("."):
        block = block.get(key) if isinstance(block, dict) else None  # type: ignore[assignment]
    return block


def peak_memory(runs: list[Run]) -> tuple[float | None, str | None, str | None]:
    """(GiB, source label, None) - the peak memory of the device the row's models ran on (see the
    module docstring) - or (None, None, why not)."""
    records = [_efficiency(run) for run in runs if _efficiency(run)]
    if not records:
        return None, None, _no_record(runs)
    devices = {_device(record) for record in records}
    if len(devices) > 1:
        return None, None, "the row's runs used different devices (CPU and GPU): their peaks do not compare"
    for label, path in PEAK_SOURCES[devices.pop()]:
        peaks = [_field(r.get("overall") or {}, path) for r in records]
        if all(isinstance(p, (int, float)) for p in peaks):
            return max(peaks), label, None
    notes = {k: v for r in records for k, v in (r.get("unavailable") or {}).items()}
    return None, None, notes.get("torch_peak_memory") or notes.get("gpu") or "not recorded"


def _device(record: dict) -> str:
    """``gpu`` or ``cpu``: where the model of an efficiency record ran."""
    on_cuda = str((record.get("load") or {}).get("device", "")).startswith("cuda")
    return "gpu" if on_cuda or (record.get("overall") or {}).get("torch_memory") else "cpu"


def _no_record(runs: list[Run]) -> str:
    """Why none of ``runs`` has an efficiency record."""
    if any((run.data.get("config") or {}).get("model") != "perf-hf" for run in runs):
        return "a run without perf-hf (lm-eval's own model writes no efficiency record)"
    return PLUGIN_ONLY


def _run_figures(
    runs: list[Run],
) -> tuple[dict[str, float | None], dict[str, str], dict[str, float | None]]:
    """The row's figures from its runs' records, why any is None, and AL (s per batch) per request kind:
    a row's AL is its one kind's, never a mean over kinds (a loglikelihood batch and a generation call
    are not the same unit of work)."""
    kinds = [(kind, block) for run in runs for kind, block in evaluation_kinds(_efficiency(run)).items()]
    windows = [(block.get("window") or {}) for _, block in kinds]
    latency: dict[str, list[dict]] = {}
    for kind, block in kinds:
        latency.setdefault(kind, []).append(block.get("latency_s") or {})
    al_by_kind = {
        kind: ratio(_sum([s.get("total") for s in stats]), _sum([s.get("count") for s in stats]))
        for kind, stats in sorted(latency.items())
    }
    generation = [block for kind, block in kinds if kind in GENERATION_KINDS]
    energy = [block.get("energy_j") for _, block in kinds]
    tokens = [ratio(block.get("energy_j"), block.get("energy_per_token_j")) for _, block in kinds]
    values = {
        "amu": _weighted([(w.get("amu"), w.get("duration_s")) for w in windows]),
        "pcu": _weighted([(w.get("pcu"), w.get("duration_s")) for w in windows]),
        "aec_w": _weighted([(w.get("aec_w"), w.get("duration_s")) for w in windows]),
        "al_s": next(iter(al_by_kind.values())) if len(al_by_kind) == 1 else None,
        "it_tokens_per_s": ratio(
            _sum([b.get("generated_tokens") for b in generation]),
            _sum([b.get("seconds") for b in generation]),
        ),
        "energy_per_token_j": ratio(_sum(energy), _sum(tokens)),
    }
    reasons: dict[str, str] = {}
    if not kinds:
        reasons["al_s"] = (
            _no_record(runs)
            if not any(map(_efficiency, runs))
            else "no evaluation requests were measured by perf-hf in this row's runs"
        )
    if len(al_by_kind) > 1:
        reasons["al_s"] = (
            f"the row's requests are of {len(al_by_kind)} kinds ({', '.join(al_by_kind)}), whose batches "
            "do not average together: AL per kind in benchmark_results.csv (metric al_s, basis the kind)"
        )
    if not generation:
        reasons["it_tokens_per_s"] = "no generation task (IT is defined for generation only)"
    notes = {}
    for run in runs:
        notes.update(_efficiency(run).get("unavailable") or {})
    for key, source in (
        ("amu", "amu"),
        ("pcu", "pcu"),
        ("aec_w", "aec_w"),
        ("energy_per_token_j", "energy_j"),
    ):
        if values[key] is None:
            reasons.setdefault(
                key, notes.get(source) or notes.get("gpu") or reasons.get("al_s") or "not measured"
            )
    return values, reasons, al_by_kind


def _perf_pair(base: Cell, cell: Cell) -> tuple[float | None, float | None, str | None]:
    """(perf_orig, perf_comp) in the direction MCR needs, or a reason why there is none."""
    if base.entry.value is None:
        return None, None, "no baseline value"
    if cell.entry.value is None:
        return None, None, "no value"
    higher = cell.entry.higher_is_better
    if higher is None:
        return None, None, f"{cell.entry.metric}: direction unknown (no higher_is_better)"
    if higher:
        return base.entry.value, cell.entry.value, None
    return cell.entry.value, base.entry.value, None  # lower is better: perf_base / perf


def baseline_of(row: RowKey, precision: str) -> RowKey:
    """The baseline row of ``row``: the same model on the same device, in ``precision``, uncompressed."""
    return RowKey(row.model, precision, UNCOMPRESSED, row.device)


def cell_mcr(study: Study, cell: Cell, baseline_precision: str) -> tuple[float | None, str | None]:
    """MCR of one accuracy cell against the same model's baseline row, or why it is undefined."""
    base_row = baseline_of(cell.row, baseline_precision)
    if base_row not in study.rows:
        return None, f"no {base_row.label()} (ratio 1) row of {cell.row.model}"
    base = study.cell(base_row, cell.column)
    if base is None:
        return None, f"no {baseline_precision} value of {cell.column.key} with the same settings"
    orig, comp, why = _perf_pair(base, cell)
    if why:
        return None, why
    size_orig, size_comp = weight_bytes_of(base.run.data), weight_bytes_of(cell.run.data)
    value = model_compression_rate(size_orig, size_comp, orig, comp)
    if value is None:
        return None, "weight bytes not recorded" if None in (size_orig, size_comp) else "a term is 0"
    return value, None


def row_efficiency(study: Study, row: RowKey, baseline_precision: str) -> RowEfficiency:
    """The efficiency figures of ``row``."""
    runs = study.runs_of(row)
    values, reasons, al_by_kind = _run_figures(runs)
    values["peak_memory_gib"], source, why = peak_memory(runs)
    if why:
        reasons["peak_memory_gib"] = why
    sizes = [weight_bytes_of(run.data) for run in runs]
    weight_bytes = next((s for s in reversed(sizes) if s is not None), None)
    values["weight_gib"] = None if weight_bytes is None else weight_bytes / GIB
    if weight_bytes is None:
        why = _no_record(runs) if not any(map(_efficiency, runs)) else "not in the efficiency record"
        reasons["weight_gib"] = f"weight bytes not recorded: {why}"
    sweep = next((study.cell(row, c) for c in study.columns_of(THROUGHPUT) if study.cell(row, c)), None)
    values["decode_tokens_per_s"] = None if sweep is None else sweep.entry.value
    if sweep is None:
        reasons["decode_tokens_per_s"] = "no throughput sweep (perf_throughput) for this row"
    mcr: dict[Column, float | None] = {}
    for column in study.columns_of(ACCURACY):
        cell = study.cell(row, column)
        if cell is not None:
            mcr[column], why = cell_mcr(study, cell, baseline_precision)
            if why:
                reasons.setdefault(f"mcr:{study.title(column)}", why)
    defined = [v for v in mcr.values() if v is not None]
    values["mcr"] = sum(defined) / len(defined) if defined else None
    if not defined:
        reasons["mcr"] = next((v for k, v in reasons.items() if k.startswith("mcr:")), "no accuracy column")
    return RowEfficiency(row, values, weight_bytes, reasons, mcr, source, al_by_kind)


def all_rows(study: Study, baseline_precision: str) -> dict[RowKey, RowEfficiency]:
    return {row: row_efficiency(study, row, baseline_precision) for row in study.rows}
