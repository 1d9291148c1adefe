#!/usr/bin/env python
"""Run a matrix of models × precisions × compression ratios × tasks through lm-eval and perf-hf.

    python batch_eval.py --config configs/demo.yaml            # offline demo, CPU is fine
    python batch_eval.py --config configs/efficientllm.yaml    # one job per free local GPU
    python batch_eval.py --config ... --executor ray --ray-address auto

A thin wrapper over :mod:`lm_eval_perf.batch` (``lm-eval-perf batch`` is the same command); see
``python batch_eval.py --help`` and ``lm_eval_perf/batch/config.py`` for the config format.
"""

import sys

from lm_eval_perf.batch.cli import main

if __name__ == "__main__":
    sys.exit(main())
