"""One timed generation of a sweep point, by the model's ``generation_backend``.

Every path generates exactly ``new_tokens`` tokens per row, greedily, with the end-of-sequence ids
suppressed until then (what ``min_new_tokens == max_new_tokens`` does in ``generate``), and marks
time on the one project clock (:mod:`lm_eval_perf.monitor.clock`: CUDA events on a GPU, no sync
per token). Prefill and decode are timed separately from those marks: TTFT = start -> first token,
each decode step = one token mark -> the next.

* ``eager`` - :class:`HFGenerate`: lm-eval's own ``_model_generate`` (``model.generate`` with a
  dynamic cache), a :class:`~lm_eval_perf.monitor.clock.TokenTimer` marking every token.
* ``static`` - :class:`StaticLoop`: a ``transformers.StaticCache``, an eager prefill, then a
  fixed-length greedy decode loop with no stopping criteria and no host sync per token (the argmax
  stays on the device). On a single GPU the decode step is compiled (``torch.compile``,
  coordinate-descent-tuned kernels, no CUDA graphs of its own; ``compile_shapes``: dynamic shapes,
  or static shapes with Inductor's combo kernels, compiled afresh for each point) and captured as one
  ``torch.cuda.CUDAGraph`` that each step replays; the graph advances the cache position itself
  (the cache keeps it in a device tensor). Before it is used, a graphed loop is checked: after one
  iteration the cache must hold ``prompt + new_tokens - 1`` positions, and its first tokens are
  compared with an eager step's.
  If compiling or capturing fails, the next path is tried: graph without compile, then
  ``generate(cache_implementation="static")``; the record names the path that ran and why.
  On a CPU the loop runs eagerly (``static_compile=true`` compiles it there too).

The static loop is plain greedy: processors a checkpoint's ``generation_config`` adds (e.g. a
repetition penalty) are not applied, so its tokens match eager greedy decoding only without them.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import transformers

from lm_eval_perf.models.forward_call import autocast
from lm_eval_perf.monitor.clock import Clock, TokenTimer
from lm_eval_perf.tasks.sweeps.oom import error_text, is_out_of_memory, release_memory

WARMUP_STEPS = 3  # eager/compiled decode steps run before a CUDA graph is captured
CHECK_STEPS = 4  # decode steps compared with eager ones when a compiled or graphed loop is prepared


@dataclass(frozen=True)
class Iteration:
    """One timed generation: seconds from the clock's marks, and the generated ids ``(batch, new)``."""

    ttft_s: float
    step_s: tuple[float, ...]  # one per decode step (new_tokens - 1 of them)
    e2e_s: float
    tokens: torch.Tensor

    @property
    def decode_s(self) -> float:
        return sum(self.step_s)


def _iteration(clock: Clock, start: Any, marks: Sequence[Any], end: Any, tokens: torch.Tensor) -> Iteration:
    steps = tuple(clock.seconds_between(a, b) for a, b in itertools.pairwise(marks))
    return Iteration(clock.seconds_between(start, marks[0]), steps, clock.seconds_between(start, end), tokens)


