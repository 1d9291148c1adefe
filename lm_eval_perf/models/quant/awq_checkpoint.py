"""AWQ checkpoints (``quant_method: awq``, GEMM layout) written and read without AutoAWQ or GPT-QModel.

:func:`save_awq` writes an ordinary Hugging Face directory: ``config.json`` with the standard AWQ
``quantization_config`` (bits 4, ``group_size``, ``zero_point: true``, ``version: gemm``), one
``model.safetensors`` with ``<layer>.qweight/qzeros/scales`` for every quantized linear layer and the
other weights in float16, and the tokenizer. transformers (with GPT-QModel), AutoAWQ and vLLM read
the same files.

:func:`load_awq` is this project's reader: it builds the model from the config in the compute
dtype and puts each quantized layer on a 4-bit kernel (:func:`.kernels.int4_linear`),
bit-exact to the stored integers - so AWQ checkpoints run on CPU (tinygemm) and where GPT-QModel
is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from torch import nn

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models.quant.int4 import GroupQuantized, from_awq_tensors, to_awq_tensors
from lm_eval_perf.models.quant.kernels import int4_linear
from lm_eval_perf.models.surgery import load_weights, read_safetensors, set_module

AWQ_SUFFIXES = ("qweight", "qzeros", "scales")


def awq_config(group_size: int) -> dict:
    """The ``quantization_config`` block of an AWQ GEMM checkpoint."""
    return {
        "quant_method": "awq",
        "bits": 4,
        "group_size": group_size,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": None,
    }


def quantization_config(config) -> dict | None:
    """The checkpoint's ``quantization_config`` as a dict (``None`` when it has none)."""
    block = getattr(config, "quantization_config", None)
    if block is None or isinstance(block, dict):
        return block
    return block.to_dict()


def is_awq(config) -> bool:
    return (quantization_config(config) or {}).get("quant_method") == "awq"


def save_awq(
    model: nn.Module, quantized: dict[str, GroupQuantized], tokenizer, folder: Path, group_size: int
) -> None:
    """Write ``model`` (quantized layers taken from ``quantized``) as an AWQ checkpoint into ``folder``."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if name.rsplit(".", 1)[0] in quantized or tensor.data_ptr() in seen:
            continue  # quantized layers are written below; tied weights once (transformers re-ties them)
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().to(
            "cpu", torch.float16 if tensor.is_floating_point() else tensor.dtype
        )
    for name, weight in quantized.items():
        for suffix, tensor in to_awq_tensors(weight).items():
            tensors[f"{name}.{suffix}"] = tensor.cpu()
        bias = model.get_submodule(name).bias
        if bias is not None:
            tensors[f"{name}.bias"] = bias.detach().to("cpu", torch.float16)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"), {"format": "pt"}
    )
    config = model.config.to_dict()
    config.update(quantization_config=awq_config(group_size), dtype="float16")
    config.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    tokenizer.save_pretrained(folder)


def load_awq(path: str | Path, backend: str, dtype: torch.dtype, device) -> tuple[nn.Module, list[str], int]:
    """The model of the AWQ checkpoint at ``path`` on ``backend`` kernels.

    Returns the model, the quantized layers' names and the checkpoint's group size.
    """
    path = Path(path)
    config = transformers.AutoConfig.from_pretrained(path)
    block = quantization_config(config) or {}
    if block.get("quant_method") != "awq":
        raise UserInputError(f"precision=awq needs an AWQ checkpoint (quant_method: awq), {path} is not one")
    fmt = str(block.get("version", block.get("format", "gemm"))).lower()
    if block.get("bits", 4) != 4 or fmt != "gemm" or not block.get("zero_point", True):
        raise UserInputError(
            f"AWQ checkpoint {path}: only 4-bit GEMM with zero points is readable here, got "
            f"bits={block.get('bits')} version={fmt} zero_point={block.get('zero_point')}; "
            "use quant_backend=gptqmodel for other AWQ variants"
        )
    del config.quantization_config
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    tensors = read_safetensors(path)
    layers = sorted(key[: -len(".qweight")] for key in tensors if key.endswith(".qweight"))
    for name in layers:
        weight = from_awq_tensors(*(tensors.pop(f"{name}.{suffix}") for suffix in AWQ_SUFFIXES))
        bias = tensors.pop(f"{name}.bias", None)
        set_module(model, name, int4_linear(weight, bias, backend, dtype, device))
    load_weights(model, tensors, f"AWQ checkpoint {path}", allow_missing=[f"{name}." for name in layers])
    return model.eval(), layers, int(block.get("group_size", 128))
