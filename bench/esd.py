"""ESD speed and accuracy: this project's estimator vs WeightWatcher on a 7B-class model, one run.

1. Build ``qwen2.5-7b`` with random bf16 weights on the device (197 Linear weights).
2. This project's ESD of every Linear layer (:func:`lm_eval_perf.tasks.esd.estimator.analyze`), after a
   warm-up on two layers, in several variants: ``eig_dtype`` float64 (the default) and float32, on 1, 4
   or 8 CUDA streams (``eig_streams``), and float64 through MAGMA instead of cuSOLVER. A variant that
   fails is recorded with its error; the others still run.
3. WeightWatcher (``weightwatcher`` package, its default ``analyze()``; on a CUDA machine it takes its
   SVDs on the GPU) timed layer by layer on a subset - one layer of each shape it analyses, then more up
   to ``--ww-layers`` - and **extrapolated** to all layers by shape: each layer counts the mean time of
   the measured layers of its shape (its default ``max_N=50000`` skips ``lm_head``, which counts 0). Our
   default variant is also timed on exactly that subset, for a ratio without extrapolation. With
   ``--ww-cpu`` the same layers are timed again by WeightWatcher in a child process that sees no GPU,
   i.e. on its SciPy path (the one the issue describes), and extrapolated the same way.
4. Alpha agreement with a float64 reference on a sample of real-shape layers (one per shape, then more
   up to ``--sample``; no dimension over 50,000, so not the 7B's ``lm_head``): eigenvalues from a
   float64 numpy SVD on the CPU, fitted by the same power-law code (which tests/test_esd_estimator.py
   checks against a loop written from the definitions); every ``fix_fingers`` mode, both ``eig_dtype``s.

Goals: all Linear layers in ≤ 60 s on one H100, ≥ 50× faster than WeightWatcher.

    python bench/esd.py            # GPU (H100: about 5 minutes)
    python bench/esd.py --ww-cpu   # also WeightWatcher's CPU path on the same layers, side by side
    python bench/esd.py --ww-cpu --default-only --sample 4   # the same, shorter: one variant of ours
    python bench/esd.py --small    # CPU: smollm2-135m architecture, random weights, fewer variants

Writes the full record to ``$OUT/esd.json`` when ``$OUT`` is set; prints a markdown table at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from _models import random_model
from _out import save
from torch import nn

from lm_eval_perf.report.console import fmt
from lm_eval_perf.tasks.esd import powerlaw, spectrum
from lm_eval_perf.tasks.esd.estimator import ESDOptions, analyze

GOAL_SECONDS = 60.0
GOAL_SPEEDUP = 50.0
MODES = (None, "xmin_mid", "xmin_peak")
SAMPLE_MAX_DIM = 50_000  # the reference SVD of a 152064x3584 lm_head alone takes minutes on a CPU
DEFAULT = "float64, 1 stream"
VARIANTS_GPU = {  # name -> (ESD options, torch linear-algebra library)
    DEFAULT: ({"eig_dtype": "float64", "eig_streams": 1}, None),
    "float64, 4 streams": ({"eig_dtype": "float64", "eig_streams": 4}, None),
    "float64, 8 streams": ({"eig_dtype": "float64", "eig_streams": 8}, None),
    "float32, 1 stream": ({"eig_dtype": "float32", "eig_streams": 1}, None),
    "float32, 4 streams": ({"eig_dtype": "float32", "eig_streams": 4}, None),
    "float32, 8 streams": ({"eig_dtype": "float32", "eig_streams": 8}, None),
    "float64, 1 stream, magma": ({"eig_dtype": "float64", "eig_streams": 1}, "magma"),
}
VARIANTS_CPU = {k: v for k, v in VARIANTS_GPU.items() if k in (DEFAULT, "float32, 1 stream")}


def linear_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {layer.name: model.get_submodule(layer.name) for layer in spectrum.layer_weights(model)}


def only(modules: dict[str, nn.Module], names: list[str]) -> nn.Module:
    return nn.ModuleDict({str(i): modules[n] for i, n in enumerate(names)})


def spread(modules: dict[str, nn.Module], size: int, max_dim: float = float("inf")) -> list[str]:
    """One layer per distinct shape (smallest first), then others spread over depth; ``size`` in all."""
    eligible = [n for n, m in modules.items() if max(m.weight.shape) <= max_dim]
    first: dict[tuple, str] = {}
    for name in eligible:
        first.setdefault(tuple(modules[name].weight.shape), name)
    chosen = sorted(first.values(), key=lambda n: modules[n].weight.numel())
    rest = [n for n in eligible if n not in chosen]
    step = max(1, len(rest) // max(1, size - len(chosen)))
    return (chosen + rest[::step])[: max(size, len(chosen))]


@contextlib.contextmanager
def linalg_library(name: str | None) -> Iterator[None]:
    if name is None or not torch.cuda.is_available():
        yield
        return
    previous = torch.backends.cuda.preferred_linalg_library()
    torch.backends.cuda.preferred_linalg_library(name)
    try:
        yield
    finally:
        torch.backends.cuda.preferred_linalg_library(previous)


def timed(model: nn.Module, options: ESDOptions) -> dict:
    started = time.perf_counter()
    result = analyze(model, options)
    return {
        "layers": len(result.rows),
        "eig_seconds": result.eig_seconds,
        "fit_seconds": result.fit_seconds,
        "wall_seconds": time.perf_counter() - started,
    }


def ours(model: nn.Module, variants: dict, subset: list[str]) -> dict:
    modules = linear_modules(model)
    runs: dict[str, dict] = {}
    for name, (options, library) in variants.items():
        try:
            with linalg_library(library):
                esd_options = ESDOptions(**options)
                analyze(only(modules, list(modules)[:2]), esd_options)  # warm-up: kernels, solver handles
                runs[name] = timed(model, esd_options)
                if name == DEFAULT and subset:
                    runs[name]["subset"] = timed(only(modules, subset), esd_options)
        except Exception as exc:  # a variant that cannot run here is a result, not the end of the bench
            runs[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        print(f"ours {name}: {runs[name]}", flush=True)
    return runs


def _time_layers(layers: dict[str, nn.Module]) -> tuple[str | None, dict[str, dict]]:
    """WeightWatcher's default analyze() on each layer alone: its version, and seconds/alpha/shape per layer.

    Each layer is handed to WeightWatcher alone (wrapped in a ModuleDict): it converts every layer of the
    model it is given to numpy before filtering by layer id, so a per-layer call on the whole model would
    pay for all 197 conversions each time. Alone, a call costs what that layer costs in a full run.
    """
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    ww.WeightWatcher(model=nn.ModuleDict({"layer": nn.Linear(64, 96)})).analyze()  # warm-up, untimed
    measured: dict[str, dict] = {}
    for name, module in layers.items():
        started = time.perf_counter()
        details = ww.WeightWatcher(model=nn.ModuleDict({"layer": module})).analyze()
        seconds = time.perf_counter() - started
        alpha = float(details["alpha"].iloc[0]) if len(details) else None
        measured[name] = {"seconds": seconds, "alpha": alpha, "shape": list(module.weight.shape)}
        print(
            f"weightwatcher {name} {tuple(module.weight.shape)}: {seconds:.2f} s", file=sys.stderr, flush=True
        )
    return getattr(ww, "__version__", None), measured


def _extrapolate(model: nn.Module, measured: dict[str, dict]) -> dict:
    """Measured and all-layer seconds: each layer counts the mean time of the measured layers of its
    shape; layers over WeightWatcher's ``max_N`` (skipped by its default analyze()) count 0."""
    from weightwatcher.constants import DEFAULT_MAX_N

    shapes = {n: tuple(m.weight.shape) for n, m in linear_modules(model).items()}
    per_shape: dict[tuple, list[float]] = {}
    for m in measured.values():
        per_shape.setdefault(tuple(m["shape"]), []).append(m["seconds"])
    skipped = [n for n, s in shapes.items() if max(s) > DEFAULT_MAX_N]
    return {
        "measured": measured,
        "measured_seconds": sum(m["seconds"] for m in measured.values()),
        "extrapolated_seconds": sum(
            statistics.fmean(per_shape[s]) for n, s in shapes.items() if n not in skipped
        ),
        "extrapolation": "per layer: mean measured time of the subset's layers of the same shape",
        "skipped_by_weightwatcher": skipped,
    }


