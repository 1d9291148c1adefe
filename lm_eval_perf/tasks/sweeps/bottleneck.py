"""What limits a point: memory bandwidth, compute, or everything else (overhead).

The roofline rule, per phase (a throughput point's prefill and decode; a forward pass). A phase
that reads ``B`` bytes and does ``F`` FLOPs cannot take less than ``max(B / peak_bandwidth,
F / peak_flops)`` seconds. Divided by the measured time that is ``max(MBU, MFU)`` - the phase's
*roofline fraction*:

* roofline fraction < ``threshold`` (default 0.5): **overhead-bound** - most of the time goes to
  neither moving bytes nor doing FLOPs at the device's peak: kernel launches, Python, host syncs,
  small inefficient kernels;
* otherwise **memory-bound** if MBU >= MFU (the byte term of the roofline is the larger one), else
  **compute-bound**.

A throughput point's label is the label of the phase that took more of its time (prefill = TTFT,
decode = the rest), named in ``bottleneck_phase``; a forward point has one phase. Without device
peaks (a CPU with no ``peak_flops`` / ``peak_bandwidth`` given) there is no label.
"""

from __future__ import annotations

MEMORY_BOUND = "memory-bound"
COMPUTE_BOUND = "compute-bound"
OVERHEAD_BOUND = "overhead-bound"


def roofline_fraction(mfu: float | None, mbu: float | None) -> float | None:
    """``max(MFU, MBU)``: the share of the phase's time the roofline says is unavoidable."""
    if mfu is None or mbu is None:
        return None
    return max(mfu, mbu)


def phase_bottleneck(mfu: float | None, mbu: float | None, threshold: float) -> str | None:
    """The label of one phase by the rule in the module docstring; ``None`` without MFU or MBU."""
    fraction = roofline_fraction(mfu, mbu)
    if fraction is None:
        return None
    if fraction < threshold:
        return OVERHEAD_BOUND
    return MEMORY_BOUND if mbu >= mfu else COMPUTE_BOUND  # type: ignore[operator]


def point_bottleneck(
    prefill: str | None, prefill_s: float, decode: str | None, decode_s: float
) -> tuple[str | None, str]:
    """(label, phase) of a point: the label of whichever phase took longer."""
    return (decode, "decode") if decode_s >= prefill_s else (prefill, "prefill")
