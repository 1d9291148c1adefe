"""Small operations on a loaded model's modules and on safetensors folders, shared by the
quantization and compression loaders."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from lm_eval_perf.errors import UserInputError


def is_output_projection(name: str) -> bool:
    """Whether the module at dotted path ``name`` is the output projection (``lm_head``), which the
    quantization and compression loaders keep by default."""
    return name.rsplit(".", 1)[-1] == "lm_head"


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name``."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``path`` (a .safetensors file, or a folder of them), on CPU."""
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    if not files:
        raise UserInputError(f"{path} has no .safetensors files")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), "pt") as handle:
            tensors.update({key: handle.get_tensor(key) for key in handle.keys()})  # noqa: SIM118
    return tensors


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], what: str, allow_missing=()) -> None:
    """Load ``tensors`` into ``model`` (cast to each parameter's dtype); a one-line error naming
    ``what`` when keys are missing (beyond ``allow_missing`` and a tied ``lm_head``) or unexpected."""
    own = model.state_dict()
    cast = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(cast, strict=False)
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    missing = [
        k for k in missing if not (tied and k == "lm_head.weight") and not k.startswith(tuple(allow_missing))
    ]
    if missing or unexpected:
        raise UserInputError(
            f"{what} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    if tied:
        model.tie_weights()
