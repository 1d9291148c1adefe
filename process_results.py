#!/usr/bin/env python
"""Turn a results directory of ``lm_eval --model perf-hf`` / ``batch_eval.py`` runs into paper tables,
CSV files, plots and a report:

    python process_results.py --results_dir results/ --output_dir tables/ [--baseline-precision bfloat16]

A thin wrapper over :mod:`lm_eval_perf.report` (``lm-eval-perf report`` is the same command); see
``python process_results.py --help`` and ``lm_eval_perf/report/cli.py``.
"""

import sys

from lm_eval_perf.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
