"""Named windows (zeus-style) and what was measured in them.

A window is [t0, t1] on the sampler's timeline, t0 and t1 being the time stamps of its two edge
samples (the sampler thread reads an edge within milliseconds of the call that asks for it); its
:class:`Measurement` holds the device and host quantities over that span. Definitions
(T = t1 - t0, per GPU, then summed or averaged as stated):

* ``amu`` (average memory utilization, fraction 0..1) = (1/T) ∫ memory_used(t) / memory_total dt,
  averaged over the GPUs. ``memory_used`` is NVML's device memory in use (all processes).
* ``pcu`` (fraction 0..1) = (1/T) ∫ utilization(t) / 100 dt, averaged over the GPUs, where
  utilization is NVML ``utilization.gpu``: the share of time *a kernel was running*, not the share
  of FLOP/s (see MFU for that). ``pcu_peak`` is the largest sample.
* ``energy_j`` (joules) = Σ_gpu [E(t1) - E(t0)] from NVML's total-energy counter, read at the edges
  (``energy_source`` ``nvml_energy_counter``). The counter updates about every
  ``COUNTER_UPDATE_PERIOD_S`` (100 ms on Hopper), so a difference of two readings is off by up to one
  period's energy: ``energy_error_bound`` (a fraction of ``energy_j``) = period / T. Windows shorter
  than ``COUNTER_MIN_WINDOW_S`` (ten periods: a bound over 10 %), and GPUs without a counter, use
  ``energy_integrated_j`` = ∫ Σ P dt of the sampled power instead (``energy_source``
  ``integrated_power``; no bound is known for it, ``unavailable`` says why). Both readings are always
  reported (``energy_counter_j``, ``energy_integrated_j``). ``power_source`` names the power reading
  the timeline holds (:mod:`.sources`: instantaneous where the driver offers it).
* ``aec_w`` (average energy consumption, watts; the paper's name) = ``energy_j`` / T: counter energy
  / T where the counter is used, (1/T) ∫ Σ_gpu P(t) dt otherwise.
* A window of zero length (both edges share one sampler reading: the window was shorter than the
  read) measured no energy: ``energy_j``, ``aec_w`` and the integrals are ``None`` with the reason,
  never 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lm_eval_perf.monitor.metrics import ratio
from lm_eval_perf.monitor.sources import Sample
from lm_eval_perf.monitor.timeline import integral, peak, time_average

COUNTER_UPDATE_PERIOD_S = 0.1  # NVML total-energy counter update period (Hopper)
COUNTER_MIN_WINDOW_S = 10 * COUNTER_UPDATE_PERIOD_S  # below: integrate power (bound would be > 10 %)
COUNTER = "nvml_energy_counter"
INTEGRATED = "integrated_power"
GIB = 1024**3


@dataclass
class Measurement:
    """Quantities of one window; ``None`` means not measurable here, with a reason in ``unavailable``."""

    name: str
    start_s: float
    end_s: float
    duration_s: float
    gpu_count: int
    amu: float | None
    memory_used_avg_gib: float | None
    memory_used_peak_gib: float | None
    process_memory_peak_gib: float | None
    pcu: float | None
    pcu_peak: float | None
    aec_w: float | None
    energy_j: float | None
    energy_source: str | None
    energy_error_bound: float | None  # fraction of energy_j: counter update period / duration_s
    energy_counter_j: float | None
    energy_integrated_j: float | None
    power_source: str | None
    host_rss_peak_gib: float | None
    host_cpu_avg_pct: float | None
    host_rapl_energy_j: float | None
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if len(known) == len(values) and known else None


def _sum(values: list[float | None]) -> float | None:
    return sum(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def _gib(value: float | None) -> float | None:
    return None if value is None else value / GIB


def _one(values: set) -> str | None:
    """The one value of a set, ``mixed`` for several, ``None`` for none."""
    values = values - {None}
    return None if not values else values.pop() if len(values) == 1 else "mixed"


def _energy(
    counter: float | None, integrated: float | None, duration: float, notes: dict[str, str]
) -> tuple[float | None, str | None, float | None]:
    """(energy_j, energy_source, energy_error_bound) of one window; reasons go into ``notes``."""
    if duration <= 0:
        notes["energy_j"] = (
            "window of zero length: both edges share one sampler reading (the window was shorter "
            "than one read), so no energy was measured"
        )
        return None, None, None
    if counter is not None and duration >= COUNTER_MIN_WINDOW_S:
        return counter, COUNTER, COUNTER_UPDATE_PERIOD_S / duration
    if integrated is None:
        return None, None, None
    if counter is not None:
        notes["energy_j"] = (
            f"window of {duration * 1e3:.1f} ms is shorter than {COUNTER_MIN_WINDOW_S:g} s (ten ~100 ms "
            "update periods of the NVML energy counter, up to ±100 % quantization error at one period): "
            "energy integrates sampled power instead"
        )
    notes["energy_error_bound"] = "energy integrates sampled power: no error bound is known for it"
    return integrated, INTEGRATED, None


def measure(
    name: str,
    timeline: list[Sample],
    first: Sample,
    last: Sample,
    unavailable: dict[str, str],
) -> Measurement:
    """The :class:`Measurement` of the window whose edge samples are ``first`` and ``last``."""
    t0, t1 = first.t_s, last.t_s
    span = [s for s in timeline if t0 <= s.t_s <= t1]
    notes = dict(unavailable)
    gpu_indices = [g.index for g in first.gpus]

    def series(index: int, attr: str, scale: float = 1.0) -> list[tuple[float, float | None]]:
        out = []
        for s in span:
            reading = next((g for g in s.gpus if g.index == index), None)
            value = None if reading is None else getattr(reading, attr)
            out.append((s.t_s, None if value is None else value * scale))
        return out

    def used_fraction(index: int) -> list[tuple[float, float | None]]:
        out = []
        for s in span:
            g = next((g for g in s.gpus if g.index == index), None)
            ok = g is not None and g.memory_used_bytes is not None and g.memory_total_bytes
            out.append((s.t_s, g.memory_used_bytes / g.memory_total_bytes if ok else None))
        return out

    amu = _mean([time_average(used_fraction(i), t0, t1) for i in gpu_indices])
    mem_avg = _sum([time_average(series(i, "memory_used_bytes"), t0, t1) for i in gpu_indices])
    mem_peak = _sum([peak(series(i, "memory_used_bytes"), t0, t1) for i in gpu_indices])
    proc_peak = _sum([peak(series(i, "process_memory_bytes"), t0, t1) for i in gpu_indices])
    pcu = _mean([time_average(series(i, "utilization_pct", 0.01), t0, t1) for i in gpu_indices])
    pcu_peak = max(
        (v for i in gpu_indices if (v := peak(series(i, "utilization_pct", 0.01), t0, t1)) is not None),
        default=None,
    )
    integrated = _sum([integral(series(i, "power_w"), t0, t1) for i in gpu_indices])
    duration = t1 - t0
    counter = None
    if duration > 0:
        counter = _sum(
            [
                None if a.energy_j is None or b.energy_j is None else b.energy_j - a.energy_j
                for a, b in zip(first.gpus, last.gpus)
            ]
        )
    energy, source, bound = (
        _energy(counter, integrated, duration, notes) if gpu_indices else (None, None, None)
    )
    power_sources = {g.power_source for s in span for g in s.gpus if g.power_w is not None}

    host_points = [(s.t_s, s.host) for s in span if s.host is not None]
    rss_peak = peak([(t, h.rss_bytes) for t, h in host_points], t0, t1)
    cpu_avg = time_average([(t, h.cpu_pct) for t, h in host_points], t0, t1)
    rapl = (
        None
        if duration <= 0
        or first.host is None
        or last.host is None
        or first.host.rapl_energy_j is None
        or last.host.rapl_energy_j is None
        else last.host.rapl_energy_j - first.host.rapl_energy_j
    )
    if not gpu_indices:
        for key in ("amu", "pcu", "aec_w", "energy_j", "memory_used_avg_gib"):
            notes.setdefault(key, unavailable.get("gpu", "no GPU is monitored"))

    return Measurement(
        name=name,
        start_s=t0,
        end_s=t1,
        duration_s=duration,
        gpu_count=len(gpu_indices),
        amu=amu,
        memory_used_avg_gib=_gib(mem_avg),
        memory_used_peak_gib=_gib(mem_peak),
        process_memory_peak_gib=_gib(proc_peak),
        pcu=pcu,
        pcu_peak=pcu_peak,
        aec_w=ratio(energy, duration),
        energy_j=energy,
        energy_source=source,
        energy_error_bound=bound,
        energy_counter_j=counter,
        energy_integrated_j=integrated,
        power_source=_one(power_sources),
        host_rss_peak_gib=_gib(rss_peak),
        host_cpu_avg_pct=cpu_avg,
        host_rapl_energy_j=rapl,
        unavailable=notes,
    )


# How each quantity of several windows combines, (one after another, side by side): "add" sums,
# "max" takes the largest, "time" averages weighted by duration, "gpu" averages weighted by GPU count
# (side by side = data-parallel ranks on different GPUs, see :func:`combine_parallel`).
_COMBINE: dict[str, tuple[str, str]] = {
    "amu": ("time", "gpu"),
    "memory_used_avg_gib": ("time", "add"),
    "memory_used_peak_gib": ("max", "add"),
    "process_memory_peak_gib": ("max", "add"),
    "pcu": ("time", "gpu"),
    "pcu_peak": ("max", "max"),
    "energy_j": ("add", "add"),
    "energy_counter_j": ("add", "add"),
    "energy_integrated_j": ("add", "add"),
    "host_rss_peak_gib": ("max", "add"),
    "host_cpu_avg_pct": ("time", "add"),
}


def _fold(parts: list[Measurement], attr: str, rule: str) -> float | None:
    """``attr`` of ``parts`` combined by ``rule`` (see :data:`_COMBINE`); ``None`` if any is missing."""
    weight = {"time": lambda p: p.duration_s, "gpu": lambda p: p.gpu_count}.get(rule, lambda p: 1.0)
    pairs = [(getattr(p, attr), weight(p)) for p in parts]
    if rule == "gpu":
        pairs = [(v, w) for v, w in pairs if w]  # a rank without GPUs has no GPU average to give
    if not pairs or any(v is None for v, _ in pairs):
        return None
    if rule == "add":
        return sum(v for v, _ in pairs)
    if rule == "max":
        return max(v for v, _ in pairs)
    total = sum(w for _, w in pairs)
    return None if total <= 0 else sum(v * w for v, w in pairs) / total


def _combined(
    name: str, parts: list[Measurement], side_by_side: bool, duration_s: float, rapl_j: float | None
) -> Measurement:
    unavailable: dict[str, str] = {}
    for p in parts:
        unavailable.update(p.unavailable)
    gpus = [p.gpu_count for p in parts]
    values = {attr: _fold(parts, attr, rules[side_by_side]) for attr, rules in _COMBINE.items()}
    energy = values["energy_j"]
    bounds = [None if p.energy_error_bound is None else p.energy_error_bound * p.energy_j for p in parts]
    return Measurement(
        name=name,
        start_s=min(p.start_s for p in parts),
        end_s=max(p.end_s for p in parts),
        duration_s=duration_s,
        gpu_count=sum(gpus) if side_by_side else max(gpus),
        aec_w=ratio(energy, duration_s),
        energy_source=_one({p.energy_source for p in parts}),
        energy_error_bound=ratio(_sum(bounds), energy),
        power_source=_one({p.power_source for p in parts}),
        host_rapl_energy_j=rapl_j,
        unavailable=unavailable,
        **values,
    )


def merge(name: str, parts: list[Measurement]) -> Measurement:
    """One :class:`Measurement` for several disjoint windows of the same name, one after another.

    Durations, energies and integrals add; time averages are weighted by duration; peaks take the max.
    ``aec_w`` = total energy / total duration. The error bounds of the parts' energies add:
    ``energy_error_bound`` = Σ bound_i · energy_i / Σ energy_i, ``None`` if a part has none.
    """
    if len(parts) == 1:
        return parts[0]
    rapl = _sum([p.host_rapl_energy_j for p in parts])
    return _combined(name, parts, False, sum(p.duration_s for p in parts), rapl)


def combine_parallel(name: str, parts: list[Measurement], hosts: list[str]) -> Measurement:
    """One :class:`Measurement` for windows of the same name that ran *at the same time* in several
    processes (data-parallel ranks, each on its own GPUs); ``hosts[i]`` is the host of ``parts[i]``.

    The ranks' GPUs are added up: GPU counts, energies, memory in GiB and host RSS add; AMU and PCU
    are averaged over all GPUs; the duration is the longest rank's (the run's wall time), and
    ``aec_w`` = total energy / that duration; peaks take the max. A host's RAPL package
    counter is seen by every rank on that host: it counts once per host (the largest reading).
    ``start_s``/``end_s`` come from each process's monotonic clock: comparable on one host only.
    """
    if len(parts) == 1:
        return parts[0]
    rapl_by_host: dict[str, float | None] = {}
    for host, part in zip(hosts, parts):
        value, seen = part.host_rapl_energy_j, rapl_by_host.get(host, 0.0)
        rapl_by_host[host] = None if value is None or seen is None else max(seen, value)
    duration = max(p.duration_s for p in parts)
    return _combined(name, parts, True, duration, _sum(list(rapl_by_host.values())))