def weightwatcher(model: nn.Module, size: int) -> dict:
    """WeightWatcher in this process on a subset of ``size`` layers, extrapolated to all layers. It
    chooses its SVD backend when imported: torch on the GPU when CUDA is available, else SciPy."""
    try:
        from weightwatcher.constants import DEFAULT_MAX_N
    except ImportError as exc:
        return {"error": f"weightwatcher not installed: {exc}", "subset": []}
    modules = linear_modules(model)
    subset = spread(modules, size, max_dim=DEFAULT_MAX_N)
    version, measured = _time_layers({n: modules[n] for n in subset})
    backend = "torch on the GPU" if torch.cuda.is_available() else "SciPy on the CPU"
    return {"version": version, "backend": backend, "subset": subset, **_extrapolate(model, measured)}


def weightwatcher_cpu(model: nn.Module, subset: list[str]) -> dict:
    """The same layers timed by WeightWatcher in a child process that sees no GPU, i.e. on its CPU
    (SciPy) path: the path the issue and DESIGN.md's 1068 s anchor describe. The weights travel to
    the child through a temporary safetensors file."""
    from safetensors.torch import save_file

    modules = linear_modules(model)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "layers.safetensors"
        save_file({n: modules[n].weight.detach().cpu().contiguous() for n in subset}, str(path))
        child = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--ww-child", str(path)],
            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
            capture_output=True,
            text=True,
        )
    if child.returncode:
        lines = child.stderr.strip().splitlines()
        return {"error": f"child exited {child.returncode}: {lines[-1] if lines else ''}", "subset": subset}
    version, measured = json.loads(child.stdout.strip().splitlines()[-1])
    return {
        "version": version,
        "backend": "SciPy on the CPU (child process without CUDA)",
        "cpu_threads": os.cpu_count(),
        "subset": subset,
        **_extrapolate(model, measured),
    }


