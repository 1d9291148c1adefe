"""The forward sweep as a markdown table, and the best batch size per sequence length."""

from __future__ import annotations

from collections.abc import Sequence

from lm_eval_perf.records.console import fmt, markdown_table

HEADER = [
    "bs",
    "seq",
    "status",
    "batch p50 ms",
    "sample p50 ms",
    "samples/s",
    "batches/s",
    "tokens/s",
    "peak GiB",
    "RSS GiB",
    "J/sample",
    "W",
    "MFU",
    "limited by",
]


def _p50_ms(record: dict, key: str) -> float | None:
    value = (record.get(key) or {}).get("p50")
    return None if value is None else value * 1e3


def best_by_length(records: Sequence[dict]) -> dict[int, dict]:
    """Sequence length -> the measured record with the most samples/s at it."""
    best: dict[int, dict] = {}
    for r in records:
        if r["status"] != "ok" or r.get("samples_per_s") is None:
            continue
        seq = r["key"]["seq_len"]
        if seq not in best or r["samples_per_s"] > best[seq]["samples_per_s"]:
            best[seq] = r
    return best


def render(records: Sequence[dict]) -> str:
    """Markdown table of point records (as stored in ``perf_forward.jsonl``)."""
    rows = [
        [
            str(r["key"]["batch_size"]),
            str(r["key"]["seq_len"]),
            r["status"],
            fmt(_p50_ms(r, "latency_per_batch_s")),
            fmt(_p50_ms(r, "latency_per_sample_s")),
            fmt(r.get("samples_per_s")),
            fmt(r.get("batches_per_s")),
            fmt(r.get("tokens_per_s")),
            fmt(r.get("peak_memory_allocated_gib")),
            fmt(r.get("host_rss_peak_gib")),
            fmt(r.get("energy_per_sample_j")),
            fmt(r.get("avg_power_w")),
            fmt(r.get("mfu")),
            (r.get("bottleneck") or "--") if r["status"] == "ok" else "",
        ]
        for r in records
    ]
    return markdown_table(HEADER, rows) if rows else "(no points)"


def best_lines(records: Sequence[dict]) -> list[str]:
    """One sentence per sequence length naming its best batch size."""
    lines = []
    for seq, r in sorted(best_by_length(records).items()):
        mfu = r.get("mfu")
        lines.append(
            f"best batch size at {seq} tokens: {r['key']['batch_size']} ({r['samples_per_s']:.1f} samples/s, "
            f"{_p50_ms(r, 'latency_per_sample_s'):.3f} ms/sample p50"
            + (f", MFU {mfu:.3f})" if mfu is not None else ")")
        )
    return lines
