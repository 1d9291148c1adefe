"""The efficiency record (``config.efficiency`` of lm-eval's results JSON): its typed layout, version
and validation.

The record is plain JSON. Its layout is written down once, here, as :class:`typing.TypedDict` classes:
the monitor and ``perf-hf`` build their blocks as these types, the report reads them as these types,
and :func:`json_schema` derives the JSON Schema shipped as ``schema/efficiency-<major>.json`` from them
(a test checks the shipped file is current, and with ``LM_EVAL_PERF_VALIDATE=1`` every record perf-hf
writes is validated against it: the test suite sets it). A field's unit is in its name (``_s``, ``_j``,
``_w``, ``_gib``, ``_bytes``, ``_pct``, ``_per_s``) or in its ``Annotated`` description; missing data
is ``null`` with the reason under ``unavailable``.

Versions: ``lm-eval-perf/efficiency/<major>``. 2: ``overall`` has no AL across request kinds (``wall_s``,
``busy_s`` instead), ``generated_tokens`` counts the tokens lm-eval keeps (``generated_tokens_computed``
beside it), MFU counts ``lm_head`` per logit position and attention, AEC is counter energy / T, energy
has an error bound, and ``world_size``/``ranks``/``requests``/``excluded`` were added. Records of major
1 keep loading (:func:`check_version`); a newer major is refused in one line.
"""

import dataclasses
import json
import os
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from typing_extensions import NotRequired, TypedDict, is_typeddict

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.stats import Stats

PREFIX = "lm-eval-perf/efficiency/"
MAJOR = 2
SCHEMA = f"{PREFIX}{MAJOR}"
READABLE = (1, 2)  # majors the report reads
SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
VALIDATE_ENV = "LM_EVAL_PERF_VALIDATE"
# ``config.<RUN_DEVICE>`` of every results JSON perf-hf (and ``lm-eval-perf esd``) writes: the torch
# device the model ran on (``cpu``, ``cuda:0``) - also for a run of plugin tasks only, which has no
# record (lm-eval's own ``config.device`` is the device asked for, which HFLM may have fallen back from)
RUN_DEVICE = "lm_eval_perf_device"

Fraction = Annotated[float | None, "fraction, 0 to 1"]
Reasons = Annotated[dict[str, str], "figure -> why it is null"]


class Window(TypedDict):
    """What one monitor window measured (see ``lm_eval_perf.monitor.window``); GPU figures cover all
    GPUs of the model: memory and energy summed, AMU and PCU averaged."""

    name: str
    start_s: Annotated[float, "process monotonic clock, s"]
    end_s: Annotated[float, "process monotonic clock, s"]
    duration_s: float
    gpu_count: int
    amu: Annotated[float | None, "average memory utilization, fraction 0 to 1"]
    memory_used_avg_gib: float | None
    memory_used_peak_gib: float | None
    process_memory_peak_gib: float | None
    pcu: Annotated[float | None, "share of time a kernel ran (NVML utilization.gpu), fraction 0 to 1"]
    pcu_peak: Fraction
    aec_w: Annotated[float | None, "average power: energy_j / duration_s, W"]
    energy_j: float | None
    energy_source: str | None
    energy_error_bound: Annotated[float | None, "fraction of energy_j: counter update period / window"]
    energy_counter_j: float | None
    energy_integrated_j: float | None
    power_source: str | None
    host_rss_peak_gib: float | None
    host_cpu_avg_pct: Annotated[float | None, "this process's CPU time, percent of one core"]
    host_rapl_energy_j: float | None
    unavailable: Reasons


class Kind(TypedDict):
    """One request kind (loglikelihood, loglikelihood_rolling, generate_until); never mixed."""

    batches: int
    warmup_batches: int
    requests: NotRequired[Annotated[int, "requests lm-eval asked for (padding copies excluded)"]]
    samples: Annotated[int, "rows the model computed"]
    prompt_tokens: int
    generated_tokens: Annotated[int | None, "tokens lm-eval keeps (each row cut at its first stop)"]
    generated_tokens_computed: Annotated[int | None, "rows x decode steps"]
    seconds: Annotated[float, "sum of the measured batches' latencies, s"]
    al_s: Annotated[float | None, "average latency per batch, s"]
    latency_s: Stats
    latency_per_sample_s: float | None
    prompt_tokens_per_s: float | None
    it_tokens_per_s: Annotated[float | None, "IT: kept generated tokens / generation seconds"]
    it_computed_tokens_per_s: float | None
    tt_tokens_per_s_per_param: Annotated[float | None, "TT, tokens / (s x parameter)"]
    tt_tokens_per_s_per_billion_params: Annotated[float | None, "TT, tokens / (s x 1e9 parameters)"]
    st_samples_per_s_per_param: Annotated[float | None, "ST, samples / (s x parameter)"]
    mfu: Fraction
    mbu: Fraction
    estimates: Annotated[dict[str, str], "figure -> why it is an estimate for this model"]
    definitions: Annotated[dict[str, str], "figure -> what it counts"]
    ttft_s: NotRequired[Stats]
    tpot_s: NotRequired[Stats]
    decode_tokens_per_s: NotRequired[float | None]
    prefill_tokens_per_s: NotRequired[float | None]
    window: NotRequired[Window]
    energy_j: NotRequired[float | None]
    energy_error_bound: NotRequired[float | None]
    energy_source: NotRequired[str | None]
    energy_per_token_j: NotRequired[float | None]
    energy_per_computed_token_j: NotRequired[float | None]
    energy_per_request_j: NotRequired[float | None]
    energy_per_token_basis: NotRequired[str]
    unavailable: Reasons


