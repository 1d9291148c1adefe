"""What an ESD run writes, whichever path computed it (the ``esd`` task or ``lm-eval-perf esd``).

* ``esd_layers_<time stamp>.csv`` - one row per layer: :data:`IDENTITY_COLUMNS` then the estimator's
  :data:`~lm_eval_perf.tasks.esd.estimator.COLUMNS`; NaN and None are empty cells, floats ``repr``'d
  (exact round trip); written atomically.
* model-level metrics (:func:`summary_metrics`) - the task's lm-eval metrics and the report's ESD column;
  a streamed run adds :func:`stream_metrics`.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm_eval_perf.atomic import write_atomic
from lm_eval_perf.records.artifacts import ESD_LAYERS
from lm_eval_perf.records.stats import Stats, percentile
from lm_eval_perf.tasks.esd.estimator import COLUMNS, ESDResult

if TYPE_CHECKING:
    from lm_eval_perf.tasks.esd.stream import StreamStats

IDENTITY_COLUMNS = ("model_id", "source_model", "is_adapter")


def identity(model_id: str, source_model: str | None, is_adapter: bool) -> dict[str, Any]:
    """The identity columns of a model's rows."""
    return {"model_id": model_id, "source_model": source_model, "is_adapter": is_adapter}


def time_stamp() -> str:
    """Now, as lm-eval stamps its results files (``:`` replaced, so it can be part of a file name)."""
    return datetime.datetime.now().isoformat(timespec="milliseconds").replace(":", "-")


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else value


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` as CSV to ``path`` atomically (temporary file in the same folder, then rename)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows({k: _cell(row.get(k)) for k in columns} for row in rows)
    write_atomic(path, text.getvalue())


def write_layers(folder: Path, who: Mapping[str, Any], result: ESDResult, stamp: str) -> Path:
    """The per-layer CSV of one run (``who``: :func:`identity`) in ``folder``; its path."""
    path = Path(folder) / f"{Path(ESD_LAYERS.filename).stem}_{stamp}.csv"  # one file per run
    write_csv(path, [{**who, **row} for row in result.rows], (*IDENTITY_COLUMNS, *COLUMNS))
    return path


def _finite(rows: Sequence[Mapping[str, Any]], column: str) -> list[float]:
    values = (r[column] for r in rows if r[column] not in (None, ""))  # "": NaN as the CSV writes it
    return [float(v) for v in values if math.isfinite(float(v))]


def layer_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, float | int | None]:
    """Model-level aggregates of per-layer rows (as computed, or as read back from the CSV); each
    over the layers where the column is finite."""
    alpha_values = _finite(rows, "alpha")
    alpha = Stats.from_values(alpha_values, "")
    ordered = sorted(alpha_values)
    spectral = Stats.from_values(_finite(rows, "spectral_norm"), "")
    stable = Stats.from_values(_finite(rows, "stable_rank"), "")
    entropy = Stats.from_values(_finite(rows, "entropy"), "")
    return {
        "alpha_mean": alpha.mean,
        "alpha_median": alpha.p50,
        "alpha_std": alpha.std,
        "alpha_min": alpha.min,
        "alpha_max": alpha.max,
        "alpha_q25": percentile(ordered, 25) if ordered else None,
        "alpha_q75": percentile(ordered, 75) if ordered else None,
        "alpha_layers": alpha.count,
        "alpha_weighted_mean": Stats.from_values(_finite(rows, "alpha_weighted"), "").mean,
        "spectral_norm_mean": spectral.mean,
        "spectral_norm_max": spectral.max,
        "stable_rank_mean": stable.mean,
        "stable_rank_median": stable.p50,
        "entropy_mean": entropy.mean,
        "entropy_median": entropy.p50,
        "total_params": sum(int(r["params"]) for r in rows),
        "num_layers": len(rows),
    }


def summary_metrics(result: ESDResult) -> dict[str, float | int | None]:
    """The run's metrics: :func:`layer_summary` and where the time went."""
    return {
        **layer_summary(result.rows),
        "eig_seconds": result.eig_seconds,
        "fit_seconds": result.fit_seconds,
    }


def higher_is_better(metrics: Mapping[str, Any]) -> dict[str, bool]:
    """lm-eval's direction of the metrics that have one: times and memory are better lower."""
    timed = ("seconds", "_gib")
    return {k: False for k in metrics if k.endswith(timed)}


def stream_metrics(stats: StreamStats) -> dict[str, float | int | None]:
    """A streamed run's own figures (see :class:`.stream.StreamStats`); None where unavailable."""
    gib = 2**30
    return {
        "read_seconds": stats.read_seconds,
        "read_wait_seconds": stats.wait_seconds,
        "total_seconds": stats.total_seconds,
        "bytes_read": stats.bytes_read,
        "largest_tensor_gib": stats.largest_tensor_bytes / gib,
        "host_rss_start_gib": stats.host_rss_start_bytes / gib,
        "host_rss_peak_gib": stats.host_rss_peak_bytes / gib,
        "gpu_peak_gib": None if stats.gpu_peak_bytes is None else stats.gpu_peak_bytes / gib,
    }
