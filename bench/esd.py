"""ESD speed and accuracy: this project's estimator vs WeightWatcher on a 7B-class model, one run.

1. Build ``qwen2.5-7b`` with random bf16 weights on the device (197 Linear weights).
2. This project's ESD of every Linear layer (:func:`lm_eval_perf.tasks.esd.estimator.analyze`), after a
   warm-up on two layers, in several variants (``--repeats`` timed runs each, the median reported): the
   esd task's defaults as a user gets them (``task default``: ``eig_solver`` auto, ``batch_gib`` 1),
   ``torch.linalg.eigvalsh`` in float64 and float32 on 1, 4 or 8 CUDA streams (``eig_streams``) and
   through MAGMA instead of cuSOLVER, and cuSOLVER's batched call in 16 GiB batches (one stream) or
   8 GiB batches (two streams). A variant that fails is recorded with its error; the others still run.
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

5. ``--profile-eig``: what limits one eigensolve of the preset's commonest large Gram order: wall time
   vs the summed time of the CUDA kernels it launched, kernel count and host-side synchronizations
   (torch profiler), for ``eigvalsh`` in float64/float32 and the batched cuSOLVER path per matrix.

Goals: all Linear layers in ≤ 60 s on one H100, ≥ 50× faster than WeightWatcher (issue 5); the
eigenvalues of the 7B-class preset in ≤ 8 s with alpha within 1e-3 of the float64 SVD reference on
every sampled layer (issue 26; candidates: the ``cusolver_batched`` variants).

Streamed ESD (issue 26), on a checkpoint on disk:

* ``--write-checkpoint DIR`` writes the preset with random weights as sharded bf16 safetensors, shard
  by shard, without building the model (``_checkpoint.py``; ``--shard-gib``, default 4).
* ``--checkpoint DIR`` runs ``lm-eval-perf esd`` on it in child processes, one per variant (default
  and ``cusolver_batched``; ``--gpu-cap-gib`` caps each child's GPU memory with
  ``torch.cuda.set_per_process_memory_fraction``), the loaded path too with ``--loaded`` (a child that
  loads the checkpoint with ``from_pretrained`` and runs the estimator: its rows must equal the
  streamed ones), and records per run: total, eigenvalue, reading and waiting seconds, the child's
  peak host RSS (``os.wait4``, from the kernel) and peak GPU memory; then alpha against a float64
  numpy SVD of ``--sample`` layers read from the checkpoint, and WeightWatcher timed on a subset of
  the checkpoint's layers (its GPU path, ``--ww-cpu`` its CPU path) and extrapolated by shape.

    python -m bench.esd            # GPU (H100: about 5 minutes)
    python -m bench.esd --ww-cpu   # also WeightWatcher's CPU path on the same layers, side by side
    python -m bench.esd --ww-cpu --default-only --sample 4   # the same, shorter: one variant of ours
    python -m bench.esd --small    # CPU: smollm2-135m architecture, random weights, fewer variants
    python -m bench.esd --write-checkpoint /tmp/q7 --arch qwen2.5-7b   # 15 GB of bf16 shards
    python -m bench.esd --checkpoint /tmp/q7 --loaded                  # loaded vs streamed, same weights
    python -m bench.esd --small --write-checkpoint /tmp/s              # CPU: smollm2-135m, float32
    python -m bench.esd --small --checkpoint /tmp/s --loaded

Writes the full record to ``$OUT/esd.json`` (``esd_checkpoint.json`` for ``--checkpoint``) when ``$OUT``
is set; prints a markdown table at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench._checkpoint import write_checkpoint
from bench._models import random_model
from bench._out import save
from lm_eval_perf.records.console import fmt
from lm_eval_perf.tasks.esd import powerlaw, spectrum
from lm_eval_perf.tasks.esd.checkpoint import build_skeleton, open_checkpoint
from lm_eval_perf.tasks.esd.estimator import ESDOptions, analyze, eigenvalues
from lm_eval_perf.tasks.esd.stream import plan_layers

GOAL_SECONDS = 60.0
GOAL_SPEEDUP = 50.0
GOAL_EIG_SECONDS = 8.0  # issue 26: the 7B-class preset's eigenvalues
GOAL_STREAM_RATIO = 1.5  # issue 26: streamed total <= 1.5 x its eigenvalue time
ALPHA_TOLERANCE = 1e-3  # relative, against the float64 SVD reference, on every sampled layer
MODES = (None, "xmin_mid", "xmin_peak")
SAMPLE_MAX_DIM = 50_000  # the reference SVD of a 152064x3584 lm_head alone takes minutes on a CPU
DEFAULT = "task default"  # the esd task's own options: eig_solver auto, batch_gib 1, float64, 1 stream
BATCHED = {"eig_solver": "cusolver_batched", "batch_gib": 16.0}  # one cuSOLVER call per up to 16 GiB
EIGVALSH = {"eig_solver": "torch"}  # torch.linalg.eigvalsh, one matrix per call
VARIANTS_GPU = {  # name -> (ESD options, torch linear-algebra library)
    DEFAULT: ({}, None),
    "float64, eigvalsh, 1 stream": ({"eig_dtype": "float64", **EIGVALSH}, None),
    "float64, eigvalsh, 4 streams": ({"eig_dtype": "float64", **EIGVALSH, "eig_streams": 4}, None),
    "float64, eigvalsh, 8 streams": ({"eig_dtype": "float64", **EIGVALSH, "eig_streams": 8}, None),
    "float32, eigvalsh, 1 stream": ({"eig_dtype": "float32", **EIGVALSH}, None),
    "float32, eigvalsh, 4 streams": ({"eig_dtype": "float32", **EIGVALSH, "eig_streams": 4}, None),
    "float32, eigvalsh, 8 streams": ({"eig_dtype": "float32", **EIGVALSH, "eig_streams": 8}, None),
    "float64, eigvalsh, 1 stream, magma": ({"eig_dtype": "float64", **EIGVALSH}, "magma"),
    "float64, cusolver batched": ({"eig_dtype": "float64", **BATCHED}, None),
    "float32, cusolver batched": ({"eig_dtype": "float32", **BATCHED}, None),
    "float64, cusolver batched, 2 streams": (
        {"eig_dtype": "float64", **BATCHED, "batch_gib": 8.0, "eig_streams": 2},
        None,
    ),
}
VARIANTS_CPU = {k: v for k, v in VARIANTS_GPU.items() if k in (DEFAULT, "float32, eigvalsh, 1 stream")}
STREAM_VARIANTS = {"default": {}, "float64, cusolver batched": BATCHED}  # --checkpoint runs on a GPU


def linear_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {layer.name: model.get_submodule(layer.name) for layer in spectrum.layer_weights(model)}


def only(modules: dict[str, nn.Module], names: list[str]) -> nn.Module:
    return nn.ModuleDict({str(i): modules[n] for i, n in enumerate(names)})


def spread(shapes: Mapping[str, tuple], size: int, max_dim: float = float("inf")) -> list[str]:
    """One layer per distinct shape (smallest first), then others spread over depth; ``size`` in all."""
    eligible = [n for n, shape in shapes.items() if max(shape) <= max_dim]
    first: dict[tuple, str] = {}
    for name in eligible:
        first.setdefault(tuple(shapes[name]), name)
    chosen = sorted(first.values(), key=lambda n: int(np.prod(shapes[n])))
    rest = [n for n in eligible if n not in chosen]
    step = max(1, len(rest) // max(1, size - len(chosen)))
    return (chosen + rest[::step])[: max(size, len(chosen))]


def shapes_of(modules: Mapping[str, nn.Module]) -> dict[str, tuple]:
    return {n: tuple(m.weight.shape) for n, m in modules.items()}


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


def _error(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


def timed(model: nn.Module, options: ESDOptions) -> dict:
    started = time.perf_counter()
    result = analyze(model, options)
    return {
        "layers": len(result.rows),
        "eig_seconds": result.eig_seconds,
        "fit_seconds": result.fit_seconds,
        "wall_seconds": time.perf_counter() - started,
    }


def median_run(measured: list[dict]) -> dict:
    """The run of median eigenvalue time (of an odd count: a real run), with every run's seconds."""
    ordered = sorted(measured, key=lambda run: run["eig_seconds"])
    return {
        **ordered[(len(ordered) - 1) // 2],
        "repeats": [{k: run[k] for k in ("eig_seconds", "fit_seconds", "wall_seconds")} for run in measured],
    }


def ours(model: nn.Module, variants: dict, subset: list[str], repeats: int = 1) -> dict:
    """Each variant timed on every Linear layer ``repeats`` times after a warm-up: its median run."""
    modules = linear_modules(model)
    runs: dict[str, dict] = {}
    for name, (options, library) in variants.items():
        try:
            with linalg_library(library):
                esd_options = ESDOptions(**options)
                analyze(only(modules, list(modules)[:2]), esd_options)  # warm-up: kernels, solver handles
                runs[name] = median_run([timed(model, esd_options) for _ in range(repeats)])
                if name == DEFAULT and subset:
                    runs[name]["subset"] = timed(only(modules, subset), esd_options)
        except Exception as exc:  # a variant that cannot run here is a result, not the end of the bench
            runs[name] = _error(exc)
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


def _extrapolate(shapes: Mapping[str, tuple], measured: dict[str, dict]) -> dict:
    """Measured and all-layer seconds: each layer counts the mean time of the measured layers of its
    shape; layers over WeightWatcher's ``max_N`` (skipped by its default analyze()) count 0."""
    from weightwatcher.constants import DEFAULT_MAX_N

    per_shape: dict[tuple, list[float]] = {}
    for m in measured.values():
        per_shape.setdefault(tuple(m["shape"]), []).append(m["seconds"])
    skipped = [n for n, s in shapes.items() if max(s) > DEFAULT_MAX_N]
    return {
        "measured": measured,
        "measured_seconds": sum(m["seconds"] for m in measured.values()),
        "extrapolated_seconds": sum(
            statistics.fmean(per_shape[tuple(s)]) for n, s in shapes.items() if n not in skipped
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
    subset = spread(shapes_of(modules), size, max_dim=DEFAULT_MAX_N)
    version, measured = _time_layers({n: modules[n] for n in subset})
    backend = "torch on the GPU" if torch.cuda.is_available() else "SciPy on the CPU"
    return {
        "version": version,
        "backend": backend,
        "subset": subset,
        **_extrapolate(shapes_of(modules), measured),
    }


def _ww_in_child(weights: dict[str, torch.Tensor], cuda: bool) -> tuple[dict | None, str | None]:
    """WeightWatcher on ``weights`` in a child process (``cuda`` False: it sees no GPU, i.e. takes its
    SciPy path): ((version, measured), None) or (None, why it failed). The weights travel through a
    temporary safetensors file."""
    from safetensors.torch import save_file

    env = dict(os.environ)
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "layers.safetensors"
        save_file({n: w.detach().cpu().contiguous() for n, w in weights.items()}, str(path))
        child = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--ww-child", str(path)],
            env=env,
            capture_output=True,
            text=True,
        )
    if child.returncode:
        lines = child.stderr.strip().splitlines()
        return None, f"child exited {child.returncode}: {lines[-1] if lines else ''}"
    return json.loads(child.stdout.strip().splitlines()[-1]), None


def weightwatcher_cpu(model: nn.Module, subset: list[str]) -> dict:
    """The same layers timed by WeightWatcher in a child process that sees no GPU, i.e. on its CPU
    (SciPy) path: the path the issue and DESIGN.md's 1068 s anchor describe."""
    modules = linear_modules(model)
    found, failed = _ww_in_child({n: modules[n].weight for n in subset}, cuda=False)
    if failed:
        return {"error": failed, "subset": subset}
    version, measured = found
    return {
        "version": version,
        "backend": "SciPy on the CPU (child process without CUDA)",
        "cpu_threads": os.cpu_count(),
        "subset": subset,
        **_extrapolate(shapes_of(modules), measured),
    }


def _ww_child(path: str) -> None:
    """Child of :func:`_ww_in_child`: time each weight of ``path``; print ``[version, measured]``."""
    from safetensors.torch import load_file

    layers = {}
    for name, weight in load_file(path).items():
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
        layer.weight = nn.Parameter(weight, requires_grad=False)
        layers[name] = layer
    print(json.dumps(_time_layers(layers)))


def _svd_reference(weight: torch.Tensor) -> np.ndarray:
    """Ascending eigenvalues of WᵀW from a float64 numpy SVD on the CPU."""
    return np.sort(np.linalg.svd(weight.detach().float().cpu().double().numpy(), compute_uv=False) ** 2)


def _alpha_errors(alphas: Mapping[str, float], reference: Mapping[str, np.ndarray], mode: str | None) -> dict:
    """Each layer's alpha against the power-law fit of its reference spectrum (relative error)."""
    layers = {}
    for name, alpha in alphas.items():
        values = torch.from_numpy(reference[name])[None]
        ref = powerlaw.fit_power_law(values, torch.zeros(1, dtype=torch.long), mode).alpha.item()
        layers[name] = {"alpha": alpha, "reference": ref, "rel": abs(alpha - ref) / ref}
    rel = [v["rel"] for v in layers.values()]
    return {
        "max_rel_alpha_error": max(rel),
        f"layers_over_{ALPHA_TOLERANCE:g}": sum(r > ALPHA_TOLERANCE for r in rel),
        "layers": layers,
    }


def accuracy_paths(device: str) -> dict[str, dict]:
    """The (eig_dtype, eig_solver) combinations whose accuracy the bench checks, by label."""
    paths = {d: {"eig_dtype": d, **EIGVALSH} for d in ("float64", "float32")}
    if device == "cuda":
        paths |= {f"{d}, cusolver batched": {"eig_dtype": d, **BATCHED} for d in ("float64", "float32")}
    return paths


def accuracy_path(options: Mapping, device: str) -> str:
    """The :func:`accuracy_paths` label of a variant's options on ``device`` (streams and batch sizes do
    not change the numbers; ``eig_solver`` auto is the batched call on a GPU, as on an H100)."""
    solver = options.get("eig_solver", "auto")
    batched = solver == "cusolver_batched" or (solver == "auto" and device == "cuda")
    return options.get("eig_dtype", "float64") + (", cusolver batched" if batched else "")


def agreement(model: nn.Module, sample: list[str], paths: dict[str, dict]) -> dict:
    """Alpha and eigenvalues of each accuracy path vs a float64 SVD reference, per fix_fingers mode."""
    modules = linear_modules(model)
    reference = {name: _svd_reference(modules[name].weight) for name in sample}
    layers = spectrum.layer_weights(only(modules, sample))
    out: dict[str, dict] = {}
    for label, options in paths.items():
        esd_options = ESDOptions(**options)
        try:
            evals = eigenvalues(layers, esd_options)
        except Exception as exc:  # e.g. cuSOLVER without XsyevBatched: recorded, the others go on
            out[label] = _error(exc)
            continue
        eig_error = max(
            float(np.max(np.abs(e.double().cpu().numpy() - reference[n])) / reference[n][-1])
            for n, e in zip(sample, evals)
        )
        for mode in MODES:
            rows = analyze(only(modules, sample), replace(esd_options, fix_fingers=mode)).rows
            alphas = {name: row["alpha"] for name, row in zip(sample, rows)}
            out[f"{label} / {mode or 'none'}"] = {
                **_alpha_errors(alphas, reference, mode),
                "max_eigenvalue_error_rel_to_lmax": eig_error,
            }
    return out


def _accurate(agreements: dict, label: str) -> bool:
    """Whether path ``label`` kept alpha within the tolerance on every sampled layer in every mode."""
    found = [v for k, v in agreements.items() if k.split(" / ")[0] == label and "error" not in v]
    return len(found) == len(MODES) and all(v["max_rel_alpha_error"] <= ALPHA_TOLERANCE for v in found)


# -- what limits one eigensolve ------------------------------------------------------------------


def profile_eig(n: int, batch: int = 8) -> dict:
    """One n×n Gram eigensolve under the torch profiler, per path: wall seconds per matrix, the summed
    device time of its CUDA kernels, kernel launches, and host-side synchronizations (CUDA runtime
    calls that wait for the device: stream/device/event synchronize, synchronous copies)."""
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        return {"every path": {"error": "profiling needs a CUDA GPU"}}
    out = {}
    for label, options in accuracy_paths("cuda").items():
        dtype, solver = spectrum.parse_dtype(options["eig_dtype"]), options.get("eig_solver", "torch")
        w = torch.randn(batch, 2 * n, n, device="cuda", dtype=torch.float32) / n**0.5
        try:
            spectrum.gram_eigenvalues(w[:2], dtype, solver)  # warm-up: handles, workspaces, kernels
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                started = time.perf_counter()
                spectrum.gram_eigenvalues(w, dtype, solver)
                torch.cuda.synchronize()
                wall = time.perf_counter() - started
        except Exception as exc:
            out[label] = _error(exc)
            continue
        events = prof.events()
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        kernel_us = sum(e.device_time for e in kernels)
        waits = [
            e
            for e in events
            if e.name.startswith("cuda") and ("Synchronize" in e.name or e.name == "cudaMemcpy")
        ]
        out[label] = {
            "n": n,
            "matrices": batch,
            "wall_seconds_per_matrix": wall / batch,
            "kernel_seconds_per_matrix": kernel_us / 1e6 / batch,
            "kernel_busy_fraction": kernel_us / 1e6 / wall,
            "kernels_per_matrix": len(kernels) / batch,
            "host_syncs_per_matrix": len(waits) / batch,
        }
        print(f"profile {label}: {out[label]}", flush=True)
    return out


# -- streamed ESD of a checkpoint ----------------------------------------------------------------


def _wait_child(command: list[str]) -> tuple[int, int, float, str, str]:
    """Run ``command``: (exit status, its peak RSS in bytes as the kernel counted it, wall seconds,
    stdout, stderr tail). Output goes through files, so a chatty child cannot block on a full pipe."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, with its resource usage
        out.seek(0)
        err.seek(0)
        return (
            child.returncode,
            usage.ru_maxrss * 1024,
            time.perf_counter() - started,
            out.read(),
            err.read()[-2000:],
        )


def _failed(status: int, err: str) -> dict:
    lines = err.strip().splitlines()
    return {"error": f"exit status {status}: {lines[-1] if lines else ''}"}


def streamed_run(folder: Path, out: Path, options: dict, fraction: float | None) -> dict:
    """``lm-eval-perf esd`` on ``folder`` in a child process; its figures and the child's peak RSS."""
    command = [sys.executable, "-m", "lm_eval_perf.cli", "esd", "--model", str(folder), "--out", str(out)]
    command += ["--metadata", json.dumps(options)]
    if fraction is not None:
        command += ["--gpu-memory-fraction", f"{fraction:.4f}"]
    status, peak, wall, _, err = _wait_child(command)
    if status:
        return _failed(status, err)
    (results,) = out.glob("results_*.json")
    data = json.loads(results.read_text())
    metrics = {k.removesuffix(",none"): v for k, v in data["results"]["esd"].items() if k.endswith(",none")}
    return {
        "wall_seconds": wall,
        "child_peak_rss_bytes": peak,
        "eig_seconds": metrics["eig_seconds"],
        "fit_seconds": metrics["fit_seconds"],
        "stream": data["esd_stream"],
        "csv": data["config"]["lm_eval_perf_artifacts"]["esd_layers_csv"],
    }


def loaded_run(folder: Path, out: Path) -> dict:
    """The loaded path on ``folder`` in a child process (``--loaded-child``); its figures and peak RSS."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--loaded-child",
        str(folder),
        "--out",
        str(out),
    ]
    status, peak, wall, stdout, err = _wait_child(command)
    if status:
        return _failed(status, err)
    return {"wall_seconds": wall, "child_peak_rss_bytes": peak, **json.loads(stdout.strip().splitlines()[-1])}


def _loaded_child(folder: str, out: str) -> None:
    """Child of :func:`loaded_run`: ``from_pretrained`` onto the device, the estimator, a CSV; prints JSON."""
    import transformers

    from lm_eval_perf.tasks.esd import records

    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype="auto", device_map=device)
    loaded = time.perf_counter() - started
    result = analyze(model)
    path = records.write_layers(
        Path(out), records.identity(folder, None, False), result, records.time_stamp()
    )
    gpu = torch.cuda.max_memory_allocated() if device == "cuda" else None
    figures = {"load_seconds": loaded, "eig_seconds": result.eig_seconds, "fit_seconds": result.fit_seconds}
    print(json.dumps({**figures, "gpu_peak_bytes": gpu, "csv": str(path)}))


def _csv_alphas(path: str) -> dict[str, float]:
    with open(path, newline="") as handle:
        return {
            r["longname"]: float(r["alpha"]) if r["alpha"] else float("nan") for r in csv.DictReader(handle)
        }


def checkpoint_bench(folder: Path, args: argparse.Namespace, out: Path) -> dict:
    """Streamed runs (and the loaded one) of the checkpoint in ``folder``, accuracy, WeightWatcher."""
    cuda = torch.cuda.is_available()
    checkpoint = open_checkpoint(str(folder))
    skeleton = build_skeleton(checkpoint.config())
    layers = plan_layers(skeleton, checkpoint.tensors(skeleton))
    shapes = {layer.name: layer.ref.shape for layer in layers}
    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None
    fraction = args.gpu_cap_gib / total_gib if cuda and args.gpu_cap_gib else None
    record: dict = {
        "checkpoint": str(folder),
        "device_name": torch.cuda.get_device_name() if cuda else "CPU",
        "checkpoint_bytes": sum(layer.ref.nbytes for layer in layers),
        "largest_tensor_bytes": max(layer.ref.nbytes for layer in layers),
        "layers": len(layers),
        "gpu_cap_gib": args.gpu_cap_gib if fraction else None,
        "gpu_total_gib": total_gib,
    }
    variants = STREAM_VARIANTS if cuda else {"default": {}}
    record["streamed"] = {}
    for name, options in variants.items():
        record["streamed"][name] = streamed_run(
            folder, out / f"streamed-{len(record['streamed'])}", options, fraction
        )
        print(f"streamed {name}: {record['streamed'][name]}", flush=True)
    if args.loaded:
        record["loaded"] = loaded_run(folder, out / "loaded")
        print(f"loaded: {record['loaded']}", flush=True)
        streamed = record["streamed"]["default"]
        if "csv" in streamed and "csv" in record["loaded"]:
            a, b = _csv_alphas(streamed["csv"]), _csv_alphas(record["loaded"]["csv"])
            record["loaded"]["same_layers"] = list(a) == list(b)
            record["loaded"]["max_rel_alpha_difference"] = max(abs(a[k] - b[k]) / abs(b[k]) for k in b)
    sample = spread(shapes, args.sample or (5 if args.small else 8), max_dim=SAMPLE_MAX_DIM)
    by_name = {layer.name: layer for layer in layers}
    reference = {n: _svd_reference(checkpoint.read(by_name[n].ref, torch.device("cpu"))) for n in sample}
    record["sample"] = sample
    record["agreement"] = {
        name: _alpha_errors({n: _csv_alphas(run["csv"])[n] for n in sample}, reference, None)
        for name, run in record["streamed"].items()
        if "csv" in run
    }
    record["weightwatcher"] = weightwatcher_checkpoint(checkpoint, layers, shapes, args)
    return record


def weightwatcher_checkpoint(checkpoint, layers, shapes: dict, args: argparse.Namespace) -> dict:
    """WeightWatcher on a subset of the checkpoint's layers (read from it) in a child process - its GPU
    path, or with ``--ww-cpu`` its SciPy path - extrapolated to all layers by shape."""
    try:
        from weightwatcher.constants import DEFAULT_MAX_N
    except ImportError as exc:
        return {"error": f"weightwatcher not installed: {exc}"}
    subset = spread(shapes, args.ww_layers or (5 if args.small else 8), max_dim=DEFAULT_MAX_N)
    by_name = {layer.name: layer for layer in layers}
    weights = {n: checkpoint.read(by_name[n].ref, torch.device("cpu")) for n in subset}
    cuda = torch.cuda.is_available() and not args.ww_cpu
    found, failed = _ww_in_child(weights, cuda=cuda)
    if failed:
        return {"error": failed, "subset": subset}
    version, measured = found
    backend = "torch on the GPU" if cuda else "SciPy on the CPU (child process without CUDA)"
    return {"version": version, "backend": backend, "subset": subset, **_extrapolate(shapes, measured)}


# -- tables ------------------------------------------------------------------------------------------


def _verdict(value: float | None, ok: bool) -> str:
    return "n/a" if value is None else "met" if ok else "NOT met"


def _gib(value: float | None) -> str:
    return "--" if value is None else fmt(value / 2**30)


def _markdown_rows(header: str, items: dict, cells) -> list[str]:
    """A markdown table: ``header`` (``| a | b | ... |``), then one row per item - its key, then
    ``cells(value)`` (the remaining cells, ``|``-separated), or dashes and the item's error."""
    columns = header.count("|") - 1
    lines = [header, "|---|" + "---:|" * (columns - 1)]
    for key, value in items.items():
        rest = "-- | " * (columns - 2) + f"{value['error']}" if "error" in value else cells(value)
        lines.append(f"| {key} | {rest} |")
    return lines


def _agreement_lines(agreements: dict) -> list[str]:
    return _markdown_rows(
        "| path / fix_fingers | max rel alpha error | layers > 1e-3 | max eigenvalue error / λmax |",
        agreements,
        lambda v: (
            f"{fmt(v['max_rel_alpha_error'])} | {v[f'layers_over_{ALPHA_TOLERANCE:g}']} | "
            f"{fmt(v.get('max_eigenvalue_error_rel_to_lmax'))}"
        ),
    )


def eig_goal_line(runs: dict, agreements: dict, variants: dict, device: str) -> str:
    """Issue 26's goal: the fastest variant whose alpha stayed within the tolerance everywhere."""
    accurate = {
        name: run["eig_seconds"]
        for name, run in runs.items()
        if "eig_seconds" in run and _accurate(agreements, accuracy_path(variants[name][0], device))
    }
    goal = f"Eigenvalues ≤ {GOAL_EIG_SECONDS:g} s at alpha within {ALPHA_TOLERANCE:g} of the float64 SVD"
    if not accurate:
        return f"{goal}: n/a (no variant within it ran)."
    best = min(accurate, key=accurate.get)
    seconds = accurate[best]
    return (
        f"{goal} (every mode, every sampled layer): {_verdict(seconds, seconds <= GOAL_EIG_SECONDS)} - "
        f"fastest such variant {best}: {fmt(seconds)} s."
    )


def profile_lines(profiled: dict) -> list[str]:
    intro = ["", "What one eigensolve waits for (torch profiler; per matrix of a batch):", ""]
    return intro + _markdown_rows(
        "| path | n | wall s | kernel s | kernel busy | kernels | host syncs |",
        profiled,
        lambda row: (
            f"{row['n']} | {fmt(row['wall_seconds_per_matrix'])} | "
            f"{fmt(row['kernel_seconds_per_matrix'])} | {fmt(row['kernel_busy_fraction'])} | "
            f"{fmt(row['kernels_per_matrix'], 1)} | {fmt(row['host_syncs_per_matrix'], 1)}"
        ),
    )


def checkpoint_table(record: dict) -> str:
    cap = record["gpu_cap_gib"]
    lines = [
        f"## Streamed ESD of {record['checkpoint']} ({record['layers']} layers, "
        f"{_gib(record['checkpoint_bytes'])} GiB, largest tensor {_gib(record['largest_tensor_bytes'])} GiB) "
        f"on {record['device_name']}" + (f", GPU memory capped at {cap:g} GiB" if cap else ""),
        "",
        "| path | total s | eigenvalues s | read s | waited s | peak host RSS GiB | peak GPU GiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in record["streamed"].items():
        if "error" in run:
            lines.append(f"| streamed, {name} | -- | -- | -- | -- | -- | {run['error']} |")
            continue
        stream = run["stream"]
        lines.append(
            f"| streamed, {name} | {fmt(stream['total_seconds'])} | {fmt(run['eig_seconds'])} | "
            f"{fmt(stream['read_seconds'])} | {fmt(stream['wait_seconds'])} | "
            f"{_gib(run['child_peak_rss_bytes'])} | {_gib(stream['gpu_peak_bytes'])} |"
        )
    loaded = record.get("loaded")
    if loaded and "error" in loaded:
        lines.append(f"| loaded | -- | -- | -- | -- | -- | {loaded['error']} |")
    elif loaded:
        lines.append(
            f"| loaded (from_pretrained {fmt(loaded['load_seconds'])} s) | {fmt(loaded['wall_seconds'])} | "
            f"{fmt(loaded['eig_seconds'])} | -- | -- | {_gib(loaded['child_peak_rss_bytes'])} | "
            f"{_gib(loaded['gpu_peak_bytes'])} |"
        )
    ww = record.get("weightwatcher") or {}
    if "error" in ww:
        lines.append(f"| WeightWatcher | -- | -- | -- | -- | -- | {ww['error']} |")
    elif ww:
        lines.append(
            f"| WeightWatcher {ww['version']}, {ww['backend']}: {len(ww['measured'])} layers measured "
            f"{fmt(ww['measured_seconds'])} s, **extrapolated** by shape | "
            f"{fmt(ww['extrapolated_seconds'])} | | | | | |"
        )
    default = record["streamed"].get("default", {})
    lines.append("")
    if "stream" in default:
        total, eig = default["stream"]["total_seconds"], default["eig_seconds"]
        lines.append(
            f"Streamed total ≤ {GOAL_STREAM_RATIO:g}× its eigenvalue time: "
            f"{_verdict(total, total <= GOAL_STREAM_RATIO * eig)} ({fmt(total / eig)}×)."
        )
        gpu = default["stream"]["gpu_peak_bytes"]
        if gpu is not None:
            lines.append(
                f"Peak GPU memory {_gib(gpu)} GiB for a {_gib(record['checkpoint_bytes'])} GiB checkpoint "
                f"(largest tensor {_gib(record['largest_tensor_bytes'])} GiB)"
                + (f"; below the {cap:g} GiB cap: {_verdict(gpu, gpu <= cap * 2**30)}." if cap else ".")
            )
    if loaded and "max_rel_alpha_difference" in loaded:
        lines.append(
            f"Loaded vs streamed rows: same layers {loaded['same_layers']}, max relative alpha difference "
            f"{fmt(loaded['max_rel_alpha_difference'])}."
        )
    lines += ["", f"Alpha (fix_fingers none) vs float64 SVD on {len(record['sample'])} sampled layers:", ""]
    lines += _agreement_lines(record["agreement"])
    return "\n".join(lines)


def table(record: dict, variants: dict) -> str:
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
            eig = [r["eig_seconds"] for r in run["repeats"]]
            spread_note = f" (median of {len(eig)}: {fmt(min(eig))}–{fmt(max(eig))} s)" * (len(eig) > 1)
            lines.append(
                f"| ours, {name} | {run['layers']} | {fmt(run['wall_seconds'])} | "
                f"eig {fmt(run['eig_seconds'])} s{spread_note} + fit {fmt(run['fit_seconds'])} s |"
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
        eig_goal_line(runs, record["agreement"], variants, record["device"]),
        "",
        f"Alpha vs float64 SVD reference on {len(record['sample'])} real-shape layers:",
        "",
        *_agreement_lines(record["agreement"]),
    ]
    if record.get("profile"):
        lines += profile_lines(record["profile"])
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU, smollm2-135m architecture")
    parser.add_argument("--arch", default=None, help="architecture preset (default: qwen2.5-7b)")
    parser.add_argument("--ww-layers", type=int, default=None, help="WeightWatcher subset size")
    parser.add_argument("--sample", type=int, default=None, help="layers in the alpha-agreement sample")
    parser.add_argument(
        "--ww-cpu",
        action="store_true",
        help="also (with --checkpoint: instead) time WeightWatcher's CPU path, in a child without CUDA",
    )
    parser.add_argument(
        "--default-only", action="store_true", help=f"time only the default variant ({DEFAULT})"
    )
    parser.add_argument(
        "--variants",
        help=f"time only these variants, |-separated names (e.g. '{DEFAULT}|float64, cusolver batched')",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed runs per variant (odd: the median run is reported)"
    )
    parser.add_argument("--profile-eig", action="store_true", help="profile one eigensolve per path (GPU)")
    parser.add_argument("--write-checkpoint", metavar="DIR", help="write the preset as sharded safetensors")
    parser.add_argument("--shard-gib", type=float, default=4.0, help="shard size for --write-checkpoint")
    parser.add_argument("--checkpoint", metavar="DIR", help="streamed ESD of this checkpoint (see above)")
    parser.add_argument(
        "--gpu-cap-gib", type=float, help="--checkpoint: GPU memory each streamed run may use"
    )
    parser.add_argument("--loaded", action="store_true", help="--checkpoint: also the loaded path")
    parser.add_argument("--ww-child", help=argparse.SUPPRESS)
    parser.add_argument("--loaded-child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    if args.ww_child:
        _ww_child(args.ww_child)
        return
    if args.loaded_child:
        _loaded_child(args.loaded_child, args.out)
        return
    device = "cpu" if args.small or not torch.cuda.is_available() else "cuda"
    arch = args.arch or ("smollm2-135m" if args.small else "qwen2.5-7b")
    if args.write_checkpoint:
        dtype = torch.float32 if args.small else torch.bfloat16
        written = write_checkpoint(arch, Path(args.write_checkpoint), dtype, args.shard_gib, device)
        written["peak_rss_bytes"] = resource_peak()
        save("esd_write_checkpoint", written)
        print(json.dumps(written, indent=1))
        return
    if args.checkpoint:
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(os.environ.get("OUT") or scratch) / "esd_runs"
            record = checkpoint_bench(Path(args.checkpoint), args, out)
        save("esd_checkpoint", record)
        print(checkpoint_table(record))
        return

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
    if args.default_only or args.variants:
        names = [DEFAULT] if args.default_only else [n.strip() for n in args.variants.split("|")]
        unknown = [n for n in names if n not in variants]
        if unknown:
            raise SystemExit(f"unknown variant {unknown[0]!r}: use {' | '.join(variants)}")
        variants = {n: variants[n] for n in names}
    record["ours"] = ours(model, variants, record["weightwatcher"]["subset"], args.repeats)
    sample_size = args.sample or (5 if args.small else 8)
    record["sample"] = spread(shapes_of(modules), sample_size, max_dim=SAMPLE_MAX_DIM)
    record["agreement"] = agreement(model, record["sample"], accuracy_paths(device))
    if args.profile_eig:
        orders = [min(shape) for shape in shapes_of(modules).values()]
        record["profile"] = profile_eig(max(set(orders), key=orders.count))
    record["total_seconds"] = time.perf_counter() - started
    save("esd", record)
    print(table(record, variants))


def resource_peak() -> int:
    """This process's peak resident memory in bytes (Linux reports kilobytes)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    main()
