"""The report's contracts with the files it reads and the tools that read its outputs."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from lm_eval_perf.report.plots.accuracy import pareto_front
from lm_eval_perf.report.render import latex_escape
from lm_eval_perf.report.tasks import ResultsIndex


def test_escaped_special_characters_compile_with_pdflatex(tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (scripts/setup.sh --test installs texlive with apt)")
    nasty = r"org/model_v2 & 100% $5 #1 {a} ~b ^c \d <e> |f| é → 量子"
    escaped = latex_escape(nasty)
    document = (
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage[utf8]{inputenc}\n"
        f"\\begin{{document}}\n{escaped}\n\\end{{document}}\n"
    )
    (tmp_path / "x.tex").write_text(document, encoding="utf-8")
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "x.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert "é" in escaped and "量" not in escaped  # Latin-1 kept, the rest replaced


def test_the_pareto_front_keeps_only_rows_no_other_row_beats_on_cost_and_score():
    points = [(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (4.0, 0.9), (0.5, 0.4)]
    assert pareto_front(points, higher_is_better=True) == [(0.5, 0.4), (1.0, 0.5), (2.0, 0.7), (4.0, 0.9)]
    assert pareto_front(points, higher_is_better=False) == [(0.5, 0.4)]


def _block(name: str, **metrics: float) -> dict:
    return {"alias": name, **{f"{k},none": v for k, v in metrics.items()}}


def test_lm_eval_leaderboard_names_land_in_the_efficientllm_columns():
    # the group structure of lm-eval 0.4.13's ``--tasks leaderboard`` (values: which entry is used)
    subtasks = {
        "leaderboard": [
            "leaderboard_mmlu_pro",
            "leaderboard_bbh",
            "leaderboard_gpqa",
            "leaderboard_math_hard",
            "leaderboard_ifeval",
            "leaderboard_musr",
        ],
        "leaderboard_bbh": ["leaderboard_bbh_navigate", "leaderboard_bbh_snarks"],
        "leaderboard_gpqa": ["leaderboard_gpqa_main"],
        "leaderboard_math_hard": ["leaderboard_math_algebra_hard"],
        "leaderboard_musr": ["leaderboard_musr_team_allocation"],
    }
    results = {
        "leaderboard": _block("leaderboard", acc=0.1, acc_norm=0.2, exact_match=0.3),
        "leaderboard_mmlu_pro": _block("mmlu_pro", acc=0.11),
        "leaderboard_bbh": _block("bbh", acc_norm=0.12),
        "leaderboard_bbh_navigate": _block("navigate", acc_norm=0.5),
        "leaderboard_bbh_snarks": _block("snarks", acc_norm=0.6),
        "leaderboard_gpqa": _block("gpqa", acc_norm=0.13),
        "leaderboard_gpqa_main": _block("gpqa_main", acc_norm=0.7),
        "leaderboard_math_hard": _block("math", exact_match=0.14),
        "leaderboard_math_algebra_hard": _block("algebra", exact_match=0.8),
        "leaderboard_ifeval": _block("ifeval", prompt_level_strict_acc=0.15, inst_level_strict_acc=0.9),
        "leaderboard_musr": _block("musr", acc_norm=0.16),
        "leaderboard_musr_team_allocation": _block("team", acc_norm=0.95),
        "leaderboard_bbh_date_understanding": _block("lone BBH subtask", acc_norm=0.4),
        "wikitext": _block("wikitext", word_perplexity=12.0, byte_perplexity=1.5),
    }
    data = {"results": results, "group_subtasks": subtasks, "configs": {"wikitext": {"metric_list": []}}}
    entries = {e.column.key: (e.task, e.metric, e.value) for e in ResultsIndex(data).entries()}
    assert entries == {
        "MMLU-Pro": ("leaderboard_mmlu_pro", "acc,none", 0.11),
        "BBH": ("leaderboard_bbh", "acc_norm,none", 0.12),
        "GPQA": ("leaderboard_gpqa", "acc_norm,none", 0.13),
        "MATH": ("leaderboard_math_hard", "exact_match,none", 0.14),
        "IFEval": ("leaderboard_ifeval", "prompt_level_strict_acc,none", 0.15),
        "MUSR": ("leaderboard_musr", "acc_norm,none", 0.16),
        "leaderboard_bbh_date_understanding": ("leaderboard_bbh_date_understanding", "acc_norm,none", 0.4),
        "wikitext": ("wikitext", "word_perplexity,none", 12.0),
    }


# Machado, Oliveira & Fernandes (2009): linear-RGB matrices simulating full dichromacy
DICHROMACY = {
    "protanopia": (
        (0.152286, 1.052583, -0.204868),
        (0.114503, 0.786281, 0.099216),
        (-0.003882, -0.048116, 1.051998),
    ),
    "deuteranopia": (
        (0.367322, 0.860646, -0.227968),
        (0.280085, 0.672501, 0.047413),
        (-0.011820, 0.042940, 0.968881),
    ),
    "tritanopia": (
        (1.255528, -0.076749, -0.178779),
        (-0.078411, 0.930809, 0.147602),
        (0.004733, 0.691367, 0.303900),
    ),
}


def _lab(rgb, seen) -> tuple[float, float, float]:
    """CIELAB (D65) of an sRGB colour as seen through a 3x3 linear-RGB matrix ``seen``."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    linear = [min(max(sum(m * c for m, c in zip(row, linear)), 0.0), 1.0) for row in seen]
    xyz = [
        sum(m * c for m, c in zip(row, linear)) / white
        for row, white in zip(
            ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505)),
            (0.95047, 1.0, 1.08883),
        )
    ]
    f = [v ** (1 / 3) if v > 0.008856 else 7.787 * v + 16 / 116 for v in xyz]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def test_series_colours_stay_apart_for_colour_blind_readers():
    from itertools import combinations

    from matplotlib.colors import to_rgb

    from lm_eval_perf.report.plots.common import Styles

    styles = Styles([f"series {i}" for i in range(8)])
    colours = [to_rgb(styles(f"series {i}")["color"]) for i in range(8)]
    identity = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    for vision, seen in {"normal": identity, **DICHROMACY}.items():
        labs = [_lab(c, seen) for c in colours]
        closest = min(sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5 for a, b in combinations(labs, 2))
        assert closest >= 12, (vision, closest)  # CIELAB distance; 2.3 is just noticeable


