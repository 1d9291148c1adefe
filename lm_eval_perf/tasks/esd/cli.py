"""``lm-eval-perf esd``: streamed ESD of a checkpoint, read from its files without loading the model.

    lm-eval-perf esd --model org/model --out results/esd/model          # hub id, local folder, .gguf
    lm-eval-perf esd --model base-dir --peft adapter-dir --out DIR      # a LoRA adapter merged per tensor
    lm-eval-perf esd --model DIR --out DIR --metadata '{"fix_fingers": "xmin_mid", "batch_gib": 4}'
    lm-eval-perf esd --model DIR --out DIR --gpu-memory-fraction 0.125  # cap this process's GPU memory

Writes into ``--out`` (created if needed; nothing is written on bad input or a failed run):

* ``esd_layers_<time>.csv`` - the per-layer rows, columns and values as the ``esd`` task writes them;
* ``results_<time>.json`` - lm-eval's results layout, so ``process_results.py`` reads it like a task
  run: ``results.esd`` = the model-level metrics (with the streamed run's time and memory),
  ``config.model_args`` = the model, ``config.lm_eval_perf_artifacts.esd_layers_csv`` = the CSV, and
  ``esd_stream`` = :class:`~lm_eval_perf.tasks.esd.stream.StreamStats` (bytes, seconds).

``--metadata`` takes the ``esd`` task's options (:class:`~lm_eval_perf.tasks.esd.estimator.ESDOptions`,
``model_id``, ``source_model``; ``stream`` is implied). batch_eval runs this command as the job of an
``esd`` task with ``stream: true``; it passes ``--output_path`` and ``--device``, aliases of ``--out`` and
the device option.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from lm_eval_perf.atomic import check_writable, write_atomic
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.artifacts import ESD_LAYERS
from lm_eval_perf.records.efficiency import RUN_DEVICE
from lm_eval_perf.tasks.esd import records
from lm_eval_perf.tasks.esd.adapter import open_adapter
from lm_eval_perf.tasks.esd.checkpoint import open_checkpoint
from lm_eval_perf.tasks.esd.estimator import ESDOptions
from lm_eval_perf.tasks.esd.runner import check_option_names
from lm_eval_perf.tasks.esd.stream import analyze_checkpoint

TASK = "esd"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lm-eval-perf esd", description="Streamed ESD of a checkpoint (safetensors or GGUF)."
    )
    parser.add_argument("--model", required=True, help="hub id, local model folder or .gguf file")
    parser.add_argument("--revision", help="hub revision of --model (and of --peft)")
    parser.add_argument("--peft", help="a LoRA adapter (folder or hub id) merged into --model per tensor")
    parser.add_argument("--out", "--output_path", dest="out", required=True, help="output folder")
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when there is one)")
    parser.add_argument("--metadata", default="{}", help="esd task options as JSON")
    parser.add_argument(
        "--gpu-memory-fraction",
        type=float,
        help="cap this process's GPU memory (torch.cuda.set_per_process_memory_fraction)",
    )
    return parser


def _options(text: str) -> dict[str, Any]:
    try:
        options = json.loads(text)
    except ValueError as exc:
        raise UserInputError(f"--metadata is not valid JSON: {exc}") from exc
    if not isinstance(options, dict):
        raise UserInputError("--metadata must be a JSON object of esd options")
    check_option_names(options)
    return options


def _device(name: str | None, fraction: float | None) -> torch.device:
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"--device {name}: use cuda, cuda:N or cpu") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(f"--device {name}: this machine has no CUDA GPU")
        device = torch.device(
            "cuda", device.index if device.index is not None else torch.cuda.current_device()
        )
    if fraction is not None:
        if device.type != "cuda" or not 0 < fraction <= 1:
            raise UserInputError("--gpu-memory-fraction needs a CUDA --device and a value in (0, 1]")
        torch.cuda.set_per_process_memory_fraction(fraction, device)
    return device


def results_record(
    args: argparse.Namespace,
    options: ESDOptions,
    metrics: dict,
    stats: dict,
    csv_path: Path,
    device: torch.device,
) -> dict:
    """The run as lm-eval's results JSON lays a task run out (what ``process_results.py`` reads);
    ``device``: where the eigenvalues were computed."""
    model_args = {
        k: v for k, v in (("pretrained", args.model), ("revision", args.revision), ("peft", args.peft)) if v
    }
    return {
        "results": {TASK: {"alias": TASK, **{f"{k},none": v for k, v in metrics.items() if v is not None}}},
        "higher_is_better": {TASK: records.higher_is_better(metrics)},
        "configs": {TASK: {"task": TASK, "metadata": {**asdict(options), "stream": True}}},
        "config": {
            "model": "lm-eval-perf esd (streamed)",
            "model_args": model_args,
            "model_dtype": "+".join(stats["stored_dtypes"]),
            "lm_eval_perf_artifacts": {ESD_LAYERS.key: str(csv_path)},
            RUN_DEVICE: str(device),
        },
        "esd_stream": stats,
        "model_name": args.model,
        "date": time.time(),
    }


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    metadata = _options(args.metadata)
    options = ESDOptions.from_mapping(metadata)
    out = Path(args.out).expanduser()
    check_writable(out, "--out")
    device = _device(args.device, args.gpu_memory_fraction)
    checkpoint = open_checkpoint(args.model, args.revision)
    adapter = open_adapter(args.peft, args.revision) if args.peft else None

    streamed = analyze_checkpoint(checkpoint, options, device, adapter)
    model_id = metadata.get("model_id") or args.peft or args.model
    source_model = metadata.get("source_model") or (args.model if args.peft else None)
    who = records.identity(model_id, source_model, adapter is not None)
    stamp = records.time_stamp()
    out.mkdir(parents=True, exist_ok=True)
    csv_path = records.write_layers(out, who, streamed.result, stamp)
    metrics = {**records.summary_metrics(streamed.result), **records.stream_metrics(streamed.stats)}
    record = results_record(args, options, metrics, asdict(streamed.stats), csv_path, device)
    write_atomic(out / f"results_{stamp}.json", json.dumps(record, indent=2) + "\n")
    stats = streamed.stats
    print(
        f"{len(streamed.result.rows)} layers of {args.model} in {stats.total_seconds:.1f} s "
        f"(eigenvalues {streamed.result.eig_seconds:.1f} s, reading {stats.read_seconds:.1f} s, "
        f"waited {stats.wait_seconds:.1f} s); peak host RSS {stats.host_rss_peak_bytes / 2**30:.2f} GiB"
        + (f", peak GPU {stats.gpu_peak_bytes / 2**30:.2f} GiB" if stats.gpu_peak_bytes is not None else "")
        + f"\n{csv_path}"
    )
    return 0
