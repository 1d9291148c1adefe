"""A random-weight ``arch:`` preset written as a sharded safetensors checkpoint, one shard at a time.

The model is never built: its parameter names and shapes come from a ``meta``-device skeleton, each
tensor is drawn on the device (normal(0, initializer_range) for matrices, ones for 1-D weights, zeros
for biases; a tied weight once, under its first name, as ``save_pretrained`` stores it), and host
memory holds at most one shard. The folder gets ``config.json``, ``model-XXXXX-of-YYYYY.safetensors``
and ``model.safetensors.index.json`` - what ``from_pretrained`` and ``lm-eval-perf esd`` read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from lm_eval_perf.atomic import write_atomic
from lm_eval_perf.models.sources import load_architecture, transformers_config
from lm_eval_perf.tasks.esd.checkpoint import INDEX_FILE, build_skeleton


def _shards(parameters: list[tuple[str, torch.Size]], itemsize: int, shard_bytes: int) -> list[list]:
    """Consecutive parameters grouped into shards of at most ``shard_bytes`` (one tensor may exceed it)."""
    shards: list[list] = [[]]
    size = 0
    for name, shape in parameters:
        nbytes = shape.numel() * itemsize
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    return shards


def _draw(name: str, shape: torch.Size, std: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    if len(shape) >= 2:
        return torch.empty(shape, dtype=dtype, device=device).normal_(0.0, std)
    fill = torch.zeros if name.endswith("bias") else torch.ones
    return fill(shape, dtype=dtype, device=device)


def write_checkpoint(arch: str, folder: Path, dtype: torch.dtype, shard_gib: float, device: str) -> dict:
    """Write preset ``arch`` with random weights into ``folder``; what was written (bytes, seconds)."""
    from safetensors.torch import save_file

    started = time.perf_counter()
    config = transformers_config(load_architecture(arch))
    skeleton = build_skeleton(config)
    parameters = [(name, p.shape) for name, p in skeleton.named_parameters()]  # tied: first name only
    itemsize = torch.empty((), dtype=dtype).element_size()
    shards = _shards(parameters, itemsize, int(shard_gib * 2**30))
    folder.mkdir(parents=True, exist_ok=True)
    config.dtype = dtype
    config.to_json_file(folder / "config.json")
    std = float(getattr(config, "initializer_range", 0.02))
    weight_map: dict[str, str] = {}
    total = 0
    for number, shard in enumerate(shards, 1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: _draw(name, shape, std, dtype, device).cpu() for name, shape in shard}
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        total += sum(t.numel() * itemsize for t in tensors.values())
        weight_map.update(dict.fromkeys(tensors, file))
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    write_atomic(folder / INDEX_FILE, json.dumps(index, indent=1) + "\n")
    return {
        "arch": arch,
        "folder": str(folder),
        "dtype": str(dtype).removeprefix("torch."),
        "bytes": total,
        "shards": len(shards),
        "parameters": sum(shape.numel() for _, shape in parameters),
        "seconds": time.perf_counter() - started,
    }
