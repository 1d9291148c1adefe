"""``perf_throughput``: the batch-size x generation-length sweep, run by ``perf-hf`` on its model.

For every point of the grid (see :mod:`.sweep`): skip it if ``perf_throughput.jsonl`` in the
model's artifacts folder already holds it (same model, dtype, weight bytes, backend, device,
prompt length, batch size, new tokens and measurement options); else measure it
(:mod:`.measure`) and append its record to that file at once. An out-of-memory error at a point
is recorded as ``status: "oom"`` with the error text, the memory is freed and the sweep goes on;
the larger batch sizes at the same generation length are recorded as ``skipped_after_oom``. Any
other error stops the sweep (the points finished so far stay in the file; a rerun resumes).
Records of ``oom`` and skipped points count as finished: delete their lines to retry them. A record
of another :data:`SCHEMA` (figures computed by other definitions) is measured again: a table never
mixes the two.

The result for lm-eval's results JSON: per measured point ``decode_tokens_per_s@bs<B>_gen<G>``,
``ttft_p50_s@...``, ``tpot_p50_s@...`` and ``decode_mbu@...``; and ``best_decode_tokens_per_s``,
``decode_mbu_bs1`` (mean over the batch-1 points), ``points_ok``, ``points_oom``,
``points_skipped``. The full records are in the JSONL file.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence

import torch

from lm_eval_perf.model_args import model_arg_names
from lm_eval_perf.monitor import provenance
from lm_eval_perf.monitor.clock import clock_for
from lm_eval_perf.records.artifacts import THROUGHPUT
from lm_eval_perf.tasks.throughput.measure import measure_point
from lm_eval_perf.tasks.throughput.oom import error_text, is_out_of_memory, release_memory
from lm_eval_perf.tasks.throughput.store import ResultsFile
from lm_eval_perf.tasks.throughput.sweep import Point, SweepOptions, digest, point_key
from lm_eval_perf.tasks.throughput.table import render

PROFILE_FOLDER = "perf_throughput_profile"
# 2: MFU counts lm_head per logit position and causal attention, the peak of the compute dtype; MBU the
# K/V in the cache's dtype within sliding windows; energy_error_bound and power_source added.
SCHEMA = "lm-eval-perf/throughput/2"


def parse_options(options: dict) -> SweepOptions:
    """The sweep options in a task's metadata (one-line error for a bad or misspelt option); the
    model arguments lm-eval copies from ``--model_args`` into every task's metadata are not options."""
    return SweepOptions.from_mapping(options, ignore=model_arg_names())


def _precision(lm) -> str | None:
    """perf-hf's ``precision=`` (with backend, group size and ``lm_head`` when it is quantized too),
    or ``None`` when not given."""
    spec = getattr(getattr(lm, "plan", None), "precision", None)
    if spec is None:
        return None
    parts = (spec.name, spec.backend, spec.group_size, "lm_head" if spec.quantize_lm_head else None)
    return ":".join(str(p) for p in parts if p is not None)


def _compression(lm) -> str | None:
    """perf-hf's low-rank compression (``svd_ratio=0.6``, ``svd_rank=64``, ``compressed=PATH``), if any."""
    plan = getattr(lm, "plan", None)
    for name in ("svd_ratio", "svd_rank", "compressed"):
        value = getattr(plan, name, None)
        if value is not None:
            return f"{name}={value}"
    return None


def _identity(lm) -> dict:
    """The model-side part of every point's key."""
    return {
        "model": lm.source.label if lm.source is not None else type(lm.model).__name__,
        "dtype": str(lm.model.dtype).removeprefix("torch."),
        "weight_bytes": lm.shape.weight_bytes,
        "precision": _precision(lm),
        "compression": _compression(lm),
        "backend": lm.generation_backend,
        "device": lm.peaks.device,
    }


def _log(message: str) -> None:
    print(f"perf_throughput: {message}", file=sys.stderr, flush=True)