def _ww_child(path: str) -> None:
    """Child of :func:`weightwatcher_cpu`: time each weight of ``path``; print ``[version, measured]``."""
    from safetensors.torch import load_file

    layers = {}
    for name, weight in load_file(path).items():
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
        layer.weight = nn.Parameter(weight, requires_grad=False)
        layers[name] = layer
    print(json.dumps(_time_layers(layers)))


def agreement(model: nn.Module, sample: list[str]) -> dict:
    """Alpha and eigenvalues of the fast path vs a float64 SVD reference, per eig_dtype and mode."""
    modules = linear_modules(model)
    reference = {}
    for name in sample:
        weight = modules[name].weight.detach().float().cpu().double().numpy()
        reference[name] = np.sort(np.linalg.svd(weight, compute_uv=False) ** 2)
    layers = spectrum.layer_weights(only(modules, sample))
    out: dict[str, dict] = {}
    for eig_dtype in ("float64", "float32"):
        evals = spectrum.layer_eigenvalues(layers, spectrum.parse_dtype(eig_dtype))
        eig_error = max(
            float(np.max(np.abs(e.double().cpu().numpy() - reference[n])) / reference[n][-1])
            for n, e in zip(sample, evals)
        )
        for mode in MODES:
            rows = analyze(only(modules, sample), ESDOptions(fix_fingers=mode, eig_dtype=eig_dtype)).rows
            layers_out = {}
            for name, row in zip(sample, rows):
                values = torch.from_numpy(reference[name])[None]
                ref = powerlaw.fit_power_law(values, torch.zeros(1, dtype=torch.long), mode).alpha.item()
                rel = abs(row["alpha"] - ref) / ref
                layers_out[name] = {"alpha": row["alpha"], "reference": ref, "rel": rel}
            rel = [v["rel"] for v in layers_out.values()]
            out[f"{eig_dtype} / {mode or 'none'}"] = {
                "max_rel_alpha_error": max(rel),
                "layers_over_1e-3": sum(r > 1e-3 for r in rel),
                "max_eigenvalue_error_rel_to_lmax": eig_error,
                "layers": layers_out,
            }
    return out


def _verdict(value: float | None, ok: bool) -> str:
    return "n/a" if value is None else "met" if ok else "NOT met"


