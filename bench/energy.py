"""Does the NVML energy counter agree with the integral of sampled power?

A generation run of at least ``--seconds`` seconds (default 12) is measured by one monitor window,
once per sampling interval. The window's energy from the total-energy counter (read at its edges)
is compared with the trapezoid integral of the sampled power timeline; the goal is agreement
within 3 %. The power timeline is NVML's instantaneous power where the driver offers it (the table
names the source), and it is what windows under 1 s integrate, so this checks the two energy figures
the project reports against each other. The counter's error bound (update period / window) is shown
beside it.

    python -m bench.energy            # GPU (prints nulls with the reason on a machine without NVML)
    python -m bench.energy --small    # CPU: a tiny model, shows the no-GPU path
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from bench._models import random_model
from bench._out import save
from lm_eval_perf.monitor import PerformanceMonitor
from lm_eval_perf.records.console import fmt


def generate_for(model, seconds: float, batch: int, new_tokens: int, device: str) -> int:
    """Generate repeatedly for at least ``seconds``; returns the number of generated tokens."""
    ids = torch.randint(100, 1000, (batch, 128), device=device)
    produced, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        with torch.no_grad():
            model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        produced += batch * new_tokens
    return produced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--intervals", default="0.1,0.05,0.02", help="sampling intervals in seconds")
    args = parser.parse_args()
    gpu = torch.cuda.is_available() and not args.small
    device = "cuda" if gpu else "cpu"
    model = random_model(
        "deepseek-r1-distill-qwen-1.5b" if gpu else "tiny-llama",
        device,
        torch.bfloat16 if gpu else torch.float32,
    )
    seconds = args.seconds or (12.0 if gpu else 2.0)
    generate_for(model, 1.0, 8, 16, device)  # warm-up
    rows = []
    for interval in (float(x) for x in args.intervals.split(",")):
        with (
            PerformanceMonitor(interval_s=interval, devices=[0] if gpu else []) as monitor,
            monitor.window("generate"),
        ):
            tokens = generate_for(model, seconds, 16, 128, device)
        m = monitor.measurement("generate")
        assert m is not None
        diff = None
        counter = m.energy_counter_j
        if counter and m.energy_integrated_j is not None:
            diff = (m.energy_integrated_j - counter) / counter
        rows.append(
            {
                "interval_s": interval,
                "duration_s": m.duration_s,
                "samples": len(monitor.timeline),
                "counter_j": counter,
                "energy_error_bound": m.energy_error_bound,
                "integrated_j": m.energy_integrated_j,
                "power_source": m.power_source,
                "relative_difference": diff,
                "aec_w": m.aec_w,
                "j_per_token": None if m.energy_j is None else m.energy_j / tokens,
                "unavailable": m.unavailable,
            }
        )
    name = torch.cuda.get_device_name(0) if gpu else "cpu"
    save("energy", {"device": name, "rows": rows})
    print(f"\n## energy: counter vs integrated power, {name}\n")
    print(
        "| interval s | window s | samples | counter J | bound | ∫P dt J | power | diff | AEC W | J/token |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        diff = "--" if r["relative_difference"] is None else f"{100 * r['relative_difference']:+.2f} %"
        print(
            f"| {r['interval_s']} | {r['duration_s']:.2f} | {r['samples']} | {fmt(r['counter_j'], 1)} | "
            f"{fmt(r['energy_error_bound'], 4)} | {fmt(r['integrated_j'], 1)} | "
            f"{r['power_source'] or '--'} | {diff} | {fmt(r['aec_w'], 1)} | {fmt(r['j_per_token'], 4)} |"
        )
    if not gpu:
        print(f"\nno GPU energy here: {rows[0]['unavailable'].get('gpu') or rows[0]['unavailable']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
