"""The Ray executor: every job a Ray task (``num_gpus=gpus_per_job``) on an existing cluster.

Each task runs :func:`lm_eval_perf.batch.runner.run_job` on whichever node Ray picks: the same
subprocess, staging folder, atomic rename and ``job.json`` as the local pool, with the GPUs Ray
assigned (Ray sets ``CUDA_VISIBLE_DEVICES``). This driver keeps the job store, so resume semantics
are the local ones. ``ray`` is an optional dependency (``pip install 'lm-eval-perf[ray]'``).

Requirements: every node has the same Python environment (lm-eval-perf installed) and sees
``output_dir`` at the same path (a shared file system: NFS, Lustre, ...), because workers write
results and logs there. Starting a cluster::

    ray start --head --port=6379                 # on the head node (GPUs are detected)
    ray start --address=<head-ip>:6379           # on every other node
    python batch_eval.py --config configs/efficientllm.yaml --executor ray --ray-address auto
    ray stop                                     # on every node, when done

``--ray-address`` takes ``auto`` (the cluster this machine belongs to), ``<host>:<port>``,
``ray://<host>:10001`` (Ray client) or ``local`` (start a private single-machine Ray instance,
for trying things out and for tests).

At most as many jobs are submitted as the cluster's GPUs can hold (``gpus_per_job`` each; with
``jobs_per_gpu`` > 1 a job that may share a GPU (:func:`lm_eval_perf.batch.packing.shares`: one GPU,
not timing-sensitive, memory known) takes 1/``jobs_per_gpu`` of one, which Ray packs onto shared
GPUs without checking their memory; with ``workers`` as an extra cap), so submitted jobs are running
jobs; on a cluster without GPUs jobs run on CPUs, ``workers`` (default: the cluster's CPU count) at a
time. A task that dies with its
worker (node lost, preempted) is a failed attempt, retried per ``retries:``.
"""

from __future__ import annotations

import time

from lm_eval_perf.batch import runner
from lm_eval_perf.batch.matrix import Job
from lm_eval_perf.batch.packing import shares
from lm_eval_perf.batch.runner import Outcome
from lm_eval_perf.batch.scheduler import Executor
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.layout import Layout


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise UserInputError(
            "--executor ray needs Ray: pip install 'lm-eval-perf[ray]' (or pip install ray)"
        ) from exc
    return ray


class RayPool(Executor):
    """Runs jobs as Ray tasks on the cluster at ``address``."""

    def __init__(
        self, layout: Layout, address: str, workers: int | None = None, jobs_per_gpu: int = 1
    ) -> None:
        self.jobs_per_gpu = jobs_per_gpu
        ray = self._ray = _import_ray()
        if not ray.is_initialized():
            try:
                ray.init(address=None if address == "local" else address, log_to_driver=False)
            except ConnectionError as exc:
                raise UserInputError(
                    f"no Ray cluster at --ray-address {address}: start one (ray start --head) "
                    "or use --ray-address local"
                ) from exc
        resources = ray.cluster_resources()
        self.layout = layout
        self.address = address
        self.workers = workers
        self.total_gpus = int(resources.get("GPU", 0))
        self.total_cpus = int(resources.get("CPU", 1))
        self._task = ray.remote(max_retries=0)(runner.run_job)
        self._running: dict = {}  # ObjectRef -> (job, number, submitted at Unix s)

    @property
    def on_gpu(self) -> bool:
        return self.total_gpus > 0

    @property
    def description(self) -> str:
        where = f"{self.total_gpus} GPUs" if self.on_gpu else f"{self.total_cpus} CPUs, no GPUs"
        return f"Ray cluster {self.address} ({where})"

    @property
    def active(self) -> int:
        return len(self._running)

    def check(self, jobs: list[Job]) -> None:
        for job in jobs:
            if self.on_gpu and job.gpus > self.total_gpus:
                raise UserInputError(
                    f"{job.key}: needs {job.gpus} GPUs per job, the cluster has {self.total_gpus}"
                )

    def try_start(self, job: Job, number: int) -> bool:
        if self.full():
            return False
        if job.gpus:
            if sum(self._share(j) for j, _, _ in self._running.values()) + self._share(job) > self.total_gpus:
                return False
        elif sum(1 for j, _, _ in self._running.values() if not j.gpus) >= (self.workers or self.total_cpus):
            return False
        task = self._task.options(num_gpus=self._share(job), num_cpus=1, name=job.key)
        ref = task.remote(job, self.layout, number)
        self._running[ref] = (job, number, time.time())
        return True

    def _share(self, job: Job) -> float:
        """GPUs ``job`` takes: ``job.gpus``, or 1/``jobs_per_gpu`` of one for a job that may share."""
        return 1 / self.jobs_per_gpu if shares(job, self.jobs_per_gpu) else float(job.gpus)

    def wait(self, timeout_s: float) -> list[Outcome]:
        if not self._running:
            time.sleep(timeout_s)
            return []
        ready, _ = self._ray.wait(list(self._running), num_returns=1, timeout=timeout_s)
        if ready:
            ready, _ = self._ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
        return [self._outcome(ref) for ref in ready]

    def _outcome(self, ref) -> Outcome:
        job, number, submitted = self._running.pop(ref)
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:
            text = str(exc).strip() or type(exc).__name__
            error = f"Ray task failed: {text.splitlines()[0]}"
            return runner.not_run(job, self.layout, number, submitted, error, text)

    def stop(self) -> list[str]:
        keys = [job.key for job, _, _ in self._running.values()]
        for ref in self._running:
            self._ray.cancel(ref, force=True)
        self._running.clear()
        return keys
