"""What does measuring cost? The same lm-eval evaluation through ``hf`` and ``perf-hf``, alternating.

Both wrappers share one model object in one process, so the only difference is the monitor:
synchronized batch timing, the sampler thread, the per-token logits processor and the record.
The evaluation is a local BBH subset: loglikelihood (leaderboard BBH) and generation (BBH inputs,
fixed length). After one warm-up of each, pairs alternate their order (hf then perf-hf, then
perf-hf then hf, ...), so neither wrapper always runs second on a GPU the first one just heated; the
ratio is taken pair by pair, so drift of the machine's speed cancels, and also as ratios of total and
of minimum times. Each request kind's seconds (synchronized, around lm-eval's call of the wrapper's
request method) are kept too: the GPU-bound loglikelihood part and the host-bound eager generation
part vary differently from run to run. Garbage is collected before every run.

    python bench/overhead.py                 # GPU: DeepSeek-R1-Distill-Qwen-1.5B shape, bf16, random weights
    python bench/overhead.py --small         # CPU: tiny Llama, float32
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _out import save

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
  - task: bbh_zeroshot_web_of_lies
    dataset_kwargs: {{bbh_subset: web_of_lies}}
    description: ""
    doc_to_text: "{{{{input}}}}"
    generation_kwargs: {{until: ["Q:"], max_gen_toks: {gen}, do_sample: false}}
"""


def build_model(arch: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    import transformers

    from lm_eval_perf.models.sources import load_architecture

    config = load_architecture(arch)
    config = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
    with torch.device(device):
        return transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


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


def timed(lm, spent: dict[str, float], tasks, limit: int, sync) -> tuple[dict[str, float], dict]:
    """One evaluation: its seconds in all and per request kind, and lm-eval's results."""
    from lm_eval.evaluator import evaluate

    gc.collect()
    spent.update(dict.fromkeys(KINDS, 0.0))
    sync()
    start = time.perf_counter()
    results = evaluate(lm=lm, task_dict=tasks, limit=limit, log_samples=True)
    if hasattr(lm, "finish_measurement"):
        lm.finish_measurement()
    sync()
    return {"total": time.perf_counter() - start, **spent}, results


def responses(results: dict) -> dict:
    return {task: [s["resps"] for s in samples] for task, samples in results["samples"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU, tiny model")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="documents per subtask")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--bbh-dir", default=os.environ.get("LM_EVAL_PERF_BBH_DIR", "../shared/data/bbh"))
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
    model = build_model(arch, device, dtype)
    include = Path(tempfile.mkdtemp(prefix="overhead-tasks-"))
    (include / "overhead_bbh.yaml").write_text(GROUP.format(gen=32))
    manager = TaskManager(include_path=str(include), metadata={"bbh_dir": str(Path(args.bbh_dir).resolve())})
    tasks = manager.load(["overhead_bbh"])
    common = dict(pretrained=model, tokenizer=tokenizer, batch_size=batch, device=device)
    lms = {"hf": HFLM(**common), "perf-hf": PerfHFLM(**common, print_summary=False)}
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    spent = {name: time_kinds(lm, sync) for name, lm in lms.items()}

    first = {}
    for name, lm in lms.items():  # warm-up, and the outputs must agree
        first[name] = responses(timed(lm, spent[name], tasks, limit, sync)[1])
    same_outputs = first["hf"] == first["perf-hf"]
    times: dict[str, list[dict[str, float]]] = {"hf": [], "perf-hf": []}
    for pair in range(pairs):
        for name in ["hf", "perf-hf"] if pair % 2 == 0 else ["perf-hf", "hf"]:
            times[name].append(timed(lms[name], spent[name], tasks, limit, sync)[0])
    parts = ("total", *KINDS)
    summary = {}
    for part in parts:
        hf, perf = [t[part] for t in times["hf"]], [t[part] for t in times["perf-hf"]]
        ratios = [p / h for p, h in zip(perf, hf)]
        summary[part] = {
            "hf_median_s": statistics.median(hf),
            "perf_hf_median_s": statistics.median(perf),
            "ratios": ratios,
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "ratio_of_totals": sum(perf) / sum(hf),
            "ratio_of_minimums": min(perf) / min(hf),
            "slower_pairs": sum(r > 1 for r in ratios),
        }
    record = lms["perf-hf"].efficiency or {}
    out = {
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
        "arch": arch,
        "dtype": str(dtype),
        "limit_per_subtask": limit,
        "batch_size": batch,
        "pairs": pairs,
        "seconds": times,
        "summary": summary,
        "same_outputs": same_outputs,
        "batches_per_run": (record.get("overall") or {}).get("batches"),
    }
    save("overhead", out)
    print(
        f"\n## overhead: {out['device']}, {arch} {dtype}, {pairs} alternating pairs, "
        f"{out['batches_per_run']} batches per run, outputs identical: {same_outputs}\n"
    )
    print("| pair | hf s | perf-hf s | ratio | loglikelihood ratio | generate_until ratio |")
    print("|---|---|---|---|---|---|")
    for i, (h, p) in enumerate(zip(times["hf"], times["perf-hf"])):
        cells = [f"{h['total']:.3f}", f"{p['total']:.3f}"] + [f"{summary[k]['ratios'][i]:.4f}" for k in parts]
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    header = ["part", "hf median s", "perf-hf median s", "ratio median (min-max)", "Σ perf-hf / Σ hf"]
    header += ["min / min", "slower"]
    print("\n| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    for part, s in summary.items():
        print(
            f"| {part} | {s['hf_median_s']:.3f} | {s['perf_hf_median_s']:.3f} | **{s['ratio_median']:.4f}** "
            f"({s['ratio_min']:.4f}-{s['ratio_max']:.4f}) | {s['ratio_of_totals']:.4f} | "
            f"{s['ratio_of_minimums']:.4f} | {s['slower_pairs']} of {pairs} |"
        )
    return 0 if same_outputs else 1


if __name__ == "__main__":
    sys.exit(main())
