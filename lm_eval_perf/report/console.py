"""The short efficiency table printed after lm-eval's own tables."""

from __future__ import annotations


def fmt(value, digits: int = 3) -> str:
    """A number in a table cell: ``--`` for missing, compact otherwise."""
    if value is None:
        return "--"
    if isinstance(value, int):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


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
                fmt(rate, 1),
                fmt((block.get("ttft_s") or {}).get("p50")),
                fmt((block.get("tpot_s") or {}).get("p50")),
                fmt(block.get("energy_j"), 1),
                fmt(block.get("energy_per_token_j")),
                fmt(window.get("amu")),
                fmt(window.get("pcu")),
                fmt(window.get("aec_w"), 1),
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
            fmt(overall.get("energy_j"), 1),
            "",
            fmt(overall.get("amu")),
            fmt(overall.get("pcu")),
            fmt(overall.get("aec_w"), 1),
            "",
            "",
        ]
    )
    header = [
        "kind",
        "batches",
        "AL s",
        "p90 s",
        "p99 s",
        "tok/s",
        "TTFT s",
        "TPOT s",
        "energy J",
        "J/tok",
        "AMU",
        "PCU",
        "AEC W",
        "MFU",
        "MBU",
    ]
    device = (record.get("provenance") or {}).get("gpu_name") or "cpu (GPU metrics: --)"
    return (
        f"\nlm-eval-perf efficiency ({device}; tok/s = generated for generation, prompt otherwise)\n"
        + markdown_table(header, rows)
    )
