"""The sweep as a markdown table: one row per point, what it measured and what limits it."""

from __future__ import annotations

from collections.abc import Sequence

from lm_eval_perf.records.console import fmt, markdown_table

HEADER = [
    "bs",
    "gen",
    "status",
    "path",
    "TTFT p50 s",
    "TPOT p50 ms",
    "decode tok/s",
    "prefill tok/s",
    "e2e p50 s",
    "peak GiB",
    "J/tok",
    "W",
    "prefill MFU",
    "decode MBU",
    "limited by",
]


def _p50(record: dict, key: str, scale: float = 1.0) -> float | None:
    value = (record.get(key) or {}).get("p50")
    return None if value is None else value * scale


def _limit(record: dict) -> str:
    if record.get("status") != "ok":
        return ""
    label = record.get("bottleneck")
    return f"{label} ({record.get('bottleneck_phase')})" if label else "--"


def render(records: Sequence[dict]) -> str:
    """Markdown table of point records (as stored in ``perf_throughput.jsonl``)."""
    rows = [
        [
            str(r["key"]["batch_size"]),
            str(r["key"]["new_tokens"]),
            r["status"],
            r.get("decode_path") or "",
            fmt(_p50(r, "ttft_s")),
            fmt(_p50(r, "tpot_s", 1e3)),
            fmt(r.get("decode_tokens_per_s")),
            fmt(r.get("prefill_tokens_per_s")),
            fmt(_p50(r, "e2e_latency_s")),
            fmt(r.get("peak_memory_allocated_gib")),
            fmt(r.get("energy_per_token_j")),
            fmt(r.get("avg_power_w")),
            fmt(r.get("prefill_mfu")),
            fmt(r.get("decode_mbu")),
            _limit(r),
        ]
        for r in records
    ]
    return markdown_table(HEADER, rows) if rows else "(no points)"
