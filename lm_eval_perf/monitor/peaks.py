"""Peak dense matrix throughput and memory bandwidth by device name, for MFU and MBU.

Figures are the vendors' datasheet numbers for dense (no sparsity) tensor-core math. They are the
denominators of MFU and MBU, so a run always records which peak it used. Override them with
``LM_EVAL_PERF_PEAKS='{"flops": 7.9e14, "bandwidth": 3.0e12}'`` (FLOP/s, bytes/s) or the
``peak_flops`` / ``peak_bandwidth`` model arguments, e.g. with figures measured on your own card.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from lm_eval_perf.errors import UserInputError


@dataclass(frozen=True)
class DevicePeaks:
    """Peaks of one device. ``flops`` in FLOP/s for 16-bit tensor math; ``bandwidth`` in bytes/s."""

    device: str
    flops: float | None
    bandwidth: float | None
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


# (substring of the device name, bf16/fp16 dense FLOP/s, memory bandwidth bytes/s). First match wins,
# so more specific names come first.
_TABLE: tuple[tuple[str, float, float], ...] = (
    ("H200", 989e12, 4.8e12),
    ("GH200", 989e12, 4.0e12),
    ("H100 NVL", 835e12, 3.9e12),
    ("H100 PCIe", 756e12, 2.0e12),
    ("H100", 989e12, 3.35e12),  # SXM5 80GB HBM3
    ("H800", 989e12, 3.35e12),
    ("B200", 2250e12, 8.0e12),
    ("A100-SXM4-80GB", 312e12, 2.039e12),
    ("A100 80GB PCIe", 312e12, 1.935e12),
    ("A100", 312e12, 1.555e12),
    ("A800", 312e12, 2.039e12),
    ("L40S", 362e12, 0.864e12),
    ("L40", 181e12, 0.864e12),
    ("L4", 121e12, 0.3e12),
    ("A10G", 70e12, 0.6e12),
    ("A10", 125e12, 0.6e12),
    ("RTX 4090", 165e12, 1.008e12),
    ("RTX 3090", 71e12, 0.936e12),
    ("V100", 125e12, 0.9e12),
    ("T4", 65e12, 0.32e12),
)


def peaks_for(
    device_name: str | None, flops: float | None = None, bandwidth: float | None = None
) -> DevicePeaks:
    """The peaks of ``device_name``: explicit arguments, then ``LM_EVAL_PERF_PEAKS``, then the table."""
    name = device_name or "cpu"
    env = os.environ.get("LM_EVAL_PERF_PEAKS")
    if flops is None and bandwidth is None and env:
        try:
            given = json.loads(env)
            flops, bandwidth = given.get("flops"), given.get("bandwidth")
        except (ValueError, AttributeError) as exc:
            raise UserInputError(f'LM_EVAL_PERF_PEAKS must be JSON like {{"flops": 1e15}}: {exc}') from exc
        return DevicePeaks(name, flops, bandwidth, "LM_EVAL_PERF_PEAKS")
    if flops is not None or bandwidth is not None:
        return DevicePeaks(name, flops, bandwidth, "model_args")
    for key, table_flops, table_bw in _TABLE:
        if key.lower() in name.lower():
            return DevicePeaks(name, table_flops, table_bw, f"datasheet ({key})")
    return DevicePeaks(name, None, None, "unknown device: no peak in the table")
