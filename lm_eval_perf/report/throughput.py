"""The throughput sweep's per-point records of each row, and their summary statistics.

A sweep writes ``perf_throughput.jsonl`` next to lm-eval's results JSON (or into ``artifacts_dir=``
when that model argument was given); see :mod:`lm_eval_perf.tasks.throughput.runner`. The file is
shared by every run with the same output folder, so only the records of the winning run are kept:
those whose key matches the run's model, dtype, weight bytes, generation backend and device, whose
measurement options are the run's (``options_sha``) and whose point is in the run's grid. When a
point still has several records, the newest (``measured_at``) is used. Statuses: ``ok``, ``oom``,
``skipped_after_oom``.

``summary_statistics.csv`` (:func:`summary_rows`): per point and metric, ``count / mean / std / min
/ max / p50``. Latencies (``ttft_s``, ``tpot_s``, ``e2e_latency_s``) are the point's own
:class:`~lm_eval_perf.monitor.Stats` over its iterations (decode steps for TPOT) - ``basis:
iterations``; rates, energy and memory are one number per point - ``basis: point`` (count 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.monitor import Stats
from lm_eval_perf.records.artifacts import THROUGHPUT as THROUGHPUT_FILE
from lm_eval_perf.report.collect import Problem, Run, read_jsonl
from lm_eval_perf.report.identity import RowKey, load_block, model_args
from lm_eval_perf.report.study import Study
from lm_eval_perf.report.tasks import THROUGHPUT
from lm_eval_perf.tasks.throughput.sweep import SweepOptions, digest

LATENCIES = (("ttft_s", "s"), ("tpot_s", "s"), ("e2e_latency_s", "s"))
SCALARS = (
    ("decode_tokens_per_s", "tokens/s"),
    ("prefill_tokens_per_s", "tokens/s"),
    ("output_tokens_per_s", "tokens/s"),
    ("decode_mbu", "fraction"),
    ("prefill_mfu", "fraction"),
    ("energy_per_token_j", "J/token"),
    ("avg_power_w", "W"),
    ("peak_memory_allocated_gib", "GiB"),
    ("device_memory_peak_gib", "GiB"),
    ("host_rss_peak_gib", "GiB"),
)


@dataclass(frozen=True)
class SweepPoint:
    """One point of one row's sweep."""

    row: RowKey
    batch_size: int
    new_tokens: int
    status: str
    record: dict
    source: Path

    def value(self, key: str) -> float | None:
        """A scalar field, or ``<field>.<stat>`` of a Stats field (``ttft_s.p50``)."""
        name, _, stat = key.partition(".")
        value = self.record.get(name)
        if stat:
            value = (value or {}).get(stat) if isinstance(value, dict) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def sweep_file(run: Run) -> Path:
    return run.artifact(THROUGHPUT_FILE)


def _options(run: Run, task: str) -> SweepOptions | None:
    metadata = ((run.data.get("configs") or {}).get(task) or {}).get("metadata") or {}
    names = set(SweepOptions.__dataclass_fields__)
    try:
        return SweepOptions.from_mapping(metadata, ignore=frozenset(k for k in metadata if k not in names))
    except (UserInputError, TypeError, ValueError):
        return None


def _belongs(record: dict, run: Run, options: SweepOptions | None) -> bool:
    key = record.get("key")
    if not isinstance(key, dict) or not isinstance(record.get("status"), str):
        return False
    if not all(isinstance(key.get(k), int) for k in ("batch_size", "new_tokens")):
        return False
    efficiency = (run.data.get("config") or {}).get("efficiency") or {}
    expected = {
        "model": load_block(run.data).get("model"),
        "dtype": load_block(run.data).get("dtype"),
        "weight_bytes": (efficiency.get("model") or {}).get("weight_bytes"),
        "device": (efficiency.get("peaks") or {}).get("device"),
        "backend": model_args(run.data).get("generation_backend", "eager"),
    }
    if any(value is not None and key.get(name) != value for name, value in expected.items()):
        return False
    if options is None:
        return True
    grid = {(p.batch_size, p.new_tokens) for p in options.points()}
    return (
        key.get("options_sha") == digest(options.measurement_options())
        and (key.get("batch_size"), key.get("new_tokens")) in grid
    )


def run_points(run: Run, row: RowKey, task: str, problems: list[Problem]) -> list[SweepPoint]:
    """The points of ``run``'s sweep, one per (batch size, new tokens), ordered."""
    path = sweep_file(run)
    if not path.is_file():
        problems.append(Problem(path, f"missing: the throughput records of {run.path.name} are not there"))
        return []
    options = _options(run, task)
    newest: dict[tuple[int, int], dict] = {}
    for record in read_jsonl(path, problems):
        if _belongs(record, run, options):
            point = (int(record["key"]["batch_size"]), int(record["key"]["new_tokens"]))
            if point not in newest or str(record.get("measured_at")) >= str(newest[point].get("measured_at")):
                newest[point] = record
    return [
        SweepPoint(row, b, g, str(rec["status"]), rec, path)
        for (b, g), rec in sorted(newest.items(), key=lambda item: (item[0][1], item[0][0]))
    ]


def study_points(study: Study) -> dict[RowKey, list[SweepPoint]]:
    """Every row's sweep points (rows without a sweep are left out)."""
    points = {}
    for row in study.rows:
        for column in study.columns_of(THROUGHPUT):
            cell = study.cell(row, column)
            if cell is not None:
                found = run_points(cell.run, row, cell.entry.task, study.inputs.problems)
                if found:
                    points[row] = found
                break
    return points


def summary_rows(points: dict[RowKey, list[SweepPoint]]) -> list[dict]:
    """The rows of ``summary_statistics.csv`` (see the module docstring)."""
    out = []
    for row, found in points.items():
        for point in found:
            base = {
                "model": row.model,
                "precision": row.precision,
                "ratio": row.ratio,
                "backend": point.record["key"].get("backend"),
                "device": point.record["key"].get("device"),
                "batch_size": point.batch_size,
                "gen_length": point.new_tokens,
                "prompt_len": point.record["key"].get("prompt_len"),
                "status": point.status,
            }
            if point.status != "ok":
                out.append({**base, "metric": None, "basis": None, "error": point.record.get("error")})
                continue
            for name, unit in LATENCIES:
                stats = point.record.get(name) or {}
                out.append({**base, "metric": name, "unit": unit, "basis": "iterations", **_stats(stats)})
            for name, unit in SCALARS:
                value = point.value(name)
                if value is not None:
                    stats = Stats.from_values([value], unit).to_dict()
                    out.append({**base, "metric": name, "unit": unit, "basis": "point", **_stats(stats)})
    return out


def _stats(stats: dict) -> dict:
    return {k: stats.get(k) for k in ("count", "mean", "std", "min", "max", "p50")}
