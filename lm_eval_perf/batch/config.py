"""The batch config: a YAML file naming models × precisions × compression ratios × tasks.

    output_dir: ../results/study        # relative paths are relative to this file's folder
    executor: local                     # local (GPU pool, default) | ray | slurm
    ray_address: auto                   # executor: ray only; auto | local | host:port | ray://...
    slurm:                              # executor: slurm only (see lm_eval_perf/batch/slurm.py)
      partition: gpu                    # --partition (default: the cluster's)
      account: my-lab                   # --account
      time_limit_min: 120               # --time of every job (default: the job's timeout + 5 min)
      mem_gb: 32                        # --mem
      cpus_per_job: 8                   # --cpus-per-task
      array_parallelism: 16             # submit job arrays, this many tasks of each running at most
      sbatch: {qos: high, constraint: h100}  # further sbatch options (--qos=high ...)
      setup: ["module load cuda"]       # shell lines the job runs first
    gpus_per_job: 1                     # >1: the model is split over the GPUs (parallelize=True); 0: CPU
    workers: null                       # at most this many jobs at once (default: one per free GPU, 1 on CPU)
    jobs_per_gpu: 1                     # >1: pack jobs onto a GPU while their memory fits the budget
    gpu_memory_budget_gb: null          # per GPU, for packing (default: 90 % of its memory)
    isolation: warn                     # other processes on a timing-sensitive job's GPU: warn | error | wait
    isolation_wait_s: 600               # isolation: wait - seconds to wait for a free GPU (null: no limit)
    timeout: 21600                      # seconds per job (null: none); a task may set its own
    retries: 0                          # automatic re-runs of a failed job within one run
    include_path: ./my_tasks            # extra lm-eval task folder (--include_path)
    model_args: {monitor_interval: 0.2} # added to every model's model_args
    precisions: [bfloat16, float16]     # perf-hf precision= names; absent: the checkpoint's own dtype
    ratios: [1.0, 0.8, 0.6]             # SVD compression ratios (svd_ratio=); absent: no ratio axis
    devices: [cpu, cuda]                # where each cell runs (lm-eval's --device); absent: no device axis
    models:
      - pretrained: org/model           # hub id, ./local/path, arch:<preset>, bundled:smollm2
        name: short-name                # folder name of its results (default: from pretrained)
        revision: main
        peft: ./adapters/lora1
        model_args: {attn_implementation: sdpa}
        precisions: [bfloat16]          # per-model override of the axes
        ratios: [1.0]
        devices: [cuda]
        tasks: [bbh]                    # only these task labels for this model
        gpus_per_job: 2
        gpu_memory_gb: 20               # per GPU, replaces the estimate (batch/memory.py) for packing
      - models_csv: models.csv          # one model per CSV row (model[,revision][,source_model][,name]);
        tasks: [esd]                    # every other key of the entry applies to each row
    tasks:
      - name: leaderboard_bbh           # lm-eval task or group
        label: bbh                      # folder name of its results (default: name)
        num_fewshot: 3
        limit: 10
        batch_size: auto
        metadata: {bbh_dir: "${LM_EVAL_PERF_BBH_DIR:-${CONFIG_DIR}/../data/bbh}"}  # --metadata
        gen_kwargs: {max_gen_toks: 2048}  # --gen_kwargs
        apply_chat_template: true       # --apply_chat_template (few-shot examples as turns)
        timeout: 3600
        timing_sensitive: false         # runs alone on its GPU (default: lm_eval_perf/tasks/traits.py)
        gpu_memory_gb: 8                # per GPU, replaces the estimate (the larger of model's and task's)

An ``esd`` task with ``metadata: {stream: true}`` runs as ``lm-eval-perf esd`` (the checkpoint read
tensor by tensor, no lm-eval, no model load; see :mod:`lm_eval_perf.tasks.esd.cli`): one job per model
whatever its ``precisions``/``ratios`` (it reads the weights as stored; folder ``default``), its
``model_args`` unused. Its GPU memory is bounded by its ``batch_gib`` (see
:func:`lm_eval_perf.batch.matrix.streamed_esd_memory`), so with ``jobs_per_gpu`` > 1 such jobs pack
like any other.

``devices`` makes the device a dimension of the matrix: each cell runs once per device, with
lm-eval's own ``--device cpu`` or ``--device cuda`` (never ``device=`` in ``model_args``, which perf-hf
refuses), and its key names the device (``bfloat16@cpu``, see :mod:`lm_eval_perf.batch.matrix`). A
``cpu`` cell takes no GPU; a ``cuda`` cell needs ``gpus_per_job`` >= 1 and fails on its own, in one
line, where the executor has no GPU. Without ``devices`` a job runs where the executor is: on a GPU
when the machine (or cluster) has one, else on the CPU - as before the axis existed.

Strings may use ``${VAR}`` / ``${VAR:-default}`` (see :mod:`lm_eval_perf.batch.envexpand`);
``${CONFIG_DIR}`` is this file's folder. Errors are one line naming the key path, e.g.
``models[2].precisions[0]: unknown precision 'int3': use one of bfloat16, ...``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lm_eval_perf.batch.envexpand import expand
from lm_eval_perf.batch.model_list import read_model_list
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.names import folder_name, local_path, model_name, precision_folder, slug
from lm_eval_perf.records.precisions import validate_precision

EXECUTORS = ("local", "ray", "slurm")
DEVICES = ("cpu", "cuda")
ISOLATION = ("warn", "error", "wait")
DEFAULT_TIMEOUT_S = 6 * 3600.0
DEFAULT_ISOLATION_WAIT_S = 600.0
TOP_KEYS = (
    "output_dir",
    "executor",
    "ray_address",
    "slurm",
    "gpus_per_job",
    "workers",
    "timeout",
    "retries",
    "jobs_per_gpu",
    "gpu_memory_budget_gb",
    "isolation",
    "isolation_wait_s",
    "include_path",
    "model_args",
    "precisions",
    "ratios",
    "devices",
    "models",
    "tasks",
)
MODEL_KEYS = (
    "pretrained",
    "models_csv",
    "name",
    "revision",
    "peft",
    "model_args",
    "precisions",
    "ratios",
    "devices",
    "tasks",
    "gpus_per_job",
    "gpu_memory_gb",
)
SLURM_KEYS = (
    "partition",
    "account",
    "time_limit_min",
    "mem_gb",
    "cpus_per_job",
    "array_parallelism",
    "sbatch",
    "setup",
)
# sbatch options batch_eval sets itself (job name, array, log files, signal), or has a key for
SBATCH_RESERVED = {
    "job-name": "set by batch_eval (it finds its jobs by name)",
    "array": "set by batch_eval (slurm.array_parallelism)",
    "output": "set by batch_eval (Slurm's log of the job)",
    "error": "set by batch_eval (Slurm's log of the job)",
    "open-mode": "set by batch_eval",
    "signal": "set by submitit",
    "wrap": "set by batch_eval",
    "partition": "use slurm.partition",
    "account": "use slurm.account",
    "time": "use slurm.time_limit_min",
    "mem": "use slurm.mem_gb",
    "cpus-per-task": "use slurm.cpus_per_job",
    "gpus-per-node": "use gpus_per_job",
}
TASK_KEYS = (
    "name",
    "label",
    "num_fewshot",
    "limit",
    "batch_size",
    "metadata",
    "gen_kwargs",
    "apply_chat_template",
    "timeout",
    "timing_sensitive",
    "gpu_memory_gb",
)


@dataclass(frozen=True)
class TaskSpec:
    """One lm-eval task (or group) with its options; ``label`` names its result folder."""

    name: str
    label: str
    num_fewshot: int | None = None
    limit: float | None = None  # a count (>= 1) or a fraction of the documents (< 1)
    batch_size: str | None = None  # "8", "auto" or "auto:N"
    metadata: dict = field(default_factory=dict)
    gen_kwargs: dict = field(default_factory=dict)
    apply_chat_template: bool = False
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    timing_sensitive: bool | None = None  # None: the task's traits (lm_eval_perf.tasks.traits)
    gpu_memory_gb: float | None = None  # None: estimated
    where: str = "tasks[0]"


@dataclass(frozen=True)
class ModelSpec:
    """One model and the axes it is run over."""

    pretrained: str
    name: str  # folder name of its results
    revision: str | None = None
    peft: str | None = None
    model_args: dict = field(default_factory=dict)
    precisions: tuple[str | None, ...] = (None,)  # None: no precision= (the checkpoint's own dtype)
    ratios: tuple[float | None, ...] = (None,)  # None: no compression axis
    devices: tuple[str | None, ...] = (None,)  # "cpu" / "cuda"; None: no device axis (where the executor is)
    tasks: tuple[str, ...] | None = None  # task labels; None: all
    gpus_per_job: int = 1
    gpu_memory_gb: float | None = None  # None: estimated
    where: str = "models[0]"

    def cells(self) -> list[tuple[str | None, float | None, str | None]]:
        """(precision, ratio, device) of each of the model's cells, in matrix order."""
        return [(p, r, d) for p in self.precisions for r in self.ratios for d in self.devices]


