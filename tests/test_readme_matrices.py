"""The README's matrices, run as printed: the batch demo's dry run, and the CPU-and-GPU matrix
(configs/devices.yaml) on this CPU-only machine. Apart from test_readme.py (the demo and the hf
comparison: minutes of one xdist worker) so that the other worker runs them meanwhile.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.readme import readme_block, run_as_printed

REPO = Path(__file__).resolve().parents[1]


def test_the_batch_demos_dry_run_runs_as_printed():
    command = "python batch_eval.py --config configs/demo.yaml --dry-run"
    assert command in readme_block(command).splitlines()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    before = sorted((REPO / "results").rglob("*")) if (REPO / "results").exists() else None
    done = subprocess.run(
        ["bash", "-c", command], cwd=REPO, capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "6 jobs on" in done.stdout
    after = sorted((REPO / "results").rglob("*")) if (REPO / "results").exists() else None
    assert after == before  # a dry run writes nothing


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: relative path -> (inode, mtime in ns)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def devices_matrix(tmp_path_factory, smollm2_dir) -> SimpleNamespace:
    """The README's CPU-and-GPU matrix (configs/devices.yaml) on this CPU-only machine, as printed: the
    dry run, the run, the same run again, the report."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the cuda cells run instead of failing")
    repo = tmp_path_factory.mktemp("devices") / "repo"
    (repo / "configs").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "devices.yaml", repo / "configs")  # output_dir is relative to the config
    for script in ("batch_eval.py", "process_results.py"):
        (repo / script).symlink_to(REPO / script)
    dry, run, report = readme_block("python batch_eval.py --config configs/devices.yaml").splitlines()
    dry_run = run_as_printed(dry, repo, timeout=600)
    written_by_dry_run = sorted(p.name for p in repo.iterdir())
    first = run_as_printed(run, repo, timeout=900)
    results = repo / "results" / "devices"
    files = files_of(results / "results")
    again = run_as_printed(run, repo, timeout=600)
    tables = run_as_printed(report, repo, timeout=600)
    return SimpleNamespace(
        repo=repo,
        results=results,
        dry_run=dry_run,
        written_by_dry_run=written_by_dry_run,
        first=first,
        files=files,
        again=again,
        tables=tables,
    )


CPU_CELL, CUDA_CELL = "arch_distilbert-base/float32@cpu/forward", "arch_distilbert-base/float32@cuda/forward"
NO_GPU = "device cuda: no GPU to run it on (local CPU, 1 at a time)"


@pytest.mark.slow
def test_the_devices_dry_run_lists_a_cell_per_device_and_which_will_fail(devices_matrix):
    run = devices_matrix.dry_run
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in run.stdout.splitlines() if "/forward" in line}
    assert set(rows) == {CPU_CELL, CUDA_CELL}
    assert f"will fail: {NO_GPU}" in rows[CUDA_CELL] and "will fail" not in rows[CPU_CELL]
    assert "2 jobs on local CPU" in run.stdout
    assert devices_matrix.written_by_dry_run == ["batch_eval.py", "configs", "process_results.py"]


@pytest.mark.slow
def test_the_devices_matrix_runs_the_cpu_cell_and_fails_the_cuda_cell_in_one_line(devices_matrix):
    first, results = devices_matrix.first, devices_matrix.results
    assert first.returncode == 1, first.stderr[-3000:]  # one cell failed; the matrix ran to its end
    assert "1 of 2 jobs done, 1 failed" in first.stdout
    (failure,) = [json.loads(line) for line in (results / "failures.jsonl").read_text().splitlines()]
    assert failure["key"] == CUDA_CELL and failure["device"] == "cuda" and failure["error"] == NO_GPU
    (path,) = (results / "results" / CPU_CELL).rglob("results_*.json")
    config = json.loads(path.read_text())["config"]
    assert config["device"] == "cpu" and config["lm_eval_perf_device"] == "cpu"  # lm-eval's --device cpu
    (sweep,) = (results / "results" / CPU_CELL).rglob("perf_forward.jsonl")
    points = [json.loads(line) for line in sweep.read_text().splitlines()]
    assert [(p["key"]["batch_size"], p["key"]["device"], p["status"]) for p in points] == [
        (1, "cpu", "ok"),
        (4, "cpu", "ok"),
    ]
    plan = {job["key"]: job for job in json.loads((results / "matrix.json").read_text())["jobs"]}
    assert {k: (j["device"], j["state"]) for k, j in plan.items()} == {
        CPU_CELL: ("cpu", "done"),
        CUDA_CELL: ("cuda", "failed"),
    }


@pytest.mark.slow
def test_a_rerun_of_the_devices_matrix_runs_nothing_again(devices_matrix):
    again = devices_matrix.again
    assert again.returncode == 1, again.stderr[-2000:]
    assert "1 done before, 0 to run, 1 failed before (--retry-failed runs them again)" in again.stdout
    assert files_of(devices_matrix.results / "results") == devices_matrix.files  # nothing rewritten


@pytest.mark.slow
def test_the_devices_report_writes_a_pdf_that_lists_the_failed_cuda_cell(devices_matrix):
    from lm_eval_perf.report.pdf import missing

    if missing("auto"):
        pytest.skip(f"the README's --format pdf needs a PDF engine: {missing('auto')}")
    tables = devices_matrix.tables
    assert tables.returncode == 0, tables.stderr[-2000:]
    folder = devices_matrix.repo / "tables" / "devices"
    assert sorted(p.name for p in folder.iterdir()) == ["benchmark_report.txt", "report.pdf"]
    assert NO_GPU in (folder / "benchmark_report.txt").read_text()
    pypdf = pytest.importorskip("pypdf")
    reader = pypdf.PdfReader(folder / "report.pdf")
    text = " ".join(" ".join(page.extract_text().split()) for page in reader.pages)
    assert len(reader.pages) >= 1 and "float32 on cuda" in text and "no GPU to run it on" in text
