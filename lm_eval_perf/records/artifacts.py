"""The files the plugin tasks write beside lm-eval's results, named once for the tasks and the report.

A task writes its file into the model's artifacts folder and lists its path in the results JSON under
``config.lm_eval_perf_artifacts[key]``; :mod:`lm_eval_perf.report` reads it back from there, or by file
name from a run's folder when an older run lacks the list. This module imports nothing heavy, so the
report does not load torch to learn the names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    key: str  # in config.lm_eval_perf_artifacts
    filename: str  # in the artifacts folder


THROUGHPUT = Artifact("perf_throughput_jsonl", "perf_throughput.jsonl")  # one JSON line per sweep point
FORWARD = Artifact("perf_forward_jsonl", "perf_forward.jsonl")  # one JSON line per forward sweep point
ESD_LAYERS = Artifact("esd_layers_csv", "esd_layers.csv")  # one CSV row per layer; runs add a time stamp
