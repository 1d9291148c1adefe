"""A model's weights read straight from its checkpoint files, one tensor at a time, without the model.

    checkpoint = open_checkpoint("org/model" | "path/to/dir" | "path/to/model.gguf" | "bundled:smollm2")
    refs = checkpoint.tensors(skeleton)            # checkpoint key -> TensorRef (shape, dtype, file, offset)
    weight = checkpoint.read(refs[key], device)    # that one tensor, on ``device``, owning its memory

Formats:

* **safetensors** - a folder with ``config.json`` and ``model.safetensors``, or shards named by
  ``model.safetensors.index.json`` (only the files the index names; without an index, every
  ``*.safetensors`` in the folder). Each file's header (8-byte length + JSON: dtype, shape, byte
  offsets) is read once; a tensor is read with safetensors' lazy ``safe_open``, which maps the file,
  and the file is closed again right after that one tensor is copied out. Keeping a shard open would
  leave every page read from it in the process's resident memory until it is closed (measured: RSS
  grows by the whole shard), so host memory holds one tensor at a time, not one shard.
* **GGUF** - a ``.gguf`` file: its config from the GGUF metadata (transformers' reader), tensors
  dequantized one at a time by the ``gguf`` package and renamed / un-permuted by transformers' tensor
  processors - exactly what transformers does when it loads the file whole (and how
  :mod:`lm_eval_perf.models.bundled` converts the bundled model). The mapped file pages of a tensor are
  released after it is read (``madvise(MADV_DONTNEED)``), for the same reason.
* **hub ids** - ``huggingface_hub.snapshot_download`` of ``config.json`` and the safetensors index,
  then of the shards the index names (every ``*.safetensors`` without one) - nothing else (``revision``
  honoured; ``HF_HUB_OFFLINE=1`` uses the local cache); then as a folder.

``arch:`` presets have random weights and no checkpoint: they are refused with a one-line error.
Which keys hold the analysed layers is decided by :mod:`.stream` from a model skeleton built on the
``meta`` device (no memory); :func:`build_skeleton` builds it from the checkpoint's config.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models import sources

INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"
FLOAT_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lies: its key, shape (torch order), stored dtype, file and byte range."""

    key: str
    shape: tuple[int, ...]
    dtype: str  # "bfloat16", "float32", ... or a GGUF type ("gguf:Q4_1", "gguf:F16", ...)
    file: Path
    offset: int  # bytes from the start of the file (tensors are read in file order)
    nbytes: int
    stored_name: str = ""  # the name in the file where it differs from ``key`` (GGUF)

    @property
    def loaded_bytes(self) -> int:
        """Bytes the tensor takes once read: as stored, or as float32 (at most) when dequantized from GGUF."""
        return math.prod(self.shape) * 4 if self.dtype.startswith("gguf:") else self.nbytes

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES.values() or self.dtype.startswith("gguf:")  # GGUF: dequantized


class Checkpoint(Protocol):
    """A checkpoint's config and tensors (:class:`SafetensorsCheckpoint`, :class:`GGUFCheckpoint`)."""

    label: str  # the model as the user named it

    def config(self) -> Any: ...

    def tensors(self, skeleton: nn.Module) -> dict[str, TensorRef]: ...

    def read(self, ref: TensorRef, device: torch.device) -> torch.Tensor: ...


def read_tensor(file: Path, key: str, device: torch.device) -> torch.Tensor:
    """Tensor ``key`` of the safetensors ``file`` on ``device``, copied out of the file, which is closed."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        return handle.get_tensor(key).to(device, copy=True)


def _header(file: Path) -> dict[str, dict]:
    """The tensor entries of a safetensors file's header (``__metadata__`` left out)."""
    try:
        with open(file, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > file.stat().st_size - 8:
                raise ValueError(f"its header would be {length} bytes long")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError) as exc:
        raise UserInputError(f"{file} is not a readable safetensors file: {exc}") from exc
    base = 8 + length
    return {
        k: {**v, "start": base + v["data_offsets"][0], "nbytes": v["data_offsets"][1] - v["data_offsets"][0]}
        for k, v in header.items()
        if k != "__metadata__"
    }


