"""The matrix: models × precisions × compression ratios × tasks, expanded into jobs.

A job is one lm-eval run of one model in one precision (and compression ratio) on one task. Its
``key`` ``<model>/<precision>/<task>`` is both its identity in the job store and its result folder
under ``<output_dir>/results/``:

* ``<model>`` - the model's ``name:`` (default ``org__name[@revision][+adapter]``, see
  :func:`lm_eval_perf.records.names.model_name`);
* ``<precision>`` - the ``precision=`` name, ``default`` when the config has no precisions (the
  checkpoint's own dtype), followed by ``@r<ratio>`` for a compressed model (``bfloat16@r0.6``).
  Ratio 1.0 is the untouched model: it gets no suffix and no ``svd_ratio=``, so it shares its folder
  with the same cell of a config without a ratio axis. With a ``devices`` axis, ``@cpu`` or
  ``@cuda`` follows (``bfloat16@cpu``, ``bfloat16@r0.6@cuda``); without one nothing does, so the
  keys of a config without the axis are what they always were;
* ``<task>`` - the task's ``label:`` (default: its name).

An ``esd`` task with ``stream: true`` in its metadata is not an lm-eval run: its job is
``lm-eval-perf esd`` on the model's checkpoint (:func:`streamed_esd_args`), one per model (precision
folder ``default``), on one GPU whatever ``gpus_per_job`` says; its memory is bounded
(:func:`streamed_esd_memory`), so it packs like any job whose memory is known.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field

from lm_eval_perf.batch.config import BatchConfig, ModelSpec, TaskSpec
from lm_eval_perf.batch.memory import Estimate, estimate
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.names import precision_folder
from lm_eval_perf.tasks.options import boolean_option
from lm_eval_perf.tasks.traits import ESD_BATCH_GIB, traits

# The job's process: lm-eval-perf's CLI, which ends with its parent (see lm_eval_perf.orphans).
CHILD_PROGRAM = (sys.executable, "-m", "lm_eval_perf.cli")
FILTER_KEYS = ("model", "precision", "ratio", "device", "task")


@dataclass(frozen=True)
class Job:
    """One cell of the matrix: what to run and where its results go."""

    key: str  # "<model>/<precision>/<task>", the result folder under results/
    model: str
    pretrained: str
    precision: str | None
    compression_ratio: float | None
    task: str
    task_label: str
    model_args: dict = field(default_factory=dict)
    args: tuple[str, ...] = ()  # the program's arguments, without --output_path and --device
    gpus: int = 0  # GPUs the job needs; 0: it runs on the CPU (--device cpu), else --device cuda
    device: str | None = None  # the matrix's device axis ("cpu" / "cuda"); None: the config has none
    timeout_s: float | None = None
    program: tuple[str, ...] = CHILD_PROGRAM
    timing_sensitive: bool = False  # runs alone on its GPU(s), which are watched (isolation:)
    memory_gb: float | None = None  # GPU memory it needs per GPU, for packing; None: unknown (runs alone)
    memory_basis: str = ""  # how memory_gb was found, or why it is unknown

    @property
    def fingerprint(self) -> str:
        """A hash of what the job runs (not where): a finished result made with other settings differs."""
        return hashlib.sha1(json.dumps([self.program[1:], self.args]).encode()).hexdigest()[:16]

    def identity(self) -> dict:
        """The job's description as written into ``job.json`` and the job store."""
        return {
            "key": self.key,
            "model": self.model,
            "pretrained": self.pretrained,
            "precision": self.precision,
            "compression_ratio": self.compression_ratio,
            "device": self.device,
            "task": self.task,
            "task_label": self.task_label,
            "model_args": self.model_args,
            "gpus": self.gpus,
            "timing_sensitive": self.timing_sensitive,
            "gpu_memory_gb": self.memory_gb,
            "gpu_memory_basis": self.memory_basis,
            "fingerprint": self.fingerprint,
        }