class Excluded(TypedDict):
    """A block left out of every window (a batch-size probe, a plugin task)."""

    what: str
    seconds: float
    rank: NotRequired[int]


class Overall(TypedDict):
    """The whole evaluation: its window and totals over every kind (no AL across kinds)."""

    batches: int
    samples: int
    busy_s: Annotated[float, "sum of every measured batch's latency, s"]
    wall_s: float | None
    window: Window | None
    amu: Fraction
    pcu: Fraction
    aec_w: float | None
    energy_j: float | None
    energy_error_bound: float | None
    memory_peak_gib: float | None
    torch_memory: dict[str, float] | None
    host_rss_peak_gib: float | None
    definitions: dict[str, str]
    excluded: list[Excluded]


class TaskShare(TypedDict):
    """One task: exact request counts; seconds and joules by its share of its kinds' prompt characters."""

    requests: int
    seconds: float
    energy_j: float | None
    kinds: dict[str, dict[str, float]]
    attribution: str


class ModelShape(TypedDict):
    """Parameters, weight bytes as held, and the attention layout MFU/MBU use."""

    params: int
    weight_bytes: int
    n_layers: int | None
    n_heads: int | None
    n_kv_heads: int | None
    head_dim: int | None
    attention_dim: int | None
    kv_latent_dim: int | None
    kv_bytes_per_element: int | None
    layer_windows: list[int | None]
    embedding_params: int | None
    lm_head_params: int | None
    lm_head_tied: bool | None
    compute_dtype: str | None
    notes: Annotated[dict[str, str], "what the figures derived from this shape estimate, and why"]
    bidirectional: Annotated[bool, "every position attends to every key of its row (an encoder)"]
    head_pooled: Annotated[bool, "the output head is a classification head run once per row (pooled)"]


class Peaks(TypedDict):
    """Device peaks for MFU (FLOP/s of ``flops_dtype``) and MBU (bytes/s), and where they come from."""

    device: str
    flops: float | None
    bandwidth: float | None
    flops_dtype: str | None
    source: str


class Provenance(TypedDict):
    """Where and with what the record was measured (per rank in ``ranks`` for data-parallel runs)."""

    gpus: list[dict[str, Any]]
    gpu_name: str | None
    driver_version: str | None
    power_limit_w: float | None
    cuda_runtime: str | None
    cuda_visible_devices: str | None
    versions: dict[str, str | None]
    git_sha: str | None
    host: dict[str, Any]
    sampling_interval_s: float
    warmup_batches: int
    started_utc: str
    ended_utc: str
    hosts: NotRequired[list[str]]


class Rank(TypedDict):
    """One process of the run (one entry for a single-process run)."""

    rank: int
    host: str
    gpus: list[str | int | None]
    batches: int
    samples: int
    prompt_tokens: int
    generated_tokens: int
    seconds: float | None
    energy_j: float | None
    memory_peak_gib: float | None
    host_rss_peak_gib: float | None
    torch_memory: dict[str, float] | None
    padding_requests: NotRequired[Annotated[dict[str, int], "copies lm-eval added to even out ranks"]]
    device: NotRequired[str]
    batch_size_probe: NotRequired[list[dict[str, Any]] | None]


class Head(TypedDict):
    """What the model outputs: a causal LM's vocabulary or a sequence classifier's labels."""

    kind: Annotated[str, "causal_lm, sequence_classification, or the loader's backend name"]
    labels: NotRequired[Annotated[list[str], "the classifier's label names, in logit order"]]