def _load_config(folder: Path, **kwargs) -> Any:
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"cannot read the model config of {folder}: {first}") from exc


class SafetensorsCheckpoint:
    """A folder of ``config.json`` and safetensors files (sharded or not)."""

    def __init__(self, folder: Path, label: str) -> None:
        self.folder = folder
        self.label = label
        index = folder / INDEX_FILE
        if index.is_file():
            names = list(dict.fromkeys(self.index_files(index)))
        else:
            names = sorted(p.name for p in folder.glob("*.safetensors"))
        self.files = [folder / name for name in names]
        if not self.files:
            gguf = sorted(folder.glob("*.gguf"))
            hint = f"; pass the GGUF file itself, e.g. {gguf[0]}" if gguf else ""
            raise UserInputError(f"{folder} holds no *.safetensors weights{hint}")
        missing = [f.name for f in self.files if not f.is_file()]
        if missing:
            raise UserInputError(f"{folder}: {INDEX_FILE} names missing shard(s) {', '.join(missing[:3])}")

    @staticmethod
    def index_files(index: Path) -> list[str]:
        """The shard file of each tensor a ``model.safetensors.index.json`` maps."""
        try:
            return list(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserInputError(f"{index} is not a safetensors index (no weight_map): {exc}") from exc

    def config(self) -> Any:
        if not (self.folder / CONFIG_FILE).is_file():
            raise UserInputError(f"{self.folder} has no {CONFIG_FILE}")
        return _load_config(self.folder)

    def tensors(self, skeleton: nn.Module) -> dict[str, TensorRef]:
        refs: dict[str, TensorRef] = {}
        for file in self.files:
            for key, entry in _header(file).items():
                dtype = FLOAT_DTYPES.get(entry["dtype"], entry["dtype"])
                refs.setdefault(
                    key, TensorRef(key, tuple(entry["shape"]), dtype, file, entry["start"], entry["nbytes"])
                )
        return refs

    def read(self, ref: TensorRef, device: torch.device) -> torch.Tensor:
        return read_tensor(ref.file, ref.key, device)


class GGUFCheckpoint:
    """One ``.gguf`` file, dequantized tensor by tensor as transformers' GGUF loader does it."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label
        self._reader: Any = None
        self._processor: Any = None
        self._mapping: dict[str, str] = {}
        self._by_name: dict[str, Any] = {}

    def _metadata(self) -> dict:
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        try:
            return load_gguf_checkpoint(str(self.path), return_tensors=False)
        except (ValueError, NotImplementedError, KeyError) as exc:
            raise UserInputError(f"cannot read the GGUF file {self.path}: {exc}") from exc

    def config(self) -> Any:
        return _load_config(self.path.parent, gguf_file=self.path.name)

    def tensors(self, skeleton: nn.Module) -> dict[str, TensorRef]:
        from gguf import GGUFReader
        from transformers.modeling_gguf_pytorch_utils import (
            TENSOR_PROCESSORS,
            TensorProcessor,
            get_gguf_hf_weights_map,
            read_field,
        )

        metadata = self._metadata()
        self._reader = GGUFReader(str(self.path))
        architecture = read_field(self._reader, "general.architecture")[0]
        self._processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=metadata["config"])
        self._mapping = get_gguf_hf_weights_map(skeleton, self._processor)
        refs = {}
        for tensor in self._reader.tensors:
            key = self._mapping.get(tensor.name)
            if key is None:
                continue
            self._by_name[tensor.name] = tensor
            shape = tuple(
                int(d) for d in reversed(tensor.shape.tolist())
            )  # GGUF lists dimensions fastest first
            dtype = f"gguf:{tensor.tensor_type.name}"
            offset, nbytes = int(tensor.data_offset), int(tensor.n_bytes)
            refs[key] = TensorRef(key, shape, dtype, self.path, offset, nbytes, stored_name=tensor.name)
        return refs

    def read(self, ref: TensorRef, device: torch.device) -> torch.Tensor:
        import numpy as np
        from gguf import dequantize

        tensor = self._by_name[ref.stored_name]
        weights = dequantize(tensor.data, tensor.tensor_type)
        processed = self._processor.process(
            weights=weights,
            name=ref.stored_name,
            tensor_key_mapping=self._mapping,
            parsed_parameters={"config": self._processor.config, "tensors": {}},
        )
        result = torch.from_numpy(np.copy(processed.weights)).to(device)
        mapped = getattr(self._reader.data, "_mmap", None)
        if mapped is not None and hasattr(mapped, "madvise"):
            mapped.madvise(mmap.MADV_DONTNEED)  # drop the file pages just read from this process's RSS
        return result


def hub_snapshot(repo: str, revision: str | None, patterns: tuple[str, ...]) -> Path:
    """The local folder of a hub repository's files matching ``patterns`` (downloaded when needed)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=repo, revision=revision, allow_patterns=list(patterns)))
    except (HfHubHTTPError, LocalEntryNotFoundError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"cannot fetch {repo} from the hub: {first}") from exc


def hub_model(repo: str, revision: str | None) -> Path:
    """A hub model's config and weights: the shards its safetensors index names (not other copies a
    repository may hold, e.g. a consolidated file), else every ``*.safetensors``."""
    folder = hub_snapshot(repo, revision, (CONFIG_FILE, INDEX_FILE))
    if not (folder / INDEX_FILE).is_file():
        return hub_snapshot(repo, revision, (CONFIG_FILE, "*.safetensors"))
    shards = sorted(set(SafetensorsCheckpoint.index_files(folder / INDEX_FILE)))
    return hub_snapshot(repo, revision, (CONFIG_FILE, INDEX_FILE, *shards))


def local_folder(name: str, revision: str | None, what: str, hub: Callable[[str, str | None], Path]) -> Path:
    """The folder behind ``name``: a local path (``~`` expanded) or a hub id (``hub(name, revision)``)."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserInputError(f"{what} {name} is not a folder")
        return path
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        raise UserInputError(f"{what} path {name} does not exist")
    return hub(name, revision)


def open_checkpoint(model: str, revision: str | None = None) -> Checkpoint:
    """The checkpoint ``model`` names (see the module docstring); a one-line error if it names none."""
    if model.startswith(sources.ARCH_PREFIX):
        raise UserInputError(
            f"--model {model} has random weights and no checkpoint to stream: run the esd task on it "
            "(lm-eval-perf --model perf-hf --tasks esd) or save it first"
        )
    if model.startswith(sources.BUNDLED_PREFIX):
        return SafetensorsCheckpoint(Path(sources.resolve(model, None, None).pretrained), model)
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserInputError(f"model file {model} does not exist")
        return GGUFCheckpoint(path, model)
    return SafetensorsCheckpoint(local_folder(model, revision, "model", hub_model), model)


def build_skeleton(config: Any) -> nn.Module:
    """The model of ``config`` on the ``meta`` device: module names, shapes and tied weights, no memory.

    The class is the one perf-hf loads (``AutoModelForCausalLM``), so layer names match a loaded run;
    a config without a causal-LM class gets its ``AutoModel``.
    """
    import transformers

    with torch.device("meta"):
        try:
            return transformers.AutoModelForCausalLM.from_config(config)
        except ValueError:
            try:
                return transformers.AutoModel.from_config(config)
            except ValueError as exc:
                raise UserInputError(f"cannot build a {config.model_type} model: {exc}") from exc


def weight_aliases(skeleton: nn.Module) -> Mapping[int, list[str]]:
    """Every name of each parameter of ``skeleton`` (tied weights have several), by ``id``."""
    aliases: dict[int, list[str]] = {}
    for name, parameter in skeleton.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(parameter), []).append(name)
    return aliases
