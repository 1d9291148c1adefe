"""One records contract: the shipped JSON Schema is the typed layout's, a record that breaks it is
caught, the report reads schema 1 and 2 and refuses a newer one in one line, and the package's import
graph has no loop and no upward arrow."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records import efficiency

PACKAGE = Path(__file__).resolve().parents[1] / "lm_eval_perf"
# Each top-level part of the package and the parts it may import (the ground floor is open to all).
GROUND = {"errors", "atomic", "records", "bbh", "plugins", "model_args", "orphans"}
ALLOWED = {
    "monitor": set(),
    "models": {"monitor"},
    "tasks": {"monitor", "models"},
    "batch": {"tasks", "models", "registration", "cli"},
    "report": {"monitor", "tasks"},  # tasks: the sweep options that key a throughput record
    "cli": {"registration", "batch"},
}


def test_the_shipped_schema_is_the_one_the_typed_layout_gives():
    assert efficiency.schema_file().read_text() == efficiency.schema_text()
    assert json.loads(efficiency.schema_text())["$id"] == efficiency.SCHEMA


def test_a_record_with_a_field_the_layout_does_not_know_is_refused():
    record = json.loads(efficiency.schema_file().read_text())  # any JSON object will do to start
    with pytest.raises(ValueError, match="efficiency record breaks"):
        efficiency.validate(record)
    overall = {"batches": 1, "samples": 1, "busy_s": 1.0, "wall_s": 1.0, "window": None}
    overall |= dict.fromkeys(("amu", "pcu", "aec_w", "energy_j", "energy_error_bound"))
    overall |= {"memory_peak_gib": None, "torch_memory": None, "host_rss_peak_gib": None}
    overall |= {"definitions": {}, "excluded": []}
    provenance = {"gpus": [], "versions": {}, "host": {}, "sampling_interval_s": 0.1, "warmup_batches": 0}
    provenance |= dict.fromkeys(("gpu_name", "driver_version", "power_limit_w", "cuda_runtime"))
    provenance |= {"cuda_visible_devices": None, "git_sha": None, "started_utc": "t0", "ended_utc": "t1"}
    good = {"schema": efficiency.SCHEMA, "world_size": 1, "overall": overall, "kinds": {}, "model": None}
    good |= {"peaks": None, "provenance": provenance, "unavailable": {}, "ranks": []}
    efficiency.validate(good)
    with pytest.raises(ValueError, match=r"at overall: Additional properties .*'al_s'"):
        efficiency.validate({**good, "overall": {**overall, "al_s": 0.5}})  # AL across kinds is gone in 2


def test_the_report_reads_schema_1_and_2_and_refuses_a_newer_one_in_one_line(tmp_path):
    assert efficiency.check_version({"schema": "lm-eval-perf/efficiency/1"}, "a.json") == 1
    assert efficiency.check_version({"schema": efficiency.SCHEMA}, "a.json") == 2
    with pytest.raises(UserInputError, match="newer than this lm-eval-perf reads"):
        efficiency.check_version({"schema": "lm-eval-perf/efficiency/9"}, "a.json")
    run = tmp_path / "results" / "m" / "results_2026-12-07T00-00-00.json"
    run.parent.mkdir(parents=True)
    config = {
        "model": "perf-hf",
        "model_args": "pretrained=m",
        "efficiency": {"schema": "lm-eval-perf/efficiency/9"},
    }
    run.write_text(json.dumps({"results": {"t": {"acc,none": 0.5}}, "config": config}))
    out = tmp_path / "tables"
    command = [
        sys.executable,
        "process_results.py",
        "--results_dir",
        str(tmp_path / "results"),
        "--output_dir",
        str(out),
    ]
    proc = subprocess.run(command, cwd=PACKAGE.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and not out.exists()
    assert proc.stderr.strip().splitlines() == [
        "lm-eval-perf: error: m/results_2026-12-07T00-00-00.json: "
        "efficiency schema lm-eval-perf/efficiency/9 is newer than this lm-eval-perf reads "
        "(lm-eval-perf/efficiency/1, lm-eval-perf/efficiency/2): "
        "upgrade lm-eval-perf"
    ]


def _imports() -> dict[str, dict[str, set[str]]]:
    """part -> imported part -> the files that import it."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        part = parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                pieces = name.split(".")
                if pieces[0] == "lm_eval_perf" and len(pieces) > 1 and pieces[1] != part:
                    found.setdefault(part, {}).setdefault(pieces[1], set()).add(
                        str(path.relative_to(PACKAGE))
                    )
    return found


def test_no_part_imports_one_above_it_or_beside_it():
    wrong = {
        (part, target): sorted(files)
        for part, targets in _imports().items()
        if part in ALLOWED or part in GROUND
        for target, files in targets.items()
        if target not in GROUND | ALLOWED.get(part, set()) or (part in GROUND and target not in GROUND)
    }
    assert wrong == {}


def test_no_two_parts_import_each_other():
    graph = {part: set(targets) for part, targets in _imports().items()}
    loops = sorted((a, b) for a, targets in graph.items() for b in targets if a < b and a in graph.get(b, ()))
    assert loops == []


@pytest.mark.parametrize(
    ("typed", "built"),
    [
        ("Window", "lm_eval_perf.monitor.window:Measurement"),
        ("ModelShape", "lm_eval_perf.monitor.metrics:ModelShape"),
        ("Peaks", "lm_eval_perf.monitor.peaks:DevicePeaks"),
    ],
)
def test_the_monitors_dataclasses_serialize_to_the_typed_layout(typed, built):
    import dataclasses
    import importlib

    module, _, name = built.partition(":")
    fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
    assert fields == set(getattr(efficiency, typed).__annotations__)
