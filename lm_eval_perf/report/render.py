"""Jinja2 rendering of the LaTeX tables, the HTML report, the text report and the PDF's LaTeX document.

Built-in templates live in ``lm_eval_perf/report/templates/``. ``--template PATH`` (repeatable)
overrides them: a folder is searched first for files with the built-in names
(``benchmark_table.tex.j2``, ``report.html.j2``, ``benchmark_report.txt.j2``, ``report.tex.j2`` -
the PDF's document - and ``latex_tables.tex.j2``, the table macros both LaTeX templates import); a
file replaces the built-in template of its kind, told by its name (``*.tex[.j2]``: the LaTeX tables,
``*.html[.j2]``, ``*.txt[.j2]``).

LaTeX templates use LaTeX-friendly delimiters - ``\\VAR{...}``, ``\\BLOCK{...}``, ``\\#{...}`` - and
the ``latex`` filter, which escapes LaTeX's special characters (and replaces characters pdflatex
cannot typeset); every string that comes from the results (model names, precisions, task names,
captions) goes through it. The HTML template is autoescaped.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import jinja2

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.console import markdown_table as text_table
from lm_eval_perf.report.report import ReportData
from lm_eval_perf.report.tables import Table

TEMPLATES = {
    "latex": "benchmark_table.tex.j2",
    "html": "report.html.j2",
    "txt": "benchmark_report.txt.j2",
    "pdf": "report.tex.j2",  # the LaTeX document pdflatex makes report.pdf of (lm_eval_perf.report.pdf)
}
LATEX_KINDS = ("latex", "pdf")
BUILTIN = Path(__file__).resolve().parent / "templates"
_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}


def latex_escape(value) -> str:
    """``value`` as LaTeX text: special characters escaped; characters beyond Latin-1 (which
    pdflatex's utf8 input with T1 fonts cannot typeset) transliterated to ASCII, else ``?``."""
    out = []
    for char in str(value):
        if char in _LATEX:
            out.append(_LATEX[char])
        elif ord(char) < 256:
            out.append(char if char.isprintable() else " ")
        else:
            ascii_ = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
            out.append("".join(_LATEX.get(c, c) for c in ascii_) or "?")
    return "".join(out)


def figure_file(index: int) -> str:
    """The file name of the ``index``-th figure (from 1) beside the PDF's LaTeX document (plain
    names: graphicx reads a second dot in a file name as the start of its extension)."""
    return f"figure-{index}.png"


def arrow(higher_is_better: bool | None) -> str:
    return {True: r" $\uparrow$", False: r" $\downarrow$"}.get(higher_is_better, "")  # type: ignore[arg-type]


def table_text(table: Table) -> str:
    """A table as a markdown-style text table (bold cells marked with ``*``)."""
    keys = (
        ("ratio", table.with_ratio),
        ("device", table.with_device),
        (table.item_header, table.item_header),
    )
    shown = [name for name, on in keys if on]
    header = ["model", "precision", *shown]
    details = ("; ".join(filter(None, (h.unit, h.settings))) for h in table.headers)
    header += [f"{h.label} ({d})" if d else h.label for h, d in zip(table.headers, details)]
    rows = []
    for row in table.rows:
        names = {"ratio": row.ratio, "device": row.device, table.item_header: row.item}
        cells = [row.model if row.first else "", row.precision, *(names[name] for name in shown)]
        rows.append(cells + [f"*{c.text}*" if c.best else c.text for c in row.cells])
    return text_table(header, rows) if rows else "(no rows)"


def user_templates(paths: list[Path]) -> tuple[list[Path], dict[str, str]]:
    """(folders to search first, {template name: source}) from ``--template`` paths."""
    folders, files = [], {}
    for path in paths:
        path = Path(path).expanduser()
        if path.is_dir():
            folders.append(path)
            continue
        name = path.name.removesuffix(".j2")
        kind = next(
            (k for k, ext in (("latex", ".tex"), ("html", ".html"), ("txt", ".txt")) if name.endswith(ext)),
            None,
        )
        if kind is None:
            raise UserInputError(
                f"--template {path}: name it *.tex, *.html or *.txt (optionally .j2), or give a folder"
            )
        try:
            files[TEMPLATES[kind]] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserInputError(f"--template {path}: cannot read it ({exc})") from exc
    return folders, files


def _environment(kind: str, folders: list[Path], files: dict[str, str]) -> jinja2.Environment:
    loader = jinja2.ChoiceLoader(
        [jinja2.DictLoader(files), jinja2.FileSystemLoader([*map(str, folders), str(BUILTIN)])]
    )
    options: dict = {"loader": loader, "undefined": jinja2.StrictUndefined, "keep_trailing_newline": True}
    if kind in LATEX_KINDS:
        options.update(
            block_start_string=r"\BLOCK{",
            block_end_string="}",
            variable_start_string=r"\VAR{",
            variable_end_string="}",
            comment_start_string=r"\#{",
            comment_end_string="}",
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )
    else:
        options.update(trim_blocks=True, lstrip_blocks=True, autoescape=kind == "html")
    env = jinja2.Environment(**options)
    env.filters["latex"] = latex_escape
    env.globals.update(arrow=arrow, table_text=table_text, figure_file=figure_file)
    return env


def render(kind: str, report: ReportData, templates: list[Path]) -> str:
    """The text of output ``kind`` (``latex``, ``html``, ``txt`` or ``pdf``: the PDF's LaTeX
    document); template errors are one line."""
    folders, files = user_templates(templates)
    name = TEMPLATES[kind]
    try:
        return _environment(kind, folders, files).get_template(name).render(report=report)
    except jinja2.TemplateError as exc:
        where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise UserInputError(f"template {name}{where}: {exc.message or type(exc).__name__}") from exc
