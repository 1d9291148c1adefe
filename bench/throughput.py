"""Throughput sweep benchmark: eager ``generate`` vs the static fast path, side by side.

    python -m bench.throughput            # GPU: arch:qwen2.5-7b and arch:qwen2.5-0.5b, bf16, random weights
    python -m bench.throughput --small    # CPU: arch:tiny-llama, float32, a 2 x 2 sweep

Goal (issue 4, 7B-class model on an H100): fast-path decode MBU >= 0.70 at batch 1, and >= 2x the
eager decode tokens/s. The script calls the task's own runner
(:func:`lm_eval_perf.tasks.throughput.runner.run`) on a ``perf-hf`` model - the code path of
``lm_eval --tasks perf_throughput`` - loading each model once and switching its
``generation_backend`` between the two sweeps.

Time budget. The task's defaults (5 iterations and 3 s per point, 1 warm-up) on the default grid
(batch 1..256 x 32/128/512 new tokens), twice per model, would take far longer than the ~8 minutes
this bench may use. So: static points run 2 iterations (the fast path's check when prepared is
their warm-up), eager points 1 iteration without warm-up (eager decode is overhead-bound and
steady; one iteration of >= 31 steps), and the work runs in priority order under ``--budget-s``:

1. batch 1 of every model, static then eager (the headline comparison);
2. the default grid on the static path, then on the eager path.

Each sweep stops starting points when the budget is spent; the table marks those points
``not run``. Points are stored in ``<artifacts>/perf_throughput.jsonl``: rerunning with the same
``--artifacts-dir`` resumes and measures only the missing points.

Writes the full records to ``$OUT/throughput.json`` when ``$OUT`` is set.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench._out import save
from lm_eval_perf.models.perf_hf import PerfHFLM
from lm_eval_perf.records.artifacts import THROUGHPUT
from lm_eval_perf.records.console import fmt, markdown_table
from lm_eval_perf.tasks.sweeps.oom import release_memory
from lm_eval_perf.tasks.sweeps.store import ResultsFile
from lm_eval_perf.tasks.throughput import runner
from lm_eval_perf.tasks.throughput.sweep import Point, SweepOptions, digest

GOAL_MBU = 0.70
GOAL_RATIO = 2.0
GOAL_MODELS = {"arch:qwen2.5-7b"}  # the goal is set for the 7B-class model; others are for reference
FULL = {
    "models": ["arch:qwen2.5-7b", "arch:qwen2.5-0.5b"],
    "dtype": "bfloat16",
    "device": "cuda",
    "grid": {},  # the task's default grid
    "budget_s": 380.0,
}
SMALL = {
    "models": ["arch:tiny-llama"],
    "dtype": "float32",
    "device": "cpu",
    "grid": {"batch_sizes": [1, 2], "gen_lengths": [8, 16], "prompt_len": 32},
    "budget_s": 120.0,
}
MEASURE = {
    "static": {"min_iterations": 2, "min_seconds": 0, "warmup_iterations": 1},
    "eager": {"min_iterations": 1, "min_seconds": 0, "warmup_iterations": 0},
}
BACKENDS = ("static", "eager")


def _options(grid: dict, backend: str, **extra) -> dict:
    return {**grid, **MEASURE[backend], **extra}


def _sweep(lm: PerfHFLM, backend: str, options: dict, deadline: float) -> None:
    lm.generation_backend = backend
    left = max(0.0, deadline - time.perf_counter())
    runner.run(lm, {**options, "max_sweep_seconds": left})


def _records(results: ResultsFile, model: str, grid: dict) -> dict[tuple[str, int, int], dict]:
    """(backend, batch, new tokens) -> record, for this model and this bench's measurement options."""
    wanted = {b: digest(SweepOptions.from_mapping(_options(grid, b)).measurement_options()) for b in BACKENDS}
    found = {}
    for record in results.records().values():
        key = record["key"]
        if key["model"] == model and wanted.get(key["backend"]) == key["options_sha"]:
            found[(key["backend"], key["batch_size"], key["new_tokens"])] = record
    return found


