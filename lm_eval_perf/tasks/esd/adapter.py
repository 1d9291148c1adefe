"""A PEFT LoRA adapter merged into the base weights one tensor at a time, without peft or the base model.

For a layer W (out×in) the adapter holds A (r×in) and B (out×r) under
``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``; the merged weight is

    W' = W + scale · B A          ((B A)ᵀ with ``fan_in_fan_out``: GPT-2's Conv1D stores W as in×out)

with scale = lora_alpha / r, or lora_alpha / sqrt(r) with ``use_rslora``; r and alpha per module from
``rank_pattern`` / ``alpha_pattern`` (a pattern matches a module path that equals it or ends in
``.<pattern>``, as peft matches them). The arithmetic is peft's ``merge_and_unload`` with its default
``autocast_adapter_dtype``: A and B in float32 when stored in float16/bfloat16 (as they are), the delta
``(B @ A)`` then ``× scale`` in that dtype, added in place into W's own dtype. Weights the adapter
replaces whole (``modules_to_save``, saved as ``base_model.model.<module>.weight``) are taken as saved,
in W's dtype.

Refused with a one-line error: adapters other than LoRA, DoRA (``use_dora``), and an adapter on a
weight that the analysed layer shares with another module (a tied embedding): merging that would need
the embedding's LoRA form.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.tasks.esd.checkpoint import hub_snapshot, local_folder, read_tensor

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PREFIX = "base_model.model."
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.default)?\.weight$")


@dataclass(frozen=True)
class ModuleUpdate:
    """What the adapter does to one module's weight: a LoRA pair (keys, scale) or a whole replacement."""

    key_a: str | None = None
    key_b: str | None = None
    scale: float = 1.0
    rank: int = 0
    replacement: str | None = None  # key of a whole new weight (modules_to_save)


def _pattern_value(patterns: dict, module: str, default: float) -> float:
    """peft's ``get_pattern_key``: the first pattern that ``module`` equals or ends with (``.pattern``)."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


class LoraAdapter:
    """The adapter in ``folder`` (``adapter_config.json`` and its weights), read lazily."""

    def __init__(self, folder: Path, label: str) -> None:
        self.label = label
        config_path = folder / CONFIG_FILE
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise UserInputError(f"--peft {label}: cannot read {CONFIG_FILE} ({exc})") from exc
        kind = config.get("peft_type", "LORA")
        if kind != "LORA":
            raise UserInputError(f"--peft {label}: a {kind} adapter; only LoRA adapters merge per tensor")
        if config.get("use_dora"):
            raise UserInputError(f"--peft {label}: DoRA adapters are not merged per tensor; use the esd task")
        self.config = config
        self.base_model = config.get("base_model_name_or_path")
        self.file = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
        if self.file is None:
            raise UserInputError(f"--peft {label}: no {' or '.join(WEIGHT_FILES)} in {folder}")
        self._bin: dict[str, torch.Tensor] | None = None
        self.updates = self._updates(self._keys())

    def _keys(self) -> list[str]:
        if self.file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(self.file), framework="pt") as handle:
                return list(handle.keys())
        self._bin = torch.load(self.file, map_location="cpu", weights_only=True)  # small; no pickled code
        return list(self._bin)

    def _updates(self, keys: list[str]) -> dict[str, ModuleUpdate]:
        pairs: dict[str, dict[str, str]] = {}
        replaced: dict[str, str] = {}
        for key in keys:
            name = key.removeprefix(PREFIX)
            match = _LORA.match(name)
            if match:
                pairs.setdefault(match["module"], {})[match["which"]] = key
            elif name.endswith(".weight") and "lora_" not in name:
                replaced[name.removesuffix(".weight")] = key
        updates = {module: ModuleUpdate(replacement=key) for module, key in replaced.items()}
        r, alpha = self.config.get("r", 8), self.config.get("lora_alpha", 8)
        for module, pair in pairs.items():
            if set(pair) != {"A", "B"}:
                raise UserInputError(f"--peft {self.label}: {module} has lora_{next(iter(pair))} only")
            rank = int(_pattern_value(self.config.get("rank_pattern") or {}, module, r))
            scale_alpha = _pattern_value(self.config.get("alpha_pattern") or {}, module, alpha)
            scale = scale_alpha / (math.sqrt(rank) if self.config.get("use_rslora") else rank)
            updates[module] = ModuleUpdate(pair["A"], pair["B"], scale, rank)
        return updates

    def _tensor(self, key: str, device: torch.device) -> torch.Tensor:
        if self._bin is not None:
            return self._bin[key].to(device, copy=True)
        return read_tensor(self.file, key, device)

    def check_layers(self, aliases: dict[str, list[str]]) -> None:
        """Refuse updates of a weight the analysed layer ``name`` shares with other modules (``aliases``:
        layer -> the other modules holding its weight)."""
        for layer, others in aliases.items():
            for other in others:
                if other in self.updates and other != layer:
                    raise UserInputError(
                        f"--peft {self.label}: it changes {other}, whose weight is tied to layer {layer}; "
                        "tied weights are not merged per tensor"
                    )

    def merged(self, module: str, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` of ``module`` with this adapter merged in (``weight`` itself if it has no update)."""
        update = self.updates.get(module)
        if update is None:
            return weight
        if update.replacement is not None:
            return self._tensor(update.replacement, weight.device).to(weight.dtype)
        a = self._tensor(update.key_a, weight.device)  # type: ignore[arg-type]
        b = self._tensor(update.key_b, weight.device)  # type: ignore[arg-type]
        if a.shape[0] != update.rank or b.shape[1] != update.rank:
            raise UserInputError(
                f"--peft {self.label}: {module} has rank {a.shape[0]}, its config says r={update.rank}"
            )
        compute = torch.float32 if a.dtype in (torch.float16, torch.bfloat16) else a.dtype
        delta = b.to(compute) @ a.to(compute)
        if self.config.get("fan_in_fan_out"):
            delta = delta.T
        delta.mul_(update.scale)
        if delta.shape != weight.shape:
            raise UserInputError(
                f"--peft {self.label}: {module}'s update has shape {tuple(delta.shape)}, the weight "
                f"{tuple(weight.shape)} (is it an adapter of this base model?)"
            )
        out = weight.clone()
        out += delta
        return out


def _hub_adapter(repo: str, revision: str | None) -> Path:
    return hub_snapshot(repo, revision, (CONFIG_FILE, *WEIGHT_FILES))


def open_adapter(name: str, revision: str | None = None) -> LoraAdapter:
    """The adapter at the local folder or hub id ``name``."""
    return LoraAdapter(local_folder(name, revision, "--peft", _hub_adapter), name)
