"""Precisions side by side: batch-1 decode of a 7B-class model in bf16, fp16 and every int4 path,
then SmolLM2-135M in bf16 vs int4 AWQ (quantized by ``lm-eval-perf quantize``) on the local BBH subset.

Part 1 (random weights, ``arch:qwen2.5-7b``): for each row, decode tok/s at batch 1 (static-cache
generate by default - eager decode of a 7B model at batch 1 is bound by Python overhead; add
``--modes eager,static`` for both), peak CUDA memory and the weight bytes as held in memory.
Goal: an int4 path ≥ 2× bf16 decode tok/s at ≤ 35 % of bf16 weight memory. Rows whose package is
missing print the reason. A single run is not a figure: each row is measured ``--repeats`` times
(default 3), each time compiled afresh (Dynamo reset, Inductor's caches off - the spread between
compilations is what one run hides), and the table gives the median tok/s with the range, and the
ratio of medians to the first row with the range of ratios (lowest / highest of the first row ..
highest / lowest).
Part 2 (real weights): quantize SmolLM2 with AWQ (group 64: its hidden size 576 is no multiple of
128), evaluate bf16 and AWQ on ``leaderboard_bbh_local`` with lm-eval: acc_norm, tok/s, energy,
weight bytes, MCR.

    python -m bench.precision            # GPU (H100: about 6 minutes per repeat)
    python -m bench.precision --rows bf16,tinygemm-lm_head,tinygemm --skip-end-to-end --repeats 3
    python -m bench.precision --cpu --skip-decode   # part 2 on the CPU with the real model (float32
                                                    # base, AWQ on tinygemm's CPU kernel)
    python -m bench.precision --small    # CPU: tiny-llama everywhere (part 2: random weights, 0-shot,
                                         # 1 doc per subtask) - checks the script, not the numbers
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench._decode import decode, device_report, free, load
from bench._out import save
from lm_eval_perf.bbh import default_directory
from lm_eval_perf.records.console import fmt, markdown_table

ROWS = {  # short name -> (label, model args)
    "bf16": ("bfloat16", {"precision": "bfloat16"}),
    "fp16": ("float16", {"precision": "float16"}),
    "fp32": ("float32", {"precision": "float32"}),
    "tinygemm": ("int4 tinygemm", {"precision": "int4", "quant_backend": "tinygemm"}),
    "tinygemm-lm_head": (
        "int4 tinygemm + lm_head",
        {"precision": "int4", "quant_backend": "tinygemm", "quantize_lm_head": "true"},
    ),
    "gemlite": ("int4 gemlite", {"precision": "int4", "quant_backend": "gemlite"}),
    "torchao": ("int4 torchao plain", {"precision": "int4", "quant_backend": "torchao"}),
    "torchao-tile": ("int4 torchao tile", {"precision": "int4", "quant_backend": "torchao-tile"}),
    "torchao-preshuffled": (
        "int4 torchao preshuffled",
        {"precision": "int4", "quant_backend": "torchao-preshuffled"},
    ),
    "nf4": ("nf4 bitsandbytes", {"precision": "nf4"}),
    "int4-cpu": (
        "int4 tinygemm",
        {"precision": "int4", "quant_backend": "tinygemm", "group_size": 32, "dtype": "float32"},
    ),
}
# torchao-tile runs the same aten kernel as tinygemm: opt-in with --rows.
DEFAULT_ROWS = {
    "gpu": "bf16,fp16,tinygemm,tinygemm-lm_head,gemlite,torchao,torchao-preshuffled,nf4",
    "cpu": "fp32,bf16,int4-cpu",
}


def part_decode(args, device: str, report: dict) -> None:
    """Fill ``report["decode"]`` row by row, saving the record after each (a cut-off run keeps them)."""
    rows = report["decode"] = []
    for key in args.rows.split(","):
        if key not in ROWS:
            raise SystemExit(f"unknown row {key!r}: use {', '.join(ROWS)}")
        label, model_args = ROWS[key]
        lm, error = load(args.arch, device, **model_args)
        row = {"row": label, "model_args": model_args, "error": error}
        if lm is not None:
            row["record"] = lm.plan.record(lm.model)["precision"]
            for mode in args.modes.split(","):
                row[mode] = _repeated(lm, args, mode)
                print(label, mode, {k: v for k, v in row[mode].items() if k != "runs"}, flush=True)
        rows.append(row)
        save("precision", report)
        free(lm)


def _repeated(lm, args, mode: str) -> dict:
    """``args.repeats`` decode measurements of one row and mode, each compiled afresh: the first run's
    fields with ``tok_s`` the median of the runs, ``tok_s_min`` / ``tok_s_max`` the range and ``runs``
    every run."""
    runs = []
    for _ in range(args.repeats):
        free()  # Dynamo's compiled code goes: the next run compiles again
        runs.append(decode(lm, 1, args.prompt, args.new_tokens, mode, args.iterations))
    failed = next((r for r in runs if "error" in r), None)
    if failed is not None:
        return {"error": failed["error"], "runs": runs}
    rates = [r["tok_s"] for r in runs]
    return {
        **runs[0],
        "tok_s": statistics.median(rates),
        "tok_s_min": min(rates),
        "tok_s_max": max(rates),
        "runs": runs,
    }


def _evaluate(pretrained: str, device: str, args, **model_args) -> dict:
    import lm_eval

    from lm_eval_perf.registration import ensure_registered

    ensure_registered()
    lm, error = load(pretrained, device, batch_size=16, **model_args)
    if lm is None:
        return {"error": error}
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=["leaderboard_bbh_local"],
        limit=args.limit,
        num_fewshot=args.num_fewshot,
        metadata={"bbh_dir": args.bbh_dir},
    )
    record = lm.finish_measurement()
    free(lm)
    block = record["kinds"].get("loglikelihood", {})
    return {
        "acc_norm": results["results"]["leaderboard_bbh_local"]["acc_norm,none"],
        "prompt_tokens_per_s": block.get("prompt_tokens_per_s"),
        "energy_j": block.get("energy_j"),
        "al_s": block.get("al_s"),
        "precision": record["load"]["precision"],
        "results": {"results": results["results"], "config": {"efficiency": record}},
    }


def _tiny_checkpoint(folder: Path) -> Path:
    """tiny-llama with random weights and the bundled tokenizer, saved as a HF directory."""
    import torch
    import transformers
    from _models import random_model

    from lm_eval_perf.models.bundled import smollm2_hf_dir

    random_model("tiny-llama", "cpu", torch.float32).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(smollm2_hf_dir()).save_pretrained(folder)
    return folder


def part_end_to_end(args, device: str, report: dict) -> None:
    """Fill ``report["end_to_end"]``: quantize, then one evaluation per run, saving after each step."""
    from lm_eval_perf.cli import main as cli
    from lm_eval_perf.report.mcr import mcr_from_results

    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    if args.small:  # a real checkpoint directory of a tiny model: exercises every step in seconds
        args.model = str(_tiny_checkpoint(work / "tiny"))
    out = work / "awq"
    started = time.perf_counter()
    argv = [
        "quantize",
        "--method",
        "awq",
        "--model",
        args.model,
        "--out",
        str(out),
        "--bbh-dir",
        args.bbh_dir,
    ]
    argv += ["--group-size", str(args.group_size), "--samples", str(args.samples), "--seq-len", "256"]
    status = cli([*argv, "--device", device])
    if status:
        report["end_to_end"] = {"error": f"quantize exited {status}"}
        save("precision", report)
        return
    runs: dict[str, dict] = {}
    report["end_to_end"] = {
        "quantize_seconds": time.perf_counter() - started,
        "checkpoint": str(out),
        "runs": runs,
    }
    save("precision", report)
    on_cpu = device == "cpu"
    base_dtype = "float32" if on_cpu else "bfloat16"
    jobs = [(base_dtype, args.model, {"precision": base_dtype})]
    for backend in args.awq_backends.split(","):
        extra = {"dtype": "float32"} if on_cpu else {}
        jobs.append((f"awq {backend}", str(out), {"precision": "awq", "quant_backend": backend, **extra}))
    for name, pretrained, model_args in jobs:
        runs[name] = _evaluate(pretrained, device, args, **model_args)
        base = runs[base_dtype]
        if "results" in runs[name] and "results" in base:
            runs[name]["mcr"] = mcr_from_results(
                base["results"], runs[name]["results"], "acc_norm", "leaderboard_bbh_local"
            )["mcr"]
        save("precision", report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="CPU: tiny model, tiny BBH subset")
    parser.add_argument("--arch", help="architecture for part 1 (default arch:qwen2.5-7b; small: tiny-llama)")
    parser.add_argument("--rows", help=f"comma list of {', '.join(ROWS)} (default: {DEFAULT_ROWS['gpu']})")
    parser.add_argument("--modes", help="generate modes: eager,static (default static; small: eager)")
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, help="tokens per generation (default 128; small 16)")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per row (median, range)")
    parser.add_argument("--model", default="bundled:smollm2", help="real model of part 2")
    parser.add_argument("--bbh-dir", default=default_directory())
    parser.add_argument("--limit", type=int, help="BBH docs per subtask (default 20; small 1)")
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--num-fewshot", type=int, help="BBH shots (default: the task's 3; small 0)")
    parser.add_argument("--samples", type=int, help="AWQ calibration blocks (default 64; small 4)")
    parser.add_argument("--awq-backends", help="comma list (default tinygemm,gemlite; small tinygemm)")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (implied by --small)")
    args = parser.parse_args()
    small = args.small
    args.arch = args.arch or ("arch:tiny-llama" if small else "arch:qwen2.5-7b")
    args.modes = args.modes or ("eager" if small else "static")
    args.rows = args.rows or DEFAULT_ROWS["cpu" if small else "gpu"]
    args.new_tokens = args.new_tokens or (16 if small else 128)
    args.limit = args.limit or (1 if small else 20)
    args.samples = args.samples or (4 if small else 64)
    args.num_fewshot = 0 if small and args.num_fewshot is None else args.num_fewshot
    args.awq_backends = args.awq_backends or ("tinygemm" if small or args.cpu else "tinygemm,gemlite")
    if small:
        args.group_size = 32 if args.group_size == 64 else args.group_size
    if args.repeats < 1 or args.iterations < 1:
        raise SystemExit("--repeats and --iterations must be >= 1")
    torch.compiler.config.force_disable_caches = args.repeats > 1  # every repeat a compilation of its own
    started = device_report(small or args.cpu)
    if started is None:
        return 2
    device, report = started
    if not args.skip_decode:
        part_decode(args, device, report)
    if not args.skip_end_to_end:
        part_end_to_end(args, device, report)
    save("precision", report)
    print(render(report, args))
    return 0


def _rate_cell(got: dict, base: dict) -> str:
    """``median [min-max] (ratio of medians× [lowest-highest ratio])`` against the first row."""
    rate, low, high = got.get("tok_s"), got.get("tok_s_min"), got.get("tok_s_max")
    b_rate, b_low, b_high = base.get("tok_s"), base.get("tok_s_min"), base.get("tok_s_max")
    if rate is None or not b_rate:
        return fmt(rate, 1)
    spread = f"{fmt(low / b_high, 2)}-{fmt(high / b_low, 2)}" if low and b_low else "--"
    return f"{fmt(rate, 1)} [{fmt(low, 1)}-{fmt(high, 1)}] ({fmt(rate / b_rate, 2)}× [{spread}])"


def render(report: dict, args) -> str:
    modes = args.modes.split(",")
    decoded = report.get("decode", [])
    base = next((r for r in decoded if r.get("record")), None)
    base_bytes = base["record"]["weight_bytes"] if base else None
    base_runs = {m: (base or {}).get(m, {}) for m in modes}
    header = (
        ["row", "kernel", "weight GiB", "% of first"]
        + [f"{m} tok/s median [range] (×first [range])" for m in modes]
        + ["peak GiB"]
    )
    rows = []
    for row in decoded:
        if row.get("error"):
            rows.append([row["row"], f"skipped: {row['error']}", *[""] * (len(header) - 2)])
            continue
        rec = row["record"]
        group = f", group {rec['group_size']}" if rec.get("group_size") else ""
        cells = [
            row["row"],
            str(rec.get("kernel") or "dense") + group,
            fmt(rec["weight_bytes"] / 2**30),
            fmt(100 * rec["weight_bytes"] / base_bytes, 1),
        ]
        for m in modes:
            got = row.get(m, {})
            cells.append(got["error"] if "error" in got else _rate_cell(got, base_runs[m]))
        cells.append(fmt(next((row[m].get("peak_memory_gib") for m in modes if row.get(m)), None)))
        rows.append(cells)
    parts = []
    if rows:
        parts += [
            f"## Decode, batch 1, {args.arch}, {args.new_tokens} new tokens ({report['device']})",
            "",
            markdown_table(header, rows),
        ]
    e2e = report.get("end_to_end")
    if e2e:
        runs = [
            [name, run["error"], "", "", "", ""]
            if "error" in run
            else [
                name,
                fmt(run["acc_norm"]),
                fmt(run["prompt_tokens_per_s"], 1),
                fmt(run["energy_j"], 1),
                fmt(run["precision"]["weight_bytes"] / 2**20, 1),
                fmt(run.get("mcr")),
            ]
            for name, run in e2e.get("runs", {}).items()
        ]
        parts += [
            "",
            f"## {args.model} on leaderboard_bbh_local (limit {args.limit}/subtask); "
            f"AWQ quantize {fmt(e2e.get('quantize_seconds'), 1)} s",
            "",
            markdown_table(["run", "acc_norm", "prompt tok/s", "energy J", "weight MiB", "MCR"], runs),
        ]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
