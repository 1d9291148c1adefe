"""Peak dense matrix throughput (per compute dtype) and memory bandwidth by device name, for MFU and MBU.

Figures are the vendors' datasheet numbers for dense (no sparsity) math: tensor-core peaks for
``bfloat16``, ``float16`` and ``tf32`` (fp32 matmuls that torch lets run on tensor cores,
``torch.get_float32_matmul_precision() != "highest"``), the non-tensor peak for ``float32``. An int4
weight-only model multiplies in its activation dtype, so it takes that dtype's peak. They are the
denominators of MFU and MBU, so a run always records which peak it used (``flops_dtype``, ``source``).
Override them with ``LM_EVAL_PERF_PEAKS='{"flops": 7.9e14, "bandwidth": 3.0e12}'`` (FLOP/s, bytes/s) or
the ``peak_flops`` / ``peak_bandwidth`` model arguments, e.g. with figures measured on your own card;
a given ``flops`` is taken as the peak of the run's compute dtype.

A device name matches a table entry when the entry appears in it as a whole word (so ``H200`` does
not match ``GH200`` and ``L4`` not ``L40S``); of several matches the longest entry wins (``H200 NVL``
before ``H200``). An unknown device has no peaks: MFU and MBU are null with the reason, unless given.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass

from lm_eval_perf.errors import UserInputError

DEFAULT_DTYPE = "bfloat16"


@dataclass(frozen=True)
class DevicePeaks:
    """Peaks of one device. ``flops`` in FLOP/s for ``flops_dtype`` math; ``bandwidth`` in bytes/s."""

    device: str
    flops: float | None
    bandwidth: float | None
    source: str
    flops_dtype: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _row(bf16: float | None, tf32: float | None, fp32: float | None, fp16: float | None = None) -> dict:
    """Dense FLOP/s per compute dtype (fp16 = bf16 unless the card lacks bf16 tensor cores)."""
    return {"bfloat16": bf16, "float16": bf16 if fp16 is None else fp16, "tf32": tf32, "float32": fp32}


# device-name entry -> (dense FLOP/s per dtype, memory bandwidth bytes/s); None = no datasheet figure.
_TABLE: dict[str, tuple[dict[str, float | None], float]] = {
    "H200 NVL": (_row(835e12, 417.5e12, 60e12), 4.8e12),
    "H200": (_row(989.4e12, 494.7e12, 66.9e12), 4.8e12),  # SXM
    "GH200 144G HBM3e": (_row(989.4e12, 494.7e12, 66.9e12), 4.9e12),
    "GH200": (_row(989.4e12, 494.7e12, 66.9e12), 4.0e12),  # 96 GB HBM3
    "H100 NVL": (_row(835e12, 417.5e12, 60e12), 3.9e12),
    "H100 PCIe": (_row(756.5e12, 378e12, 51.2e12), 2.0e12),
    "H100": (_row(989.4e12, 494.7e12, 66.9e12), 3.35e12),  # SXM5 80GB HBM3
    "H800": (_row(989.4e12, 494.7e12, 66.9e12), 3.35e12),
    "B200": (_row(2250e12, 1125e12, None), 8.0e12),
    "A100-SXM4-80GB": (_row(312e12, 156e12, 19.5e12), 2.039e12),
    "A100 80GB PCIe": (_row(312e12, 156e12, 19.5e12), 1.935e12),
    "A100": (_row(312e12, 156e12, 19.5e12), 1.555e12),  # 40 GB
    "A800": (_row(312e12, 156e12, 19.5e12), 2.039e12),
    "L40S": (_row(362e12, 183e12, 91.6e12), 0.864e12),
    "L40": (_row(181e12, 90.5e12, 90.5e12), 0.864e12),
    "L4": (_row(121e12, 60e12, 30.3e12), 0.3e12),
    "A10G": (_row(70e12, None, None), 0.6e12),
    "A10": (_row(125e12, 62.5e12, 31.2e12), 0.6e12),
    "RTX 4090": (_row(165e12, 82.6e12, 82.6e12), 1.008e12),
    "RTX 3090": (_row(71e12, 35.6e12, 35.6e12), 0.936e12),
    "V100-PCIE": (_row(None, None, 14e12, fp16=112e12), 0.9e12),  # no bf16 or tf32 tensor cores
    "V100": (_row(None, None, 15.7e12, fp16=125e12), 0.9e12),
    "T4": (_row(None, None, 8.1e12, fp16=65e12), 0.32e12),
}


def table_entry(device_name: str) -> str | None:
    """The table entry of ``device_name``: whole-word matches only, the longest one wins."""
    matches = [
        key
        for key in _TABLE
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", device_name, re.IGNORECASE)
    ]
    return max(matches, key=len, default=None)


def peaks_for(
    device_name: str | None,
    flops: float | None = None,
    bandwidth: float | None = None,
    dtype: str | None = None,
) -> DevicePeaks:
    """The peaks of ``device_name`` for compute dtype ``dtype`` (default bfloat16): explicit
    arguments, then ``LM_EVAL_PERF_PEAKS``, then the table."""
    name = device_name or "cpu"
    dtype = dtype or DEFAULT_DTYPE
    env = os.environ.get("LM_EVAL_PERF_PEAKS")
    if flops is None and bandwidth is None and env:
        try:
            given = json.loads(env)
            flops, bandwidth = given.get("flops"), given.get("bandwidth")
        except (ValueError, AttributeError) as exc:
            raise UserInputError(f'LM_EVAL_PERF_PEAKS must be JSON like {{"flops": 1e15}}: {exc}') from exc
        return DevicePeaks(name, flops, bandwidth, "LM_EVAL_PERF_PEAKS", dtype)
    if flops is not None or bandwidth is not None:
        return DevicePeaks(name, flops, bandwidth, "model_args", dtype)
    key = table_entry(name)
    if key is None:
        return DevicePeaks(name, None, None, "unknown device: no peak in the table", dtype)
    per_dtype, table_bw = _TABLE[key]
    return DevicePeaks(name, per_dtype.get(dtype), table_bw, f"datasheet ({key}, dense {dtype})", dtype)


def missing_flops_reason(peaks: DevicePeaks | None) -> str:
    """Why MFU is null: no device, an unknown device, or no datasheet peak for the compute dtype."""
    if peaks is None:
        return "no device peaks given"
    if peaks.source.startswith("datasheet"):
        return f"no datasheet peak FLOP/s for {peaks.flops_dtype} on {peaks.device}: pass peak_flops"
    return f"no peak FLOP/s known for {peaks.device} ({peaks.source}): pass peak_flops"


def missing_bandwidth_reason(peaks: DevicePeaks | None) -> str:
    """Why MBU is null for want of a peak bandwidth."""
    if peaks is None:
        return "no device peaks given"
    return f"no peak bandwidth known for {peaks.device} ({peaks.source}): pass peak_bandwidth"
