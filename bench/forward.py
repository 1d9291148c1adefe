"""Forward-pass benchmark of the classifier presets: samples/s and MFU per batch size, GPU vs CPU,
and what perf-hf's monitoring costs a classification task.

    python -m bench.forward --json gpu.json   # GPU: both presets, fp32 and bf16, batch 1..256 x 128/512
    python -m bench.forward --cpu --json cpu.json   # CPU: both presets, fp32, batch 1, 2, 4 x 128
    python -m bench.forward --compare gpu.json cpu.json   # GPU/CPU samples/s per batch size
    python -m bench.forward --overhead [--cpu]   # perf-hf classification vs the same passes unmonitored

Sweeps. ``arch:distilbert-base`` and ``arch:qwen2.5-0.5b-cls`` (random weights) run the task's own
code path (:func:`lm_eval_perf.tasks.forward.runner.run` on a ``perf-hf`` model, rows of the
bundled passage), each dtype loaded once; per model and dtype the table names the batch size with
the most samples/s per sequence length, its samples/s and MFU. Goal (issue 25): prefill MFU >= 0.5
for the 0.5B model at its best batch size on an H100 in bf16; the verdict line gives the bottleneck
label where it is not met. Points run within ``--budget-s`` (the rest is marked ``not run``). The
compact records go to ``--json PATH`` and ``$OUT/forward.json``; ``--compare`` reads two of them
(a GPU run and a CPU run) and prints the GPU/CPU ratio of samples/s for every (model, dtype,
sequence length, batch size) both measured, and GPU bf16 against CPU fp32.

Overhead. One classifier, one set of multiple-choice requests (sentences of the bundled passage,
every label a choice): ``lm.loglikelihood`` + the record (perf-hf: sessions, a synchronized clock
around each batch, the sampler thread) against :func:`lm_eval_perf.models.classifier.score` with a
plain forward (the same tokenization, batches and forward passes, nothing measured). Pairs alternate
their order; the overhead is the median of the per-pair ratios - 1, with its bootstrap 95 % interval
(goal: <= 1 %). Both give the same scores (checked).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from bench._out import save
from bench.overhead import median_interval
from lm_eval_perf.models import classifier
from lm_eval_perf.models.forward_call import ForwardCall
from lm_eval_perf.models.perf_hf import PerfHFLM
from lm_eval_perf.records.console import fmt, markdown_table
from lm_eval_perf.tasks.forward import runner
from lm_eval_perf.tasks.sweeps.oom import release_memory
from lm_eval_perf.tasks.sweeps.tokens import PASSAGE

MODELS = ["arch:distilbert-base", "arch:qwen2.5-0.5b-cls"]
GOAL_MODEL, GOAL_DTYPE, GOAL_MFU = "arch:qwen2.5-0.5b-cls", "bfloat16", 0.5
GPU = {
    "dtypes": ["float32", "bfloat16"],
    "device": "cuda",
    "grid": {"batch_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256], "seq_lengths": [128, 512]},
    "measure": {"num_warmup": 2, "num_runs": 5, "min_seconds": 0.5},
    "budget_s": 480.0,
    "overhead": {
        "model": "arch:qwen2.5-0.5b-cls",
        "dtype": "bfloat16",
        "texts": 8192,
        "batch": 64,
        "pairs": 10,
    },
}
CPU = {
    "dtypes": ["float32"],
    "device": "cpu",
    "grid": {"batch_sizes": [1, 2, 4], "seq_lengths": [128]},
    "measure": {"num_warmup": 1, "num_runs": 2, "min_seconds": 0},
    "budget_s": 420.0,
    "overhead": {"model": "arch:distilbert-base", "dtype": "float32", "texts": 48, "batch": 16, "pairs": 3},
}
COMPACT = (
    "status",
    "samples_per_s",
    "batches_per_s",
    "tokens_per_s",
    "mfu",
    "mbu",
    "bottleneck",
    "peak_memory_allocated_gib",
    "energy_per_sample_j",
)


def _log(message: str) -> None:
    print(f"bench.forward: {message}", file=sys.stderr, flush=True)


def _compact(model: str, record: dict) -> dict:
    key = record["key"]
    row = {"model": model, "dtype": key["dtype"], "batch_size": key["batch_size"], "seq_len": key["seq_len"]}
    row.update({k: record.get(k) for k in COMPACT})
    row["latency_per_sample_p50_s"] = (record.get("latency_per_sample_s") or {}).get("p50")
    return row


def sweep(setup: dict, budget_s: float, artifacts: Path) -> dict:
    """Both presets in each dtype, one model resident at a time; the compact records and the device."""
    rows, device = [], None
    deadline = time.perf_counter() + budget_s
    runs = [(m, d) for m in MODELS for d in setup["dtypes"]]
    for index, (model, dtype) in enumerate(runs):
        share = (deadline - time.perf_counter()) / (len(runs) - index)  # the budget left, shared equally
        loaded = time.perf_counter()
        lm = PerfHFLM(
            pretrained=model,
            dtype=dtype,
            device=setup["device"],
            artifacts_dir=str(artifacts),
            print_summary=False,
        )
        _log(f"loaded {model} {dtype} in {time.perf_counter() - loaded:.1f} s")
        options = {**setup["grid"], **setup["measure"], "max_sweep_seconds": max(0.0, share)}
        result = runner.run(lm, options)
        records = [
            json.loads(line)
            for line in Path(result["artifacts"]["perf_forward_jsonl"]).read_text().splitlines()
        ]
        rows += [
            _compact(model, r) for r in records if r["key"]["model"] == model and r["key"]["dtype"] == dtype
        ]
        device = lm.peaks.to_dict()
        del lm
        release_memory()
    return {"device": device, "setup": setup, "points": rows}


def best_points(points: list[dict]) -> dict[tuple[str, str, int], dict]:
    """(model, dtype, sequence length) -> its measured point with the most samples/s."""
    best: dict[tuple[str, str, int], dict] = {}
    for p in points:
        group = (p["model"], p["dtype"], p["seq_len"])
        if p["status"] == "ok" and (group not in best or p["samples_per_s"] > best[group]["samples_per_s"]):
            best[group] = p
    return best


def _best_rows(points: list[dict]) -> list[list[str]]:
    return [
        [
            model,
            dtype,
            str(seq),
            str(p["batch_size"]),
            fmt(p["samples_per_s"], 1),
            fmt(p["latency_per_sample_p50_s"]),
            fmt(p["mfu"]),
            p["bottleneck"] or "--",
            fmt(p["peak_memory_allocated_gib"]),
        ]
        for (model, dtype, seq), p in sorted(best_points(points).items())
    ]


def goal(points: list[dict]) -> str:
    """The verdict on the issue's MFU goal (0.5B model, bf16, its best batch size) per sequence length."""
    lines = []
    for (model, dtype, seq), best in sorted(best_points(points).items()):
        if (model, dtype) != (GOAL_MODEL, GOAL_DTYPE):
            continue
        mfu = best["mfu"]
        verdict = (
            "--"
            if mfu is None
            else ("MET" if mfu >= GOAL_MFU else f"NOT MET (limited: {best['bottleneck']})")
        )
        lines.append(
            f"{model} {dtype} seq {seq}: best batch {best['batch_size']}, "
            f"{best['samples_per_s']:.1f} samples/s, prefill MFU {fmt(mfu)} (goal >= {GOAL_MFU}): {verdict}"
        )
    return "\n".join(lines) or f"goal not evaluated: no {GOAL_MODEL} {GOAL_DTYPE} point measured"


