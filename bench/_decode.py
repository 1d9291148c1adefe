"""Decode timing shared by bench/precision.py and bench/compression.py.

Loads a ``perf-hf`` model with the given model args and measures one point of the throughput task
(:func:`lm_eval_perf.tasks.throughput.runner.run`): the same prompts, clock, fast path
(``generation_backend=static``: static KV cache, compiled and graphed decode step) and record as
``--tasks perf_throughput``, so these benches' tok/s are the task's decode tokens/s.
"""

from __future__ import annotations

import gc
import sys
import tempfile
from pathlib import Path

import torch

from lm_eval_perf.records.artifacts import THROUGHPUT
from lm_eval_perf.tasks.sweeps.store import ResultsFile
from lm_eval_perf.tasks.throughput import runner


def load(pretrained: str, device: str, batch_size: int = 1, **model_args):
    """A ``perf-hf`` model (the real loading path, records included), or the one-line reason it failed."""
    from lm_eval_perf.errors import UserInputError
    from lm_eval_perf.models.perf_hf import PerfHFLM

    try:
        lm = PerfHFLM(
            pretrained=pretrained,
            device=device,
            batch_size=batch_size,
            print_summary=False,
            artifacts_dir=tempfile.mkdtemp(prefix="bench-decode-"),
            **model_args,
        )
        return lm, None
    except (UserInputError, ImportError, RuntimeError, NotImplementedError) as exc:
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"


def device_report(small: bool) -> tuple[str, dict] | None:
    """The device of a bench run (``cpu`` with ``--small``, else ``cuda``) and its record's header;
    ``None`` (after saying why) when a GPU run finds no GPU."""
    if not small and not torch.cuda.is_available():
        print("no CUDA GPU: run with --small on CPU", file=sys.stderr)
        return None
    device = "cpu" if small else "cuda"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return device, {"device": name, "torch": torch.__version__}


def free(*objects) -> None:
    """Drop a loaded model: memory, and Dynamo's compiled code for it (the next model compiles afresh)."""
    del objects
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


MODES = ("eager", "static", "static-shapes")  # static-shapes: compile_shapes=static


def decode(lm, batch: int, prompt: int, new_tokens: int, mode: str, repeats: int) -> dict:
    """One throughput-task point on ``lm`` (``mode``: one of :data:`MODES`), measured afresh on every
    call: decode tok/s, allocator peak memory, J/token, decode path."""
    backend = "eager" if mode == "eager" else "static"
    lm.generation_backend = backend
    options = {
        "compile_shapes": "static" if mode == "static-shapes" else "dynamic",
        "batch_sizes": [batch],
        "gen_lengths": [new_tokens],
        "prompt_len": prompt,
        "prompt_source": "random",
        "min_iterations": repeats,
        "min_seconds": 0,
        "warmup_iterations": 1,
    }
    result = runner.run(lm, options)
    results = Path(result["artifacts"][THROUGHPUT.key])
    records = [
        r
        for r in ResultsFile(results).records().values()
        if r["key"]["backend"] == backend
        and r["key"]["batch_size"] == batch
        and r["key"]["new_tokens"] == new_tokens
    ]
    results.unlink()  # the runner resumes from this file: the next call measures afresh
    if not records:
        return {"error": "the throughput runner recorded no point"}
    record = records[-1]
    if record["status"] != "ok":
        return {"error": f"{record['status']}: {record.get('error')}"}
    return {
        "tok_s": record["decode_tokens_per_s"],
        "tpot_p50_s": record["tpot_s"]["p50"],
        "peak_memory_gib": record["peak_memory_allocated_gib"],
        "j_per_token": record["energy_per_token_j"],
        "mbu": record.get("decode_mbu"),
        "path": record["decode_path"],
    }
