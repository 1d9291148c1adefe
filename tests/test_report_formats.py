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
