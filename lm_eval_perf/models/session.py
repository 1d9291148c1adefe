"""One evaluation's measurements inside ``perf-hf``: a running monitor plus per-task bookkeeping.

A session starts with the first request after the model loaded (or after the previous record was
taken) and ends when lm-eval asks for the model info at the end of ``simple_evaluate``. Each call of
a request method is one window named after its kind (``loglikelihood``, ``loglikelihood_rolling``,
``generate_until``).

Per-task figures: lm-eval hands the model the requests of all tasks at once, and its batches mix
tasks, so a batch's time cannot be split by task exactly. Each task gets its exact request count,
and the kind's seconds and joules in proportion to the characters of its requests' arguments
(``attribution: "prompt_character_share"``). With one task per kind this is exact.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lm_eval_perf.monitor import PerformanceMonitor


@dataclass
class _OpenForward:
    """A loglikelihood forward pass whose rows are still being reported."""

    latency_s: float
    batch_size: int
    prompt_len: int
    lengths: list[int] = field(default_factory=list)


class TokenTimer:
    """A logits processor that marks the time of every generated token (scores pass unchanged)."""

    def __init__(self, clock):
        self.clock = clock
        self.marks: list = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.marks.append(self.clock.event())
        return scores


class EvalSession:
    """Wraps a :class:`PerformanceMonitor` for the duration of one lm-eval evaluation."""

    def __init__(self, monitor: PerformanceMonitor):
        self.monitor = monitor
        self.kind: str | None = None
        self._forward: _OpenForward | None = None
        self._tasks: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        monitor.__enter__()

    @property
    def clock(self):
        return self.monitor.clock

    # -- request methods ------------------------------------------------------------------------

    def begin(self, kind: str, requests: Sequence) -> None:
        """A request method starts: open its window and count requests per task."""
        self.kind = kind
        for request in requests:
            entry = self._tasks[kind][getattr(request, "task_name", None) or "unknown"]
            entry[0] += 1
            entry[1] += sum(len(a) for a in request.args if isinstance(a, str))
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

    def close(self) -> dict:
        """Stop the monitor and return the efficiency record with a per-task block."""
        if self.kind is not None:
            self.end()
        self.monitor.__exit__(None, None, None)
        record = self.monitor.summary()
        record["tasks"] = self._per_task(record["kinds"])
        return record

    def _per_task(self, kinds: dict) -> dict:
        tasks: dict[str, dict] = defaultdict(
            lambda: {"requests": 0, "seconds": 0.0, "energy_j": 0.0, "kinds": {}}
        )
        for kind, per_task in self._tasks.items():
            block = kinds.get(kind, {})
            total_chars = sum(chars for _, chars in per_task.values()) or 1
            for task, (count, chars) in per_task.items():
                share = chars / total_chars
                seconds = share * block.get("seconds", 0.0)
                energy = block.get("energy_j")
                entry = tasks[task]
                entry["requests"] += int(count)
                entry["seconds"] += seconds
                entry["energy_j"] = (
                    None
                    if energy is None or entry["energy_j"] is None
                    else (entry["energy_j"] + share * energy)
                )
                entry["kinds"][kind] = {"requests": int(count), "share": share}
        for entry in tasks.values():
            entry["attribution"] = "prompt_character_share"
        return dict(tasks)