def _ratio(gpu: dict | None, cpu: dict) -> str:
    if not gpu or gpu["status"] != "ok" or cpu["status"] != "ok":
        return "--"
    return fmt(gpu["samples_per_s"] / cpu["samples_per_s"], 1)


def compare(gpu: dict, cpu: dict) -> list[list[str]]:
    """GPU/CPU samples/s for every point both measured (same model, dtype, length, batch size), and
    GPU bf16 against CPU fp32."""
    gpu_points = {(p["model"], p["dtype"], p["seq_len"], p["batch_size"]): p for p in gpu["points"]}
    rows = []
    for c in sorted(cpu["points"], key=lambda p: (p["model"], p["dtype"], p["seq_len"], p["batch_size"])):
        model, dtype, seq, batch = c["model"], c["dtype"], c["seq_len"], c["batch_size"]
        same, bf16 = (
            gpu_points.get((model, dtype, seq, batch)),
            gpu_points.get((model, "bfloat16", seq, batch)),
        )
        rows.append(
            [model, dtype, str(seq), str(batch), fmt(c["samples_per_s"], 2), _ratio(same, c), _ratio(bf16, c)]
        )
    return rows


def _texts(count: int) -> list[str]:
    """``count`` distinct texts: the bundled passage's sentences in turn, each numbered (the
    classifier reads each distinct text once, so repeats would not be forward passes)."""
    sentences = [
        s.strip() for s in PASSAGE.read_text(encoding="utf-8").replace("\n", " ").split(".") if s.strip()
    ]
    return [f"{i + 1}. {sentences[i % len(sentences)]}." for i in range(count)]