class Load(TypedDict):
    """How the model was loaded: source, times, dtype, device, head, precision and compression blocks."""

    model: str
    random_weights: bool
    load_time_s: float
    source_time_s: Annotated[float, "a bundled model's one-time conversion into the cache, s"]
    dtype: str
    device: str
    head: Head
    token_ids_folded: Annotated[
        str | None, "how a random-weight model's smaller vocabulary folds the tokenizer's ids"
    ]
    precision: dict[str, Any]
    compression: dict[str, Any] | None


class EfficiencyRecord(TypedDict):
    """``config.efficiency``: one record per evaluation (all ranks of a data-parallel run together)."""

    schema: Literal["lm-eval-perf/efficiency/2"]
    world_size: int
    overall: Overall
    kinds: dict[str, Kind]
    tasks: NotRequired[dict[str, TaskShare]]
    model: ModelShape | None
    peaks: Peaks | None
    provenance: Provenance
    unavailable: Reasons
    ranks: list[Rank]
    batch_size_probe: NotRequired[list[dict[str, Any]] | None]
    load: NotRequired[Load]


# -- JSON Schema ------------------------------------------------------------------------------------


def _schema(hint: Any) -> dict:
    """The JSON Schema of one type hint (the subset of typing this module uses)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return {**_schema(args[0]), "description": args[1]}
    if hint is Any:
        return {}
    if hint is type(None):
        return {"type": "null"}
    if hint in (int, float, str, bool):
        return {"type": {int: "integer", float: "number", str: "string", bool: "boolean"}[hint]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, __import__("types").UnionType):
        return {"anyOf": [_schema(a) for a in args]}
    if origin is list:
        return {"type": "array", "items": _schema(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(args[1])}
    if is_typeddict(hint) or dataclasses.is_dataclass(hint):
        return {"$ref": f"#/$defs/{hint.__name__}"}
    raise TypeError(f"no JSON Schema for {hint!r}")


def _definition(cls: type) -> dict:
    """The schema of a TypedDict, or of a dataclass serialized by ``dataclasses.asdict`` (``Stats``)."""
    hints = get_type_hints(cls, include_extras=True)
    optional = set(getattr(cls, "__optional_keys__", ()))
    return {
        "type": "object",
        "description": " ".join((cls.__doc__ or "").split()),
        "properties": {name: _schema(_unwrap_not_required(hint)) for name, hint in hints.items()},
        "required": [name for name in hints if name not in optional],
        "additionalProperties": False,
    }


def _unwrap_not_required(hint: Any) -> Any:
    return get_args(hint)[0] if get_origin(hint) is NotRequired else hint


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of :class:`EfficiencyRecord`, from the classes above."""
    classes = [
        Stats,
        Window,
        Kind,
        Excluded,
        Overall,
        TaskShare,
        ModelShape,
        Peaks,
        Provenance,
        Rank,
        Head,
        Load,
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA,
        "title": "lm-eval-perf efficiency record",
        **_definition(EfficiencyRecord),
        "$defs": {cls.__name__: _definition(cls) for cls in classes},
    }


def schema_file(major: int = MAJOR) -> Path:
    return SCHEMA_DIR / f"efficiency-{major}.json"


def schema_text() -> str:
    """The shipped file's text for :func:`json_schema` (stable key order, trailing newline)."""
    return json.dumps(json_schema(), indent=1, ensure_ascii=False) + "\n"


@cache
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(schema_file().read_text()))


def validate(record: dict) -> None:
    """Raise ``ValueError`` naming the first place where ``record`` breaks the shipped schema.

    The record is checked as lm-eval writes it: through JSON (tuples become arrays).
    """
    written = json.loads(json.dumps(record, default=str))
    error = next(iter(_validator().iter_errors(written)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(record)"
        raise ValueError(f"efficiency record breaks {SCHEMA} at {where}: {error.message}")


def validate_if_asked(record: dict) -> None:
    """:func:`validate` when ``$LM_EVAL_PERF_VALIDATE`` is set (the test suite sets it)."""
    if os.environ.get(VALIDATE_ENV, "") not in ("", "0"):
        validate(record)


def check_version(record: dict, where: str) -> int:
    """The record's major version if the report reads it, else a one-line error naming ``where``."""
    name = str(record.get("schema", ""))
    major = name.removeprefix(PREFIX)
    if not name.startswith(PREFIX) or not major.isdigit():
        raise UserInputError(f"{where}: config.efficiency has no lm-eval-perf schema ({name or 'none'})")
    if int(major) not in READABLE:
        raise UserInputError(
            f"{where}: efficiency schema {name} is newer than this lm-eval-perf reads "
            f"({', '.join(f'{PREFIX}{m}' for m in READABLE)}): upgrade lm-eval-perf"
        )
    return int(major)
