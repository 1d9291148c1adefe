"""Which GPU(s) a job goes to on the local pool: alone, or packed beside other jobs within a memory budget.

A job *shares* a GPU when the config packs jobs (``jobs_per_gpu`` > 1), it needs one GPU, it is
not timing-sensitive and its memory is known (:mod:`lm_eval_perf.batch.memory`). A GPU takes a
sharing job while it holds only sharing jobs, fewer than ``jobs_per_gpu`` of them, and their memory
plus the new job's stays within the GPU's budget (``gpu_memory_budget_gb``, default
:data:`BUDGET_FRACTION` of its memory). Among the GPUs that can take it, the job goes to the one
with the fewest jobs, then the least memory promised, then the lowest index: jobs spread over idle
GPUs first and pack once every GPU has work. Any other job runs alone: it needs GPUs that hold no
job of the pool and that other processes do not use (``busy``). Memory that other processes hold on
a GPU the pool already packs is not taken off its budget: the budget is the pool's share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lm_eval_perf.batch.matrix import Job

BUDGET_FRACTION = 0.9  # of a GPU's memory, when the config gives no gpu_memory_budget_gb


def budgets(totals_bytes: Mapping[int, int | None], budget_gb: float | None) -> dict[int, float | None]:
    """Each GPU's packing budget in GB: ``budget_gb``, else :data:`BUDGET_FRACTION` of its memory
    (None where NVML does not tell it: such a GPU takes one job at a time)."""
    if budget_gb is not None:
        return dict.fromkeys(totals_bytes, budget_gb)
    return {g: None if total is None else BUDGET_FRACTION * total / 1e9 for g, total in totals_bytes.items()}


def shares(job: Job, jobs_per_gpu: int) -> bool:
    """Whether ``job`` may run beside other jobs on its GPU."""
    return jobs_per_gpu > 1 and job.gpus == 1 and not job.timing_sensitive and job.memory_gb is not None


def _takes(job: Job, on: Sequence[Job], busy: bool, jobs_per_gpu: int, budget_gb: float | None) -> bool:
    """Whether a GPU holding the pool's jobs ``on`` (and used by other processes: ``busy``) takes ``job``."""
    if not on:
        return not busy
    if not shares(job, jobs_per_gpu) or len(on) >= jobs_per_gpu or budget_gb is None:
        return False
    if not all(shares(j, jobs_per_gpu) for j in on):
        return False
    return sum(j.memory_gb or 0.0 for j in on) + (job.memory_gb or 0.0) <= budget_gb


def choose(
    job: Job,
    gpus: Sequence[int],
    load: Mapping[int, Sequence[Job]],
    busy: set[int],
    jobs_per_gpu: int,
    budget_gb: Mapping[int, float | None],
) -> list[int] | None:
    """The GPUs (of ``gpus``) for ``job`` now, or None if it must wait; ``load``: the pool's jobs per GPU."""
    able = [g for g in gpus if _takes(job, load.get(g, ()), g in busy, jobs_per_gpu, budget_gb.get(g))]
    if len(able) < job.gpus:
        return None
    if not shares(job, jobs_per_gpu):
        return able[: job.gpus]
    promised = {g: sum(j.memory_gb or 0.0 for j in load.get(g, ())) for g in able}
    return [min(able, key=lambda g: (len(load.get(g, ())), promised[g], g))]
