"""``perf_throughput``: the batch-size x generation-length sweep, run by ``perf-hf`` on its model.

Every point of the grid (see :mod:`.sweep`) is measured by :mod:`.measure` and kept in
``perf_throughput.jsonl`` in the model's artifacts folder, by the shared sweep loop
(:mod:`lm_eval_perf.tasks.sweeps.loop`: resume, out-of-memory records and skipping, schema check,
time budget). A point's key: model, dtype, weight bytes, precision, compression, backend, device,
prompt length, batch size, new tokens and measurement options.

The result for lm-eval's results JSON: per measured point ``decode_tokens_per_s@bs<B>_gen<G>``,
``ttft_p50_s@...``, ``tpot_p50_s@...`` and ``decode_mbu@...``; and ``best_decode_tokens_per_s``,
``decode_mbu_bs1`` (mean over the batch-1 points), ``points_ok``, ``points_oom``,
``points_skipped``. The full records are in the JSONL file.
"""

from __future__ import annotations

from collections.abc import Sequence

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.model_args import model_arg_names
from lm_eval_perf.records.artifacts import THROUGHPUT
from lm_eval_perf.tasks.sweeps.identity import model_identity
from lm_eval_perf.tasks.sweeps.loop import Sweep, run_sweep
from lm_eval_perf.tasks.sweeps.summary import Summary
from lm_eval_perf.tasks.throughput.measure import measure_point
from lm_eval_perf.tasks.throughput.sweep import TASK, Point, SweepOptions, point_key
from lm_eval_perf.tasks.throughput.table import render

PROFILE_FOLDER = "perf_throughput_profile"
# 2: MFU counts lm_head per logit position and causal attention, the peak of the compute dtype; MBU the
# K/V in the cache's dtype within sliding windows; energy_error_bound and power_source added.
SCHEMA = "lm-eval-perf/throughput/2"


def parse_options(options: dict) -> SweepOptions:
    """The sweep options in a task's metadata (one-line error for a bad or misspelt option); the
    model arguments lm-eval copies from ``--model_args`` into every task's metadata are not options."""
    return SweepOptions.from_mapping(options, ignore=model_arg_names())


def _summary(records: Sequence[dict]) -> Summary:
    summary = Summary()
    ok = [r for r in records if r["status"] == "ok"]
    for r in ok:
        label = Point(r["key"]["batch_size"], r["key"]["new_tokens"]).label
        summary.put(f"decode_tokens_per_s@{label}", r["decode_tokens_per_s"], True)
        summary.put(f"ttft_p50_s@{label}", r["ttft_s"]["p50"], False)
        summary.put(f"tpot_p50_s@{label}", r["tpot_s"]["p50"], False)
        summary.put(f"decode_mbu@{label}", r["decode_mbu"], True)
    rates = [r["decode_tokens_per_s"] for r in ok if r["decode_tokens_per_s"] is not None]
    summary.put("best_decode_tokens_per_s", max(rates) if rates else None, True)
    batch1 = [r["decode_mbu"] for r in ok if r["key"]["batch_size"] == 1 and r["decode_mbu"] is not None]
    summary.put("decode_mbu_bs1", sum(batch1) / len(batch1) if batch1 else None, True)
    summary.count_points(records)
    return summary


def _describe(record: dict) -> str:
    rate = record.get("decode_tokens_per_s")
    return "" if rate is None else f" {rate:.1f} decode tok/s ({record['decode_path']})"


def run(lm, options: dict) -> dict:
    """Run (or resume) the sweep on ``lm`` (a ``perf-hf`` model); lm-eval metrics + where the records are."""
    opts = parse_options(options)
    if getattr(lm, "classifier", None) is not None:
        raise UserInputError(
            f"{TASK} generates text, and {lm.model_label} is a sequence classifier: "
            "measure its forward passes with perf_forward"
        )
    identity = {**model_identity(lm), "backend": lm.generation_backend}
    profiled = opts.profiled_point()

    def measure(point: Point, monitor, clock) -> dict:
        folder = None
        if point == profiled:
            folder = lm.artifacts_dir() / PROFILE_FOLDER / f"{lm.generation_backend}-{point.label}"
        return measure_point(lm, monitor, clock, opts, point, folder)

    sweep = Sweep(
        TASK, SCHEMA, THROUGHPUT.filename, lambda p: point_key(identity, opts, p), measure, _describe
    )
    done = run_sweep(lm, sweep, list(opts.points()), opts.max_sweep_seconds)
    print(f"\nperf_throughput ({identity['model']}, {identity['backend']}, {identity['device']})")
    print(render(done.records))
    return _summary(done.records).result(THROUGHPUT.key, done)
