"""``report.pdf``: the report's tables and figures in one PDF, by pdflatex or by headless Chromium.

Engines (``--pdf-engine``):

* ``pdflatex`` compiles ``report.tex.j2`` (:mod:`.render`; the LaTeX tables of
  ``benchmark_table.tex``, the CPU/GPU side-by-side tables, every figure as its PNG with its caption,
  the figures not drawn, failed jobs, missing cells and notes) in a temporary folder;
* ``chromium`` prints the HTML report (``report.html.j2``) with headless Chromium
  (``--headless --no-sandbox --disable-gpu --print-to-pdf``);
* ``auto`` (the default) compiles with pdflatex and prints with Chromium where pdflatex is not
  installed or fails (a LaTeX package missing, say).

The PDF is made in a temporary folder and handed back as bytes, which the caller writes atomically:
the output folder never holds a partial PDF. No engine installed, or every one failing, is one
:class:`~lm_eval_perf.errors.UserInputError` line naming what to install (or the engines' errors).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.report.render import figure_file, render
from lm_eval_perf.report.report import ReportData

ENGINES = ("auto", "pdflatex", "chromium")
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
INSTALL = {
    "pdflatex": "pdflatex (apt-get install texlive-latex-recommended)",
    "chromium": "Chromium (apt-get install chromium)",
}
TIMEOUT_S = 300.0


def _installed(engine: str) -> str | None:
    """The program of ``engine`` on PATH, or None."""
    names = CHROMIUM if engine == "chromium" else (engine,)
    return next((path for name in names if (path := shutil.which(name))), None)


def available(choice: str) -> list[tuple[str, str]]:
    """The engines ``choice`` tries, in order, that are installed: (engine, program)."""
    wanted = ("pdflatex", "chromium") if choice == "auto" else (choice,)
    return [(engine, program) for engine in wanted if (program := _installed(engine))]


def missing(choice: str) -> str | None:
    """Why no PDF can be made here with ``choice`` (None: an engine is installed)."""
    if available(choice):
        return None
    if choice == "auto":
        either = f"{INSTALL['pdflatex']} or {INSTALL['chromium']}"
        return f"neither pdflatex nor Chromium is installed: install {either}"
    return f"--pdf-engine {choice}: not installed; install {INSTALL[choice]}"


def _run(argv: list[str], folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, cwd=folder, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL
    )


def _pdflatex(program: str, report: ReportData, templates: list[Path], folder: Path) -> Path:
    for i, figure in enumerate(report.figures, 1):
        (folder / figure_file(i)).write_bytes(figure.png)
    (folder / "report.tex").write_text(render("pdf", report, templates), encoding="utf-8")
    argv = [program, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "report.tex"]
    done = _run(argv, folder)
    if done.returncode != 0:
        log = folder / "report.log"
        text = log.read_text(errors="replace") if log.is_file() else done.stdout
        first = next((line for line in text.splitlines() if line.startswith("!")), f"exit {done.returncode}")
        raise RuntimeError(f"pdflatex: {first.lstrip('! ')}")
    return folder / "report.pdf"


def _chromium(program: str, report: ReportData, templates: list[Path], folder: Path) -> Path:
    page = folder / "report.html"
    page.write_text(render("html", report, templates), encoding="utf-8")
    out = folder / "report.pdf"
    argv = [
        program, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", f"--user-data-dir={folder / 'profile'}",
        "--no-pdf-header-footer", f"--print-to-pdf={out}", page.as_uri(),
    ]  # fmt: skip
    done = _run(argv, folder)
    if not out.is_file():
        last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "")
        raise RuntimeError(f"chromium: no PDF written (exit {done.returncode}) {last[-200:]}".strip())
    return out


BUILDERS = {"pdflatex": _pdflatex, "chromium": _chromium}


def make_pdf(report: ReportData, templates: list[Path], choice: str = "auto") -> bytes:
    """The PDF of ``report`` by the first engine of ``choice`` that works (see the module docstring)."""
    why = missing(choice)
    if why:
        raise UserInputError(f"--format pdf: {why}")
    errors = []
    for engine, program in available(choice):
        with tempfile.TemporaryDirectory(prefix="lm-eval-perf-pdf-") as tmp:
            try:
                data = BUILDERS[engine](program, report, templates, Path(tmp)).read_bytes()
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc).splitlines()[0])
                continue
        if data.startswith(b"%PDF"):
            return data
        errors.append(f"{engine}: the file written is not a PDF")
    raise UserInputError(f"--format pdf: no PDF made: {'; '.join(errors)}")
