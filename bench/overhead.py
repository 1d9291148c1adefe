"""What does measuring cost? The same lm-eval evaluation through ``hf`` and ``perf-hf``, alternating.

Both wrappers share one model object in one process, so the only difference is the monitor:
synchronized batch timing, the sampler thread, the per-token logits processor and the record.
The evaluation is a local BBH subset: loglikelihood (leaderboard BBH) and, unless
``--gen-tokens 0``, generation (BBH inputs, fixed length). After one warm-up of each, pairs
alternate their order (hf then perf-hf, then perf-hf then hf, ...), so neither wrapper always runs
second on a GPU the first one just heated. The ratio is taken pair by pair, so drift of the
machine's speed cancels (median, its bootstrap 95 % interval, min-max), and also as ratios of total
and of minimum times. Each request kind's seconds (synchronized, around lm-eval's call of the
wrapper's request method) are kept too: the GPU-bound loglikelihood part and the host-bound eager
generation part vary differently from run to run. Garbage is collected before every run, and the
full collections Python makes by itself inside a run are counted (``--gc-off`` prevents them, in
both wrappers). The seconds perf-hf spends inside the monitor's own calls are added up per run, so
the measured cost splits into the monitor itself and everything else.

    python -m bench.overhead --arch qwen2.5-7b --pairs 22 --limit 60 --gen-tokens 0   # GPU, BBH only
    python -m bench.overhead                 # GPU: DeepSeek-R1-Distill-Qwen-1.5B shape, bf16, random weights
    python -m bench.overhead --small         # CPU: tiny Llama, float32
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench._models import random_model
from bench._out import save
from lm_eval_perf.bbh import default_directory
from lm_eval_perf.records.console import fmt, render_efficiency

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

KINDS = ("loglikelihood", "generate_until")

GROUP = """\
group: overhead_bbh
custom_dataset: !function lm_eval_perf.tasks.bbh_local.data.load
task:
  - task: leaderboard_bbh_date_understanding
    dataset_kwargs: {{bbh_subset: date_understanding}}
  - task: leaderboard_bbh_boolean_expressions
    dataset_kwargs: {{bbh_subset: boolean_expressions}}
  - task: leaderboard_bbh_navigate
    dataset_kwargs: {{bbh_subset: navigate}}
"""
GENERATION = """\
  - task: bbh_zeroshot_web_of_lies
    dataset_kwargs: {{bbh_subset: web_of_lies}}
    description: ""
    doc_to_text: "{{{{input}}}}"
    generation_kwargs: {{until: ["Q:"], max_gen_toks: {gen}, do_sample: false}}
"""


def median_interval(values: list[float], level: float = 0.95, resamples: int = 10_000) -> tuple[float, float]:
    """Bootstrap percentile interval of the median of ``values`` (fixed seed: reproducible)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[int((1 - tail) * resamples) - 1]


def time_kinds(lm, sync) -> dict[str, float]:
    """Wrap ``lm``'s request methods so that each call adds its synchronized seconds to the dict returned."""
    spent = dict.fromkeys(KINDS, 0.0)

    def timing(kind: str, call):
        def method(requests, *args, **kwargs):
            sync()
            start = time.perf_counter()
            try:
                return call(requests, *args, **kwargs)
            finally:
                sync()
                spent[kind] += time.perf_counter() - start

        return method

    for kind in KINDS:
        setattr(lm, kind, timing(kind, getattr(lm, kind)))
    return spent


class FullCollections:
    """Counts Python's full (generation 2) garbage collections and their seconds, via ``gc.callbacks``.

    A full collection scans every tracked object (0.33-0.38 s in this bench's process on a CPU) and
    lands in some evaluations and not in others, so it is reported per run next to the times."""

    def __init__(self):
        self.count, self.seconds, self._start = 0, 0.0, 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.count += 1
            self.seconds += time.perf_counter() - self._start


class MonitorTime:
    """Seconds the process spends inside the monitor's own calls on the evaluating thread.

    Wraps the :class:`PerformanceMonitor` entry points (enter/exit, window edges, summary) and
    perf-hf's count of the generated tokens lm-eval keeps (it decodes each generated row), and adds
    up their wall time, the outermost call only (``__enter__`` opens a window itself). What a
    perf-hf run costs beyond this is elsewhere: batch synchronization, hooks, the sampler thread."""

    METHODS = ("__enter__", "__exit__", "begin_window", "end_window", "summary")

    def __init__(self):
        from lm_eval_perf.models import perf_hf
        from lm_eval_perf.monitor import PerformanceMonitor

        self.seconds, self._depth = 0.0, 0
        for name in self.METHODS:
            setattr(PerformanceMonitor, name, self._timed(getattr(PerformanceMonitor, name)))
        perf_hf.kept_tokens = self._timed(perf_hf.kept_tokens)

    def _timed(self, method):
        def call(*args, **kwargs):
            self._depth += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds += time.perf_counter() - start

        return call


