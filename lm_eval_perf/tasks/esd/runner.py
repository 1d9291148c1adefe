"""The ``esd`` plugin: per-layer ESD of the model ``perf-hf`` loaded, a CSV, and model-level metrics.

Options (task YAML ``metadata`` merged with ``--metadata '{...}'``): every field of
:class:`~lm_eval_perf.tasks.esd.estimator.ESDOptions`, and

* ``model_id`` - the model's name in the CSV; default: the ``peft=`` adapter for an adapter, else the
  ``pretrained=`` argument as given.
* ``source_model`` - the base model of an adapter; default: ``pretrained=`` for an adapter, empty else.
* ``merge_device`` - where a PEFT adapter is merged into its base model (``merge_and_unload``):
  ``auto`` (default: where the model is) or a torch device such as ``cpu`` (the model is moved there for
  the merge and back afterwards, so the merge's temporaries never take GPU memory). lm-eval goes on
  with the merged model, which computes the same function.

Writes ``esd_layers_<time stamp>.csv`` (one row per layer: ``model_id, source_model, is_adapter`` and
the estimator's columns) atomically into ``lm.artifacts_dir()`` - the folder of lm-eval's results
JSON - one file per run, and returns its path under ``artifacts``, which perf-hf lists in the results
JSON (``config.lm_eval_perf_artifacts.esd_layers_csv``).
"""

from __future__ import annotations

import csv
import datetime
import difflib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lm_eval_perf.atomic import write_atomic
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.monitor.stats import Stats, percentile
from lm_eval_perf.tasks.artifacts import ESD_LAYERS
from lm_eval_perf.tasks.esd.estimator import COLUMNS, ESDOptions, ESDResult, analyze

IDENTITY_COLUMNS = ("model_id", "source_model", "is_adapter")
RUNNER_OPTIONS = ("model_id", "source_model", "merge_device")


def _check_option_names(options: Mapping[str, Any]) -> None:
    """Refuse a key that looks like a misspelt ESD option (other keys may belong to other tasks)."""
    known = (*ESDOptions.names(), *RUNNER_OPTIONS)
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
            if close:
                raise UserInputError(f"unknown esd option {key!r} (did you mean {close[0]!r}?)")


def merge_device(name: Any) -> torch.device | None:
    """The ``merge_device`` option as a device; ``None`` for ``auto`` (merge where the model is)."""
    if name in (None, "", "auto"):
        return None
    try:
        return torch.device(str(name))
    except (RuntimeError, TypeError):
        raise UserInputError(f"esd merge_device={name!r}: use auto, cpu or a device such as cuda:0") from None


def merged_model(lm: Any, device: torch.device | None = None) -> tuple[nn.Module, bool]:
    """``lm``'s model with any PEFT adapter merged in (on ``device`` if given), and whether there was one."""
    model = lm.model
    if not getattr(lm, "peft", None):
        return model, False
    if not hasattr(model, "merge_and_unload"):  # merged by an earlier run of this task
        return model, True
    home = next(model.parameters()).device
    target = device or home
    spread = {str(d) for d in (getattr(model, "hf_device_map", None) or {}).values()}
    if target != home and len(spread) > 1:
        raise UserInputError("esd merge_device: the model is spread over several devices; use auto")
    if target != home:
        model.to(target)
    merged = model.merge_and_unload()
    if target != home:
        merged.to(home)
    lm._model = merged
    return merged, True


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


def _finite(rows: Sequence[Mapping[str, Any]], column: str) -> list[float]:
    return [float(r[column]) for r in rows if r[column] is not None and math.isfinite(float(r[column]))]


def summary_metrics(result: ESDResult) -> dict[str, float | int | None]:
    """Model-level aggregates over the layers; each over the layers where the column is finite."""
    rows = result.rows
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
        "eig_seconds": result.eig_seconds,
        "fit_seconds": result.fit_seconds,
    }


def run(lm: Any, options: dict) -> dict:
    """Plugin entry point (see :mod:`lm_eval_perf.tasks.plugin`)."""
    _check_option_names(options)
    esd_options = ESDOptions.from_mapping(options)
    model, is_adapter = merged_model(lm, merge_device(options.get("merge_device")))
    result = analyze(model, esd_options)

    source = getattr(lm, "source", None)
    pretrained = source.label if source is not None else getattr(model, "name_or_path", "")
    model_id = options.get("model_id") or (str(lm.peft) if is_adapter else pretrained)
    source_model = options.get("source_model") or (pretrained if is_adapter else None)
    identity = {"model_id": model_id, "source_model": source_model, "is_adapter": is_adapter}
    stamp = datetime.datetime.now().isoformat(timespec="milliseconds").replace(":", "-")  # as lm-eval's
    path = Path(lm.artifacts_dir()) / f"{Path(ESD_LAYERS.filename).stem}_{stamp}.csv"  # one file per run
    write_csv(path, [{**identity, **row} for row in result.rows], (*IDENTITY_COLUMNS, *COLUMNS))

    return {
        "metrics": summary_metrics(result),
        "higher_is_better": {"eig_seconds": False, "fit_seconds": False},
        "artifacts": {ESD_LAYERS.key: str(path)},
        **identity,
        "options": asdict(esd_options),
    }