def test_pareto_labels_stay_inside_their_panels(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from lm_eval_perf.report.collect import Inputs, Run
    from lm_eval_perf.report.efficiency import RowEfficiency
    from lm_eval_perf.report.identity import RowKey
    from lm_eval_perf.report.plots.accuracy import pareto_figure
    from lm_eval_perf.report.plots.common import Styles
    from lm_eval_perf.report.study import build

    costs = {"int4": 0.01, "bfloat16": 0.02, "float32-reference": 0.05}  # the cheapest is the worst
    runs = [
        Run(
            tmp_path / f"{name}.json",
            {
                "results": {
                    "leaderboard_bbh": {"acc_norm,none": score},
                    "leaderboard_musr": {"acc_norm,none": score},
                }
            },
            RowKey("org__model", name),
            0.0,
        )
        for name, score in zip(costs, (0.30, 0.35, 0.36))
    ]
    study = build(Inputs(tmp_path, runs))
    efficiency = {row: RowEfficiency(row, {"al_s": costs[row.precision]}, None) for row in study.rows}
    plot = pareto_figure(study, efficiency, Styles([]), "al_s", "pareto_latency", "latency AL (s per batch)")
    canvas = FigureCanvasAgg(plot.figure)  # the figure as the PNG shows it
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in plot.figure.axes:
        assert sorted(t.get_text() for t in ax.texts) == sorted(costs)
        panel = ax.get_window_extent(renderer)
        for text in ax.texts:
            label = text.get_window_extent(renderer)
            inside = (
                panel.x0 <= label.x0
                and label.x1 <= panel.x1
                and panel.y0 <= label.y0
                and label.y1 <= panel.y1
            )
            assert inside, (text.get_text(), label, panel)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.002, "0.002000"),  # was "0.002": one figure
        (1833.217, "1833"),  # was "1833.217"
        (1e5, "100000"),  # was "1e+05"
        (0.16666666, "0.1667"),
        (1.3e-06, "1.300e-06"),
        (2.5e6, "2.500e+06"),
        (12, "12"),  # counts stay exact
        (None, "--"),
    ],
)
def test_numbers_are_shown_with_four_significant_figures(value, text):
    from lm_eval_perf.records.console import fmt

    assert fmt(value) == text


def test_the_console_efficiency_table_has_units_in_its_headers_and_four_figure_numbers():
    from lm_eval_perf.records.console import render_efficiency

    block = {"batches": 4, "al_s": 0.0123456, "latency_s": {"p90": 0.02, "p99": 0.0312345}}
    record = {"kinds": {"loglikelihood": {**block, "prompt_tokens_per_s": 100000.0, "energy_j": 1234.5678}}}
    header, _, row, _ = render_efficiency({**record, "overall": {"batches": 4}}).strip().splitlines()[1:]
    names = [c.strip() for c in header.strip("|").split("|")]
    assert names[2:] == [
        "AL (s)", "p90 (s)", "p99 (s)", "tok/s", "TTFT p50 (s)", "TPOT p50 (s)", "energy (J)", "J/tok",
        "AMU (0-1)", "PCU (0-1)", "AEC (W)", "MFU (0-1)", "MBU (0-1)",
    ]  # fmt: skip
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:6] == ["4", "0.01235", "0.02000", "0.03123", "100000"] and cells[8] == "1235"
