"""``process_results.py`` / ``lm-eval-perf report``: a results directory -> paper tables, CSV, plots,
a text and an HTML report.

    python process_results.py --results_dir results/ --output_dir tables/ [--baseline-precision bfloat16]
        [--format latex,csv,html,txt,plots,pdf] [--pdf-engine auto] [--template my_table.tex.j2]
        [--no-progress]

Outputs in ``--output_dir``, all rendered first and then each written atomically:

* ``latex`` - ``benchmark_table.tex``: accuracy and efficiency tables (booktabs), with the CPU/GPU
  side-by-side tables where the results hold several devices, a complete document;
* ``csv`` - ``benchmark_results.csv`` (tidy), ``benchmark_results_wide.csv``, ``summary_statistics.csv``;
* ``html`` - ``report.html``, self-contained (figures embedded as PNG);
* ``txt`` - ``benchmark_report.txt``;
* ``plots`` - ``plots/<figure>.png`` and ``.pdf``;
* ``pdf`` - ``report.pdf``: tables and figures, by pdflatex or headless Chromium
  (:mod:`lm_eval_perf.report.pdf`). Without ``--format`` every output is made and the PDF is left out,
  with a printed line, where neither tool is installed; ``--format ...,pdf`` then fails in one line.

Exit status: 0 when the outputs were written (unreadable input files are listed in the reports and
skipped), 2 for bad input (one line on stderr; nothing written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lm_eval_perf.atomic import check_writable, write_atomic
from lm_eval_perf.errors import UserInputError, install_excepthook, one_line
from lm_eval_perf.report import pdf
from lm_eval_perf.report.collect import collect
from lm_eval_perf.report.csv_out import write_all
from lm_eval_perf.report.devices import device_tables
from lm_eval_perf.report.efficiency import RowEfficiency, all_rows
from lm_eval_perf.report.esd import Layer, study_layers
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.render import TEMPLATES, render, user_templates
from lm_eval_perf.report.report import FigureView, ReportData, build_report, figure_view
from lm_eval_perf.report.study import Study, build
from lm_eval_perf.report.sweeps import FORWARD_SWEEP, SweepPoint, study_points, summary_rows

FORMATS = ("latex", "csv", "html", "txt", "plots", "pdf")
FIGURE_FORMATS = {"plots", "html", "pdf"}  # the outputs that show figures
OUTPUT_NAMES = {
    "latex": "benchmark_table.tex",
    "html": "report.html",
    "txt": "benchmark_report.txt",
    "pdf": "report.pdf",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(  # prog: from sys.argv[0], see lm_eval_perf.cli
        description="Turn lm-eval / batch_eval results into paper tables, CSV files, plots and a report.",
    )
    parser.add_argument(
        "--results_dir", "--results-dir", required=True, type=Path, help="folder searched recursively"
    )
    parser.add_argument(
        "--output_dir", "--output-dir", default=Path("tables"), type=Path, help="default: ./tables"
    )
    parser.add_argument(
        "--baseline-precision",
        "--baseline_precision",
        default="bfloat16",
        help="the row (at compression ratio 1) every other precision/ratio of a model is compared with",
    )
    parser.add_argument("--format", help=f"comma-separated subset of {','.join(FORMATS)} (default: all)")
    parser.add_argument(
        "--pdf-engine",
        "--pdf_engine",
        choices=pdf.ENGINES,
        default="auto",
        help="how report.pdf is made: pdflatex, chromium (printing report.html) or auto (pdflatex, "
        "else chromium; default)",
    )
    parser.add_argument(
        "--template",
        action="append",
        default=[],
        type=Path,
        help=f"a template file (*.tex|*.html|*.txt[.j2]) or a folder with {', '.join(TEMPLATES.values())}",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def parse_formats(text: str) -> list[str]:
    chosen = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise UserInputError(f"--format {text!r}: use a comma-separated subset of {','.join(FORMATS)}")
    return list(dict.fromkeys(chosen))


def _matplotlib(required: bool) -> str | None:
    """None when matplotlib can draw (Agg backend); else why not (an error if plots were asked for)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError as exc:
        reason = f"matplotlib is not installed ({exc}); pip install 'lm-eval-perf[plots]'"
        if required:
            raise UserInputError(f"--format plots: {reason}") from exc
        return reason
    return None


