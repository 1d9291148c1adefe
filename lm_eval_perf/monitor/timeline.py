"""Time integrals over a sampled timeline: the arithmetic behind AMU, PCU, AEC and energy.

A quantity sampled at times t_i is treated as piecewise linear between samples (trapezoid rule),
held constant before the first and after the last sample, and integrated over [t0, t1]. Samples
whose value is ``None`` are skipped. The monitor takes a sample exactly at each window edge, so the
edges are measured, not extrapolated.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def _value_at(points: Sequence[tuple[float, float]], t: float) -> float:
    """Linear interpolation of ``points`` (sorted by time) at ``t``, constant outside their span."""
    if t <= points[0][0]:
        return points[0][1]
    if t >= points[-1][0]:
        return points[-1][1]
    lo, hi = 0, len(points) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if points[mid][0] <= t:
            lo = mid
        else:
            hi = mid
    (ta, va), (tb, vb) = points[lo], points[hi]
    return va if tb == ta else va + (vb - va) * (t - ta) / (tb - ta)


def integral(points: Sequence[tuple[float, float | None]], t0: float, t1: float) -> float | None:
    """∫ v(t) dt over [t0, t1] in value·seconds; ``None`` when no sample has a value or the span is
    empty (t1 <= t0: two edges that share one reading measure nothing, which is not a zero)."""
    known = sorted((t, v) for t, v in points if v is not None)
    if not known or t1 <= t0:
        return None
    inner = [(t, v) for t, v in known if t0 < t < t1]
    pts = [(t0, _value_at(known, t0)), *inner, (t1, _value_at(known, t1))]
    return sum((tb - ta) * (va + vb) / 2.0 for (ta, va), (tb, vb) in itertools.pairwise(pts))


def time_average(points: Sequence[tuple[float, float | None]], t0: float, t1: float) -> float | None:
    """(1/T) ∫ v(t) dt over [t0, t1]; the value itself for an empty window; ``None`` without data."""
    if t1 == t0:
        known = [(t, v) for t, v in points if v is not None]
        return _value_at(sorted(known), t0) if known else None
    total = integral(points, t0, t1)
    return None if total is None else total / (t1 - t0)


def peak(points: Sequence[tuple[float, float | None]], t0: float, t1: float) -> float | None:
    """Largest sampled value with t0 <= t <= t1; ``None`` without data."""
    values = [v for t, v in points if v is not None and t0 <= t <= t1]
    return max(values) if values else None
