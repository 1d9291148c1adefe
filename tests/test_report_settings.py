"""process_results on a results folder holding two runs that differ only in the few-shot count.

The module fixture runs, at the same time, on a CPU with the tiny random Llama:

* batch_eval with a 2 x 2 matrix - ``arch:tiny-llama`` in bfloat16 and float32 on a one-subtask BBH
  group, 0-shot and 3-shot - of which only the bfloat16 half is run (``--only precision=bfloat16``):
  two results of one row that differ only in n-shot, and two planned cells without a result;
* lm_eval: the float32 model on the throughput sweep (one generated length, two batch sizes) and
  ESD only - a row without accuracy whose runs ran plugin tasks only;

then reads the folder as process_results.py does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import bbh_group_yaml

from lm_eval_perf.report.cli import process
from lm_eval_perf.report.collect import collect
from lm_eval_perf.report.efficiency import all_rows
from lm_eval_perf.report.esd import study_layers
from lm_eval_perf.report.plots import Plot, Skipped, all_figures
from lm_eval_perf.report.study import build
from lm_eval_perf.report.sweeps import study_points

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BBH_ONE = bbh_group_yaml("leaderboard_bbh_one", ["boolean_expressions"])
SWEEP = {
    "batch_sizes": [1, 2],
    "gen_lengths": [4],
    "min_iterations": 1,
    "min_seconds": 0,
    "warmup_iterations": 0,
}


@pytest.fixture(scope="module")
def study(tmp_path_factory, bbh_dir) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("settings")
    (root / "tasks").mkdir()
    (root / "tasks" / "bbh_one.yaml").write_text(BBH_ONE)
    results = root / "results"
    bbh = {
        "name": "leaderboard_bbh_one",
        "limit": 2,
        "batch_size": "4",
        "metadata": {"bbh_dir": str(bbh_dir)},
    }
    config = {
        "output_dir": str(results / "batch"),
        "include_path": str(root / "tasks"),
        "models": [{"pretrained": "arch:tiny-llama", "precisions": ["bfloat16", "float32"]}],
        "tasks": [{**bbh, "label": "bbh0", "num_fewshot": 0}, {**bbh, "label": "bbh3", "num_fewshot": 3}],
    }
    (root / "batch.yaml").write_text(json.dumps(config))  # JSON is YAML
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    commands = [
        [sys.executable, str(REPO / "batch_eval.py"), "--config", str(root / "batch.yaml"), "--no-progress",
         "--only", "precision=bfloat16"],
        [sys.executable, "-m", "lm_eval", "--model", "perf-hf", "--model_args",
         "pretrained=arch:tiny-llama,precision=float32", "--tasks", "perf_throughput,esd", "--device", "cpu",
         "--metadata", json.dumps({**SWEEP, "eig_dtype": "float32"}), "--output_path",
         str(results / "direct")],
    ]  # fmt: skip
    logs = [root / f"run{i}.log" for i in range(len(commands))]
    procs = []
    for command, log in zip(commands, logs):
        with open(log, "w") as handle:
            procs.append(
                subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=root)
            )
    codes = [p.wait(timeout=900) for p in procs]
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    _, report = process(results, root / "tables", progress=False)
    inputs = collect(results, progress=False)
    built = build(inputs)
    efficiency = all_rows(built, "bfloat16")
    layers, _ = study_layers(built)
    figures = {f.name: f for f in all_figures(built, efficiency, study_points(built), layers)}
    bbh_runs = sorted((results / "batch" / "results").rglob("results_*.json"))
    return SimpleNamespace(
        results=results,
        tables=root / "tables",
        report=report,
        figures=figures,
        runs={
            json.loads(p.read_text())["n-shot"]["leaderboard_bbh_one"]: json.loads(p.read_text())
            for p in bbh_runs
        },
    )


def _row(table, precision: str):
    return next(r for r in table.rows if r.precision == precision)


def test_two_runs_that_differ_only_in_n_shot_are_two_columns_never_one_cell(study):
    table = study.report.accuracy
    bbh = [(i, h) for i, h in enumerate(table.headers) if h.label == "BBH"]
    assert [h.settings for _, h in bbh] == ["0-shot, limit 2", "3-shot, limit 2"]
    cells = [_row(table, "bfloat16").cells[i] for i, _ in bbh]
    assert [c.value for c in cells] == [
        study.runs[n]["groups"]["leaderboard_bbh_one"]["acc_norm,none"] for n in (0, 3)
    ]
    assert not [n for n in study.report.notes if "BBH" in n]  # nothing was chosen over anything


def test_every_table_shows_the_n_shot_and_limit_of_each_accuracy_column(study):
    for name in ("benchmark_table.tex", "report.html", "benchmark_report.txt"):
        text = (study.tables / name).read_text()
        assert "0-shot, limit 2" in text and "3-shot, limit 2" in text, name
    wide = (study.tables / "benchmark_results_wide.csv").read_text().splitlines()[0]
    assert "BBH (acc_norm; 0-shot, limit 2)" in wide and "BBH (acc_norm; 3-shot, limit 2)" in wide
    tidy = (study.tables / "benchmark_results.csv").read_text()
    assert {line.split(",")[4] for line in tidy.splitlines()[1:] if ",BBH," in line} == {
        "0",
        "3",
    }  # num_fewshot


def test_peak_memory_is_that_of_the_device_the_model_ran_on_and_says_which(study):
    metric = [m["key"] for m in study.report.metrics].index("peak_memory_gib")
    cell = _row(study.report.efficiency, "bfloat16").cells[metric]
    records = [run["config"]["efficiency"] for run in study.runs.values()]
    if records[0]["load"]["device"].startswith(
        "cuda"
    ):  # batch_eval runs its jobs on a GPU where there is one
        peaks, label = [r["overall"]["torch_memory"]["allocated_peak_gib"] for r in records], "alloc"
    else:
        peaks, label = [r["overall"]["host_rss_peak_gib"] for r in records], "RSS"
    assert cell.value == max(peaks) and cell.text.endswith(f" ({label})")
    assert "RSS: host memory of a CPU run" in study.report.efficiency.caption


def test_rows_of_plugin_tasks_only_do_not_claim_a_run_without_perf_hf(study):
    reasons = [u for u in study.report.unavailable if u["row"].endswith("/ float32")]
    assert reasons and all("without perf-hf" not in u["reason"] for u in reasons)
    assert any("Weights" in u["metrics"] and "ran only plugin tasks" in u["reason"] for u in reasons)


def test_the_best_precision_of_a_model_with_a_bbh_score_ignores_its_rows_without_accuracy(study):
    (best,) = study.report.best
    scores = [study.runs[n]["groups"]["leaderboard_bbh_one"]["acc_norm,none"] for n in (0, 3)]
    assert best["row"] == "bfloat16" and float(best["score"]) == pytest.approx(sum(scores) / 2, abs=1e-4)
    assert best["over"] == "BBH (0-shot, limit 2), BBH (3-shot, limit 2)"


def test_missing_cells_are_exactly_the_planned_jobs_without_a_result_with_their_state(study):
    assert study.report.missing == [
        {"model": "arch_tiny-llama", "row": "float32", "task": "bbh0", "state": "pending"},
        {"model": "arch_tiny-llama", "row": "float32", "task": "bbh3", "state": "pending"},
    ]
    text = (study.tables / "benchmark_report.txt").read_text()
    assert "arch_tiny-llama / float32 / bbh3: pending" in text.split("MISSING CELLS (2;")[1]


def test_numbers_in_the_tables_have_three_or_four_significant_figures(study):
    checked = 0
    for table in (study.report.accuracy, study.report.efficiency):
        for row in table.rows:
            for cell in row.cells:
                if cell.value is None or cell.value == 0:
                    continue
                number = cell.text.split(" ")[0]
                digits = re.sub(r"e.*", "", number).replace("-", "").replace(".", "").lstrip("0")
                assert len(digits) in (3, 4) or (len(digits) > 4 and "." not in number), cell.text
                checked += 1
    assert checked >= 6


def test_sweep_axes_are_log2_with_the_measured_values_as_ticks(study):
    plot = study.figures["throughput_vs_batch_size"]
    assert isinstance(plot, Plot)
    (ax,) = plot.figure.axes
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert list(ax.get_xticks()) == [1, 2] and [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]


def test_a_sweep_over_one_generated_length_is_not_drawn_against_it_and_the_report_says_why(study):
    skipped = study.figures["throughput_vs_gen_length"]
    assert isinstance(skipped, Skipped) and "only one generated length (4) was measured" in skipped.reason
    text = (study.tables / "benchmark_report.txt").read_text()
    assert "not drawn: throughput_vs_gen_length: only one generated length (4)" in text


def test_the_text_report_lists_one_figure_per_line(study):
    text = (study.tables / "benchmark_report.txt").read_text()
    section = text.split("FIGURES (")[1].split("\n\n")[0].splitlines()[1:]
    drawn = [line for line in section if not line.strip().startswith("not drawn:")]
    assert len(drawn) == len(study.report.figures) > 1
    assert all(line.startswith(f"  {f.name}: ") for line, f in zip(drawn, study.report.figures))