def _figures(
    study: Study,
    efficiency: dict[RowKey, RowEfficiency],
    points: dict[RowKey, list[SweepPoint]],
    layers: dict[RowKey, list[Layer]],
    forward: dict[RowKey, list[SweepPoint]],
    folder: Path | None,
    files: dict[Path, str | bytes],
) -> tuple[list[FigureView], list[dict]]:
    """Draw every figure: (drawn, ``{name, reason}`` of those not drawn); with a ``folder``, their
    PNG and PDF go into ``files`` under ``folder/plots``."""
    from lm_eval_perf.report.plots import Skipped, all_figures

    views, skipped = [], []
    for figure in all_figures(study, efficiency, points, layers, forward):
        if isinstance(figure, Skipped):
            skipped.append({"name": figure.name, "reason": figure.reason})
            continue
        names = []
        if folder is not None:
            for ext, data in (("png", figure.png), ("pdf", figure.pdf)):
                files[folder / "plots" / f"{figure.name}.{ext}"] = data
                names.append(f"plots/{figure.name}.{ext}")
        views.append(figure_view(figure.name, figure.title, figure.caption, figure.png, names))
    return views, skipped


def _pdf_tools(formats: Sequence[str], engine: str, required: bool) -> tuple[list[str], list[dict]]:
    """The formats to make and the outputs left out: a PDF that was not asked for by name is left out
    where no engine is installed (``required``: it was, and that is an error)."""
    why = pdf.missing(engine) if "pdf" in formats else None
    if why is None:
        return list(formats), []
    if required:
        raise UserInputError(f"--format pdf: {why}")
    return [f for f in formats if f != "pdf"], [{"name": OUTPUT_NAMES["pdf"], "reason": why}]


def process(
    results_dir: Path,
    output_dir: Path,
    baseline: str = "bfloat16",
    formats: Sequence[str] = FORMATS,
    templates: list[Path] | None = None,
    progress: bool = True,
    plots_required: bool = False,
    pdf_required: bool = False,
    pdf_engine: str = "auto",
) -> tuple[list[Path], ReportData]:
    """Read ``results_dir``, write the chosen outputs into ``output_dir``; the paths written and what
    the reports say. Every output is rendered before the first file is written, so an error leaves
    the output folder as it was."""
    templates = templates or []
    user_templates(templates)  # bad template paths fail before any work
    output_dir = Path(output_dir).expanduser()
    check_writable(output_dir, "--output_dir")
    formats, left_out = _pdf_tools(formats, pdf_engine, pdf_required)
    no_plots = _matplotlib(plots_required) if FIGURE_FORMATS & set(formats) else "not asked for"

    inputs = collect(results_dir, progress)
    study = build(inputs)
    efficiency = all_rows(study, baseline)
    points = study_points(study)
    forward = study_points(study, FORWARD_SWEEP)
    layers, notes = study_layers(study)
    files: dict[Path, str | bytes] = {}

    figures: list[FigureView] = []
    skipped: list[dict] = []
    if no_plots is None:
        folder = output_dir if "plots" in formats else None
        figures, skipped = _figures(study, efficiency, points, layers, forward, folder, files)
    elif FIGURE_FORMATS & set(formats):
        skipped.append({"name": "(all figures)", "reason": no_plots})

    tables = device_tables(study, efficiency, forward)
    report = build_report(study, efficiency, baseline, figures, skipped, notes, tables)
    report.outputs_skipped = left_out
    if "csv" in formats:

        def keep(path: Path, text: str) -> Path:
            files[path] = text
            return path

        write_all(study, efficiency, summary_rows(points), output_dir, keep)
    for kind in ("latex", "html", "txt"):
        if kind in formats:
            files[output_dir / OUTPUT_NAMES[kind]] = render(kind, report, templates)
    if "pdf" in formats:
        files[output_dir / OUTPUT_NAMES["pdf"]] = pdf.make_pdf(report, templates, pdf_engine)
    return [write_atomic(path, data) for path, data in files.items()], report


def main(argv: list[str] | None = None) -> int:
    install_excepthook()
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        formats = FORMATS if args.format is None else parse_formats(args.format)
        written, report = process(
            args.results_dir,
            args.output_dir,
            args.baseline_precision,
            formats,
            args.template,
            progress=not args.no_progress,
            plots_required=args.format is not None and "plots" in formats,
            pdf_required=args.format is not None and "pdf" in formats,
            pdf_engine=args.pdf_engine,
        )
    except UserInputError as exc:
        print(one_line(exc), file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files into {Path(args.output_dir).expanduser()}:")
    for path in written:
        print(f"  {path}")
    for output in report.outputs_skipped:
        print(f"{output['name']} not written: {output['reason']}")
    counts = {
        "unreadable files": len(report.problems),
        "failed jobs": len(report.failures),
        "missing cells": len(report.missing),
        "notes": len(report.notes),
    }
    if any(counts.values()):
        listed = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        print(f"{listed}: listed in the reports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