def overhead(setup: dict) -> dict:
    """perf-hf's classification (monitored) against the same forward passes unmonitored, alternating."""
    from lm_eval.api.instance import Instance

    spec = setup["overhead"]
    lm = PerfHFLM(
        pretrained=spec["model"],
        dtype=spec["dtype"],
        device=setup["device"],
        batch_size=spec["batch"],
        print_summary=False,
    )
    labels = lm.classifier
    assert labels is not None
    requests = [
        Instance("loglikelihood", {}, (text, " " + name), i, ("overhead", i, 1))
        for i, text in enumerate(_texts(spec["texts"]))
        for name in labels.names
    ]
    call = ForwardCall(lm.model, lm.mixed_precision_dtype, last_position_only=False)

    def plain(texts: list[str]) -> torch.Tensor:
        return call(*lm.classifier_inputs(texts))

    def monitored():
        scores = lm.loglikelihood(requests)
        lm.finish_measurement()
        return scores

    def unmonitored():
        return classifier.score(requests, labels, plain, spec["batch"])

    def timed(run) -> tuple[float, list]:
        gc.collect()
        if lm.devices:
            torch.cuda.synchronize()
        start = time.perf_counter()
        scores = run()
        if lm.devices:
            torch.cuda.synchronize()
        return time.perf_counter() - start, scores

    reference = timed(unmonitored)[1]  # warm-up of both, and the check that they score alike
    difference = max(abs(a[0] - b[0]) for a, b in zip(timed(monitored)[1], reference))
    ratios, seconds = [], {"perf-hf": [], "plain": []}
    for pair in range(spec["pairs"]):
        order = (("perf-hf", monitored), ("plain", unmonitored))
        for name, run in order if pair % 2 == 0 else order[::-1]:
            seconds[name].append(timed(run)[0])
        ratios.append(seconds["perf-hf"][-1] / seconds["plain"][-1])
    low, high = median_interval(ratios)
    record = lm.efficiency or {}
    return {
        "model": spec["model"],
        "dtype": spec["dtype"],
        "device": lm.peaks.device,
        "requests": len(requests),
        "contexts": spec["texts"],
        "batch_size": spec["batch"],
        "max_score_difference": difference,
        "seconds": seconds,
        "overhead_median": statistics.median(ratios) - 1,
        "overhead_ci95": [low - 1, high - 1],
        "batches_per_run": record.get("kinds", {}).get("loglikelihood", {}).get("batches"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the small CPU setup")
    parser.add_argument(
        "--overhead", action="store_true", help="measure perf-hf's overhead instead of sweeping"
    )
    parser.add_argument("--compare", nargs=2, metavar=("GPU_JSON", "CPU_JSON"), help="print GPU/CPU ratios")
    parser.add_argument("--budget-s", type=float, help="seconds of sweeps before points are left out")
    parser.add_argument("--json", help="also write the compact records here")
    args = parser.parse_args(argv)

    if args.compare:
        gpu, cpu = (json.loads(Path(p).read_text()) for p in args.compare)
        print(f"\n## GPU ({gpu['device']['device']}) / CPU ({cpu['device']['device']}) samples/s\n")
        header = ["model", "dtype", "seq", "bs", "CPU samples/s", "GPU/CPU same dtype", "GPU bf16 / CPU"]
        print(markdown_table(header, compare(gpu, cpu)))
        return 0
    setup = CPU if args.cpu else GPU
    if args.overhead:
        result = overhead(setup)
        print(json.dumps(result, indent=2))
        save("forward_overhead", result)
        return 0
    budget = args.budget_s if args.budget_s is not None else setup["budget_s"]
    artifacts = Path(tempfile.mkdtemp(prefix="bench_forward_"))
    started = time.perf_counter()
    result = sweep(setup, budget, artifacts)
    result["elapsed_s"] = time.perf_counter() - started
    result["goal"] = goal(result["points"])
    print(f"\n## perf_forward bench ({result['device']['device']}; peaks: {result['device']['source']})\n")
    print(
        f"Random weights, rows of the bundled passage, grid {setup['grid']}, {setup['measure']} per point; "
        f"budget {budget:.0f} s, used {result['elapsed_s']:.0f} s.\n"
    )
    header = [
        "model",
        "dtype",
        "seq",
        "best bs",
        "samples/s",
        "s/sample p50",
        "MFU",
        "limited by",
        "peak GiB",
    ]
    print(markdown_table(header, _best_rows(result["points"])))
    print()
    print(result["goal"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    save("forward", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