def _point_record(
    lm, monitor, clock, options: SweepOptions, point: Point, key: dict, skip_reason: str | None
):
    """The record of one point: measured, out of memory, or skipped."""
    header = {
        "schema": SCHEMA,
        "key": key,
        "key_id": digest(key),
        "measured_at": provenance.now_iso(),
        "peaks": lm.peaks.to_dict(),
        "model_shape": lm.shape.to_dict(),
    }
    if skip_reason is not None:
        return {**header, "status": "skipped_after_oom", "error": skip_reason}
    folder = None
    if point == options.profiled_point():
        folder = lm.artifacts_dir() / PROFILE_FOLDER / f"{lm.generation_backend}-{point.label}"
    error = None
    try:
        return {**header, **measure_point(lm, monitor, clock, options, point, folder)}
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        error = error_text(exc)
    release_memory()  # the failed point's tensors went with the exception's frames
    return {**header, "status": "oom", "error": error}


def _summary(records: Sequence[dict]) -> tuple[dict[str, float], dict[str, bool]]:
    values: dict[str, float] = {}
    higher: dict[str, bool] = {}

    def put(name: str, value, higher_is_better: bool) -> None:
        if value is not None:
            values[name] = float(value)
            higher[name] = higher_is_better

    ok = [r for r in records if r["status"] == "ok"]
    for r in ok:
        label = Point(r["key"]["batch_size"], r["key"]["new_tokens"]).label
        put(f"decode_tokens_per_s@{label}", r["decode_tokens_per_s"], True)
        put(f"ttft_p50_s@{label}", r["ttft_s"]["p50"], False)
        put(f"tpot_p50_s@{label}", r["tpot_s"]["p50"], False)
        put(f"decode_mbu@{label}", r["decode_mbu"], True)
    rates = [r["decode_tokens_per_s"] for r in ok if r["decode_tokens_per_s"] is not None]
    put("best_decode_tokens_per_s", max(rates) if rates else None, True)
    batch1 = [r["decode_mbu"] for r in ok if r["key"]["batch_size"] == 1 and r["decode_mbu"] is not None]
    put("decode_mbu_bs1", sum(batch1) / len(batch1) if batch1 else None, True)
    put("points_ok", len(ok), True)
    put("points_oom", sum(r["status"] == "oom" for r in records), False)
    put("points_skipped", sum(r["status"] == "skipped_after_oom" for r in records), False)
    return values, higher


def run(lm, options: dict) -> dict:
    """Run (or resume) the sweep on ``lm`` (a ``perf-hf`` model); lm-eval metrics + where the records are."""
    opts = parse_options(options)
    results = ResultsFile(lm.artifacts_dir() / THROUGHPUT.filename)
    finished = results.records()
    identity = _identity(lm)
    clock = clock_for(lm.devices, lm.event_device)
    monitor = lm.new_monitor()
    on_device = torch.cuda.device(lm.devices[0]) if len(lm.devices) == 1 else contextlib.nullcontext()
    records: list[dict] = []
    not_run: list[str] = []
    oom_batch: dict[int, int] = {}  # new tokens -> the batch size that ran out of memory
    started = time.perf_counter()
    points = list(opts.points())
    with on_device, monitor:
        for number, point in enumerate(points, 1):
            key = point_key(identity, opts, point)
            record = finished.get(digest(key))
            if record is not None and record.get("schema") != SCHEMA:
                record = None  # measured under other definitions: measure again
            if record is None:
                if (
                    opts.max_sweep_seconds is not None
                    and time.perf_counter() - started >= opts.max_sweep_seconds
                ):
                    not_run.append(point.label)
                    continue
                failed = oom_batch.get(point.new_tokens)
                skip = None
                if failed is not None and point.batch_size > failed:
                    skip = f"batch_size {failed} ran out of memory at new_tokens {point.new_tokens}"
                record = _point_record(lm, monitor, clock, opts, point, key, skip)
                results.append(record)
                release_memory()
                rate = record.get("decode_tokens_per_s")
                _log(
                    f"{number}/{len(points)} {point.label} {record['status']}"
                    + (f" {rate:.1f} decode tok/s ({record['decode_path']})" if rate is not None else "")
                )
            if record["status"] == "oom":
                oom_batch.setdefault(point.new_tokens, point.batch_size)
            records.append(record)
    print(f"\nperf_throughput ({identity['model']}, {identity['backend']}, {identity['device']})")
    print(render(records))
    if not_run:
        _log(f"max_sweep_seconds reached: {len(not_run)} points not run; rerun to resume")
    values, higher = _summary(records)
    return {
        "metrics": values,
        "higher_is_better": higher,
        "artifacts": {THROUGHPUT.key: str(results.path)},
        "not_run": not_run,
    }
