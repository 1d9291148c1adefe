"""The README's first hour, run as printed: its commands, verbatim, in a copy of the repository's
surroundings (``.venv`` beside the results, BBH in ``../shared/data/bbh``), and its option table
against the code.

Commands are read from the README itself (the fenced ``bash`` block that holds them; continuation
lines joined, comments dropped), so a README edit that breaks one fails here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
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
from tests.readme import run_as_printed

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def readme_block(first: str) -> str:
    """The bash block of the README that holds a line starting with ``first``, as bash runs it."""
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        if any(line.startswith(first) for line in block.splitlines()):
            joined = block.replace("\\\n", " ")
            return "\n".join(line.split("  #")[0].strip() for line in joined.splitlines() if line.strip())
    raise AssertionError(f"no README bash block with a line starting {first!r}")


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