def _cell(record: dict | None, field: str, digits: int = 3) -> str:
    if record is None:
        return "not run"
    if record["status"] != "ok":
        return record["status"]
    return fmt(record.get(field), digits)


def _limit(record: dict | None) -> str:
    if record is None or record["status"] != "ok" or record.get("bottleneck") is None:
        return "--"
    return f"{record['bottleneck']} ({record['bottleneck_phase']})"


def _ratio(static: dict | None, eager: dict | None) -> float | None:
    if not static or not eager or static["status"] != "ok" or eager["status"] != "ok":
        return None
    return static["decode_tokens_per_s"] / eager["decode_tokens_per_s"]


def _headline(model: str, records: dict, points: list[Point]) -> list[list[str]]:
    rows = []
    for p in points:
        if p.batch_size != 1:
            continue
        static, eager = records.get(("static", 1, p.new_tokens)), records.get(("eager", 1, p.new_tokens))
        check = (static or {}).get("graph_check") or {}
        rows.append(
            [
                model,
                str(p.new_tokens),
                _cell(eager, "decode_tokens_per_s", 1),
                _cell(static, "decode_tokens_per_s", 1),
                fmt(_ratio(static, eager), 2),
                _cell(eager, "decode_mbu"),
                _cell(static, "decode_mbu"),
                (static or {}).get("decode_path") or "--",
                str(check.get("tokens_match_eager", "--")),
            ]
        )
    return rows


def _sweep_rows(records: dict, points: list[Point]) -> list[list[str]]:
    rows = []
    for p in points:
        static = records.get(("static", p.batch_size, p.new_tokens))
        eager = records.get(("eager", p.batch_size, p.new_tokens))
        rows.append(
            [
                str(p.batch_size),
                str(p.new_tokens),
                _cell(static, "decode_tokens_per_s", 1),
                _cell(static, "decode_mbu"),
                _cell(static, "prefill_mfu"),
                _limit(static),
                _cell(eager, "decode_tokens_per_s", 1),
                _cell(eager, "decode_mbu"),
                _limit(eager),
                fmt(_ratio(static, eager), 2),
                _cell(static, "peak_memory_allocated_gib"),
                _cell(static, "energy_per_token_j"),
            ]
        )
    return rows


def _goal(model: str, records: dict, points: list[Point]) -> str:
    """Verdict on the issue's goal at batch 1 and the longest generation length."""
    new = max(p.new_tokens for p in points if p.batch_size == 1)
    static, eager = records.get(("static", 1, new)), records.get(("eager", 1, new))
    mbu = None if not static or static["status"] != "ok" else static["decode_mbu"]
    ratio = _ratio(static, eager)
    if mbu is None or ratio is None:
        return f"{model}: goal not evaluated (batch-1 gen-{new} points missing or without MBU)"
    figures = f"{model}, batch 1, {new} new tokens: static decode MBU {mbu:.3f}, static/eager {ratio:.2f}x"
    if model not in GOAL_MODELS:
        return figures + " (no goal set for this model)"
    verdict = "MET" if mbu >= GOAL_MBU and ratio >= GOAL_RATIO else "NOT MET"
    return f"{figures} (goal: MBU >= {GOAL_MBU} and >= {GOAL_RATIO}x): {verdict}"