@dataclass(frozen=True)
class SlurmSpec:
    """The ``slurm:`` block: what every Slurm job asks for (None: the cluster's default)."""

    partition: str | None = None
    account: str | None = None
    time_limit_min: int | None = None  # None: each job's timeout + slurm.GRACE_MIN
    mem_gb: float | None = None
    cpus_per_job: int | None = None
    array_parallelism: int | None = None  # None: one sbatch per job, no arrays
    sbatch: dict = field(default_factory=dict)  # option name (dashes) -> value; True: a bare flag
    setup: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchConfig:
    """A validated batch config (paths absolute)."""

    source: Path
    output_dir: Path
    executor: str
    ray_address: str
    workers: int | None
    retries: int
    include_path: Path | None
    models: tuple[ModelSpec, ...]
    tasks: tuple[TaskSpec, ...]
    jobs_per_gpu: int = 1
    gpu_memory_budget_gb: float | None = None  # None: GPU_BUDGET_FRACTION of each GPU's memory
    isolation: str = "warn"
    isolation_wait_s: float | None = DEFAULT_ISOLATION_WAIT_S  # None: no limit
    slurm: SlurmSpec = field(default_factory=SlurmSpec)


def load_config(path: str | Path) -> BatchConfig:
    """Read and validate the YAML config at ``path``; any problem is a one-line :class:`UserInputError`."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise UserInputError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(source.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserInputError(f"config file {path} is not valid YAML{where}: {problem}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read config file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise UserInputError(
            f"config file {path}: expected a mapping of keys (output_dir, models, tasks, ...)"
        )
    base = source.resolve().parent
    variables = {**os.environ, "CONFIG_DIR": str(base)}
    return _parse(_expand_all(raw, variables, ""), source.resolve(), base)


def _expand_all(value: Any, variables: dict[str, str], where: str) -> Any:
    if isinstance(value, str):
        return expand(value, variables, where or "config")
    if isinstance(value, dict):
        return {k: _expand_all(v, variables, _join(where, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_all(v, variables, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_keys(mapping: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            raise UserInputError(
                f"{_join(where, str(key))}: unknown key"
                + (f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(allowed)})")
            )


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserInputError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _list(value: Any) -> list:
    """A list; a single scalar counts as a list of one."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserInputError(f"{where}: expected a non-empty string, got {value!r}")
    return value.strip()


