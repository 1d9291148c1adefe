"""process_results.py on a results directory built from real runs (tiny random Llama, CPU).

The module fixture runs, at the same time:

* batch_eval: ``arch:tiny-llama`` in bfloat16 and float32 on ``study`` (a group written here: two
  local BBH subtasks, perplexity_local, a 2x2 throughput sweep and ESD), plus a model folder that
  holds no model (a failed job in failures.jsonl, a missing cell of the matrix plan);
* lm_eval: the same model SVD-compressed to ratio 0.5 on the BBH subset, the sweep and ESD (a ratio
  sweep with the batch's bfloat16 row; its perplexity cell is missing) and perplexity_local in
  bfloat16 again (a second run of a batch cell: newest wins);

then adds a truncated results JSON and a truncated line in a sweep's JSONL, and runs
``process_results.py`` on it all.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import bbh_group_yaml

from lm_eval_perf.records.console import fmt
from lm_eval_perf.report.cli import process
from lm_eval_perf.report.esd import read_layers
from lm_eval_perf.report.mcr import mcr_from_files

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SWEEP = {
    "batch_sizes": [1, 2],
    "gen_lengths": [4, 8],
    "min_iterations": 1,
    "min_seconds": 0,
    "warmup_iterations": 0,
}
BBH_MINI = bbh_group_yaml("leaderboard_bbh_mini", ["boolean_expressions", "navigate"])
BATCH_BF16 = Path("batch/results/arch_tiny-llama/bfloat16/study")  # batch_eval's result folder of a job
SVD_TASKS = ("leaderboard_bbh_mini", "perf_throughput", "esd")
STUDY = """group: study
task: [leaderboard_bbh_mini, perplexity_local, perf_throughput, esd]
metadata:
  version: 1.0