def _model_args(model: ModelSpec, precision: str | None, ratio: float | None, gpus: int) -> dict:
    args: dict = {"pretrained": model.pretrained}
    if model.revision:
        args["revision"] = model.revision
    if model.peft:
        args["peft"] = model.peft
    if precision:
        args["precision"] = precision
    if ratio is not None and ratio < 1.0:
        args["svd_ratio"] = ratio
    if gpus > 1:
        args["parallelize"] = True  # HFLM: device_map=auto over the job's visible GPUs
    return {**args, **model.model_args}


def _lm_eval_args(model_args: dict, task: TaskSpec, include_path: str | None) -> tuple[str, ...]:
    args = ["--model", "perf-hf", "--model_args", json.dumps(model_args), "--tasks", task.name]
    if task.num_fewshot is not None:
        args += ["--num_fewshot", str(task.num_fewshot)]
    if task.limit is not None:
        args += ["--limit", f"{task.limit:g}"]
    if task.batch_size is not None:
        args += ["--batch_size", task.batch_size]
    if task.metadata:
        args += ["--metadata", json.dumps(task.metadata)]
    if task.gen_kwargs:
        args += ["--gen_kwargs", json.dumps(task.gen_kwargs)]
    if task.apply_chat_template:
        args += ["--apply_chat_template"]
    if include_path:
        args += ["--include_path", include_path]
    return tuple(args)


def _memory(model: ModelSpec, precision: str | None, task: TaskSpec, gpus: int, packing: bool) -> Estimate:
    """The GPU memory of a job for packing (only estimated when the config packs jobs)."""
    given = [gb for gb in (model.gpu_memory_gb, task.gpu_memory_gb) if gb is not None]
    if given:
        return Estimate(max(given), "gpu_memory_gb of the config")
    if not packing or gpus != 1:
        return Estimate(None, "not packed" if gpus <= 1 else f"split over {gpus} GPUs: runs alone")
    return estimate(
        model.pretrained, model.revision, precision, model.model_args, task.batch_size, traits(task.name)
    )


def is_streamed_esd(task: TaskSpec) -> bool:
    """An ``esd`` task with ``stream: true``: run by ``lm-eval-perf esd``, not lm-eval."""
    return task.name == "esd" and boolean_option(
        f"{task.where}.metadata.stream", task.metadata.get("stream", False)
    )


def streamed_esd_args(model: ModelSpec, task: TaskSpec) -> tuple[str, ...]:
    """``lm-eval-perf esd`` arguments of a streamed ESD job (``--output_path``/``--device`` come later)."""
    args = ["esd", "--model", model.pretrained]
    if model.revision:
        args += ["--revision", model.revision]
    if model.peft:
        args += ["--peft", model.peft]
    args += ["--metadata", json.dumps(task.metadata)]
    return tuple(args)


def streamed_esd_memory(task: TaskSpec) -> Estimate:
    """GPU memory of a streamed ESD job: the batch being solved and the one read ahead (``batch_gib``
    each), their Gram matrices in float64 slices of at most 256 MB, the solver's workspace and the
    CUDA context - bounded by 2 × ``batch_gib`` + 1.5 GB whatever the model's size."""
    given = task.gpu_memory_gb
    if given is not None:
        return Estimate(given, "gpu_memory_gb of the config")
    batch_gib = float(task.metadata.get("batch_gib", ESD_BATCH_GIB))
    return Estimate(2 * batch_gib * 2**30 / 1e9 + 1.5, "streamed ESD: 2 × batch_gib + 1.5 GB")


def _streamed_esd_job(model: ModelSpec, task: TaskSpec, label: str, gpus: int, device: str | None) -> Job:
    model_args = {
        k: v
        for k, v in (("pretrained", model.pretrained), ("revision", model.revision), ("peft", model.peft))
        if v
    }
    memory = streamed_esd_memory(task)
    return Job(
        key=f"{model.name}/{precision_folder(None, None, device)}/{label}",
        model=model.name,
        pretrained=model.pretrained,
        precision=None,
        compression_ratio=None,
        device=device,
        task=task.name,
        task_label=label,
        model_args=model_args,
        args=streamed_esd_args(model, task),
        gpus=min(gpus, 1),  # it reads one tensor at a time: one GPU is all it uses
        timeout_s=task.timeout_s,
        memory_gb=memory.gb,
        memory_basis=memory.basis,
    )


