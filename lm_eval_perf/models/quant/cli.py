"""``lm-eval-perf quantize``: write an AWQ int4 checkpoint of a local model, calibrated on local text.

    lm-eval-perf quantize --method awq --model bundled:smollm2 --out DIR --bbh-dir /path/to/bbh \
        [--group-size 128|64|32] [--samples 64] [--seq-len 512] [--device cuda] [--backend builtin]

Without ``--group-size`` the largest of 128, 64 and 32 that divides the ``in_features`` of every
quantized layer is used, and printed (SmolLM2-135M's hidden size 576 takes 64).

``--backend builtin`` (default) is :mod:`lm_eval_perf.models.quant.awq_search` - plain torch, runs on
the GPU (or on CPU for small models). ``--backend autoawq`` runs the archived AutoAWQ package instead
(``pip install --no-deps autoawq==0.2.7.post3``: its quantizer is plain torch and works with
transformers 5; its inference kernels are not needed here). Both write the same AWQ GEMM format;
load the result with ``--model_args pretrained=DIR,precision=awq``. ``DIR`` must not exist yet (or be
empty); it appears complete or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import transformers

from lm_eval_perf.atomic import publish
from lm_eval_perf.bbh import bbh_directory
from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models import sources
from lm_eval_perf.models.quant.calibration import bbh_texts, token_blocks
from lm_eval_perf.models.quant.kernels import require, version_of
from lm_eval_perf.models.surgery import is_output_projection

RECORD = "lm_eval_perf_quantize.json"
GROUP_SIZES = (128, 64, 32)  # the AWQ GEMM format's group sizes, largest first


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lm-eval-perf quantize", description=__doc__.split("\n")[0])
    parser.add_argument("--method", required=True, choices=["awq"], help="quantization method")
    parser.add_argument("--model", required=True, help="local HF directory or bundled:smollm2")
    parser.add_argument("--out", required=True, help="new directory for the quantized checkpoint")
    parser.add_argument("--bbh-dir", help="BBH folder for calibration text (default $LM_EVAL_PERF_BBH_DIR)")
    parser.add_argument(
        "--group-size",
        type=int,
        choices=GROUP_SIZES,
        help="input columns per scale (default: the largest of 128, 64, 32 that divides every "
        "quantized layer's in_features)",
    )
    parser.add_argument("--samples", type=int, default=64, help="calibration blocks (default 64)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per block (default 512)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument(
        "--backend",
        choices=["builtin", "autoawq"],
        default="builtin",
        help="builtin (default): this project's plain-torch AWQ, llama-style layers; autoawq: the archived "
        "AutoAWQ package (pip install --no-deps autoawq), other architectures too",
    )
    return parser


def quantized_in_features(model_dir: str) -> dict[str, int]:
    """``in_features`` of every Linear but ``lm_head`` (the layers AWQ quantizes), read from a weightless
    copy of the model built on the meta device: known before anything is loaded."""
    config = transformers.AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        skeleton = transformers.AutoModelForCausalLM.from_config(config)
    return {
        name: module.in_features
        for name, module in skeleton.named_modules()
        if isinstance(module, torch.nn.Linear) and not is_output_projection(name)
    }


def choose_group_size(in_features: dict[str, int], requested: int | None) -> int:
    """``requested``, or the largest of :data:`GROUP_SIZES` that divides every layer's ``in_features``;
    a one-line error naming the first layer it does not divide."""
    for size in (requested,) if requested else GROUP_SIZES:
        if not any(k % size for k in in_features.values()):
            return size
    size = requested or GROUP_SIZES[-1]
    name, k = next((n, k) for n, k in in_features.items() if k % size)
    fits = [g for g in GROUP_SIZES if not any(f % g for f in in_features.values())]
    hint = f"; --group-size {fits[0]} divides every layer's" if fits else ""
    raise UserInputError(f"--group-size {size} does not divide in_features {k} of {name}{hint}")


def _staging(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserInputError(f"--out {out} already exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))


def _builtin(model_dir: str, folder: Path, texts: list[str], args, device: str) -> dict:
    from lm_eval_perf.models.quant.awq_checkpoint import save_awq
    from lm_eval_perf.models.quant.awq_search import awq_quantize

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    ids = token_blocks(tokenizer, texts, args.samples, args.seq_len)
    quantized = awq_quantize(
        model, ids, args.group_size, progress=lambda i, n: print(f"AWQ layer {i}/{n}", flush=True)
    )
    save_awq(model, quantized, tokenizer, folder, args.group_size)
    return {
        "calibration_blocks": int(ids.shape[0]),
        "layers": len(quantized),
        "compute_dtype": str(dtype)[6:],
    }


def _autoawq(model_dir: str, folder: Path, texts: list[str], args, device: str) -> dict:
    awq = require("awq", "--backend autoawq (archived AutoAWQ; --backend builtin needs no package)")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = awq.AutoAWQForCausalLM.from_pretrained(model_dir, device_map=device)
    config = {"zero_point": True, "q_group_size": args.group_size, "w_bit": 4, "version": "GEMM"}
    model.quantize(
        tokenizer,
        quant_config=config,
        calib_data=texts,
        max_calib_samples=args.samples,
        max_calib_seq_len=args.seq_len,
    )
    model.save_quantized(str(folder))
    tokenizer.save_pretrained(folder)
    return {"autoawq_version": version_of("autoawq")}


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    model_dir = sources.local_model_dir(
        args.model, "quantize", "needs trained weights: arch: models are random (use precision=int4 for them)"
    )
    group_size = choose_group_size(quantized_in_features(model_dir), args.group_size)
    if args.group_size is None:
        print(f"group size {group_size}: the largest of 128, 64, 32 dividing every layer's in_features")
    args.group_size = group_size
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError("--device cuda: no CUDA GPU here; use --device cpu (slow beyond small models)")
    texts = bbh_texts(bbh_directory(args.bbh_dir))
    out = Path(args.out).expanduser()
    staging = _staging(out)
    started = time.perf_counter()
    try:
        run = _builtin if args.backend == "builtin" else _autoawq
        details = run(model_dir, staging, texts, args, device)
        record = {
            "method": "awq",
            "backend": args.backend,
            "source_model": args.model,
            "group_size": args.group_size,
            "bits": 4,
            "calibration": {"text": "BBH inputs", "samples": args.samples, "seq_len": args.seq_len},
            "device": device,
            "seconds": time.perf_counter() - started,
            **details,
        }
        (staging / RECORD).write_text(json.dumps(record, indent=2))
        publish(staging)  # mkdtemp and safetensors write privately (0700, 0600)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(
        f"wrote AWQ checkpoint {out} in {record['seconds']:.1f} s; "
        f"evaluate it with --model_args pretrained={out},precision=awq"
    )
    return 0
