"""One summary of a list of measured values, used for every percentile in this project."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks.

    Same definition as ``numpy.percentile(..., method="linear")``: position ``(n - 1) * q / 100``.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = (len(sorted_values) - 1) * q / 100.0
    lower = math.floor(position)
    upper = math.ceil(position)
    fraction = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * fraction


@dataclass(frozen=True)
class Stats:
    """count / total / mean / population std / min / max / p50 / p90 / p95 / p99 of ``values``.

    Every figure is in ``unit``. With no values, every figure but ``count`` is ``None``.
    """

    unit: str
    count: int
    total: float | None
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def from_values(cls, values: Sequence[float], unit: str) -> Stats:
        data = sorted(float(v) for v in values)
        if not data:
            return cls(unit, 0, None, None, None, None, None, None, None, None, None)
        n = len(data)
        mean = math.fsum(data) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in data) / n)
        p50, p90, p95, p99 = (percentile(data, q) for q in PERCENTILES)
        return cls(unit, n, math.fsum(data), mean, std, data[0], data[-1], p50, p90, p95, p99)

    def to_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)
