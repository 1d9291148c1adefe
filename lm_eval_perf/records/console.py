"""The short efficiency table printed after lm-eval's own tables, and the number format of every
table this project prints or writes."""

from __future__ import annotations

import math

SIGNIFICANT = 4


def fmt(value, significant: int = SIGNIFICANT) -> str:
    """A number in a table cell with ``significant`` significant figures (4 by default): ``--`` for
    missing, integers (counts) exact, ``0.002345``, ``1833``, ``0.1667``; below 1e-4 and from 1e6 on in
    scientific notation (``1.300e-06``). Trailing zeros are kept: they say how precise the figure is."""
    if value is None:
        return "--"
    if isinstance(value, int):
        return str(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude < -4 or magnitude >= 6:
        return f"{value:.{significant - 1}e}"
    return f"{value:.{max(significant - 1 - magnitude, 0)}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "|" + "|".join(f" {c:>{w}} " for c, w in zip(cells, widths)) + "|"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def render_efficiency(record: dict) -> str:
    """A markdown table: one row per request kind, then the whole run's window."""
    rows = []
    for kind, block in record.get("kinds", {}).items():
        latency = block.get("latency_s", {})
        rate = (
            block.get("it_tokens_per_s")
            if block.get("generated_tokens") is not None
            else block.get("prompt_tokens_per_s")
        )
        window = block.get("window") or {}
        rows.append(
            [
                kind,
                fmt(block.get("batches")),
                fmt(block.get("al_s")),
                fmt(latency.get("p90")),
                fmt(latency.get("p99")),
                fmt(rate),
                fmt((block.get("ttft_s") or {}).get("p50")),
                fmt((block.get("tpot_s") or {}).get("p50")),
                fmt(block.get("energy_j")),
                fmt(block.get("energy_per_token_j")),
                fmt(window.get("amu")),
                fmt(window.get("pcu")),
                fmt(window.get("aec_w")),
                fmt(block.get("mfu")),
                fmt(block.get("mbu")),
            ]
        )
    overall = record.get("overall", {})
    rows.append(
        [
            "all",
            fmt(overall.get("batches")),
            fmt(overall.get("al_s")),
            "",
            "",
            "",
            "",
            "",
            fmt(overall.get("energy_j")),
            "",
            fmt(overall.get("amu")),
            fmt(overall.get("pcu")),
            fmt(overall.get("aec_w")),
            "",
            "",
        ]
    )
    header = [
        "kind",
        "batches",
        "AL (s)",
        "p90 (s)",
        "p99 (s)",
        "tok/s",
        "TTFT p50 (s)",
        "TPOT p50 (s)",
        "energy (J)",
        "J/tok",
        "AMU (0-1)",
        "PCU (0-1)",
        "AEC (W)",
        "MFU (0-1)",
        "MBU (0-1)",
    ]
    device = (record.get("provenance") or {}).get("gpu_name") or "cpu (GPU metrics: --)"
    return (
        f"\nlm-eval-perf efficiency ({device}; tok/s = generated for generation, prompt otherwise)\n"
        + markdown_table(header, rows)
    )
