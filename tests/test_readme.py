"""The README's first hour, run as printed: its commands, verbatim, in a copy of the repository's
surroundings (``.venv`` beside the results, BBH in ``../shared/data/bbh``), and its option table
against the code. The README's matrices are in test_readme_matrices.py: this file holds one xdist
worker for minutes (the demo and the hf comparison), the other runs those meanwhile.

Commands are read from the README itself (the fenced ``bash`` block that holds them; continuation
lines joined, comments dropped), so a README edit that breaks one fails here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lm_eval_perf.batch.config import load_config
from lm_eval_perf.tasks.esd.estimator import ESDOptions
from lm_eval_perf.tasks.esd.runner import RUNNER_OPTIONS
from lm_eval_perf.tasks.forward.options import ForwardOptions
from lm_eval_perf.tasks.throughput.sweep import SweepOptions
from tests.readme import readme_block

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def shown(default) -> str:
    """A default as the README's option table writes it."""
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return json.dumps(list(default))
    return repr(default) if isinstance(default, float) else str(default)


def test_the_plugin_task_table_lists_every_option_with_the_codes_default():
    rows, task = {}, None
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        tasks = ("", "`perf_throughput`", "`perf_forward`", "`esd`")
        if len(cells) == 4 and cells[1].startswith("`") and cells[0] in tasks:
            task = cells[0].strip("`") or task
            rows[(task, cells[1].strip("`"))] = cells[2]
    sweep = {f.name: f.default for f in dataclasses.fields(SweepOptions)}
    forward = {f.name: f.default for f in dataclasses.fields(ForwardOptions)}
    esd = {f.name: f.default for f in dataclasses.fields(ESDOptions)}
    assert {o for t, o in rows if t == "perf_throughput"} == set(sweep)
    assert {o for t, o in rows if t == "perf_forward"} == set(forward)
    assert {o for t, o in rows if t == "esd"} == set(esd) | set(RUNNER_OPTIONS)
    for name, default in sweep.items():
        assert rows[("perf_throughput", name)] == f"`{shown(default)}`", name
    for name, default in forward.items():
        assert rows[("perf_forward", name)] == f"`{shown(default)}`", name
    for name, default in esd.items():
        assert rows[("esd", name)] == f"`{shown(default)}`", name
    assert rows[("esd", "merge_device")] == "`auto`"


def test_make_demo_and_the_batch_demo_write_to_different_folders():
    demo = next(line for line in (REPO / "Makefile").read_text().splitlines() if "lm-eval-perf demo" in line)
    assert demo.strip() == "$(VENV)/bin/lm-eval-perf demo"  # the demo's default --output, from the repository
    batch = load_config(REPO / "configs" / "demo.yaml").output_dir
    assert batch == REPO / "results" / "demo-batch"
    assert (REPO / "results" / "demo") not in (batch, *batch.parents)
    assert "--results_dir results/demo-batch" in readme_block("python process_results.py")


@pytest.fixture(scope="module")
def first_hour(tmp_path_factory, bbh_dir, smollm2_dir) -> SimpleNamespace:
    """``make demo``'s demo step (the Makefile's line, after the set-up) and the README's hf comparison,
    at the same time, in a sandbox; then the README's commands after the demo."""
    cache = Path(os.environ["HOME"]) / ".cache" / "lm_eval_perf"
    if smollm2_dir.parent != cache:
        pytest.skip(
            "the README's hf command names $HOME/.cache/lm_eval_perf: LM_EVAL_PERF_CACHE is set elsewhere"
        )
    root = tmp_path_factory.mktemp("first_hour")
    repo = root / "repo"
    repo.mkdir()
    (repo / ".venv").symlink_to(Path(sys.prefix))
    (root / "shared" / "data").mkdir(parents=True)
    (root / "shared" / "data" / "bbh").symlink_to(bbh_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LM_EVAL_PERF_BBH_DIR", None)  # the README's ../shared/data/bbh must be what is read
    makefile = (REPO / "Makefile").read_text().splitlines()
    demo = next(line for line in makefile if "lm-eval-perf demo" in line).strip().replace("$(VENV)", ".venv")
    activate = readme_block("source .venv/bin/activate").splitlines()[0]  # the README's first step after it
    commands = {"demo": demo, "hf": f"{activate}\n{readme_block('lm_eval --model hf')}"}
    procs = {
        name: subprocess.Popen(
            ["bash", "-c", command],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, command in commands.items()
    }
    out = {name: proc.communicate(timeout=3600) for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, out[name][1][-3000:])
    report = subprocess.run(
        ["bash", "-c", readme_block("source .venv/bin/activate")],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return SimpleNamespace(repo=repo, out=out, report=report)


@pytest.mark.slow
def test_the_demo_says_last_where_it_wrote_and_how_to_make_tables(first_hour):
    stdout, stderr = first_hour.out["demo"]
    last = stdout.strip().splitlines()[-2:]
    (written,) = (first_hour.repo / "results" / "demo" / "bundled__smollm2").glob("results_*.json")
    assert last == [
        f"lm-eval-perf demo: results written to {written.resolve()}",
        "tables and plots: lm-eval-perf report --results_dir results/demo --output_dir tables/demo",
    ]
    assert "Custom kwargs can be passed" not in stderr  # lm-eval's notice, 24 times per BBH run before


@pytest.mark.slow
def test_the_readmes_commands_after_the_demo_run_as_printed(first_hour):
    assert first_hour.report.returncode == 0, first_hour.report.stderr[-3000:]
    for name in ("report.html", "benchmark_table.tex", "benchmark_report.txt"):
        assert (first_hour.repo / "tables" / "demo" / name).stat().st_size > 0


@pytest.mark.slow
def test_the_readmes_hf_comparison_scores_what_the_demo_scored(first_hour):
    def score(folder: str) -> float:
        (path,) = (first_hour.repo / "results" / folder).rglob("results_*.json")
        return json.loads(path.read_text())["groups"]["leaderboard_bbh_local"]["acc_norm,none"]

    assert score("demo-hf") == score("demo")


@pytest.mark.slow
def test_the_demos_record_is_a_cpu_run_without_a_device_flag(first_hour):
    (path,) = (first_hour.repo / "results" / "demo").rglob("results_*.json")
    results = json.loads(path.read_text())
    record = results["config"]["efficiency"]
    assert results["config"]["device"] == "cuda:0"  # lm-eval's default, which perf-hf resolves as hf does
    assert record["load"]["device"] == "cpu" and record["world_size"] == 1
    requests = sum(task["requests"] for task in record["tasks"].values())
    ll = record["kinds"]["loglikelihood"]
    assert requests > 24 and ll["requests"] == requests > ll["samples"]  # rows share contexts
    assert record["load"]["source_time_s"] >= 0 and record["load"]["load_time_s"] > 0
    assert record["overall"]["energy_j"] is None and "gpu" in record["unavailable"]