def _checks(model: str, records: dict, on_gpu: bool) -> list[str]:
    """Static points that did not run the compiled, graphed loop, or whose graph check disagreed."""
    lines = []
    for (backend, bs, new), r in sorted(records.items()):
        if backend != "static" or r["status"] != "ok":
            continue
        where = f"{model} bs{bs} gen{new}"
        if on_gpu and r["decode_path"] != "static_loop+compile+cudagraph":
            lines.append(f"CHECK {where}: ran {r['decode_path']} ({r['decode_path_note']})")
        check = r.get("graph_check") or {}
        if check.get("tokens_match_eager") is False:
            lines.append(
                f"CHECK {where}: first {check['steps']} decode tokens differ from eager steps "
                "(bf16 numerics of fused kernels, or a graph bug if it repeats at batch 1)"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU run on arch:tiny-llama")
    parser.add_argument("--budget-s", type=float, help="seconds of sweeps before points are left out")
    parser.add_argument("--artifacts-dir", help="where perf_throughput.jsonl goes (reuse it to resume)")
    parser.add_argument("--models", help="comma list of pretrained= values (default: the setup's models)")
    args = parser.parse_args(argv)
    setup = dict(SMALL if args.small else FULL)
    if args.models:
        setup["models"] = args.models.split(",")
    budget = args.budget_s if args.budget_s is not None else setup["budget_s"]
    out = os.environ.get("OUT")
    artifacts = Path(
        args.artifacts_dir
        or (Path(out) / "throughput_artifacts" if out else tempfile.mkdtemp(prefix="bench_throughput_"))
    )
    started = time.perf_counter()
    deadline = started + budget
    grid = setup["grid"]
    points = list(SweepOptions.from_mapping(grid).points())

    models = {}
    for index, name in enumerate(setup["models"]):
        # one model resident at a time, so each point's peak memory is that model's alone; the
        # budget left is shared equally by the models still to run
        share = (deadline - time.perf_counter()) / (len(setup["models"]) - index)
        model_deadline = time.perf_counter() + share
        loaded = time.perf_counter()
        lm = PerfHFLM(
            pretrained=name,
            dtype=setup["dtype"],
            device=setup["device"],
            artifacts_dir=str(artifacts),
            print_summary=False,
        )
        print(f"loaded {name} in {time.perf_counter() - loaded:.1f} s", file=sys.stderr, flush=True)
        for backend in BACKENDS:  # 1. the headline: batch 1, static then eager
            _sweep(lm, backend, _options(grid, backend, batch_sizes=[1]), model_deadline)
        for backend in BACKENDS:  # 2. the whole grid, static first
            _sweep(lm, backend, _options(grid, backend), model_deadline)
        models[name] = (lm.peaks, bool(lm.devices))
        del lm
        release_memory()
    elapsed = time.perf_counter() - started

    results = ResultsFile(artifacts / THROUGHPUT.filename)
    per_model = {name: _records(results, name, grid) for name in models}
    device = next(iter(models.values()))[0]
    print(f"\n## perf_throughput bench ({device.device}; peaks: {device.source})\n")
    print(
        f"Settings: {setup['dtype']}, random weights, grid {grid or 'task default'}; static points "
        f"{MEASURE['static']}, eager points {MEASURE['eager']} - capped from the task defaults "
        f"(5 iterations, 3 s, 1 warm-up) to fit ~8 minutes; "
        f"sweep budget {budget:.0f} s, used {elapsed:.0f} s.\n"
    )
    headline = [row for name in models for row in _headline(name, per_model[name], points)]
    print("### Batch 1: eager vs static decode\n")
    print(
        markdown_table(
            [
                "model",
                "gen",
                "eager tok/s",
                "static tok/s",
                "static/eager",
                "eager MBU",
                "static MBU",
                "static path",
                "graph tokens = eager",
            ],
            headline,
        )
    )
    print()
    for name, (_, on_gpu) in models.items():
        print(_goal(name, per_model[name], points))
        print("\n".join(_checks(name, per_model[name], on_gpu)) or f"{name}: all static checks passed")
    for name in models:
        print(f"\n### {name}: every point (limited by = bottleneck label (dominant phase))\n")
        header = [
            "bs",
            "gen",
            "static tok/s",
            "static MBU",
            "static prefill MFU",
            "static limited by",
            "eager tok/s",
            "eager MBU",
            "eager limited by",
            "static/eager",
            "static peak GiB",
            "static J/tok",
        ]
        print(markdown_table(header, _sweep_rows(per_model[name], points)))
    if out:
        payload = {
            "settings": {"setup": setup, "measure": MEASURE, "budget_s": budget, "elapsed_s": elapsed},
            "goal": {name: _goal(name, per_model[name], points) for name in models},
            "records": {
                name: {f"{b}@bs{bs}_gen{g}": r for (b, bs, g), r in recs.items()}
                for name, recs in per_model.items()
            },
        }
        save("throughput", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
