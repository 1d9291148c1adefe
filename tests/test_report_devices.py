"""process_results.py on the same model measured on two devices: the CPU/GPU side-by-side tables and
figures, and report.pdf.

This machine has no GPU, so the module fixture runs perf-hf twice on the CPU (tiny random Llama,
perplexity_local and a 1x2 forward sweep, at the same time) and makes the second run stand in for a
GPU machine's by rewriting only the fields that say where it ran (:func:`as_if_on_a_gpu`). Every
number stays a real measurement; the two runs' numbers differ as two runs do, so a speed-up drawn the
wrong way round shows.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pytest

from lm_eval_perf.records.console import fmt
from lm_eval_perf.report.cli import process
from lm_eval_perf.report.collect import collect
from lm_eval_perf.report.efficiency import all_rows
from lm_eval_perf.report.esd import study_layers
from lm_eval_perf.report.plots import Plot, all_figures
from lm_eval_perf.report.study import build
from lm_eval_perf.report.sweeps import FORWARD_SWEEP, study_points

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
GPU_NAME = "NVIDIA H100 80GB HBM3"
SWEEP = {"batch_sizes": [1, 2], "seq_lengths": [8], "num_warmup": 1, "num_runs": 2, "min_seconds": 0}
POINTS = ((8, 1), (8, 2))  # (sequence length, batch size)


def results_file(folder: Path) -> Path:
    (path,) = folder.rglob("results_*.json")
    return path


def sweep_records(folder: Path) -> dict[tuple[int, int], dict]:
    (path,) = folder.rglob("perf_forward.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["key"]["seq_len"], r["key"]["batch_size"]): r for r in records}


def as_if_on_a_gpu(folder: Path) -> None:
    """Stand-in for a GPU machine's results (this machine has none): a real CPU run's files with only
    the fields that say where it ran rewritten, as perf-hf writes them on a GPU - the record's
    ``load.device``, ``peaks.device`` (the GPU's name) and ranks' ``device``, lm-eval's
    ``config.device``, ``config.lm_eval_perf_device``, and each forward point's ``key.device`` and
    ``peaks.device``."""
    path = results_file(folder)
    results = json.loads(path.read_text())
    config = results["config"]
    config["device"] = config["lm_eval_perf_device"] = "cuda:0"
    record = config["efficiency"]
    record["load"]["device"] = "cuda:0"
    record["peaks"]["device"] = GPU_NAME
    for rank in record["ranks"]:
        rank["device"] = "cuda:0"
    path.write_text(json.dumps(results, indent=2))
    (sweep,) = folder.rglob("perf_forward.jsonl")
    points = [json.loads(line) for line in sweep.read_text().splitlines()]
    for point in points:
        point["key"]["device"] = point["peaks"]["device"] = GPU_NAME
    sweep.write_text("".join(json.dumps(p) + "\n" for p in points))


def latency_per_batch(results: dict) -> float:
    """AL of a run: its batches' summed latency / their number, over the record's request kinds."""
    kinds = results["config"]["efficiency"]["kinds"].values()
    return sum(k["latency_s"]["total"] for k in kinds) / sum(k["latency_s"]["count"] for k in kinds)


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("devices")
    results = root / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs = []
    for name in ("cpu", "gpu"):
        command = [
            sys.executable, "-m", "lm_eval", "--model", "perf-hf",
            "--model_args", "pretrained=arch:tiny-llama", "--tasks", "perplexity_local,perf_forward",
            "--limit", "1", "--device", "cpu", "--metadata", json.dumps(SWEEP),
            "--output_path", str(results / name),
        ]  # fmt: skip
        log = open(root / f"{name}.log", "w")  # noqa: SIM115 - the child keeps its own descriptor
        procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
        log.close()
    codes = [p.wait(timeout=900) for p in procs]
    assert codes == [0, 0], (root / "cpu.log").read_text()[-3000:] + (root / "gpu.log").read_text()[-3000:]
    as_if_on_a_gpu(results / "gpu")
    written, report = process(results, root / "tables", progress=False)
    return SimpleNamespace(
        root=root,
        results=results,
        tables=root / "tables",
        written=written,
        report=report,
        cpu=json.loads(results_file(results / "cpu").read_text()),
        gpu=json.loads(results_file(results / "gpu").read_text()),
        cpu_points=sweep_records(results / "cpu"),
        gpu_points=sweep_records(results / "gpu"),
    )


def table(report, name: str):
    (found,) = [t for t in report.devices if t.name == name]
    return found


def test_each_device_is_a_row_of_the_tables(two_devices):
    for shown in (two_devices.report.accuracy, two_devices.report.efficiency):
        assert shown.with_device and [r.device for r in shown.rows] == ["cpu", "cuda"]
        assert {r.precision for r in shown.rows} == {"bfloat16"}
    html = (two_devices.tables / "report.html").read_text()
    assert "CPU and GPU side by side" in html and "<th>Device</th>" in html
    for name in ("benchmark_results.csv", "benchmark_results_wide.csv"):
        with open(two_devices.tables / name, newline="") as handle:
            assert {row["device"] for row in csv.DictReader(handle)} == {"cpu", "cuda"}, name


def test_the_forward_table_gives_cpu_and_gpu_samples_per_s_and_the_speed_up(two_devices):
    forward = table(two_devices.report, "devices_forward")
    assert [h.label for h in forward.headers] == ["cpu", "cuda", "cuda/cpu"]
    assert [r.item for r in forward.rows] == [f"seq {s}, batch {b}" for s, b in POINTS]
    for row, point in zip(forward.rows, POINTS):
        cpu = two_devices.cpu_points[point]["samples_per_s"]
        gpu = two_devices.gpu_points[point]["samples_per_s"]
        assert [c.value for c in row.cells] == [cpu, gpu, pytest.approx(gpu / cpu)]
        assert [c.text for c in row.cells] == [fmt(cpu), fmt(gpu), fmt(gpu / cpu)]


def test_the_evaluation_table_gives_each_devices_latency_and_the_gain_over_the_cpu(two_devices):
    evaluation = table(two_devices.report, "devices_evaluation")
    rows = {r.item: r for r in evaluation.rows}
    assert set(rows) == {"AL (s)", "Peak mem (GiB)"}  # figures neither device has are left out
    cpu, gpu = latency_per_batch(two_devices.cpu), latency_per_batch(two_devices.gpu)
    al = [c.value for c in rows["AL (s)"].cells]
    assert al == [pytest.approx(cpu), pytest.approx(gpu), pytest.approx(cpu / gpu)]  # a cost: CPU / GPU
    memory = rows["Peak mem (GiB)"].cells
    assert memory[0].text.endswith("(RSS)") and memory[2].value is None  # different memories: no gain


def test_the_figures_draw_the_speed_up_and_each_devices_latency_per_sample(two_devices):
    study = build(collect(two_devices.results, progress=False))
    efficiency = all_rows(study, "bfloat16")
    layers, _ = study_layers(study)
    forward = study_points(study, FORWARD_SWEEP)
    figures = {f.name: f for f in all_figures(study, efficiency, study_points(study), layers, forward)}

    def lines(name: str) -> dict[str, list[float]]:
        figure = figures[name]
        assert isinstance(figure, Plot), figure
        (ax,) = figure.figure.axes  # one sequence length: one panel
        return {
            line.get_label(): list(line.get_ydata()) for line in ax.get_lines() if line.get_label()[0] != "_"
        }

    speedup = lines("device_speedup_vs_batch_size")
    expected = [
        two_devices.gpu_points[p]["samples_per_s"] / two_devices.cpu_points[p]["samples_per_s"]
        for p in POINTS
    ]
    assert list(speedup) == ["arch_tiny-llama / bfloat16"]
    assert speedup["arch_tiny-llama / bfloat16"] == pytest.approx(expected)
    latency = lines("device_latency_per_sample_vs_batch_size")
    for device, points in (("cpu", two_devices.cpu_points), ("cuda", two_devices.gpu_points)):
        ms = [points[p]["latency_per_sample_s"]["p50"] * 1e3 for p in POINTS]
        assert latency[f"arch_tiny-llama / bfloat16 on {device}"] == pytest.approx(ms)
    assert (two_devices.tables / "plots" / "device_speedup_vs_batch_size.png").stat().st_size > 0
    skipped = [s["name"] for s in two_devices.report.skipped]
    assert "device_speedup_decode_vs_batch_size" in skipped  # no throughput sweep: said, not drawn


def pdf_text(path: Path) -> tuple[int, str]:
    """Pages and text of a PDF; ligatures (``ﬂ``) unfolded, as Chromium's fonts keep them."""
    from pypdf import PdfReader

    reader = PdfReader(path)
    text = "\n".join(page.extract_text() for page in reader.pages)
    return len(reader.pages), unicodedata.normalize("NFKC", text)


@pytest.mark.parametrize("engine", ["pdflatex", "chromium"])
def test_the_pdf_opens_and_holds_the_tables_numbers(two_devices, tmp_path, engine):
    pytest.importorskip("pypdf")
    from lm_eval_perf.report.pdf import available

    if not available(engine):
        pytest.skip(f"{engine} is not installed (scripts/setup.sh --test installs it with apt)")
    written, report = process(
        two_devices.results, tmp_path, formats=["pdf"], progress=False, pdf_required=True, pdf_engine=engine
    )
    assert [p.name for p in written] == ["report.pdf"] and sorted(os.listdir(tmp_path)) == ["report.pdf"]
    pages, text = pdf_text(tmp_path / "report.pdf")
    assert pages >= 1
    numbers = [c.text for t in report.devices for r in t.rows for c in r.cells if c.value is not None]
    numbers += [c.text for r in report.accuracy.rows for c in r.cells]
    assert len(numbers) >= 9 and all(n in text for n in numbers), (numbers, text[:2000])
    assert "bfloat16" in text and "Speed-up over the CPU" in text


def test_the_latex_tables_with_the_device_tables_compile(two_devices, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (scripts/setup.sh --test installs texlive with apt)")
    tex = (two_devices.tables / "benchmark_table.tex").read_text()
    assert r"\label{tab:devices_forward}" in tex and r"\label{tab:devices_evaluation}" in tex
    (tmp_path / "t.tex").write_text(tex)
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]


def test_the_default_outputs_include_the_pdf(two_devices):
    assert (two_devices.tables / "report.pdf") in two_devices.written
    assert (two_devices.tables / "report.pdf").read_bytes().startswith(b"%PDF")
    assert not [p for p in two_devices.tables.rglob("*") if p.name.endswith(".tmp")]


def test_one_device_gets_no_device_table_figure_or_column(two_devices, tmp_path):
    _, report = process(two_devices.results / "cpu", tmp_path, progress=False, formats=["csv", "txt", "html"])
    assert report.devices == [] and not report.accuracy.with_device
    assert [r.device for r in report.efficiency.rows] == [""]
    names = [f.name for f in report.figures] + [s["name"] for s in report.skipped]
    assert names and not [n for n in names if n.startswith("device_")]
    assert report.problems == []  # the forward sweep is not read as a throughput sweep with no records
    tidy = (tmp_path / "benchmark_results.csv").read_text().splitlines()
    assert tidy[0].endswith(",source,device") and all(line.endswith(",") for line in tidy[1:])  # no device
    assert "side by side" not in (tmp_path / "benchmark_report.txt").read_text()


def test_plugin_only_runs_sharing_one_sweep_file_keep_their_own_devices_points(two_devices, tmp_path):
    """Two plain ``lm_eval`` runs with one ``--output_path`` (``--device cpu``, then ``--device cuda``)
    share a results folder and its perf_forward.jsonl; runs of plugin tasks only write no efficiency
    record (``config.efficiency`` null), so the device is ``config.lm_eval_perf_device``'s."""
    folder = tmp_path / "results" / "arch__tiny-llama"
    folder.mkdir(parents=True)
    shared = folder / "perf_forward.jsonl"
    for name, data in (("cpu", two_devices.cpu), ("gpu", two_devices.gpu)):
        copy = json.loads(json.dumps(data))
        copy["config"]["efficiency"] = None
        copy["config"]["lm_eval_perf_artifacts"]["perf_forward_jsonl"] = str(shared)
        (folder / results_file(two_devices.results / name).name).write_text(json.dumps(copy))
        with open(shared, "a") as handle:
            handle.write(next((two_devices.results / name).rglob("perf_forward.jsonl")).read_text())
    study = build(collect(tmp_path / "results", progress=False))
    points = study_points(study, FORWARD_SWEEP)
    assert sorted(r.device for r in points) == ["cpu", "cuda"]
    for row, found in points.items():
        own = two_devices.cpu_points if row.device == "cpu" else two_devices.gpu_points
        assert [p.record for p in found] == [own[p] for p in POINTS]


def test_pdf_without_pdflatex_or_chromium_is_one_line_or_left_out(two_devices, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}  # neither tool on PATH
    command = [sys.executable, str(REPO / "process_results.py"), "--results_dir", str(two_devices.results)]
    asked = subprocess.run(
        [*command, "--output_dir", str(tmp_path / "asked"), "--format", "pdf"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert asked.returncode == 2 and asked.stderr.count("\n") == 1, asked.stderr
    assert asked.stderr.startswith("lm-eval-perf: error: --format pdf: neither pdflatex nor Chromium")
    assert "texlive-latex-recommended" in asked.stderr and "apt-get install chromium" in asked.stderr
    assert not (tmp_path / "asked").exists()
    default = subprocess.run(
        [*command, "--output_dir", str(tmp_path / "default"), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert default.returncode == 0, default.stderr
    assert "report.pdf not written: neither pdflatex nor Chromium is installed" in default.stdout
    assert (tmp_path / "default" / "report.html").is_file() and not (
        tmp_path / "default" / "report.pdf"
    ).exists()
