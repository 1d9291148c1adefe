"""The sweeps' per-point records of each row, and the throughput sweep's summary statistics.

A sweep writes its records next to lm-eval's results JSON (or into ``artifacts_dir=`` when that
model argument was given): ``perf_throughput.jsonl`` (see :mod:`lm_eval_perf.tasks.throughput.runner`)
and ``perf_forward.jsonl`` (:mod:`lm_eval_perf.tasks.forward.runner`), one :class:`SweepKind` each.
The file is shared by every run with the same output folder, so only the records of the winning run
are kept: those whose key matches the run's model, dtype, weight bytes and device (and, for the
throughput sweep, its generation backend), whose measurement options are the run's
(``options_sha``) and whose point is in the run's grid. A run of plugin tasks only has no efficiency
record: then its device is told by ``config.lm_eval_perf_device`` - a point measured on the CPU
has the key device ``cpu``, one measured on a GPU that GPU's name. When a point still has several
records, the newest (``measured_at``) is used. Statuses: ``ok``, ``oom``, ``skipped_after_oom``.
(A forward point's key also has the hash of its input texts, which the report cannot recompute: two
runs of one model on different labelled files in one folder are told apart by the newest record.)

``summary_statistics.csv`` (:func:`summary_rows`): per throughput point and metric, ``count / mean /
std / min / max / p50``. Latencies (``ttft_s``, ``tpot_s``, ``e2e_latency_s``) are the point's own
:class:`~lm_eval_perf.monitor.Stats` over its iterations (decode steps for TPOT) - ``basis:
iterations``; rates, energy and memory are one number per point - ``basis: point`` (count 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.monitor import Stats
from lm_eval_perf.records.artifacts import FORWARD as FORWARD_FILE
from lm_eval_perf.records.artifacts import THROUGHPUT as THROUGHPUT_FILE
from lm_eval_perf.records.artifacts import Artifact
from lm_eval_perf.records.efficiency import RUN_DEVICE
from lm_eval_perf.report.collect import Problem, Run, read_jsonl
from lm_eval_perf.report.identity import CPU, RowKey, device_kind, load_block, model_args
from lm_eval_perf.report.study import Study
from lm_eval_perf.report.tasks import FORWARD, THROUGHPUT
from lm_eval_perf.tasks.forward.options import ForwardOptions
from lm_eval_perf.tasks.sweeps.options import digest
from lm_eval_perf.tasks.throughput.sweep import SweepOptions


@dataclass(frozen=True)
class SweepKind:
    """One kind of sweep: its table column kind, records file, options class and the key field of
    its length axis (generated tokens or sequence length)."""

    column: str
    artifact: Artifact
    options: type[SweepOptions] | type[ForwardOptions]
    length: str
    length_name: str  # the length axis in words
    backend: bool  # its key names the generation backend


THROUGHPUT_SWEEP = SweepKind(
    THROUGHPUT, THROUGHPUT_FILE, SweepOptions, "new_tokens", "generated length", True
)
FORWARD_SWEEP = SweepKind(FORWARD, FORWARD_FILE, ForwardOptions, "seq_len", "sequence length", False)

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
    """One point of one row's sweep: ``length`` is its generated tokens (throughput) or sequence
    length (forward)."""

    row: RowKey
    batch_size: int
    length: int
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


def _options(run: Run, task: str, kind: SweepKind) -> SweepOptions | ForwardOptions | None:
    metadata = ((run.data.get("configs") or {}).get(task) or {}).get("metadata") or {}
    names = set(kind.options.__dataclass_fields__)
    try:
        return kind.options.from_mapping(metadata, ignore=frozenset(k for k in metadata if k not in names))
    except (UserInputError, TypeError, ValueError):
        return None


def _same_device(point_device: object, run: Run) -> bool:
    """Whether a point's key device (``cpu`` or a GPU's name) is where a run without a record ran
    (``config.lm_eval_perf_device``; unknown: any)."""
    ran = device_kind((run.data.get("config") or {}).get(RUN_DEVICE))
    return ran is None or (point_device == CPU) == (ran == CPU)


def _belongs(record: dict, run: Run, options: SweepOptions | ForwardOptions | None, kind: SweepKind) -> bool:
    key = record.get("key")
    if not isinstance(key, dict) or not isinstance(record.get("status"), str):
        return False
    if not all(isinstance(key.get(k), int) for k in ("batch_size", kind.length)):
        return False
    efficiency = (run.data.get("config") or {}).get("efficiency") or {}
    expected = {
        "model": load_block(run.data).get("model"),
        "dtype": load_block(run.data).get("dtype"),
        "weight_bytes": (efficiency.get("model") or {}).get("weight_bytes"),
        "device": (efficiency.get("peaks") or {}).get("device"),
    }
    if kind.backend:
        expected["backend"] = model_args(run.data).get("generation_backend", "eager")
    if any(value is not None and key.get(name) != value for name, value in expected.items()):
        return False
    if expected["device"] is None and not _same_device(key.get("device"), run):
        return False
    if options is None:
        return True
    grid = {(p.batch_size, p.length) for p in options.points()}
    return (
        key.get("options_sha") == digest(options.measurement_options())
        and (key.get("batch_size"), key.get(kind.length)) in grid
    )


def run_points(
    run: Run, row: RowKey, task: str, problems: list[Problem], kind: SweepKind
) -> list[SweepPoint]:
    """The points of ``run``'s sweep of ``kind``, one per (batch size, length), ordered by length,
    then batch size."""
    path = run.artifact(kind.artifact)
    if not path.is_file():
        problems.append(Problem(path, f"missing: the {task} records of {run.path.name} are not there"))
        return []
    options = _options(run, task, kind)
    newest: dict[tuple[int, int], dict] = {}
    for record in read_jsonl(path, problems):
        if _belongs(record, run, options, kind):
            point = (int(record["key"]["batch_size"]), int(record["key"][kind.length]))
            if point not in newest or str(record.get("measured_at")) >= str(newest[point].get("measured_at")):
                newest[point] = record
    return [
        SweepPoint(row, b, n, str(rec["status"]), rec, path)
        for (b, n), rec in sorted(newest.items(), key=lambda item: (item[0][1], item[0][0]))
    ]


def study_points(study: Study, kind: SweepKind = THROUGHPUT_SWEEP) -> dict[RowKey, list[SweepPoint]]:
    """Every row's points of sweeps of ``kind`` (rows without one are left out)."""
    points = {}
    for row in study.rows:
        for column in study.columns_of(kind.column):
            cell = study.cell(row, column)
            if cell is not None:
                found = run_points(cell.run, row, cell.entry.task, study.inputs.problems, kind)
                if found:
                    points[row] = found
                break
    return points


def summary_rows(points: dict[RowKey, list[SweepPoint]]) -> list[dict]:
    """The rows of ``summary_statistics.csv`` from throughput points (see the module docstring)."""
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
                "gen_length": point.length,
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
