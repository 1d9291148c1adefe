"""Precisions ``perf-hf`` loads a model in: the ``precision=`` model argument.

Every name in :data:`PRECISIONS` is a row of a study's matrix; unknown names are one-line errors.

* ``bfloat16``, ``float16``, ``float32`` - dtype casts of the checkpoint's weights.
* ``int4`` - calibration-free 4-bit weight-only quantization of every ``nn.Linear`` but ``lm_head``
  at load time (round-to-nearest, asymmetric, ``group_size`` columns per scale, default 128): works
  for any checkpoint and for random-weight ``arch:`` models. ``quantize_lm_head=true`` quantizes
  ``lm_head`` too (int4 and nf4; AWQ keeps it dense). A large-vocabulary model reads its output
  projection on every decode step (Qwen2.5-7B: 1.09 GB, a quarter of its int4 bytes per token), so
  this is what brings batch-1 decode past 2× bf16; it costs accuracy like any other quantized
  layer. A ``lm_head`` tied to the input embeddings stays dense (quantizing it would untie the two and
  add memory) and the record says so.
* ``awq`` - a pre-quantized AWQ checkpoint (``quant_method: awq`` in its config, GEMM layout), e.g.
  one written by ``lm-eval-perf quantize --method awq``.
* ``nf4`` - bitsandbytes NF4 (4-bit normal float, blocks of 64, double-quantized statistics).

``quant_backend=`` picks the kernel that runs the 4-bit matmuls (:data:`BACKENDS`). Activations and
everything that is not a quantized linear layer run in the compute dtype: ``dtype=`` if given, else
bfloat16. A backend that needs a GPU fails on a CPU machine with a one-line error naming the ones
that run there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.precisions import CASTS, validate_precision


@dataclass(frozen=True)
class Backend:
    """A kernel for 4-bit weights: which precisions it serves and what it needs."""

    precisions: tuple[str, ...]
    gpu_only: bool
    package: str | None  # pip package that provides it (None: plain torch)
    description: str


BACKENDS: dict[str, Backend] = {
    "tinygemm": Backend(
        ("int4", "awq"),
        False,
        None,
        "torch's own int4 kernels: aten._weight_int4pack_mm (CUDA, bfloat16) and "
        "_weight_int4pack_mm_for_cpu (CPU); no extra package",
    ),
    "gemlite": Backend(
        ("int4", "awq"), True, "gemlite", "gemlite's Triton GEMV/GEMM kernels, tuned for batch-1 decode"
    ),
    "torchao": Backend(
        ("int4",), True, "torchao", "torchao Int4WeightOnlyConfig, plain packing (its kernels need mslk-cuda)"
    ),
    "torchao-tile": Backend(
        ("int4",),
        True,
        "torchao",
        "torchao Int4WeightOnlyConfig, tile_packed_to_4d packing (tinygemm kernel)",
    ),
    "torchao-preshuffled": Backend(
        ("int4",), True, "torchao", "torchao Int4WeightOnlyConfig, preshuffled packing (mslk-cuda kernels)"
    ),
    "gptqmodel": Backend(
        ("awq",), True, "gptqmodel", "transformers' own AWQ loader (AwqQuantizer), kernels from GPT-QModel"
    ),
    "bitsandbytes": Backend(("nf4",), True, "bitsandbytes", "bitsandbytes Linear4bit"),
}
DEFAULT_GROUP_SIZE = {"int4": 128, "awq": None, "nf4": 64}  # awq: from the checkpoint


@dataclass(frozen=True)
class PrecisionSpec:
    """A resolved ``precision=`` with its backend, group size and compute dtype."""

    name: str
    dtype: str  # compute dtype (the weights' dtype for casts)
    backend: str | None = None
    group_size: int | None = None
    quantize_lm_head: bool = False

    @property
    def quantized(self) -> bool:
        return self.name not in CASTS

    @property
    def bits(self) -> int:
        return 4 if self.quantized else {"bfloat16": 16, "float16": 16, "float32": 32}[self.name]

    @property
    def method(self) -> str:
        return {"int4": "rtn", "awq": "awq", "nf4": "nf4"}.get(self.name, "cast")


def _backends_for(name: str, on_gpu: bool) -> list[str]:
    return [b for b, info in BACKENDS.items() if name in info.precisions and (on_gpu or not info.gpu_only)]


def default_backend(name: str, on_gpu: bool) -> str:
    """The kernel used when ``quant_backend`` is not given: the first usable one in :data:`BACKENDS`
    order, preferring gemlite on a GPU when it is installed."""
    import importlib.util

    if on_gpu and name in ("int4", "awq") and importlib.util.find_spec("gemlite") is not None:
        return "gemlite"
    return {"int4": "tinygemm", "awq": "tinygemm", "nf4": "bitsandbytes"}[name]


def resolve_precision(
    name: str,
    backend: str | None,
    group_size: int | None,
    dtype: str | None,
    quantize_lm_head: bool = False,
) -> PrecisionSpec:
    """Check ``precision``/``quant_backend``/``group_size``/``dtype``/``quantize_lm_head`` together,
    before the device is known; one-line errors. The backend stays ``None`` when not given:
    :func:`on_device` picks it for the device the model lands on."""
    validate_precision(name)
    if quantize_lm_head and name not in ("int4", "nf4"):
        raise UserInputError(
            f"quantize_lm_head applies to precision=int4 or nf4 (quantized at load time), not {name}"
        )
    if name in CASTS:
        if backend is not None or group_size is not None:
            raise UserInputError(f"precision={name} is a dtype cast: quant_backend/group_size do not apply")
        if dtype not in (None, "auto", name):
            raise UserInputError(f"precision={name} contradicts dtype={dtype}: give one of them")
        return PrecisionSpec(name, name)
    if backend is not None and (backend not in BACKENDS or name not in BACKENDS[backend].precisions):
        usable = ", ".join(b for b, info in BACKENDS.items() if name in info.precisions)
        raise UserInputError(
            f"quant_backend={backend!r} does not serve precision={name}: use one of {usable}"
        )
    if group_size is not None and name != "int4":
        raise UserInputError(f"group_size applies to precision=int4 only ({name} fixes its own)")
    compute = "bfloat16" if dtype in (None, "auto") else str(dtype)
    return PrecisionSpec(name, compute, backend, group_size or DEFAULT_GROUP_SIZE[name], quantize_lm_head)


def on_device(spec: PrecisionSpec, on_gpu: bool) -> PrecisionSpec:
    """``spec`` for the device the model runs on: the default backend chosen, GPU-only kernels
    refused on a CPU (one line naming the ones that run there), CUDA dtype limits checked."""
    if not spec.quantized:
        return spec
    name = spec.name
    backend = spec.backend or default_backend(name, on_gpu)
    if BACKENDS[backend].gpu_only and not on_gpu:
        cpu = _backends_for(name, on_gpu=False)
        alternatives = (
            f"on CPU use quant_backend={' or '.join(cpu)}"
            if cpu
            else "on CPU use precision=int4 or awq with quant_backend=tinygemm"
        )
        raise UserInputError(
            f"precision={name} with quant_backend={backend} needs a CUDA GPU: {alternatives}"
        )
    if backend in ("tinygemm", "torchao-tile") and on_gpu and spec.dtype != "bfloat16":
        raise UserInputError(
            f"quant_backend={backend} on CUDA computes in bfloat16 only, not dtype={spec.dtype}"
        )
    return replace(spec, backend=backend)