def _integer(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserInputError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _gigabytes(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise UserInputError(f"{where}: expected GB > 0 or null, got {value!r}")
    return float(value)


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise UserInputError(f"{where}: expected true or false, got {value!r}")
    return value


def _timeout(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise UserInputError(f"{where}: expected seconds > 0 or null, got {value!r}")
    return float(value)


def _axis(value: Any, where: str, parse: Callable[[Any, str], Any]) -> tuple:
    """A matrix axis: ``(None,)`` when absent, else each item parsed by ``parse(item, its_path)``,
    no item listed twice."""
    items = _list(value)
    if not items:
        return (None,)
    out = [parse(item, f"{where}[{i}]" if isinstance(value, list) else where) for i, item in enumerate(items)]
    return _unique(out, where)


def _precision(name: Any, where: str) -> str:
    try:
        return validate_precision(_string(name, where))
    except UserInputError as exc:
        raise UserInputError(f"{where}: {exc}") from exc


def _ratio(ratio: Any, where: str) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise UserInputError(f"{where}: {ratio!r} is not a compression ratio in (0, 1]")
    return float(ratio)


def _device(name: Any, where: str) -> str:
    text = _string(name, where)
    if text in DEVICES:
        return text
    if text.startswith("cuda:"):
        raise UserInputError(
            f"{where}: {text!r}: use cuda (batch_eval gives each job its GPUs by CUDA_VISIBLE_DEVICES)"
        )
    hint = difflib.get_close_matches(text.lower(), (*DEVICES, "gpu"), n=1)
    shown = "cuda" if hint == ["gpu"] else hint[0] if hint else None
    raise UserInputError(
        f"{where}: unknown device {text!r}"
        + (f" (did you mean {shown!r}?)" if shown else "")
        + f": use {' or '.join(DEVICES)}"
    )


def _unique(values: list, where: str) -> tuple:
    for i, value in enumerate(values):
        if value in values[:i]:
            raise UserInputError(f"{where}[{i}]: {value!r} is listed twice")
    return tuple(values)


def _model_args(value: Any, where: str) -> dict:
    args = _mapping(value, where)
    for key, item in args.items():
        if not isinstance(item, (str, int, float, bool)):
            raise UserInputError(f"{where}.{key}: expected a string, number or boolean, got {item!r}")
        if key in ("pretrained", "peft", "revision", "precision", "svd_ratio", "parallelize"):
            raise UserInputError(f"{where}.{key}: set by batch_eval; use the model's or matrix's own key")
        if key == "device":
            raise UserInputError(
                f"{where}.device: use devices: [cpu, cuda] (each job passes lm-eval's own --device)"
            )
    return dict(args)


def _path(value: Any, where: str, base: Path) -> Path:
    return (base / Path(_string(value, where)).expanduser()).resolve()


def _sbatch_options(value: Any, where: str) -> dict:
    options = {}
    for key, item in _mapping(value, where).items():
        name = str(key).replace("_", "-")
        if name in SBATCH_RESERVED:
            raise UserInputError(f"{where}.{key}: {SBATCH_RESERVED[name]}")
        if item is False or not isinstance(item, (str, int, float)) or item == "":
            raise UserInputError(f"{where}.{key}: expected a string, a number or true (a flag), got {item!r}")
        options[name] = item
    return options


def _parse_slurm(raw: Any) -> SlurmSpec:
    block = _mapping(raw, "slurm")
    if "gpus_per_job" in block:
        raise UserInputError(
            "slurm.gpus_per_job: GPUs per job are the top-level (or a model's) gpus_per_job; 0 runs on CPUs"
        )
    _check_keys(block, SLURM_KEYS, "slurm")

    def optional(key: str, parse: Callable[[Any, str], Any]) -> Any:
        return None if block.get(key) is None else parse(block[key], f"slurm.{key}")

    def at_least_one(value: Any, where: str) -> int:
        return _integer(value, where, 1)

    return SlurmSpec(
        partition=optional("partition", _string),
        account=optional("account", _string),
        time_limit_min=optional("time_limit_min", at_least_one),
        mem_gb=optional("mem_gb", _gigabytes),
        cpus_per_job=optional("cpus_per_job", at_least_one),
        array_parallelism=optional("array_parallelism", at_least_one),
        sbatch=_sbatch_options(block.get("sbatch"), "slurm.sbatch"),
        setup=tuple(_string(line, f"slurm.setup[{i}]") for i, line in enumerate(_list(block.get("setup")))),
    )


def _parse_task(raw: Any, where: str, default_timeout: float | None) -> TaskSpec:
    if isinstance(raw, str):
        raw = {"name": raw}
    task = _mapping(raw, where)
    _check_keys(task, TASK_KEYS, where)
    name = _string(task.get("name"), f"{where}.name")
    limit = task.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0):
        raise UserInputError(f"{where}.limit: expected a count >= 1 or a fraction in (0, 1), got {limit!r}")
    batch_size = task.get("batch_size")
    if batch_size is not None:
        text = str(batch_size)
        if not (text.isdigit() or text == "auto" or (text.startswith("auto:") and text[5:].isdigit())):
            raise UserInputError(
                f"{where}.batch_size: expected an integer, auto or auto:N, got {batch_size!r}"
            )
    fewshot = task.get("num_fewshot")
    return TaskSpec(
        name=name,
        label=folder_name(task.get("label", slug(name)), f"{where}.label"),
        num_fewshot=None if fewshot is None else _integer(fewshot, f"{where}.num_fewshot", 0),
        limit=None if limit is None else float(limit),
        batch_size=None if batch_size is None else str(batch_size),
        metadata=dict(_mapping(task.get("metadata"), f"{where}.metadata")),
        gen_kwargs=dict(_mapping(task.get("gen_kwargs"), f"{where}.gen_kwargs")),
        apply_chat_template=_boolean(task.get("apply_chat_template", False), f"{where}.apply_chat_template"),
        timeout_s=_timeout(task["timeout"], f"{where}.timeout") if "timeout" in task else default_timeout,
        timing_sensitive=_boolean(task["timing_sensitive"], f"{where}.timing_sensitive")
        if "timing_sensitive" in task
        else None,
        gpu_memory_gb=_gigabytes(task.get("gpu_memory_gb"), f"{where}.gpu_memory_gb"),
        where=where,
    )


def _parse_models(raw: Any, where: str, defaults: dict, labels: set[str], base: Path) -> list[ModelSpec]:
    """The models of one ``models[i]`` entry: one, or one per row of its ``models_csv``."""
    entry = _mapping(raw if not isinstance(raw, str) else {"pretrained": raw}, where)
    _check_keys(entry, MODEL_KEYS, where)
    if ("pretrained" in entry) == ("models_csv" in entry):
        raise UserInputError(f"{where}: give exactly one of pretrained: or models_csv:")
    tasks = None
    if "tasks" in entry:
        tasks = tuple(_string(t, f"{where}.tasks[{i}]") for i, t in enumerate(_list(entry["tasks"])))
        for i, label in enumerate(tasks):
            if label not in labels:
                hint = difflib.get_close_matches(label, sorted(labels), n=1)
                raise UserInputError(
                    f"{where}.tasks[{i}]: no task labelled {label!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else f" (labels: {', '.join(sorted(labels))})")
                )
    common = {
        "model_args": {
            **defaults["model_args"],
            **_model_args(entry.get("model_args"), f"{where}.model_args"),
        },
        "precisions": _axis(entry["precisions"], f"{where}.precisions", _precision)
        if "precisions" in entry
        else defaults["precisions"],
        "ratios": _axis(entry["ratios"], f"{where}.ratios", _ratio)
        if "ratios" in entry
        else defaults["ratios"],
        "devices": _axis(entry["devices"], f"{where}.devices", _device)
        if "devices" in entry
        else defaults["devices"],
        "tasks": tasks,
        "gpus_per_job": _integer(entry["gpus_per_job"], f"{where}.gpus_per_job", 0)
        if "gpus_per_job" in entry
        else defaults["gpus_per_job"],
        "gpu_memory_gb": _gigabytes(entry.get("gpu_memory_gb"), f"{where}.gpu_memory_gb"),
    }
    if "cuda" in common["devices"] and common["gpus_per_job"] == 0:
        raise UserInputError(
            f"{where}: devices lists cuda but gpus_per_job is 0 (a CPU job); give gpus_per_job >= 1"
        )
    if "models_csv" in entry:
        for key in ("name", "revision", "peft"):
            if key in entry:
                raise UserInputError(f"{where}.{key}: not allowed with models_csv (use the CSV's columns)")
        csv_path = _path(entry["models_csv"], f"{where}.models_csv", base)
        return [
            ModelSpec(
                pretrained=row.pretrained,
                name=row.name,
                revision=row.revision,
                peft=row.peft,
                where=f"{where} ({csv_path.name} line {row.line})",
                **common,
            )
            for row in read_model_list(csv_path, f"{where}.models_csv")
        ]
    pretrained = local_path(_string(entry["pretrained"], f"{where}.pretrained"), base, f"{where}.pretrained")
    revision = _string(entry["revision"], f"{where}.revision") if "revision" in entry else None
    peft = (
        local_path(_string(entry["peft"], f"{where}.peft"), base, f"{where}.peft")
        if "peft" in entry
        else None
    )
    name = (
        folder_name(entry["name"], f"{where}.name")
        if "name" in entry
        else model_name(entry["pretrained"], revision, entry.get("peft"))
    )
    return [ModelSpec(pretrained, name, revision, peft, where=where, **common)]


def _parse(raw: dict, source: Path, base: Path) -> BatchConfig:
    _check_keys(raw, TOP_KEYS, "")
    executor = raw.get("executor", "local")
    if executor not in EXECUTORS:
        raise UserInputError(f"executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    default_timeout = _timeout(raw["timeout"], "timeout") if "timeout" in raw else DEFAULT_TIMEOUT_S
    raw_tasks = _list(raw.get("tasks"))
    if not raw_tasks:
        raise UserInputError("tasks: at least one task is needed")
    tasks = [_parse_task(t, f"tasks[{i}]", default_timeout) for i, t in enumerate(raw_tasks)]
    labels: dict[str, str] = {}
    for task in tasks:
        if task.label in labels:
            raise UserInputError(
                f"{task.where}.label: {task.label!r} is already used by {labels[task.label]}; "
                "set label: to tell them apart"
            )
        labels[task.label] = task.where
    defaults = {
        "model_args": _model_args(raw.get("model_args"), "model_args"),
        "precisions": _axis(raw.get("precisions"), "precisions", _precision),
        "ratios": _axis(raw.get("ratios"), "ratios", _ratio),
        "devices": _axis(raw.get("devices"), "devices", _device),
        "gpus_per_job": _integer(raw.get("gpus_per_job", 1), "gpus_per_job", 0),
    }
    raw_models = _list(raw.get("models"))
    if not raw_models:
        raise UserInputError("models: at least one model is needed")
    models = [
        m
        for i, entry in enumerate(raw_models)
        for m in _parse_models(entry, f"models[{i}]", defaults, set(labels), base)
    ]
    cells: dict[str, str] = {}
    for model in models:
        for precision, ratio, device in model.cells():
            for label in model.tasks or tuple(labels):
                key = f"{model.name}/{precision_folder(precision, ratio, device)}/{label}"
                if key in cells and cells[key] != model.where:
                    raise UserInputError(
                        f"{model.where}: job {key} is also a job of {cells[key]}; "
                        "set name: (or precisions:) to tell them apart"
                    )
                cells[key] = model.where
    workers = raw.get("workers")
    isolation = raw.get("isolation", "warn")
    if isolation not in ISOLATION:
        raise UserInputError(f"isolation: {isolation!r} is not one of {', '.join(ISOLATION)}")
    wait_s = raw.get("isolation_wait_s", DEFAULT_ISOLATION_WAIT_S)
    return BatchConfig(
        source=source,
        output_dir=_path(raw.get("output_dir", "results"), "output_dir", base),
        executor=executor,
        ray_address=_string(raw.get("ray_address", "auto"), "ray_address"),
        workers=None if workers is None else _integer(workers, "workers", 1),
        retries=_integer(raw.get("retries", 0), "retries", 0),
        include_path=_path(raw["include_path"], "include_path", base) if raw.get("include_path") else None,
        models=tuple(models),
        tasks=tuple(tasks),
        jobs_per_gpu=_integer(raw.get("jobs_per_gpu", 1), "jobs_per_gpu", 1),
        gpu_memory_budget_gb=_gigabytes(raw.get("gpu_memory_budget_gb"), "gpu_memory_budget_gb"),
        isolation=isolation,
        isolation_wait_s=_timeout(wait_s, "isolation_wait_s"),
        slurm=_parse_slurm(raw.get("slurm")),
    )
