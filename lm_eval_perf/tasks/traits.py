"""How a task uses a GPU, for batch_eval's job packing (:mod:`lm_eval_perf.batch.memory`, ``.local``).

:data:`TRAITS` has one line per task that differs from :data:`DEFAULT`; a new task that measures
time, energy or GPU activity adds itself here with ``timing_sensitive=True``. A batch config may
override either field per task (``timing_sensitive:``, ``gpu_memory_gb:``).

* ``timing_sensitive`` - the task's figures are the GPU's time, energy or activity (a throughput
  sweep, a forward-latency measurement): another job on the same GPU would change them, so such a
  job always runs alone on its GPU(s), and the local pool watches those GPUs for other processes
  (``isolation:``). Every perf-hf job records the efficiency of its evaluation too, but an accuracy
  task's figures are its scores: a packed accuracy job keeps its scores, and its job record lists
  what else ran on the GPU (``gpu_sharing``), since its device-wide efficiency figures (energy,
  power, PCU, AMU) then include the other jobs.
* ``positions`` - tokens per row of the task's longest forward pass, for the activation and KV
  memory estimate: a number, ``"max_length"`` (the model's context length, as lm-eval's rolling
  perplexity windows) or ``0`` (no forward pass over text).
* ``extra_gb`` - device memory the task needs beyond weights and per-row activations, GB.

``esd`` is not timing-sensitive: its results are spectra of the weights, which no neighbour changes;
its ``eig_seconds``/``fit_seconds`` of a packed run include the neighbours (the job record says who).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_POSITIONS = 2048  # lm-eval's default max_length: an upper bound for most prompts
ESD_BATCH_GIB = 1.0  # the esd task's default ``batch_gib``: device GiB of one stacked batch of weights


@dataclass(frozen=True)
class TaskTraits:
    """What batch_eval needs to know to place a task's jobs on a GPU."""

    timing_sensitive: bool = False
    positions: int | Literal["max_length"] = DEFAULT_POSITIONS
    extra_gb: float = 0.0


DEFAULT = TaskTraits()
TRAITS: dict[str, TaskTraits] = {
    "perf_throughput": TaskTraits(timing_sensitive=True),
    "perf_forward": TaskTraits(timing_sensitive=True),
    # one stacked batch of Gram matrices (DEFAULT_BATCH_BYTES, 1 GiB) plus eigvalsh's workspace
    "esd": TaskTraits(positions=0, extra_gb=2.0),
    "perplexity_local": TaskTraits(positions="max_length"),
}


def traits(task: str) -> TaskTraits:
    """The traits of lm-eval task (or group) ``task``."""
    return TRAITS.get(task, DEFAULT)
