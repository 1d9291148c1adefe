"""Why does a low-rank model decode below its byte count? The linear layers alone, one token, by layout.

All linear layers of a 7B-class model's decoder (q, k, v, o, gate, up, down x 28 layers; random bf16
weights, distinct per layer so that nothing stays in L2) are run for one token as one CUDA graph,
dense and as SVD factor pairs of rank k = floor(r·M·N / (M + N)) in several layouts:

* ``exact``: ``up(down(x))`` with the factors as ``svd_ratio=r`` stores them;
* ``pad 8`` / ``pad 64``: the rank zero-padded to a multiple of 8 / 64 (the same product);
* ``fused``: the ``down`` factors of the layers that share an input (q/k/v; gate/up) concatenated
  into one matrix, so one matrix-vector product instead of three (two);
* ``fused, pad 8``: both;
* ``reduce``: every product as :func:`~lm_eval_perf.models.compress.svd.row_matvec`, compiled
  (Triton reductions with coordinate-descent tuning) - what ``LowRankLinear`` runs for one token
  under ``torch.compile`` - instead of cuBLAS, each product compiled on its own;
* ``reduce, layer compiled``: one decoder layer's products compiled as one graph, inputs shared as
  in the model (q/k/v and gate/up read the same vector); with ``--extra`` also padded and fused, and
  with Inductor's ``combo_kernels`` (independent kernels launched as one; static shapes);
* ``dense, layer compiled`` (``--extra``): the dense layers as the same reductions.

``--per-shape`` also times each distinct factor shape of the first ratio alone (cuBLAS against the
compiled reduction), with enough copies that nothing stays in L2.

It prints the time per token of all 28 layers' linears, the bytes read and the bandwidth, and the
speed-up over dense. (The whole model adds ``lm_head``, attention and the element-wise kernels.)

    python -m bench.lowrank_kernels                 # GPU: qwen2.5-7b, ratios 0.4 and 0.8
    python -m bench.lowrank_kernels --ratios 0.4 --extra --per-shape   # every layout (H100: 2.5 min)
    python -m bench.lowrank_kernels --small         # CPU: tiny-llama, plain timing loops
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench._decode import device_report
from bench._out import save
from lm_eval_perf.models.compress.svd import rank_for_ratio, row_matvec
from lm_eval_perf.models.sources import load_architecture
from lm_eval_perf.records.console import fmt, markdown_table

SHARED_INPUT = (("q", "k", "v"), ("gate", "up"))


def layer_shapes(arch: str) -> tuple[dict[str, tuple[int, int]], int]:
    """(out, in) of each linear of one decoder layer, and the number of layers."""
    c = load_architecture(arch)
    hidden, inter = c["hidden_size"], c["intermediate_size"]
    head = c.get("head_dim") or hidden // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * head, c.get("num_key_value_heads", c["num_attention_heads"]) * head
    shapes = {"q": (q, hidden), "k": (kv, hidden), "v": (kv, hidden), "o": (hidden, q)}
    shapes |= {"gate": (inter, hidden), "up": (inter, hidden), "down": (hidden, inter)}
    return shapes, c["num_hidden_layers"]


def rand(*shape: int, device: str) -> torch.Tensor:
    return torch.randn(*shape, device=device, dtype=torch.bfloat16) * 0.02


def padded(weight: torch.Tensor, dim: int, multiple: int) -> torch.Tensor:
    """``weight`` with dimension ``dim`` zero-padded up to a multiple of ``multiple``."""
    size = weight.shape[dim]
    extra = math.ceil(size / multiple) * multiple - size
    if not extra:
        return weight
    pad = [0, 0, 0, 0]
    pad[1 if dim == 1 else 3] = extra
    return F.pad(weight, pad)


def build(shapes, layers: int, ratio: float | None, pad: int, fused: bool, device: str) -> list[dict]:
    """Per layer: ``name -> weight`` (dense) or ``name -> (down, up)`` (low rank), ``fused`` downs as
    ``"q+k+v" -> (down, [rank offsets])``."""
    stack = []
    for _ in range(layers):
        layer: dict = {}
        for name, (m, n) in shapes.items():
            if ratio is None:
                layer[name] = rand(m, n, device=device)
                continue
            k = rank_for_ratio(ratio, m, n)
            down, up = rand(k, n, device=device), rand(m, k, device=device)
            layer[name] = (padded(down, 0, pad), padded(up, 1, pad))
        if fused and ratio is not None:
            for group in SHARED_INPUT:
                downs = [layer[name][0] for name in group]
                offsets = [0]
                for d in downs:
                    offsets.append(offsets[-1] + d.shape[0])
                layer["+".join(group)] = (torch.cat(downs), offsets)
        stack.append(layer)
    return stack


def matvec(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.linear(x, w)


def run_layer(layer: dict, inputs: dict[str, torch.Tensor], mv: Callable) -> list[torch.Tensor]:
    """Every linear of one layer on its input; fused downs are computed once per group."""
    codes: dict[str, torch.Tensor] = {}
    for group in SHARED_INPUT:
        key = "+".join(group)
        if key in layer:
            down, offsets = layer[key]
            z = mv(inputs[group[0]], down)
            for i, name in enumerate(group):
                codes[name] = z[:, offsets[i] : offsets[i + 1]]
    out = []
    for name, x in inputs.items():
        w = layer[name]
        if isinstance(w, torch.Tensor):
            out.append(mv(x, w))
        else:
            down, up = w
            out.append(mv(codes[name] if name in codes else mv(x, down), up))
    return out


def weight_bytes(stack: list[dict]) -> int:
    total = 0
    for layer in stack:
        for key, w in layer.items():
            if "+" in key:
                continue
            total += w.nbytes if isinstance(w, torch.Tensor) else w[0].nbytes + w[1].nbytes
    return total


def time_ms(fn: Callable[[], object], device: str, replays: int) -> float:
    """Milliseconds per call of ``fn``: one CUDA graph replayed ``replays`` times (GPU), a loop (CPU)."""
    if device != "cuda":
        fn()
        start = time.perf_counter()
        for _ in range(replays):
            fn()
        return (time.perf_counter() - start) / replays * 1e3
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / replays


@dataclass(frozen=True)
class Variant:
    """One layout: ``ratio`` None = dense; ``kernel`` cublas (``F.linear``), reduce (each product
    compiled alone) or layer (one decoder layer's linears compiled as one graph, as in the model);
    ``combo``: Inductor's horizontal fusion of independent kernels (``combo_kernels``)."""

    ratio: float | None
    pad: int = 1
    fused: bool = False
    kernel: str = "cublas"
    combo: bool = False


def variants(ratios: list[float], device: str, extra: bool) -> dict[str, Variant]:
    """The layouts timed: cuBLAS ones everywhere, compiled ones on a GPU (``extra``: more of them)."""
    table = {"dense": Variant(None)}
    if device == "cuda" and extra:
        table["dense, layer compiled"] = Variant(None, kernel="layer")
    for r in ratios:
        table |= {
            f"{r} exact": Variant(r),
            f"{r} pad 8": Variant(r, pad=8),
            f"{r} fused": Variant(r, fused=True),
            f"{r} fused, pad 8": Variant(r, pad=8, fused=True),
        }
        if device != "cuda":
            continue
        table[f"{r} reduce"] = Variant(r, kernel="reduce")
        table[f"{r} reduce, layer compiled"] = Variant(r, kernel="layer")
        if extra:
            table |= {
                f"{r} reduce, layer, pad 8": Variant(r, pad=8, kernel="layer"),
                f"{r} reduce, layer, pad 64": Variant(r, pad=64, kernel="layer"),
                f"{r} reduce, layer, fused": Variant(r, fused=True, kernel="layer"),
                f"{r} reduce, layer, fused, pad 64": Variant(r, pad=64, fused=True, kernel="layer"),
                f"{r} reduce, layer, combo": Variant(r, kernel="layer", combo=True),
                f"{r} reduce, layer, fused, pad 64, combo": Variant(
                    r, pad=64, fused=True, kernel="layer", combo=True
                ),
            }
    return table


def runner(variant: Variant) -> Callable:
    """``f(layer, inputs)``: all linears of one layer under ``variant``'s kernel."""
    options = {"coordinate_descent_tuning": True, "combo_kernels": variant.combo}
    if variant.kernel == "cublas":
        return lambda layer, inputs: run_layer(layer, inputs, matvec)
    if variant.kernel == "reduce":
        mv = torch.compile(row_matvec, dynamic=False, options=options)
        return lambda layer, inputs: run_layer(layer, inputs, mv)
    compiled = torch.compile(run_layer, dynamic=False, options=options)
    return lambda layer, inputs: compiled(layer, inputs, row_matvec)


def measure(args, device: str, record: dict) -> dict:
    shapes, layers = layer_shapes(args.arch)
    hidden, inner = shapes["q"][1], shapes["down"][1]
    x, attn = rand(1, hidden, device=device), rand(1, shapes["o"][1], device=device)
    act = rand(1, inner, device=device)
    inputs = {"q": x, "k": x, "v": x, "o": attn, "gate": x, "up": x, "down": act}  # as in the model
    torch._dynamo.config.recompile_limit = 64  # one compilation per factor shape
    rows = {}
    for name, v in variants(args.ratios, device, args.extra).items():
        torch._dynamo.reset()
        try:
            stack = build(shapes, layers, v.ratio, v.pad, v.fused, device)
            run = runner(v)
            ms = time_ms(lambda s=stack, f=run: [f(layer, inputs) for layer in s], device, args.replays)
            nbytes = weight_bytes(stack)
            rows[name] = {"ms": ms, "bytes": nbytes, "gb_s": nbytes / ms / 1e6}
        except Exception as exc:  # one failing layout (e.g. no Triton) must not hide the others
            rows[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
        print(name, rows[name], flush=True)
        stack = None
        if device == "cuda":
            torch.cuda.empty_cache()
    ranks = {r: {n: rank_for_ratio(r, m, k) for n, (m, k) in shapes.items()} for r in args.ratios}
    result = {"arch": args.arch, "layers": layers, "shapes": shapes, "ranks": ranks, "rows": rows}
    if args.per_shape and device == "cuda":
        result["per_shape"] = per_shape(shapes, args.ratios[0], device, args.replays)
    return record | result


def per_shape(shapes, ratio: float, device: str, replays: int) -> list[dict]:
    """Each distinct factor shape at ``ratio`` alone (copies enough to overflow L2): µs per product."""
    factors: dict[tuple[int, int], list[str]] = {}
    for name, (m, n) in shapes.items():
        k = rank_for_ratio(ratio, m, n)
        factors.setdefault((k, n), []).append(f"{name} down")
        factors.setdefault((m, k), []).append(f"{name} up")
    compiled = torch.compile(row_matvec, dynamic=False, options={"coordinate_descent_tuning": True})
    rows = []
    for (m, n), names in factors.items():
        copies = max(4, math.ceil(256e6 / (2 * m * n)))
        weights = [rand(m, n, device=device) for _ in range(copies)]
        x = rand(1, n, device=device)
        row = {"shape": [m, n], "factors": names, "bytes": 2 * m * n}
        for label, mv in (("cublas", matvec), ("reduce", compiled)):
            ms = time_ms(lambda f=mv, x=x, ws=weights: [f(x, w) for w in ws], device, replays)
            row[f"{label}_us"] = ms * 1e3 / copies
            row[f"{label}_gb_s"] = 2 * m * n / (ms / copies) / 1e6
        print(row, flush=True)
        rows.append(row)
        weights = None
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU: tiny-llama")
    parser.add_argument("--arch", help="architecture preset (default qwen2.5-7b; small: tiny-llama)")
    parser.add_argument("--ratios", type=float, nargs="+", help="default 0.4 0.8 (small: 0.4)")
    parser.add_argument("--replays", type=int, help="timed repetitions (default 20; small 5)")
    parser.add_argument(
        "--extra", action="store_true", help="GPU: also padded, fused and combo compiled layouts"
    )
    parser.add_argument("--per-shape", action="store_true", help="GPU: also each factor shape alone")
    args = parser.parse_args()
    args.arch = args.arch or ("tiny-llama" if args.small else "qwen2.5-7b")
    args.ratios = args.ratios or ([0.4] if args.small else [0.4, 0.8])
    args.replays = args.replays or (5 if args.small else 20)
    started = device_report(args.small)
    if started is None:
        return 2
    device, header = started
    record = measure(args, device, header)
    save("lowrank_kernels", record)
    dense = record["rows"]["dense"].get("ms")
    table = []
    for name, row in record["rows"].items():
        if "error" in row:
            table.append([name, row["error"], "", "", ""])
            continue
        table.append(
            [
                name,
                fmt(row["ms"], 3),
                fmt(row["bytes"] / 1e9, 2),
                fmt(row["gb_s"], 0),
                fmt(dense / row["ms"], 2),
            ]
        )
    title = f"Linear layers of {record['arch']} ({record['layers']} layers), one token, bf16"
    print(f"\n## {title} ({record['device']})\n")
    print(markdown_table(["layout", "ms per token", "weight GB", "GB/s", "× dense"], table))
    print(f"\nranks: {record['ranks']}")
    if record.get("per_shape"):
        shape_rows = [
            [
                " × ".join(map(str, r["shape"])),
                ", ".join(r["factors"]),
                fmt(r["bytes"] / 1e6, 2),
                f"{fmt(r['cublas_us'], 2)} ({fmt(r['cublas_gb_s'], 0)})",
                f"{fmt(r['reduce_us'], 2)} ({fmt(r['reduce_gb_s'], 0)})",
            ]
            for r in record["per_shape"]
        ]
        columns = ["factor (out × in)", "factors", "MB", "cuBLAS µs (GB/s)", "reduce µs (GB/s)"]
        print(f"\n## Each factor shape alone at ratio {args.ratios[0]}\n")
        print(markdown_table(columns, shape_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
