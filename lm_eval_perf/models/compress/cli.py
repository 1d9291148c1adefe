"""``lm-eval-perf compress``: SVD-truncate a model once and save it as a normal HF directory.

    lm-eval-perf compress --model bundled:smollm2 --svd-ratio 0.6 --out DIR [--svd-targets PATTERN]
        [--svd-solver exact] [--device cuda] [--dtype bfloat16]

The directory (safetensors + tokenizer; the ranks in ``config.json`` under ``lm_eval_perf_compression``)
loads back without recomputing: ``--model_args pretrained=DIR`` (or ``compressed=DIR``). ``DIR`` must not
exist yet (or be empty); it appears complete or not at all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch
import transformers

from lm_eval_perf.atomic import publish
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models import sources
from lm_eval_perf.models.compress.checkpoints import save_compressed
from lm_eval_perf.models.compress.svd import DEFAULT_TARGETS, SOLVERS, apply_svd


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lm-eval-perf compress", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="local HF directory or bundled:smollm2")
    parser.add_argument("--out", required=True, help="new directory for the compressed model")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--svd-ratio", type=float, help="fraction of each layer's parameters kept, (0, 1]")
    size.add_argument("--svd-rank", type=int, help="fixed rank of every targeted layer")
    parser.add_argument("--svd-targets", default=DEFAULT_TARGETS, help="|-joined globs or re: regexes")
    parser.add_argument(
        "--svd-solver",
        default="exact",
        choices=list(SOLVERS),
        help="; ".join(f"{name}: {how}" for name, how in SOLVERS.items()) + " (default: exact)",
    )
    parser.add_argument("--device", help="where the SVD runs (default: cuda when there is one)")
    parser.add_argument("--dtype", default="auto", help="dtype of the saved weights (default: the model's)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    model_dir = sources.local_model_dir(
        args.model, "compress", "needs a saved model: use svd_ratio= as a model argument for arch: models"
    )
    out = Path(args.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserInputError(f"--out {out} already exists and is not empty")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype, None)
    if dtype is None:
        raise UserInputError(f"--dtype {args.dtype} is not a torch dtype")
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    base_params = sum(p.numel() for p in model.parameters())
    result = apply_svd(model, args.svd_ratio, args.svd_rank, args.svd_targets, args.svd_solver)
    block = {
        "method": "svd",
        "ratio": args.svd_ratio,
        "rank": args.svd_rank,
        "targets": args.svd_targets,
        "solver": args.svd_solver,
        "ranks": result.ranks,
        "params_base": base_params,
        "linear_params_dense": result.dense_params,
        "linear_params_lowrank": result.lowrank_params,
        "svd_seconds": result.seconds,
        "source_model": args.model,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        save_compressed(model.cpu(), block, transformers.AutoTokenizer.from_pretrained(model_dir), staging)
        publish(staging)  # mkdtemp and safetensors write privately (0700, 0600)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(
        f"wrote {out}: {len(result.ranks)} layers factorized in {result.seconds:.1f} s; "
        f"evaluate it with --model_args pretrained={out}"
    )
    return 0
