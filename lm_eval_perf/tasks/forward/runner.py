"""``perf_forward``: the batch-size x sequence-length sweep of forward passes, run by ``perf-hf``.

Every point of the grid (:mod:`.options`) gets its rows (:mod:`.inputs`), is measured by
:mod:`.measure` and kept in ``perf_forward.jsonl`` in the model's artifacts folder by the shared
sweep loop (:mod:`lm_eval_perf.tasks.sweeps.loop`: resume, out-of-memory records and skipping,
schema check, time budget). A point's key: model, dtype, weight bytes, precision, compression,
device, head (causal LM or sequence classifier), batch size, sequence length, the texts' hash
(``csv``) and the measurement options.

The result for lm-eval's results JSON: per measured point ``samples_per_s@bs<B>_seq<P>``,
``latency_per_sample_p50_s@...`` and ``mfu@...``; per sequence length ``best_samples_per_s@seq<P>``
and ``best_batch_size@seq<P>`` (the batch size that gave them); ``points_ok``, ``points_oom``,
``points_skipped``. The full records are in the JSONL file; the console gets the table and the best
batch size per sequence length.
"""

from __future__ import annotations

from collections.abc import Sequence

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.model_args import model_arg_names
from lm_eval_perf.models.forward_call import ForwardCall
from lm_eval_perf.records.artifacts import FORWARD
from lm_eval_perf.tasks.forward.inputs import ForwardInputs
from lm_eval_perf.tasks.forward.measure import measure_point
from lm_eval_perf.tasks.forward.options import TASK, ForwardOptions, Point, point_key
from lm_eval_perf.tasks.forward.table import best_by_length, best_lines, render
from lm_eval_perf.tasks.sweeps.identity import model_identity
from lm_eval_perf.tasks.sweeps.loop import Sweep, log, run_sweep
from lm_eval_perf.tasks.sweeps.summary import Summary

PROFILE_FOLDER = "perf_forward_profile"
SCHEMA = "lm-eval-perf/forward/1"


def parse_options(options: dict) -> ForwardOptions:
    """The sweep options in a task's metadata (one-line error for a bad or misspelt option)."""
    return ForwardOptions.from_mapping(options, ignore=model_arg_names())


def _summary(records: Sequence[dict]) -> Summary:
    summary = Summary()
    for r in records:
        if r["status"] == "ok":
            label = Point(r["key"]["batch_size"], r["key"]["seq_len"]).label
            summary.put(f"samples_per_s@{label}", r["samples_per_s"], True)
            summary.put(f"latency_per_sample_p50_s@{label}", r["latency_per_sample_s"]["p50"], False)
            summary.put(f"mfu@{label}", r["mfu"], True)
    for seq, r in best_by_length(records).items():
        summary.put(f"best_samples_per_s@seq{seq}", r["samples_per_s"], True)
        summary.put(f"best_batch_size@seq{seq}", r["key"]["batch_size"], True)
    summary.count_points(records)
    return summary


def _describe(record: dict) -> str:
    return f" {record['samples_per_s']:.1f} samples/s"


def run(lm, options: dict) -> dict:
    """Run (or resume) the sweep on ``lm`` (a ``perf-hf`` model); lm-eval metrics + where the records are."""
    opts = parse_options(options)
    too_long = [n for n in opts.seq_lengths if n > lm.max_length]
    if too_long:
        raise UserInputError(f"{TASK} seq_lengths {too_long} exceed the model's {lm.max_length} positions")
    inputs = ForwardInputs(lm, opts)
    last_only = lm.classifier is None and opts.logits == "last"
    call = ForwardCall(lm.model, lm.mixed_precision_dtype, last_position_only=last_only)
    identity = {**model_identity(lm), "head": lm.head_record()["kind"]}
    profiled = opts.profiled_point()

    def measure(point: Point, monitor, clock) -> dict:
        folder = lm.artifacts_dir() / PROFILE_FOLDER / point.label if point == profiled else None
        rows = inputs.rows(point.batch_size, point.seq_len)
        return measure_point(lm, monitor, clock, opts, point, rows, call, folder)

    sweep = Sweep(
        TASK, SCHEMA, FORWARD.filename, lambda p: point_key(identity, opts, inputs.sha, p), measure, _describe
    )
    done = run_sweep(lm, sweep, list(opts.points()), opts.max_sweep_seconds)
    print(
        f"\nperf_forward ({identity['model']}, {identity['head']}, {identity['dtype']}, {identity['device']})"
    )
    print(render(done.records))
    for line in best_lines(done.records):
        log(TASK, line)
    return _summary(done.records).result(FORWARD.key, done)
