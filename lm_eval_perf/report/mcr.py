"""MCR (model compression rate) of a compressed/quantized run against its baseline, from two
lm-eval results JSONs written with ``--model perf-hf``.

    MCR = (size_orig / size_comp) · (perf_comp / perf_orig)

size = weight bytes as held in memory (``config.efficiency.load.precision.weight_bytes``, else
``config.efficiency.model.weight_bytes``); perf = the named metric of the named task (or of the only
task/group that reports it). Arithmetic: :func:`lm_eval_perf.monitor.metrics.model_compression_rate`.
"""

from __future__ import annotations

import json
from pathlib import Path

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.monitor.metrics import model_compression_rate


def load_results(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot read results JSON {path}: {exc}") from exc


def weight_bytes_of(results: dict) -> int | None:
    """Weight bytes as held in memory by the run's model (``None`` when not recorded)."""
    efficiency = (results.get("config") or {}).get("efficiency") or {}
    precision = (efficiency.get("load") or {}).get("precision") or {}
    return precision.get("weight_bytes") or (efficiency.get("model") or {}).get("weight_bytes")


def metric_of(results: dict, metric: str, task: str | None = None) -> float:
    """``metric`` (``acc_norm`` or ``acc_norm,none``) of ``task``, or of the only task that has it."""
    key = metric if "," in metric else f"{metric},none"
    blocks = results.get("results") or {}
    candidates = [task] if task else [name for name, block in blocks.items() if key in block]
    if task and key not in blocks.get(task, {}):
        raise UserInputError(f"task {task} has no metric {key} in this results JSON")
    if len(candidates) != 1:
        raise UserInputError(f"metric {key} is reported by {len(candidates)} tasks: name one with task=")
    return float(blocks[candidates[0]][key])


def mcr_from_results(baseline: dict, compressed: dict, metric: str, task: str | None = None) -> dict:
    """MCR and its four terms; ``mcr`` is ``None`` when a term is missing (never 0)."""
    size_orig, size_comp = weight_bytes_of(baseline), weight_bytes_of(compressed)
    perf_orig, perf_comp = metric_of(baseline, metric, task), metric_of(compressed, metric, task)
    return {
        "mcr": model_compression_rate(size_orig, size_comp, perf_orig, perf_comp),
        "size_orig_bytes": size_orig,
        "size_comp_bytes": size_comp,
        "perf_orig": perf_orig,
        "perf_comp": perf_comp,
        "metric": metric,
        "task": task,
    }


def mcr_from_files(
    baseline: str | Path, compressed: str | Path, metric: str, task: str | None = None
) -> dict:
    """:func:`mcr_from_results` of two results JSON files."""
    return mcr_from_results(load_results(baseline), load_results(compressed), metric, task)
