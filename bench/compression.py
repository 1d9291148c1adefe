"""SVD compression ratios side by side: decode speed, memory and energy of a 7B-class model at
ratios 1.0, 0.8, 0.6, 0.4, 0.2 (bf16, random weights), batch 1 and a large batch, plus the time of
the SVD of all layers and how the three SVD solvers compare on one decoder layer.

Goals: at batch 1 ratio 0.4 decodes ≥ 2× faster than ratio 1.0 (ideal 2.5×); the SVD of all layers
takes ≤ 60 s on one H100. Batch 1 runs with a static KV cache (compiled decode: eager decode of a 7B
model at batch 1 is bound by Python overhead, not by weight bytes), the large batch eagerly. If one
run exceeds the device's per-command limit, split the ratios (``--ratios 1.0 0.8 0.6`` and
``--ratios 1.0 0.4 0.2``; speed-ups are relative to ratio 1.0 of the same run).

    python -m bench.compression            # GPU (H100: about 6 minutes)
    python -m bench.compression --small    # CPU: tiny-llama, batch 1 and 4
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from bench._decode import MODES, decode, device_report, free, load
from bench._out import save
from lm_eval_perf.models.compress.svd import SOLVERS, low_rank_factors, rank_for_ratio, select_targets
from lm_eval_perf.records.console import fmt, markdown_table


def solver_comparison(args, device: str) -> list[dict]:
    """Time and truncation error of each solver on the first decoder layer's linears at ratio 0.4."""
    lm, error = load(args.arch, device, dtype="bfloat16")
    if lm is None:
        return [{"error": error}]
    names = [n for n in select_targets(lm.model) if ".layers.0." in n]
    rows = []
    for solver in SOLVERS:
        seconds, errors = 0.0, []
        for name in names:
            weight = lm.model.get_submodule(name).weight
            rank = rank_for_ratio(0.4, *weight.shape)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            up, down = low_rank_factors(weight, rank, solver)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - start
            w = weight.float()
            errors.append(float((w - up @ down).norm() / w.norm()))
        rows.append({"solver": solver, "seconds_layer0": seconds, "rel_error": errors, "layers": len(names)})
    free(lm)
    exact = rows[0]["rel_error"]
    for row in rows:
        row["max_error_excess_vs_exact"] = max(e - x for e, x in zip(row["rel_error"], exact))
    return rows


def sweep(args, device: str, report: dict) -> None:
    """Fill ``report["sweep"]`` ratio by ratio, saving the record after each (a cut-off run keeps them)."""
    rows = report["sweep"] = []
    for ratio in args.ratios:
        lm, error = load(args.arch, device, dtype="bfloat16", svd_ratio=ratio, svd_solver=args.solver)
        row = {"ratio": ratio, "error": error}
        if lm is not None:
            record = lm.plan.record(lm.model)
            row["compression"], row["weight_bytes"] = (
                record["compression"],
                record["precision"]["weight_bytes"],
            )
            row["params"] = record["precision"]["params"]
            for batch, mode in zip(args.batches, args.modes):
                column = f"batch {batch} {mode}"
                row[column] = decode(lm, batch, args.prompt, args.new_tokens, mode, args.repeats)
                print(ratio, column, row[column], flush=True)
        rows.append(row)
        save("compression", report)
        free(lm)


def render(report: dict, args) -> str:
    batches = [f"batch {b} {m}" for b, m in zip(args.batches, args.modes)]
    first = next((r for r in report["sweep"] if not r.get("error")), {})
    header = ["ratio", "params (B)", "weight GiB", "SVD s"]
    for b in batches:
        header += [f"{b} tok/s (×1.0)", f"{b} peak GiB", f"{b} J/token"]
    rows = []
    for row in report["sweep"]:
        if row.get("error"):
            rows.append([fmt(row["ratio"], 1), f"failed: {row['error']}", *[""] * (len(header) - 2)])
            continue
        svd_s = (row["compression"] or {}).get("svd_seconds")
        cells = [
            fmt(row["ratio"], 1),
            fmt(row["params"] / 1e9, 2),
            fmt(row["weight_bytes"] / 2**30, 2),
            fmt(svd_s, 1),
        ]
        for b in batches:
            got, base = row.get(b, {}), (first.get(b, {}).get("tok_s") if first.get("ratio") == 1.0 else None)
            if "error" in got:
                cells += [got["error"], "", ""]
                continue
            speedup = got["tok_s"] / base if base else None
            cells += [
                f"{fmt(got['tok_s'], 1)} ({fmt(speedup, 2)})",
                fmt(got["peak_memory_gib"]),
                fmt(got["j_per_token"]),
            ]
        rows.append(cells)
    solvers = [
        [f"failed: {row['error']}", "", "", ""]
        if "error" in row
        else [
            row["solver"],
            fmt(row["seconds_layer0"]),
            fmt(max(row["rel_error"])),
            fmt(row["max_error_excess_vs_exact"]),
        ]
        for row in report["solvers"]
    ]
    parts = [
        f"## SVD ratios, {args.arch} bf16, decode, {args.new_tokens} new tokens, "
        f"solver {args.solver} ({report['device']})",
        "",
        markdown_table(header, rows),
    ]
    if solvers:
        parts += [
            "",
            "## SVD solvers on layer 0 at ratio 0.4",
            "",
            markdown_table(["solver", "seconds (layer 0)", "max rel. error", "excess over exact"], solvers),
        ]
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="CPU: tiny model")
    parser.add_argument("--arch", help="default arch:qwen2.5-7b; small: arch:tiny-llama")
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.8, 0.6, 0.4, 0.2])
    parser.add_argument("--batches", type=int, nargs="+", help="default 1 64; small 1 4")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        help="generate mode per --batches entry (default: static eager; small: eager eager); "
        "static-shapes: the static loop compiled with compile_shapes=static",
    )
    parser.add_argument("--solver", choices=list(SOLVERS), default="gram", help="SVD solver of the sweep")
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, help="default 128; small 16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-solvers", action="store_true", help="leave out the layer-0 solver comparison")
    args = parser.parse_args()
    small = args.small
    args.arch = args.arch or ("arch:tiny-llama" if small else "arch:qwen2.5-7b")
    args.batches = args.batches or ([1, 4] if small else [1, 64])
    args.modes = args.modes or (["eager", "eager"] if small else ["static", "eager"])
    if len(args.modes) != len(args.batches):
        parser.error("give one --modes entry per --batches entry")
    args.new_tokens = args.new_tokens or (16 if small else 128)
    started = device_report(small)
    if started is None:
        return 2
    device, report = started
    report["solvers"] = [] if args.skip_solvers else solver_comparison(args, device)
    sweep(args, device, report)
    print(render(report, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
