"""``process_results.py`` / ``lm-eval-perf report``: a results directory -> paper tables, CSV, plots,
a text and an HTML report.

    python process_results.py --results_dir results/ --output_dir tables/ [--baseline-precision bfloat16]
        [--format latex,csv,html,txt,plots] [--template my_table.tex.j2] [--no-progress]

Outputs (each written atomically) in ``--output_dir``:

* ``latex`` - ``benchmark_table.tex``: accuracy and efficiency tables (booktabs), a complete document;
* ``csv`` - ``benchmark_results.csv`` (tidy), ``benchmark_results_wide.csv``, ``summary_statistics.csv``;
* ``html`` - ``report.html``, self-contained (figures embedded as PNG);
* ``txt`` - ``benchmark_report.txt``;
* ``plots`` - ``plots/<figure>.png`` and ``.pdf``.

Exit status: 0 when the outputs were written (unreadable input files are listed in the reports and
skipped), 2 for bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lm_eval_perf.atomic import check_writable, write_atomic
from lm_eval_perf.errors import UserInputError, install_excepthook, one_line
from lm_eval_perf.report.collect import collect
from lm_eval_perf.report.csv_out import write_all
from lm_eval_perf.report.efficiency import RowEfficiency, all_rows
from lm_eval_perf.report.esd import Layer, study_layers
from lm_eval_perf.report.identity import RowKey
from lm_eval_perf.report.render import TEMPLATES, render, user_templates
from lm_eval_perf.report.report import FigureView, ReportData, build_report, figure_view
from lm_eval_perf.report.study import Study, build
from lm_eval_perf.report.throughput import SweepPoint, study_points, summary_rows

FORMATS = ("latex", "csv", "html", "txt", "plots")
OUTPUT_NAMES = {"latex": "benchmark_table.tex", "html": "report.html", "txt": "benchmark_report.txt"}


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
    folder: Path | None,
    views: list[FigureView],
    skipped: list[dict],
) -> list[Path]:
    """Draw every figure into ``views`` (or ``skipped``); with a ``folder``, also write PNG + PDF there."""
    from lm_eval_perf.report.plots import Skipped, all_figures

    written = []
    for figure in all_figures(study, efficiency, points, layers):
        if isinstance(figure, Skipped):
            skipped.append({"name": figure.name, "reason": figure.reason})
            continue
        files = []
        if folder is not None:
            for ext, data in (("png", figure.png), ("pdf", figure.pdf)):
                written.append(write_atomic(folder / "plots" / f"{figure.name}.{ext}", data))
                files.append(f"plots/{figure.name}.{ext}")
        views.append(figure_view(figure.name, figure.title, figure.caption, figure.png, files))
    return written


def process(
    results_dir: Path,
    output_dir: Path,
    baseline: str = "bfloat16",
    formats: Sequence[str] = FORMATS,
    templates: list[Path] | None = None,
    progress: bool = True,
    plots_required: bool = False,
) -> tuple[list[Path], ReportData]:
    """Read ``results_dir``, write the chosen outputs into ``output_dir``; the paths written and what
    the reports say."""
    templates = templates or []
    user_templates(templates)  # bad template paths fail before any work
    output_dir = Path(output_dir).expanduser()
    check_writable(output_dir, "--output_dir")
    no_plots = _matplotlib(plots_required) if {"plots", "html"} & set(formats) else "not asked for"

    inputs = collect(results_dir, progress)
    study = build(inputs)
    efficiency = all_rows(study, baseline)
    points = study_points(study)
    layers, notes = study_layers(study)
    written: list[Path] = []

    figures: list[FigureView] = []
    skipped: list[dict] = []
    if no_plots is None:
        written += _figures(
            study, efficiency, points, layers, output_dir if "plots" in formats else None, figures, skipped
        )
    elif "plots" in formats or "html" in formats:
        skipped.append({"name": "(all figures)", "reason": no_plots})

    report = build_report(study, efficiency, baseline, figures, skipped, notes)
    if "csv" in formats:
        written += write_all(study, efficiency, summary_rows(points), output_dir, write_atomic)
    for kind in ("latex", "html", "txt"):
        if kind in formats:
            written.append(write_atomic(output_dir / OUTPUT_NAMES[kind], render(kind, report, templates)))
    return written, report


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
        )
    except UserInputError as exc:
        print(one_line(exc), file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files into {Path(args.output_dir).expanduser()}:")
    for path in written:
        print(f"  {path}")
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
