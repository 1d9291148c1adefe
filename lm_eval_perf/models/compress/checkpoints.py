"""Compressed checkpoints: ``compressed=PATH`` and the directories ``lm-eval-perf compress`` writes.

``compressed=`` accepts

(a) a directory written by ``lm-eval-perf compress`` (or ``pretrained=`` pointing at one): an ordinary
    Hugging Face directory (config.json, model.safetensors, tokenizer) whose config carries
    :data:`CONFIG_KEY` = ``{"method": "svd", "ratio": r, "rank": k, "targets": ..., "ranks": {layer: k}}``;
    the low-rank layers are rebuilt from the recorded ranks and loaded, nothing is recomputed;
(b) a state dict file (``.safetensors``, or ``.pt``/``.bin`` readable with ``torch.load(weights_only=True)``)
    applied to the base model named by ``pretrained=``: for each factorized linear layer ``NAME`` the
    keys ``NAME.down.weight`` [k, in_features] and ``NAME.up.weight`` [out_features, k] (optionally
    ``NAME.up.bias``); any other key replaces the base model's tensor of the same name;
(c) a whole pickled model (``.pt``, e.g. what SVD-LLM saves: ``torch.save({"model": model, "tokenizer":
    tokenizer})`` or the bare module) - only with ``allow_pickle=true``, because unpickling runs code
    from the file. The tokenizer comes from ``pretrained=``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import transformers
from torch import nn

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models.compress.svd import LowRankLinear
from lm_eval_perf.models.surgery import load_weights, read_safetensors, set_module

CONFIG_KEY = "lm_eval_perf_compression"
STATE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def compression_block(path: Path) -> dict | None:
    """The :data:`CONFIG_KEY` block of the HF directory ``path`` (``None`` if it has none)."""
    config = path / "config.json"
    if not config.is_file():
        return None
    return getattr(transformers.PretrainedConfig.from_json_file(str(config)), CONFIG_KEY, None)


def kind_of(path: Path) -> str:
    """``"hf_dir"``, ``"state_dict"`` or ``"pickle"`` (the last two by trying a safe load)."""
    if path.is_dir():
        if compression_block(path) is None:
            raise UserInputError(f"compressed={path} is a directory without {CONFIG_KEY} in its config.json")
        return "hf_dir"
    if not path.is_file():
        raise UserInputError(f"compressed={path} does not exist")
    if path.suffix not in STATE_SUFFIXES:
        raise UserInputError(f"compressed={path}: use a directory or a {', '.join(STATE_SUFFIXES)} file")
    if path.suffix == ".safetensors":
        return "state_dict"
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return "pickle"
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UserInputError(f"compressed={path} is not a state dict of tensors")
    return "state_dict"


def _lowrank_layers(model: nn.Module, ranks: dict[str, int]) -> None:
    for name, rank in ranks.items():
        try:
            linear = model.get_submodule(name)
        except AttributeError as exc:
            raise UserInputError(f"compressed layer {name} is not a module of the base model") from exc
        if not isinstance(linear, nn.Linear):
            raise UserInputError(f"compressed layer {name} is a {type(linear).__name__}, not a Linear")
        weight = linear.weight
        new = LowRankLinear(
            linear.in_features,
            linear.out_features,
            rank,
            linear.bias is not None,
            weight.device,
            weight.dtype,
        )
        set_module(model, name, new)


def load_hf_dir(path: Path, dtype: torch.dtype, device) -> tuple[nn.Module, dict]:
    """Case (a): the model of a directory written by ``compress``, and its compression block."""
    config = transformers.AutoConfig.from_pretrained(path)
    block = getattr(config, CONFIG_KEY)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    _lowrank_layers(model, block["ranks"])
    load_weights(model, read_safetensors(path), f"compressed directory {path}")
    return model.eval(), block


def apply_state_dict(model: nn.Module, path: Path) -> dict[str, int]:
    """Case (b): put the low-rank factors (and other tensors) of ``path`` into ``model``; the ranks."""
    if path.suffix == ".safetensors":
        tensors = read_safetensors(path)
    else:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    ranks = {
        key[: -len(".down.weight")]: int(t.shape[0])
        for key, t in tensors.items()
        if key.endswith(".down.weight")
    }
    _lowrank_layers(model, ranks)
    own = model.state_dict()
    bad = [k for k in tensors if k in own and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if bad:
        raise UserInputError(
            f"compressed={path}: {bad[0]} has shape {tuple(tensors[bad[0]].shape)}, "
            f"the model expects {tuple(own[bad[0]].shape)}"
        )
    keep = [k for k in own if k not in tensors]  # base tensors the file does not replace
    load_weights(model, tensors, f"compressed={path}", allow_missing=keep)
    return ranks


def load_pickle(path: Path, allow_pickle: bool, device) -> nn.Module:
    """Case (c): a whole pickled model; refused unless ``allow_pickle``."""
    if not allow_pickle:
        raise UserInputError(
            f"compressed={path} is a pickled model: loading it runs code stored in the file; "
            "if you trust it, add allow_pickle=true to --model_args"
        )
    loaded = torch.load(path, map_location=device, weights_only=False)
    model = loaded.get("model") if isinstance(loaded, dict) else loaded
    if not isinstance(model, nn.Module):
        raise UserInputError(
            f"compressed={path} holds {type(loaded).__name__}, not a model or {{'model': model}}"
        )
    return model.eval()


def lowrank_ranks(model: nn.Module) -> dict[str, int]:
    """The rank of every :class:`LowRankLinear` in ``model``."""
    return {name: m.rank for name, m in model.named_modules() if isinstance(m, LowRankLinear)}


def save_compressed(model: nn.Module, block: dict, tokenizer, folder: Path) -> None:
    """Write ``model`` with its compression ``block`` (recorded in the config) as a HF directory."""
    setattr(model.config, CONFIG_KEY, block)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
