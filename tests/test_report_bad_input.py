"""process_results.py: bad input is one line on stderr, exit status 2, and nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "process_results.py"), *args], capture_output=True, text=True, timeout=120
    )


def _one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lm-eval-perf: error: "), done.stderr
    for word in words:
        assert word in lines[0]


def test_a_missing_results_dir_is_a_one_line_error(tmp_path):
    _one_line_error(
        _run("--results_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "out")), "nope"
    )
    assert not (tmp_path / "out").exists()


def test_a_results_dir_without_results_is_a_one_line_error(tmp_path):
    (tmp_path / "results_2025.json").write_text('{"results": {"x": ')  # truncated
    done = _run("--results_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"))
    _one_line_error(done, "no results_*.json", "1 unreadable")


def test_an_unknown_format_is_a_one_line_error(tmp_path):
    done = _run(
        "--results_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--format", "latex,pptx"
    )
    _one_line_error(done, "pptx", "latex,csv,html,txt,plots")


def test_an_unwritable_output_dir_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    done = _run("--results_dir", str(tmp_path), "--output_dir", str(blocker / "tables"))
    _one_line_error(done, "--output_dir", "not a folder")


def test_a_template_of_unknown_kind_is_a_one_line_error(tmp_path):
    template = tmp_path / "table.docx"
    template.write_text("x")
    done = _run(
        "--results_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--template", str(template)
    )
    _one_line_error(done, "table.docx", "*.tex")


def test_an_output_dir_that_cannot_be_created_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "results_2025.json").write_text('{"results": {"x": {"acc,none": 0.5}}}')
    before = sorted(tmp_path.rglob("*"))
    too_long = tmp_path / "tables" / ("x" * 300)  # a name longer than the file system allows
    done = _run("--results_dir", str(tmp_path / "results"), "--output_dir", str(too_long))
    _one_line_error(done, "--output_dir", "is not writable: File name too long")
    assert sorted(tmp_path.rglob("*")) == before  # not even tables/
