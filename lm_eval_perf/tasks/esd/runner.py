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
* ``stream`` - ``true``: analyse the checkpoint ``pretrained=`` names (and ``peft=``), read tensor by
  tensor from its files as ``lm-eval-perf esd`` does (:mod:`.stream`), instead of the loaded model's
  weights - e.g. the original bf16 weights of a model perf-hf loaded quantized. Same rows; the
  metrics add the streamed run's reading time and peak memory.

Writes ``esd_layers_<time stamp>.csv`` (one row per layer: ``model_id, source_model, is_adapter`` and
the estimator's columns) atomically into ``lm.artifacts_dir()`` - the folder of lm-eval's results
JSON - one file per run, and returns its path under ``artifacts``, which perf-hf lists in the results
JSON (``config.lm_eval_perf_artifacts.esd_layers_csv``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.artifacts import ESD_LAYERS
from lm_eval_perf.tasks.esd import records
from lm_eval_perf.tasks.esd.estimator import ESDOptions, analyze
from lm_eval_perf.tasks.options import boolean_option

if TYPE_CHECKING:
    from lm_eval_perf.tasks.esd.stream import StreamedESD

RUNNER_OPTIONS = ("model_id", "source_model", "merge_device", "stream")


def check_option_names(options: Mapping[str, Any]) -> None:
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


def _streamed(lm: Any, options: ESDOptions) -> StreamedESD:
    """The ``stream: true`` run: the checkpoint ``pretrained=`` names, read from its files."""
    from lm_eval_perf.tasks.esd.adapter import open_adapter
    from lm_eval_perf.tasks.esd.checkpoint import open_checkpoint
    from lm_eval_perf.tasks.esd.stream import analyze_checkpoint

    source = getattr(lm, "source", None)
    if source is None or source.random_weights:
        raise UserInputError("esd stream=true reads a checkpoint: pretrained= names none (random weights)")
    model = str(Path(source.pretrained) / source.gguf_file) if source.gguf_file else source.pretrained
    revision = getattr(lm, "revision", None)
    adapter = open_adapter(str(lm.peft), revision) if getattr(lm, "peft", None) else None
    device = next(lm.model.parameters()).device
    return analyze_checkpoint(open_checkpoint(model, revision), options, device, adapter)


def run(lm: Any, options: dict) -> dict:
    """Plugin entry point (see :mod:`lm_eval_perf.tasks.plugin`)."""
    check_option_names(options)
    esd_options = ESDOptions.from_mapping(options)
    metrics: dict[str, Any] = {}
    if boolean_option("esd stream", options.get("stream", False)):
        streamed = _streamed(lm, esd_options)
        result, is_adapter = streamed.result, bool(getattr(lm, "peft", None))
        metrics = records.stream_metrics(streamed.stats)
        model = lm.model
    else:
        model, is_adapter = merged_model(lm, merge_device(options.get("merge_device")))
        result = analyze(model, esd_options)

    source = getattr(lm, "source", None)
    pretrained = source.label if source is not None else getattr(model, "name_or_path", "")
    model_id = options.get("model_id") or (str(lm.peft) if is_adapter else pretrained)
    source_model = options.get("source_model") or (pretrained if is_adapter else None)
    who = records.identity(model_id, source_model, is_adapter)
    path = records.write_layers(lm.artifacts_dir(), who, result, records.time_stamp())
    metrics = {**records.summary_metrics(result), **metrics}
    return {
        "metrics": metrics,
        "higher_is_better": records.higher_is_better(metrics),
        "artifacts": {ESD_LAYERS.key: str(path)},
        **who,
        "options": asdict(esd_options),
    }