def timed(
    lm,
    spent: dict[str, float],
    tasks,
    limit: int,
    sync,
    collections: FullCollections,
    gc_off: bool,
    monitor: MonitorTime,
):
    """One evaluation: its seconds in all, per request kind and in full collections, and lm-eval's results."""
    from lm_eval.evaluator import evaluate

    gc.collect()
    if gc_off:
        gc.disable()
    spent.update(dict.fromkeys(KINDS, 0.0))
    count, seconds, in_monitor = collections.count, collections.seconds, monitor.seconds
    sync()
    start = time.perf_counter()
    try:
        results = evaluate(lm=lm, task_dict=tasks, limit=limit, log_samples=True)
        if hasattr(lm, "finish_measurement"):
            lm.finish_measurement()
        sync()
    finally:
        gc.enable()
    total = time.perf_counter() - start
    gcs = {"full_collections": collections.count - count, "full_collection_s": collections.seconds - seconds}
    return {"total": total, **spent, **gcs, "monitor_s": monitor.seconds - in_monitor}, results


def responses(results: dict) -> dict:
    return {task: [s["resps"] for s in samples] for task, samples in results["samples"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU, tiny model")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="documents per subtask")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--gc-off",
        action="store_true",
        help="no automatic garbage collection inside the timed runs (both wrappers; collected before each)",
    )
    parser.add_argument(
        "--gen-tokens", type=int, default=32, help="tokens of the generation subtask; 0 leaves it out"
    )
    parser.add_argument("--bbh-dir", default=default_directory())
    parser.add_argument("--tokenizer", default=None, help="default: the bundled SmolLM2 tokenizer")
    args = parser.parse_args()
    gpu = torch.cuda.is_available() and not args.small
    arch = args.arch or ("deepseek-r1-distill-qwen-1.5b" if gpu else "tiny-llama")
    pairs = args.pairs or (8 if gpu else 6)
    limit = args.limit or (24 if gpu else 4)
    batch = args.batch_size or (32 if gpu else 8)
    device = "cuda" if gpu else "cpu"
    dtype = torch.bfloat16 if gpu else torch.float32

    import transformers
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from lm_eval_perf.models.perf_hf import PerfHFLM

    if args.tokenizer is None:
        from lm_eval_perf.models.bundled import smollm2_hf_dir

        args.tokenizer = str(smollm2_hf_dir())
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.tokenizer)
    model = random_model(arch, device, dtype)
    include = Path(tempfile.mkdtemp(prefix="overhead-tasks-"))
    group = (GROUP + GENERATION if args.gen_tokens else GROUP).format(gen=args.gen_tokens)
    (include / "overhead_bbh.yaml").write_text(group)
    manager = TaskManager(include_path=str(include), metadata={"bbh_dir": str(Path(args.bbh_dir).resolve())})
    tasks = manager.load(["overhead_bbh"])
    common = dict(pretrained=model, tokenizer=tokenizer, batch_size=batch, device=device)
    lms = {"hf": HFLM(**common), "perf-hf": PerfHFLM(**common, print_summary=False)}
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    spent = {name: time_kinds(lm, sync) for name, lm in lms.items()}
    collections = FullCollections()
    monitor = MonitorTime()

    def run(name: str):
        return timed(lms[name], spent[name], tasks, limit, sync, collections, args.gc_off, monitor)

    first = {}
    for name in lms:  # warm-up, and the outputs must agree
        first[name] = responses(run(name)[1])
    same_outputs = first["hf"] == first["perf-hf"]
    times: dict[str, list[dict[str, float]]] = {"hf": [], "perf-hf": []}
    for pair in range(pairs):
        for name in ["hf", "perf-hf"] if pair % 2 == 0 else ["perf-hf", "hf"]:
            times[name].append(run(name)[0])
    parts = ("total", *KINDS)
    summary = {}
    for part in parts:
        hf, perf = [t[part] for t in times["hf"]], [t[part] for t in times["perf-hf"]]
        if not sum(hf):  # a kind this evaluation does not have (no generation subtask)
            continue
        ratios = [p / h for p, h in zip(perf, hf)]
        low, high = median_interval(ratios)
        summary[part] = {
            "hf_median_s": statistics.median(hf),
            "perf_hf_median_s": statistics.median(perf),
            "ratios": ratios,
            "ratio_median": statistics.median(ratios),
            "ratio_median_95ci": [low, high],
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "ratio_of_totals": sum(perf) / sum(hf),
            "ratio_of_minimums": min(perf) / min(hf),
            "slower_pairs": sum(r > 1 for r in ratios),
        }
    in_monitor = [t["monitor_s"] for t in times["perf-hf"]]
    without = [(p["total"] - p["monitor_s"]) / h["total"] for p, h in zip(times["perf-hf"], times["hf"])]
    summary["monitor"] = {
        "perf_hf_median_s": statistics.median(in_monitor),
        "perf_hf_max_s": max(in_monitor),
        "total_ratio_without_it_median": statistics.median(without),
        "total_ratio_without_it_95ci": list(median_interval(without)),
    }
    record = lms["perf-hf"].efficiency or {}
    out = {
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
        "arch": arch,
        "dtype": str(dtype),
        "limit_per_subtask": limit,
        "batch_size": batch,
        "pairs": pairs,
        "generated_tokens": args.gen_tokens,
        "gc_off": args.gc_off,
        "runs_with_full_collection": {n: sum(t["full_collections"] > 0 for t in times[n]) for n in times},
        "seconds": times,
        "summary": summary,
        "same_outputs": same_outputs,
        "batches_per_run": (record.get("overall") or {}).get("batches"),
    }
    save("overhead", out)
    print(
        f"\n## overhead: {out['device']}, {arch} {dtype}, {pairs} alternating pairs, "
        f"{out['batches_per_run']} batches per run, outputs identical: {same_outputs}, automatic garbage "
        f"collection {'off' if args.gc_off else 'on'}; runs with a full collection (hf, perf-hf): "
        f"{', '.join(str(n) for n in out['runs_with_full_collection'].values())}\n"
    )
    parts = [k for k in summary if k != "monitor"]
    columns = [f"{k} ratio" for k in parts] + ["perf-hf in monitor ms", "full GCs hf / perf-hf"]
    print("| pair | hf s | perf-hf s | " + " | ".join(columns) + " |")
    print("|---" * (4 + len(columns) - 1) + "|")
    for i, (h, p) in enumerate(zip(times["hf"], times["perf-hf"])):
        cells = [f"{h['total']:.3f}", f"{p['total']:.3f}"]
        cells += [f"{summary[k]['ratios'][i]:.4f}" for k in parts]
        cells.append(f"{p['monitor_s'] * 1e3:.1f}")
        cells.append(f"{h['full_collections']} / {p['full_collections']}")
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    header = ["part", "hf median s", "perf-hf median s", "ratio median (min-max)", "median 95 % CI"]
    header += ["Σ perf-hf / Σ hf"]
    header += ["min / min", "slower"]
    print("\n| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    for part in parts:
        s = summary[part]
        print(
            f"| {part} | {s['hf_median_s']:.3f} | {s['perf_hf_median_s']:.3f} | **{s['ratio_median']:.4f}** "
            f"({s['ratio_min']:.4f}-{s['ratio_max']:.4f}) | "
            f"{s['ratio_median_95ci'][0]:.4f}-{s['ratio_median_95ci'][1]:.4f} | {s['ratio_of_totals']:.4f} | "
            f"{s['ratio_of_minimums']:.4f} | {s['slower_pairs']} of {pairs} |"
        )
    m = summary["monitor"]
    print(
        f"\nperf-hf inside the monitor's calls and the kept-token count: median "
        f"{m['perf_hf_median_s'] * 1e3:.1f} ms, max {m['perf_hf_max_s'] * 1e3:.1f} ms per run; "
        "total ratio with that time taken out: median "
        f"{m['total_ratio_without_it_median']:.4f} (95 % CI {m['total_ratio_without_it_95ci'][0]:.4f}-"
        f"{m['total_ratio_without_it_95ci'][1]:.4f})"
    )
    print(render_efficiency(record))
    generation = (record.get("kinds") or {}).get("generate_until")
    if generation:
        print(
            f"generate_until: {generation['generated_tokens']} generated tokens kept of "
            f"{generation['generated_tokens_computed']} computed; IT {fmt(generation['it_tokens_per_s'], 1)} "
            f"tok/s kept, {fmt(generation['it_computed_tokens_per_s'], 1)} computed"
        )
    overall = record.get("overall") or {}
    window = overall.get("window") or {}
    print(
        f"whole run: {fmt(overall.get('energy_j'), 1)} J, error bound "
        f"{fmt(overall.get('energy_error_bound'))} ({window.get('energy_source')}; "
        f"power: {window.get('power_source')})"
    )
    return 0 if same_outputs else 1


if __name__ == "__main__":
    sys.exit(main())