"""
FIGURES = (
    "throughput_vs_batch_size",
    "throughput_vs_gen_length",
    "ratio_throughput_vs_batch_size__arch_tiny-llama__bfloat16",
    "ratio_throughput_vs_gen_length__arch_tiny-llama__bfloat16",
    "latency_ttft_tpot",
    "peak_memory_vs_batch_size",
    "pareto_latency",
    "accuracy_vs_ratio",
    "esd_alpha_histogram",
    "esd_alpha_per_layer",
)
CPU_ONLY_FIGURES = ("energy_per_token", "pareto_energy")  # no energy source on a CPU


def _lm_eval(model_args: str, tasks: str, include: Path, metadata: dict, output: Path) -> list[str]:
    return [
        sys.executable, "-m", "lm_eval", "--model", "perf-hf", "--model_args", model_args,
        "--tasks", tasks, "--include_path", str(include), "--limit", "1", "--device", "cpu",
        "--batch_size", "8", "--metadata", json.dumps(metadata), "--output_path", str(output),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory, bbh_dir) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("report")
    include = root / "tasks"
    include.mkdir()
    (include / "bbh_mini.yaml").write_text(BBH_MINI)
    (include / "study.yaml").write_text(STUDY)
    results = root / "results"
    metadata = {"bbh_dir": str(bbh_dir), **SWEEP}
    config = {
        "output_dir": str(results / "batch"),
        "workers": 3,
        "include_path": str(include),
        "models": [
            {"pretrained": "arch:tiny-llama", "precisions": ["bfloat16", "float32"]},
            {"pretrained": "./empty-model", "precisions": ["bfloat16"]},
        ],
        "tasks": [{"name": "study", "limit": 1, "batch_size": "8", "metadata": metadata}],
    }
    (root / "batch.yaml").write_text(json.dumps(config))  # JSON is YAML
    (root / "empty-model").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    direct = results / "direct"
    tiny = "pretrained=arch:tiny-llama,precision="
    commands = [
        [sys.executable, str(REPO / "batch_eval.py"), "--config", str(root / "batch.yaml"), "--no-progress"],
        _lm_eval(f"{tiny}bfloat16,svd_ratio=0.5", ",".join(SVD_TASKS), include, metadata, direct / "svd"),
        _lm_eval(f"{tiny}bfloat16", "perplexity_local", include, {}, direct / "ppl"),
    ]
    logs = [root / f"run{i}.log" for i in range(len(commands))]
    procs = []
    for command, log in zip(commands, logs):
        with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
            procs.append(
                subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=root)
            )
    codes = [p.wait(timeout=900) for p in procs]
    assert codes == [1, 0, 0], "\n".join(log.read_text()[-3000:] for log in logs)  # batch: 1 job failed

    broken = results / "broken" / "results_2026-01-01T00-00-00.json"
    broken.parent.mkdir()
    source = next((direct / "svd").rglob("results_*.json")).read_text()
    broken.write_text(source[: len(source) // 2])
    staging = (results / BATCH_BF16).with_name(".study.staging-0badc0de")
    staging.mkdir()
    (staging / "results_2099-01-01T00-00-00.json").write_text(source)  # an attempt still running
    sweep = next((results / BATCH_BF16).rglob("perf_throughput.jsonl"))
    with open(sweep, "a") as handle:
        handle.write('{"schema": "lm-eval-perf/throughput/1", "key": {"batch_si\n')

    out = root / "tables"
    command = [sys.executable, str(REPO / "process_results.py"), "--results_dir", str(results)]
    done = subprocess.run(
        [*command, "--output_dir", str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "2 unreadable files, 1 failed jobs, 1 missing cells" in done.stdout  # summed up on the console
    return SimpleNamespace(
        results=results, out=out, stdout=done.stdout, broken=broken, sweep=sweep, root=root
    )


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _results(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_output_is_written_and_figures_without_data_are_skipped_with_a_reason(study):
    names = ["benchmark_table.tex", "benchmark_results.csv", "benchmark_results_wide.csv"]
    names += ["summary_statistics.csv", "report.html", "benchmark_report.txt"]
    names += [f"plots/{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")]
    for name in names:
        assert (study.out / name).stat().st_size > 0, name
    report = (study.out / "benchmark_report.txt").read_text()
    for name in CPU_ONLY_FIGURES:
        assert not (study.out / "plots" / f"{name}.png").exists()
        assert re.search(rf"not drawn: {name}: \S", report)
    leftovers = [p.name for p in study.out.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_latex_tables_compile_with_pdflatex(study, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (scripts/setup.sh --test installs texlive with apt)")
    shutil.copy(study.out / "benchmark_table.tex", tmp_path)
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "benchmark_table.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "benchmark_table.pdf").stat().st_size > 0
    tex = (study.out / "benchmark_table.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert r"arch\_tiny-llama" in tex  # the model name's underscore is escaped


def test_every_number_in_the_tidy_csv_equals_the_source_json(study):
    rows = [r for r in _csv(study.out / "benchmark_results.csv") if r["task"] != "(efficiency)"]
    checked = 0
    for row in rows:
        if row["metric"] == "mcr":
            continue
        data = _results(study.results / row["source"])
        block = {**data["results"], **data.get("groups", {})}[row["task"]]
        assert float(row["value"]) == block[f"{row['metric']},{row['filter']}"], row
        checked += 1
    tasks = {r["task"] for r in rows}
    assert {
        "leaderboard_bbh_mini",
        "leaderboard_bbh_navigate",
        "perplexity_local",
        "perf_throughput",
        "esd",
    } <= tasks
    assert checked > 50
    wide = _csv(study.out / "benchmark_results_wide.csv")
    primary = {
        (r["model"], r["precision"], r["ratio"], r["column"]): r["value"]
        for r in rows
        if r["primary"] == "True"
    }
    for row in wide:
        key = (row["model"], row["precision"], row["ratio"])
        assert row["BBH (acc_norm; 3-shot, limit 1)"] == primary.get((*key, "BBH"), "")
        ppl = primary.get((*key, "perplexity_local"), "")
        assert row["perplexity_local (word_perplexity; 0-shot, limit 1)"] == ppl


def _lines_of_cells(text: str) -> list[list[str]]:
    return [line.rstrip(" \\").split(" & ") for line in text.splitlines() if line.endswith(r"\\")]


def _latex_table(tex: str, label: str) -> tuple[list[str], list[list[str]]]:
    """Header labels and body rows (cells) of the tabular after ``\\label{tab:<label>}``."""
    body = tex.split(rf"\label{{tab:{label}}}")[1].split(r"\bottomrule")[0]
    head, _, rest = body.partition(r"\midrule")
    return _lines_of_cells(head)[0], _lines_of_cells(rest)


def test_the_bold_cell_of_each_accuracy_column_is_its_best_value(study):
    header, rows = _latex_table((study.out / "benchmark_table.tex").read_text(), "accuracy")
    tidy = [r for r in _csv(study.out / "benchmark_results.csv") if r["primary"] == "True"]
    checked = 0
    for column, label in (("BBH", "BBH"), ("perplexity_local", r"perplexity\_local")):
        values = [float(r["value"]) for r in tidy if r["column"] == column]
        higher = {r["higher_is_better"] for r in tidy if r["column"] == column}
        best = max(values) if higher == {"True"} else min(values)
        cells = [row[header.index(label)] for row in rows]
        bold = [c for c in cells if c.startswith(r"\textbf{")]
        assert bold and all(c == rf"\textbf{{{fmt(best)}}}" for c in bold), (column, cells)
        assert len(bold) == sum(v == best for v in values)
        checked += 1
    assert checked == 2
    assert any(c == "--" for row in rows for c in row[header.index("BBH") :])  # missing cells: --


def test_html_report_is_self_contained_and_renders_in_headless_chromium(study, tmp_path):
    html = (study.out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", html)
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == len(FIGURES) and all(i.startswith("data:image/png;base64,") for i in images)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (scripts/setup.sh --test installs it with apt)")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1200,1600", f"--screenshot={shot}", (study.out / "report.html").as_uri()],
        capture_output=True, timeout=180,
    )  # fmt: skip
    from matplotlib.image import imread

    pixels = imread(shot)
    colours = {tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::97]}
    assert len(colours) > 20  # text, tables and figures, not a blank page


def test_the_newest_of_two_runs_of_a_cell_wins_and_the_report_says_so(study):
    candidates = [
        next((study.results / BATCH_BF16).rglob("results_*.json")),
        next((study.results / "direct" / "ppl").rglob("results_*.json")),
    ]
    newest, older = sorted(candidates, key=lambda p: (_results(p)["date"], str(p)), reverse=True)
    rows = _csv(study.out / "benchmark_results.csv")
    used = {
        r["source"]
        for r in rows
        if r["precision"] == "bfloat16" and r["ratio"] == "1.0" and r["task"] == "perplexity_local"
    }
    assert used == {str(newest.relative_to(study.results))}
    report = (study.out / "benchmark_report.txt").read_text()
    note = next(line for line in report.splitlines() if "perplexity_local: 2 results" in line)
    assert str(older.relative_to(study.results)) in note


def test_results_of_unfinished_batch_attempts_are_not_read(study):
    sources = {r["source"] for r in _csv(study.out / "benchmark_results.csv")}
    assert sources and not any(".staging-" in s for s in sources)
    assert ".staging-" not in (study.out / "report.html").read_text()


def test_corrupt_files_failed_jobs_and_missing_cells_are_listed(study):
    report = (study.out / "benchmark_report.txt").read_text()
    html = (study.out / "report.html").read_text()
    broken = str(study.broken.relative_to(study.results))
    assert re.search(rf"{re.escape(broken)}: corrupt or truncated JSON", report) and broken in html
    sweep = str(study.sweep.relative_to(study.results))
    assert re.search(rf"{re.escape(sweep)}: line \d+: corrupt or truncated JSON", report)
    assert re.search(r"empty-model / bfloat16 / study: exit status 2: .*cannot load model", report)
    missing = report.split("MISSING CELLS (1;")[1].split("NOTES")[0]  # the matrix plan's job without a result
    assert "empty-model / bfloat16 / study: failed" in missing
    assert "perplexity_local" not in missing  # never planned at ratio 0.5 (a direct lm_eval run): not missing


def test_sweep_statistics_come_from_the_sweep_records(study):
    rows = _csv(study.out / "summary_statistics.csv")
    rows = [r for r in rows if r["metric"] == "ttft_s"]
    assert {(r["precision"], r["ratio"]) for r in rows} == {
        ("bfloat16", "1.0"),
        ("float32", "1.0"),
        ("bfloat16", "0.5"),
    }
    records = [json.loads(line) for line in study.sweep.read_text().splitlines()[:-1]]  # last line: truncated
    mine = {
        (r["batch_size"], r["gen_length"]): r
        for r in rows
        if r["precision"] == "bfloat16" and r["ratio"] == "1.0"
    }
    assert set(mine) == {(str(b), str(g)) for b in SWEEP["batch_sizes"] for g in SWEEP["gen_lengths"]}
    for record in records:
        row = mine[(str(record["key"]["batch_size"]), str(record["key"]["new_tokens"]))]
        assert (
            float(row["mean"]) == record["ttft_s"]["mean"] and int(row["count"]) == record["ttft_s"]["count"]
        )


def test_mcr_of_the_compressed_row_uses_the_real_weight_bytes(study):
    base = next((study.results / BATCH_BF16).rglob("results_*.json"))
    compressed = next((study.results / "direct" / "svd").rglob("results_*.json"))
    expected = mcr_from_files(base, compressed, "acc_norm", "leaderboard_bbh_mini")
    rows = _csv(study.out / "benchmark_results.csv")
    [mcr] = [r for r in rows if r["metric"] == "mcr" and r["column"] == "BBH" and r["ratio"] == "0.5"]
    if expected["mcr"] is None:  # a zero accuracy at limit 1: MCR undefined, never 0
        assert mcr["value"] == ""
    else:
        assert float(mcr["value"]) == pytest.approx(expected["mcr"])
    assert expected["size_comp_bytes"] < expected["size_orig_bytes"]


def test_format_selects_the_outputs(study, tmp_path):
    written, _ = process(study.results, tmp_path, formats=["csv"], progress=False)
    assert sorted(p.name for p in written) == [
        "benchmark_results.csv",
        "benchmark_results_wide.csv",
        "summary_statistics.csv",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


def test_a_user_template_replaces_the_latex_one(study, tmp_path):
    template = tmp_path / "mine.tex.j2"
    template.write_text(
        r"\BLOCK{for row in report.accuracy.rows}\VAR{row.model | latex}/\VAR{row.precision}"
        + "\n\\BLOCK{endfor}"
    )
    process(study.results, tmp_path / "out", formats=["latex"], templates=[template], progress=False)
    lines = (tmp_path / "out" / "benchmark_table.tex").read_text().splitlines()
    assert lines == [r"arch\_tiny-llama/bfloat16", r"arch\_tiny-llama/bfloat16", r"arch\_tiny-llama/float32"]


def test_a_truncated_esd_csv_loses_only_its_broken_row(study, tmp_path):
    source = next(study.results.rglob("esd_layers_*.csv"))
    text = source.read_text()
    cut = tmp_path / "esd_layers.csv"
    cut.write_text(text[: text.rstrip("\n").rfind(",")])  # the last row loses its last field
    problems: list = []
    layers = read_layers(cut, problems)
    assert len(layers) == len(read_layers(source, [])) - 1
    assert len(problems) == 1 and "truncated row" in problems[0].reason
