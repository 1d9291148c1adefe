"""4-bit linear layers on the kernels of :data:`lm_eval_perf.models.precision.BACKENDS`.

:func:`int4_linear` turns one :class:`~lm_eval_perf.models.quant.int4.GroupQuantized` weight into a
module (tinygemm or gemlite); :func:`quantize_model` replaces every ``nn.Linear`` of a loaded model
but ``lm_head`` (also ``lm_head`` with ``quantize_lm_head``, unless it is tied to the input
embeddings) by int4 round-to-nearest, torchao's int4 or bitsandbytes NF4, and returns what it did.
All quantized data is held in registered buffers/parameters, so ``shape.weight_bytes`` counts it.
Modules are built on their final device: the packed layouts differ between CPU and CUDA, so do not
move a quantized model between them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass, field

import torch
from torch import nn

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models.precision import BACKENDS, PrecisionSpec
from lm_eval_perf.models.quant.int4 import GroupQuantized, quantize_rtn
from lm_eval_perf.models.surgery import is_output_projection, set_module


def require(package: str, why: str):
    """Import ``package`` or fail with a one-line error saying how to install it."""
    try:
        return importlib.import_module(package.replace("-", "_"))
    except ImportError as exc:
        raise UserInputError(f"{why} needs the {package} package: pip install {package}") from exc


def version_of(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


class TinyGemmInt4Linear(nn.Module):
    """y = x · Wᵀ + b with W held as int4 for torch's tinygemm kernels.

    Buffers: ``packed`` (N·K/2 bytes; layout of ``_convert_weight_to_int4pack[_for_cpu]``) and
    ``scales_and_zeros`` [K/g, N, 2] in the compute dtype, where tinygemm dequantizes
    w = (q - 8) · scale + zero, i.e. zero = (8 - z) · scale for our integer zero point z.
    """

    def __init__(self, weight: GroupQuantized, bias: torch.Tensor | None, dtype: torch.dtype, device):
        super().__init__()
        n, k = weight.shape
        self.out_features, self.in_features, self.group_size = n, k, weight.group_size
        device = torch.device(device)
        q = weight.q.to(device)
        if device.type == "cuda":
            tiles = next((t for t in (8, 4, 2) if k % (16 * t) == 0), None)
            if tiles is None or n % 8:
                raise UserInputError(
                    f"tinygemm needs in_features % 32 == 0 and out_features % 8 == 0, got {k}, {n}"
                )
            nibbles = (q[:, ::2].to(torch.int32) << 4 | q[:, 1::2].to(torch.int32)).to(torch.uint8)
            packed = torch.ops.aten._convert_weight_to_int4pack(nibbles.contiguous(), tiles)
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)
        scales = weight.scales.to(device=device, dtype=torch.float32)
        zero = (8.0 - weight.zeros.to(device=device, dtype=torch.float32)) * scales
        self.register_buffer("packed", packed)
        self.register_buffer(
            "scales_and_zeros", torch.stack([scales.t(), zero.t()], dim=-1).to(dtype).contiguous()
        )
        self.register_buffer("bias", None if bias is None else bias.detach().to(device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(self.scales_and_zeros.dtype)
        if self.packed.is_cuda:
            out = torch.ops.aten._weight_int4pack_mm(
                flat, self.packed, self.group_size, self.scales_and_zeros
            )
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(
                flat, self.packed, self.group_size, self.scales_and_zeros
            )
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"
        )


def _gemlite_linear(weight: GroupQuantized, bias, dtype: torch.dtype, device) -> nn.Module:
    helper = require("gemlite", "quant_backend=gemlite").helper
    return helper.A16Wn(device=str(device), dtype=dtype).from_weights(
        weight.q.to(device),
        weight.scales.to(device=device, dtype=dtype),
        weight.zeros.to(device=device, dtype=dtype),
        W_nbits=4,
        group_size=weight.group_size,
        bias=None if bias is None else bias.detach().to(device=device, dtype=dtype),
    )


def _logical(module: nn.Module, out_features: int, in_features: int, bias: bool) -> nn.Module:
    """Tag a packed layer with its logical parameter count (read by ``shape.parameter_count``)."""
    module.logical_params = out_features * in_features + (out_features if bias else 0)
    return module


def int4_linear(weight: GroupQuantized, bias, backend: str, dtype: torch.dtype, device) -> nn.Module:
    """A module computing x · Wᵀ + b from the int4 ``weight`` on ``backend`` (tinygemm or gemlite)."""
    if backend == "tinygemm":
        module = TinyGemmInt4Linear(weight, bias, dtype, device)
    elif backend == "gemlite":
        module = _gemlite_linear(weight, bias, dtype, device)
    else:
        raise UserInputError(
            f"quant_backend={backend} cannot run pre-quantized int4 weights: use tinygemm or gemlite"
        )
    return _logical(module, *weight.shape, bias is not None)


def kernel_name(backend: str, device: torch.device) -> str:
    """What runs the matmuls, with the package version, for the record."""
    if backend == "tinygemm":
        op = "_weight_int4pack_mm" if device.type == "cuda" else "_weight_int4pack_mm_for_cpu"
        return f"aten.{op} (torch {torch.__version__})"
    package = BACKENDS[backend].package or backend
    return f"{backend} ({package} {version_of(package)})"


def _tied_to_input(model: nn.Module, linear: nn.Module) -> bool:
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    return embeddings is not None and getattr(embeddings, "weight", None) is linear.weight


def target_linears(model: nn.Module, include_lm_head: bool = False) -> tuple[list[str], dict[str, str]]:
    """Qualified names of the ``nn.Linear`` layers to quantize, and the kept ones with why.

    ``lm_head`` is kept unless ``include_lm_head``; a tied one is kept regardless (its weight is the
    input embedding: quantizing it would store both)."""
    names, kept = [], {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if is_output_projection(name):  # kept in the compute dtype by default (as AWQ and torchao do)
            if not include_lm_head:
                continue
            if _tied_to_input(model, module):
                kept[name] = "tied to the input embeddings"
                continue
        names.append(name)
    return names, kept


@dataclass
class QuantResult:
    """What :func:`quantize_model` did: the layers it replaced and the kernel that runs them."""

    layers: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it stayed dense
    kernel: str = ""


def _nf4_linear(linear: nn.Linear, dtype: torch.dtype, device) -> nn.Module:
    bnb = require("bitsandbytes", "precision=nf4")
    new = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=dtype,
        quant_type="nf4",
    )
    new.weight = bnb.nn.Params4bit(
        linear.weight.data.to("cpu", dtype), requires_grad=False, quant_type="nf4", blocksize=64
    )
    if linear.bias is not None:
        new.bias = nn.Parameter(linear.bias.data.to(dtype), requires_grad=False)
    return _logical(new.to(device), linear.out_features, linear.in_features, linear.bias is not None)


def quantize_model(model: nn.Module, spec: PrecisionSpec) -> QuantResult:
    """Quantize ``model`` in place on its own device for ``spec`` (precision int4 or nf4)."""
    dtype = getattr(torch, spec.dtype)
    device = next(model.parameters()).device
    names, kept = target_linears(model, spec.quantize_lm_head)
    result = QuantResult(skipped=kept, kernel=kernel_name(spec.backend, device))  # type: ignore[arg-type]
    if spec.backend and spec.backend.startswith("torchao"):
        return _torchao(model, names, spec, result)
    for name in names:
        linear = model.get_submodule(name)
        if spec.name == "nf4":
            set_module(model, name, _nf4_linear(linear, dtype, device))
        elif linear.in_features % spec.group_size:  # type: ignore[operator]
            result.skipped[name] = f"in_features {linear.in_features} % group_size {spec.group_size} != 0"
            continue
        else:
            weight = quantize_rtn(linear.weight.data, spec.group_size)  # type: ignore[arg-type]
            set_module(model, name, int4_linear(weight, linear.bias, spec.backend, dtype, device))  # type: ignore[arg-type]
        result.layers.append(name)
        del linear
    if not result.layers:
        raise UserInputError(f"precision={spec.name}: no linear layer could be quantized ({result.skipped})")
    return result


def _torchao(model: nn.Module, names: list[str], spec: PrecisionSpec, result: QuantResult) -> QuantResult:
    require("torchao", f"quant_backend={spec.backend}")
    from torchao.quantization import Int4WeightOnlyConfig, quantize_

    packing = {"torchao": "plain", "torchao-tile": "tile_packed_to_4d", "torchao-preshuffled": "preshuffled"}
    wanted = set(names)
    for name in names:
        if model.get_submodule(name).in_features % spec.group_size:  # type: ignore[operator]
            result.skipped[name] = "in_features not a multiple of group_size"
            wanted.discard(name)
    config = Int4WeightOnlyConfig(group_size=spec.group_size, int4_packing_format=packing[spec.backend])  # type: ignore[index]
    quantize_(model, config, filter_fn=lambda module, fqn: fqn in wanted)
    result.layers = [n for n in names if n in wanted]
    result.kernel += f" packing={packing[spec.backend]}"  # type: ignore[index]
    return result
