"""One evaluation's measurements inside ``perf-hf``: a running monitor plus per-task bookkeeping.

A session starts with the first request after the model loaded (or after the previous record was
taken) and ends when lm-eval asks for the model info at the end of ``simple_evaluate`` - or, in a
data-parallel run, at lm-eval's first gather after the last request (see ``PerfHFLM.gather_object``).
Each call of a request method is one window named after its kind (``loglikelihood``,
``loglikelihood_rolling``, ``generate_until``). The session is a context manager: entering it starts
its monitor, leaving it stops the monitor; :meth:`EvalSession.state` is then this process's share,
and :func:`efficiency_record` makes one record of the shares of every rank.

Per-task figures: lm-eval hands the model the requests of all tasks at once, and its batches mix
tasks, so a batch's time cannot be split by task exactly. Each task gets its exact request count,
and the kind's seconds and joules in proportion to the characters of its requests' arguments
(``attribution: "prompt_character_share"``). With one task per kind this is exact.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter

import torch

from lm_eval_perf.monitor import PerformanceMonitor
from lm_eval_perf.monitor.clock import TokenTimer
from lm_eval_perf.monitor.metrics import ModelShape
from lm_eval_perf.monitor.peaks import DevicePeaks
from lm_eval_perf.monitor.record import MonitorState, build_record

# task -> [requests, characters of the requests' string arguments], per request kind
TaskCounts = dict[str, dict[str, list[int]]]


@dataclass
class SessionState:
    """One process's share of an evaluation: what its monitor measured and its requests per task."""

    monitor: MonitorState
    tasks: TaskCounts


@dataclass
class _OpenForward:
    """A loglikelihood forward pass whose rows are still being reported."""

    latency_s: float
    batch_size: int
    prompt_len: int
    lengths: list[int] = field(default_factory=list)


class EvalSession:
    """A :class:`PerformanceMonitor` for the duration of one lm-eval evaluation; a context manager
    (entering starts the monitor, leaving stops it)."""

    def __init__(self, monitor: PerformanceMonitor):
        self.monitor = monitor
        self.kind: str | None = None
        self._forward: _OpenForward | None = None
        self._tasks: TaskCounts = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        self._padding: dict[str, int] = {}  # request kind -> padding copies (data-parallel ranks)

    def __enter__(self) -> EvalSession:
        self.monitor.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.kind is not None:
            self.end()
        self.monitor.__exit__(*exc_info)

    @property
    def clock(self):
        return self.monitor.clock

    @contextlib.contextmanager
    def paused(self, what: str) -> Iterator[None]:
        """Model work in the block (``what``: a batch-size probe, a plugin task) stays out of the
        evaluation's windows and allocator peaks."""
        self._flush_forward()
        with self.monitor.paused(what):
            yield

    # -- request methods ------------------------------------------------------------------------

    def begin(self, kind: str, requests: Sequence) -> None:
        """A request method starts: open its window and count requests per task (without the copies
        lm-eval appends to even out data-parallel ranks, see :func:`rank_padding`)."""
        self.kind = kind
        padding = rank_padding(requests)
        self._padding[kind] = self._padding.get(kind, 0) + padding
        for task, (count, chars) in task_counts(requests[: len(requests) - padding]).items():
            entry = self._tasks[kind][task]
            entry[0] += count
            entry[1] += chars
        self.monitor.begin_window(kind)

    def end(self) -> None:
        """The request method returned: flush the last forward pass and close the window."""
        self._flush_forward()
        if self.kind is not None:
            self.monitor.end_window(self.kind)
        self.kind = None

    # -- loglikelihood forward passes -----------------------------------------------------------

    def forward(self, latency_s: float, batch_size: int, prompt_len: int) -> None:
        """One ``_model_call``: its rows' real lengths follow through :meth:`row`."""
        self._flush_forward()
        self._forward = _OpenForward(latency_s, batch_size, prompt_len)

    def row(self, tokens: int | None) -> None:
        """One row of the last forward pass was scored; ``tokens`` = its unpadded input length."""
        if self._forward is not None and tokens is not None:
            self._forward.lengths.append(tokens)

    def _flush_forward(self) -> None:
        f = self._forward
        if f is None or self.kind is None:
            return
        self._forward = None
        complete = len(f.lengths) == f.batch_size
        self.monitor.record_request(
            self.kind,
            f.latency_s,
            batch_size=f.batch_size,
            prompt_tokens=sum(f.lengths) if complete else f.batch_size * f.prompt_len,
            prompt_len=f.prompt_len,
            row_tokens=f.lengths if complete else None,
        )

    # -- generation ------------------------------------------------------------------------------

    def generation(
        self,
        latency_s: float,
        context: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output: torch.Tensor,
        kept_tokens: int,
        timer: TokenTimer,
        start_mark,
    ) -> None:
        """One ``generate`` call: count prompt tokens, derive TTFT and TPOT; ``kept_tokens`` are the
        generated tokens lm-eval keeps (:mod:`lm_eval_perf.models.stops`), the steps tell the computed."""
        batch, prompt_len = context.shape
        steps = output.shape[1] - prompt_len
        rows = attention_mask.sum(1).tolist() if attention_mask is not None else [prompt_len] * batch
        ttft = tpot = None
        if timer.marks:
            ttft = self.clock.seconds_between(start_mark, timer.marks[0])
            if len(timer.marks) > 1:
                decode = self.clock.seconds_between(timer.marks[0], timer.marks[-1])
                tpot = decode / (len(timer.marks) - 1)
        self.monitor.record_request(
            self.kind or "generate_until",
            latency_s,
            batch_size=batch,
            prompt_tokens=sum(rows),
            generated_tokens=kept_tokens,
            prompt_len=prompt_len,
            decode_steps=len(timer.marks) or steps,
            ttft_s=ttft,
            tpot_s=tpot,
            row_tokens=rows,
        )

    # -- the record ------------------------------------------------------------------------------

    def state(self, **extra) -> SessionState:
        """This process's share, once the session was left; ``extra`` goes into its ``ranks`` entry."""
        tasks = {kind: {task: list(v) for task, v in per.items()} for kind, per in self._tasks.items()}
        return SessionState(self.monitor.state(padding_requests=dict(self._padding), **extra), tasks)