def table(record: dict) -> str:
    runs = record["ours"]
    lines = [
        f"## ESD: {record['arch']} (random bf16 weights) on {record['device_name']}",
        "",
        "| what | layers | seconds | notes |",
        "|---|---:|---:|---|",
    ]
    for name, run in runs.items():
        if "error" in run:
            lines.append(f"| ours, {name} | -- | -- | {run['error']} |")
        else:
            lines.append(
                f"| ours, {name} | {run['layers']} | {fmt(run['wall_seconds'])} | "
                f"eig {fmt(run['eig_seconds'])} s + fit {fmt(run['fit_seconds'])} s |"
            )
    default = runs.get(DEFAULT, {})
    timings = {k: v["wall_seconds"] for k, v in runs.items() if "wall_seconds" in v}
    verdict_lines = []
    for key in ("weightwatcher", "weightwatcher_cpu"):
        ww = record.get(key)
        if ww is None:
            continue
        if "error" in ww:
            lines.append(f"| WeightWatcher ({key}) | -- | -- | {ww['error']} |")
            continue
        n, skipped = len(ww["measured"]), ww["skipped_by_weightwatcher"]
        subset_speedup = None
        if "subset" in default:
            subset_speedup = ww["measured_seconds"] / default["subset"]["wall_seconds"]
        lines += [
            f"| WeightWatcher {ww['version']}, {ww['backend']}, measured | {n} | "
            f"{fmt(ww['measured_seconds'])} | default analyze(), one layer per call |",
            f"| same, **extrapolated** to all | {len(record['layers']) - len(skipped)} | "
            f"{fmt(ww['extrapolated_seconds'])} | by shape from the measured layers; skips "
            f"{', '.join(skipped) or 'none'} (max_N) |",
        ]
        speedup = ww["extrapolated_seconds"] / timings[DEFAULT] if DEFAULT in timings else None
        verdict = _verdict(speedup, (speedup or 0) >= GOAL_SPEEDUP)
        verdict_lines.append(
            f"Speed-up of the default ({DEFAULT}) vs WeightWatcher's {ww['backend']}: "
            f"**{fmt(speedup, 1)}×** extrapolated over all layers, {fmt(subset_speedup, 1)}× measured "
            f"on the same subset (≥ {GOAL_SPEEDUP:.0f}×: {verdict})."
        )
    if "subset" in default:
        lines.append(
            f"| ours, {DEFAULT}, WeightWatcher's subset | {len(record['weightwatcher']['subset'])} | "
            f"{fmt(default['subset']['wall_seconds'])} | |"
        )
    if timings:
        best = min(timings, key=timings.get)
        lines.append(f"| fastest variant: {best} | | {fmt(timings[best])} | |")
    seconds = default.get("wall_seconds")
    lines += [
        "",
        *verdict_lines,
        f"All Linear layers ≤ {GOAL_SECONDS:.0f} s: "
        f"{_verdict(seconds, (seconds or 0) <= GOAL_SECONDS)} ({fmt(seconds)} s).",
        "",
        f"Alpha vs float64 SVD reference on {len(record['sample'])} real-shape layers:",
        "",
        "| eig_dtype / fix_fingers | max rel alpha error | layers > 1e-3 | max eigenvalue error / λmax |",
        "|---|---:|---:|---:|",
    ]
    for key, value in record["agreement"].items():
        lines.append(
            f"| {key} | {fmt(value['max_rel_alpha_error'])} | {value['layers_over_1e-3']} | "
            f"{fmt(value['max_eigenvalue_error_rel_to_lmax'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU, smollm2-135m architecture")
    parser.add_argument("--arch", default=None, help="architecture preset (default: qwen2.5-7b)")
    parser.add_argument("--ww-layers", type=int, default=None, help="WeightWatcher subset size")
    parser.add_argument("--sample", type=int, default=None, help="layers in the alpha-agreement sample")
    parser.add_argument(
        "--ww-cpu",
        action="store_true",
        help="also time WeightWatcher's CPU path (a child process without CUDA)",
    )
    parser.add_argument(
        "--default-only", action="store_true", help=f"time only the default variant ({DEFAULT})"
    )
    parser.add_argument("--ww-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ww_child:
        _ww_child(args.ww_child)
        return
    device = "cpu" if args.small or not torch.cuda.is_available() else "cuda"
    arch = args.arch or ("smollm2-135m" if args.small else "qwen2.5-7b")

    started = time.perf_counter()
    model = random_model(arch, device, torch.bfloat16)
    print(f"built {arch} on {device} in {time.perf_counter() - started:.1f} s", flush=True)
    modules = linear_modules(model)
    record: dict = {
        "arch": arch,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "CPU",
        "torch": torch.__version__,
        "layers": list(modules),
    }
    record["weightwatcher"] = weightwatcher(model, args.ww_layers or (5 if args.small else 8))
    if args.ww_cpu and "error" not in record["weightwatcher"]:
        record["weightwatcher_cpu"] = weightwatcher_cpu(model, record["weightwatcher"]["subset"])
    variants = VARIANTS_CPU if device == "cpu" else VARIANTS_GPU
    if args.default_only:
        variants = {DEFAULT: variants[DEFAULT]}
    record["ours"] = ours(model, variants, record["weightwatcher"]["subset"])
    record["sample"] = spread(modules, args.sample or (5 if args.small else 8), max_dim=SAMPLE_MAX_DIM)
    record["agreement"] = agreement(model, record["sample"])
    record["total_seconds"] = time.perf_counter() - started
    save("esd", record)
    print(table(record))


if __name__ == "__main__":
    main()