def _gpus(model: ModelSpec, device: str | None, on_gpu: bool) -> int:
    """GPUs of one of ``model``'s cells: none on the CPU; without a device axis, the model's
    ``gpus_per_job`` where the executor has GPUs (``on_gpu``); a ``cuda`` cell asks for them anyway
    (an executor without GPUs fails it, see :meth:`lm_eval_perf.batch.scheduler.Executor.cannot_run`)."""
    if device == "cpu" or (device is None and not on_gpu):
        return 0
    return model.gpus_per_job


def expand(config: BatchConfig, on_gpu: bool) -> list[Job]:
    """Every job of ``config``, models outermost; ``on_gpu`` False runs every job without a device
    axis on the CPU. With ``jobs_per_gpu`` > 1 each GPU job gets its memory estimate
    (:mod:`lm_eval_perf.batch.memory`)."""
    tasks = {t.label: t for t in config.tasks}
    include = str(config.include_path) if config.include_path else None
    jobs = []
    for model in config.models:
        streamed = [label for label in model.tasks or tuple(tasks) if is_streamed_esd(tasks[label])]
        for device in model.devices:
            for label in streamed:
                jobs.append(
                    _streamed_esd_job(model, tasks[label], label, _gpus(model, device, on_gpu), device)
                )
        for precision, ratio, device in model.cells():
            gpus = _gpus(model, device, on_gpu)
            for label in model.tasks or tuple(tasks):
                if label in streamed:
                    continue
                task = tasks[label]
                model_args = _model_args(model, precision, ratio, gpus)
                memory = _memory(model, precision, task, gpus, config.jobs_per_gpu > 1)
                sensitive = task.timing_sensitive
                jobs.append(
                    Job(
                        key=f"{model.name}/{precision_folder(precision, ratio, device)}/{label}",
                        model=model.name,
                        pretrained=model.pretrained,
                        precision=precision,
                        compression_ratio=ratio,
                        device=device,
                        task=task.name,
                        task_label=label,
                        model_args=model_args,
                        args=_lm_eval_args(model_args, task, include),
                        gpus=gpus,
                        timeout_s=task.timeout_s,
                        timing_sensitive=traits(task.name).timing_sensitive
                        if sensitive is None
                        else sensitive,
                        memory_gb=memory.gb,
                        memory_basis=memory.basis,
                    )
                )
    return jobs


def _matches(job: Job, key: str, values: list[str]) -> bool:
    if key == "ratio":
        try:
            wanted = {float(v) for v in values}
        except ValueError as exc:
            raise UserInputError(f"--only ratio=...: {exc}") from exc
        return (job.compression_ratio if job.compression_ratio is not None else 1.0) in wanted
    if key == "precision":
        return bool({job.precision or "default", job.key.split("/")[1]} & set(values))
    if key == "task":
        return bool({job.task_label, job.task} & set(values))
    if key == "device":
        return ("cuda" if job.gpus else "cpu") in values
    text = f"{job.model} {job.pretrained}" if key == "model" else job.key
    return any(v in text for v in values)


def select(jobs: list[Job], filters: list[str]) -> list[Job]:
    """The jobs passing every filter. A filter is ``key=v1,v2`` - any value may match: ``model`` as a
    substring of the model's name or ``pretrained``, ``task`` exactly (its label or lm-eval name),
    ``precision`` exactly (``bfloat16`` or a folder name such as ``bfloat16@r0.6``), ``ratio`` as a
    number (1 for the untouched model), ``device`` exactly (``cpu`` or ``cuda``: where the job runs) -
    or a bare ``v1,v2``, substrings of the job key ``model/precision/task``."""
    for spec in filters:
        key, sep, value = spec.partition("=")
        key, values = (key.strip(), value) if sep else ("", spec)
        if sep and key not in FILTER_KEYS:
            raise UserInputError(f"--only {spec}: unknown key {key!r} (use {', '.join(FILTER_KEYS)})")
        wanted = [v.strip() for v in values.split(",") if v.strip()]
        if not wanted:
            raise UserInputError(f"--only {spec!r}: nothing to match")
        jobs = [j for j in jobs if _matches(j, key, wanted)]
    return jobs