def _eos_ids(model) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return [] if eos is None else [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def _autocast(lm) -> contextlib.AbstractContextManager:
    return autocast(lm.device.type, getattr(lm, "mixed_precision_dtype", None))


class HFGenerate:
    """lm-eval's ``_model_generate`` with ``min_new_tokens == new_tokens``: the eager backend.

    ``generate_kwargs`` go to ``generate`` too (``cache_implementation="static"`` for the fallback).
    """

    def __init__(
        self,
        lm,
        prompts: torch.Tensor,
        new_tokens: int,
        clock: Clock,
        path: str,
        note: str | None,
        **generate_kwargs,
    ):
        self.lm = lm
        self.prompts = prompts.to(lm.device)
        self.new_tokens = new_tokens
        self.clock = clock
        self.path = path
        self.note = note
        self.check: dict | None = None
        self.generate_kwargs = generate_kwargs

    def run(self) -> Iteration:
        prompt_len = self.prompts.shape[1]
        timer = TokenTimer(self.clock)
        start = self.clock.event()
        output = self.lm._model_generate(
            self.prompts,
            prompt_len + self.new_tokens,
            [],
            min_new_tokens=self.new_tokens,
            attention_mask=torch.ones_like(self.prompts),
            logits_processor=transformers.LogitsProcessorList([timer]),
            **self.generate_kwargs,
        )
        end = self.clock.event()
        tokens = output[:, prompt_len:]
        if tokens.shape[1] != self.new_tokens or len(timer.marks) != self.new_tokens:
            raise RuntimeError(
                f"generate produced {tokens.shape[1]} tokens ({len(timer.marks)} steps), "
                f"expected exactly {self.new_tokens}"
            )
        return _iteration(self.clock, start, timer.marks, end, tokens)


def _greedy(logits: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
    """Argmax ids ``(batch, 1)`` of the last position's logits, end-of-sequence ids excluded."""
    if eos.numel():
        logits = logits.index_fill(-1, eos, float("-inf"))
    return logits.argmax(-1, keepdim=True)


def _decode_step(model, cache, tokens: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
    """One decode step on the static cache: the next ids ``(batch, 1)`` after ``tokens``."""
    logits = model(input_ids=tokens, past_key_values=cache, use_cache=True).logits[:, -1, :]
    return _greedy(logits, eos)


# Inductor options of newer Torch releases (2.11 has both); older ones compile without them.
STATIC_COMBO_OPTIONS = {"benchmark_combo_kernel": True, "combo_kernel_per_subkernel_blocks": True}


@functools.cache
def _compiled_decode_step(shapes: str) -> Callable:
    """The compiled decode step for ``compile_shapes``.

    ``dynamic``: one compilation for batch 1 and one for larger batches, whatever the cache length
    (static shapes alone measured no faster on a dense 7B model). Coordinate-descent tuning of inductor's
    Triton kernels (the fused norms, rotary and residual adds between the GEMVs) costs about 30 s
    more compilation and took 7B batch-1 decode on an H100 from 145.7 to 153.9 tok/s (BENCHMARKS.md).
    ``static``: combo kernels launch a step's independent kernels (e.g. a low-rank model's q, k and
    v reductions) as one; Inductor forms none under dynamic shapes. On an H100, a 7B model at SVD
    ratio 0.4 decoded 1.59x as fast as the dense one with dynamic shapes (254.0 against 159.6 tok/s)
    and 1.79x with static shapes (297.7 against 166.5), each pair from one run (BENCHMARKS.md; a later
    session measured the same static-shape code at 254.9 and at 299.9-308.1 tok/s; on an H200 each
    compilation kept its speed when timed again minutes later, so the spread is the compilation's).
    Each combo is kept only if it times faster than its parts, with block sizes of its own per part
    (:data:`STATIC_COMBO_OPTIONS`). At SVD ratio 0.4 the kernel that reads the two 46 MB ``up``
    factors of gate and up took 34 to 58 µs per layer from one compilation to the next; with these
    options two compilations gave 299.5 and 300.2 tok/s, without them 255.3 and 292.0.
    """
    if shapes == "static":
        from torch._inductor import config as inductor_config

        options = {"coordinate_descent_tuning": True, "combo_kernels": True}
        options |= {k: v for k, v in STATIC_COMBO_OPTIONS.items() if hasattr(inductor_config, k)}
        return torch.compile(_decode_step, dynamic=False, options=options)
    return torch.compile(_decode_step, dynamic=True, options={"coordinate_descent_tuning": True})


def _loop_label(compiled: bool, graphed: bool, shapes: str) -> str:
    """The record's ``decode_path`` of a :class:`StaticLoop`: ``static_loop+compile+cudagraph`` etc."""
    static = compiled and shapes == "static"
    parts = ["static_loop", "compile" if compiled else "", "static_shapes" if static else ""]
    return "+".join(p for p in [*parts, "cudagraph" if graphed else ""] if p)


class StaticLoop:
    """Prefill plus a fixed-length greedy decode over a ``StaticCache`` (see the module docstring)."""

    def __init__(
        self,
        lm,
        prompts: torch.Tensor,
        new_tokens: int,
        clock: Clock,
        compiled: bool,
        graphed: bool,
        note: str | None,
        shapes: str,
    ):
        self.lm = lm
        self.model = lm.model
        self.clock = clock
        self.prompts = prompts.to(lm.device)
        self.new_tokens = new_tokens
        batch, prompt_len = self.prompts.shape
        self.path = _loop_label(compiled, graphed, shapes)
        self.note = note
        self.cache = transformers.StaticCache(config=self.model.config, max_cache_len=prompt_len + new_tokens)
        self.eos = torch.tensor(_eos_ids(self.model), dtype=torch.long, device=lm.device)
        self.next_ids = torch.zeros((batch, 1), dtype=torch.long, device=lm.device)
        self.tokens = torch.zeros((batch, new_tokens), dtype=torch.long, device=lm.device)
        if compiled and shapes == "static":
            torch._dynamo.reset()  # a compilation per point: never Dynamo's recompile limit (then eager)
        step = _compiled_decode_step(shapes) if compiled else _decode_step
        self._step = lambda: self.next_ids.copy_(step(self.model, self.cache, self.next_ids, self.eos))
        self._graph: torch.cuda.CUDAGraph | None = None
        self.check = None
        with torch.no_grad(), _autocast(lm):
            self._prefill()  # allocates the cache's tensors (never inside a graph capture)
            if graphed:
                self._capture()
            if compiled or graphed:
                self.check = self._check()

    def _prefill(self) -> None:
        out = self.model(input_ids=self.prompts, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.next_ids.copy_(_greedy(out.logits[:, -1, :], self.eos))
        self.tokens[:, 0].copy_(self.next_ids[:, 0])

    def _capture(self) -> None:
        device = self.prompts.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(min(WARMUP_STEPS, self.new_tokens - 1)):  # compiles; stays inside the cache
                self._step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # the monitor's thread reads NVML
            self._step()
        self._graph = graph

    def _check(self) -> dict:
        """Eager reference tokens vs one full iteration of this loop; the cache position must advance."""
        steps = min(CHECK_STEPS, self.new_tokens - 1)
        self.cache.reset()
        self._prefill()
        for i in range(1, steps + 1):
            self.next_ids.copy_(_decode_step(self.model, self.cache, self.next_ids, self.eos))
            self.tokens[:, i].copy_(self.next_ids[:, 0])
        reference = self.tokens[:, : steps + 1].clone()
        produced = self.run().tokens
        positions = int(self.cache.get_seq_length())
        expected = self.prompts.shape[1] + self.new_tokens - 1
        if positions != expected:
            raise RuntimeError(f"the decode loop left {positions} cache positions, expected {expected}")
        return {"steps": steps, "tokens_match_eager": bool((produced[:, : steps + 1] == reference).all())}

    def run(self) -> Iteration:
        with torch.no_grad(), _autocast(self.lm):
            self.cache.reset()
            start = self.clock.event()
            self._prefill()
            marks = [self.clock.event()]
            for i in range(1, self.new_tokens):
                if self._graph is not None:
                    self._graph.replay()
                else:
                    self._step()
                self.tokens[:, i].copy_(self.next_ids[:, 0])
                marks.append(self.clock.event())
        return _iteration(self.clock, start, marks, marks[-1], self.tokens.clone())


def prepare(
    lm,
    prompts: torch.Tensor,
    new_tokens: int,
    clock: Clock,
    static_compile: str | bool,
    compile_shapes: str,
):
    """The generator of one point (an object with ``run() -> Iteration``, ``path``, ``note``, ``check``).

    Out-of-memory errors propagate (they are the point's result); other failures of a static path
    fall back to the next one.
    """
    if lm.generation_backend == "eager":
        return HFGenerate(lm, prompts, new_tokens, clock, "hf_generate", None)
    single_gpu = len(lm.devices) == 1
    compiled = single_gpu if static_compile == "auto" else bool(static_compile)
    attempts = [(compiled, single_gpu)]
    if compiled and single_gpu:
        attempts.append((False, True))
    failures: list[str] = []
    for use_compile, use_graph in attempts:
        note = None
        if not single_gpu:
            where = "on a CPU" if not lm.devices else "across several GPUs"
            note = f"no CUDA graph {where}" + ("" if use_compile else "; decode steps not compiled")
        if failures:
            note = "fell back after " + "; ".join(failures)
        try:
            return StaticLoop(lm, prompts, new_tokens, clock, use_compile, use_graph, note, compile_shapes)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise
            label = _loop_label(use_compile, use_graph, compile_shapes)
            failures.append(f"{label} failed with {error_text(exc)}")
        release_memory()
    note = "fell back after " + "; ".join(failures)
    return HFGenerate(
        lm, prompts, new_tokens, clock, "hf_generate_static_cache", note, cache_implementation="static"
    )