def task_counts(requests: Sequence) -> dict[str, tuple[int, int]]:
    """Per task (``task_name``, else ``unknown``): the requests and the characters of their string
    arguments.

    One call of a request method passes requests of one kind, whose arguments have one layout
    (``(context, continuation)``, ``(text,)``, ``(context, generation kwargs)``), so the characters
    are counted position by position with ``map``: a multiple-choice task has a request per choice,
    and a Python loop per request would cost perf-hf a few per cent of a small classifier's run."""
    if not requests:
        return {}
    names = [name or "unknown" for name in map(attrgetter("task_name"), requests)]
    arguments = list(map(attrgetter("args"), requests))
    texts = [i for i, a in enumerate(arguments[0]) if isinstance(a, str)]
    tasks = set(names)
    if len(tasks) == 1:
        return {
            tasks.pop(): (len(requests), sum(sum(map(len, map(itemgetter(i), arguments))) for i in texts))
        }
    chars = map(sum, zip(*(map(len, map(itemgetter(i), arguments)) for i in texts)))
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, count in zip(names, chars):
        entry = totals[name]
        entry[0] += 1
        entry[1] += count
    return {name: (count, chars_) for name, (count, chars_) in totals.items()}


def rank_padding(requests: Sequence) -> int:
    """How many entries at the end of ``requests`` are padding: in a data-parallel run lm-eval
    appends copies of a rank's last request (``repeats`` entries each) until every rank has as many
    requests as the largest; a request's own ``repeats`` copies are not padding."""
    if not requests:
        return 0
    last, trailing = requests[-1], 0
    for request in reversed(requests):
        if request is not last:
            break
        trailing += 1
    return trailing - int(getattr(last, "repeats", 1) or 1)


def efficiency_record(
    states: list[SessionState], shape: ModelShape | None, peaks: DevicePeaks | None
) -> dict:
    """The efficiency record of an evaluation made of ``states`` (one per rank) with a per-task block."""
    record = build_record([s.monitor for s in states], shape, peaks)
    counts: TaskCounts = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for state in states:
        for kind, per_task in state.tasks.items():
            for task, (requests, chars) in per_task.items():
                counts[kind][task][0] += requests
                counts[kind][task][1] += chars
    record["tasks"] = _per_task(counts, record["kinds"])
    for kind, block in record["kinds"].items():
        # requests lm-eval asked for; ``samples`` counts the rows the model computed, fewer for
        # loglikelihood (lm-eval scores requests that share a context in one row)
        block["requests"] = sum(requests for requests, _ in counts.get(kind, {}).values())
    return record


def _per_task(counts: TaskCounts, kinds: dict) -> dict:
    """Per task: exact request counts; the kind's seconds and joules by prompt-character share."""
    tasks: dict[str, dict] = defaultdict(
        lambda: {"requests": 0, "seconds": 0.0, "energy_j": 0.0, "kinds": {}}
    )
    for kind, per_task in counts.items():
        block = kinds.get(kind, {})
        total_chars = sum(chars for _, chars in per_task.values()) or 1
        for task, (count, chars) in per_task.items():
            share = chars / total_chars
            energy = block.get("energy_j")
            entry = tasks[task]
            entry["requests"] += int(count)
            entry["seconds"] += share * block.get("seconds", 0.0)
            entry["energy_j"] = (
                None if energy is None or entry["energy_j"] is None else entry["energy_j"] + share * energy
            )
            entry["kinds"][kind] = {"requests": int(count), "share": share}
    for entry in tasks.values():
        entry["attribution"] = "prompt_character_share"
    return dict(tasks)
