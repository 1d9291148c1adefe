"""ESD of a whole model: one row of spectral metrics per weight matrix. Needs torch only, not lm-eval.

    from lm_eval_perf.tasks.esd.estimator import ESDOptions, analyze
    result = analyze(model, ESDOptions(fix_fingers="xmin_mid"))   # result.rows: list of dicts

For each analysed layer (see :mod:`.spectrum`) with weight W (M×N) and the eigenvalues
λ_1 ≤ … ≤ λ_n of WᵀW (n = min(M, N), times the kernel positions for a convolution):

=================  =====================================================================================
column             definition
=================  =====================================================================================
longname           the module's dotted name in ``model.named_modules()``
M, N               ``weight.shape[0]``, ``weight.shape[1]``
params             elements of the module's own parameters (weight and bias)
spectral_norm      λmax = largest eigenvalue (= squared largest singular value of W)
log_spectral_norm  log10 λmax
norm               Σ λ_i = ‖W‖_F², the squared Frobenius norm (what the reference and WeightWatcher
                   call ``norm``/``fnorm``)
log_norm           log10 Σ λ_i
stable_rank        Σ λ_i / λmax
matrix_rank        #{λ_i > λmax · max(M, N) · eps}, eps the machine epsilon of ``eig_dtype``: the rank of WᵀW
                   as numpy's ``matrix_rank`` decides it from the eigenvalues computed here. (The
                   reference counts σ_i > σmax · max(M, N) · eps on singular values from an SVD; the Gram
                   route cannot resolve singular values below ~sqrt(eps)·σmax, so the threshold is the one
                   that matches this computation's accuracy. Both agree unless singular values lie between
                   σmax·max(M,N)·eps and σmax·sqrt(max(M,N)·eps).)
entropy            WeightWatcher's matrix entropy: -Σ p_i ln p_i / ln(matrix_rank + ε) with
                   p_i = λ_i / Σ λ_j + ε and ε = 1e-10 (normalized spectral entropy, 1 for a flat spectrum)
num_evals          eigenvalues in the power-law fit set: all, or those > ``evals_thresh`` with
                   ``filter_zeros`` (all again if none is)
alpha, D, xmin     the power-law fit of the fit set: Hill/MLE exponent, its KS distance, and the chosen
                   lower cut-off λ_i (see :mod:`.powerlaw` for the formulas and the ``fix_fingers`` modes)
xmax               largest eigenvalue of the fit set (= λmax)
alpha_weighted     alpha · log10 λmax
=================  =====================================================================================

The norm columns use all eigenvalues, the fit columns the fit set, as the reference does. A value that
is undefined (e.g. alpha of a spectrum with fewer than 2 eigenvalues, log of a zero norm) is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch
from torch import nn

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.monitor.clock import clock_for
from lm_eval_perf.tasks.esd import powerlaw, spectrum
from lm_eval_perf.tasks.options import boolean_option
from lm_eval_perf.tasks.traits import ESD_BATCH_GIB

COLUMNS = (
    "longname",
    "M",
    "N",
    "params",
    "num_evals",
    "alpha",
    "alpha_weighted",
    "D",
    "xmin",
    "xmax",
    "spectral_norm",
    "log_spectral_norm",
    "norm",
    "log_norm",
    "stable_rank",
    "entropy",
    "matrix_rank",
)
ENTROPY_EPSILON = 1e-10  # WeightWatcher's EPSILON in matrix_entropy


@dataclass(frozen=True)
class ESDOptions:
    """How the spectra are computed and fitted (defaults: the reference's, float64 eigenvalues)."""

    fix_fingers: str | None = None  # None (full KS scan), "xmin_mid" or "xmin_peak"
    evals_thresh: float = 1e-5  # with filter_zeros: eigenvalues <= this leave the fit set
    bins: int = 100  # histogram bins of log10 λ for xmin_peak
    filter_zeros: bool = False
    xmin_pos: float = 2.0  # xmin_mid: xmin = λ[floor(N / xmin_pos)]
    conv_norm: float = 0.5  # convolution matrices are scaled by sqrt(conv_norm)
    eig_dtype: str = "float64"  # of the Gram matrices and their eigenvalues (see .spectrum: accuracy)
    batch_gib: float = ESD_BATCH_GIB  # device memory (GiB) one stacked batch of same-shape matrices may use
    eig_streams: int = 1  # batches solved concurrently on CUDA side streams (see .streams)
    eig_solver: str = "auto"  # auto | torch | cusolver_batched (see spectrum.gram_eigenvalues)

    def __post_init__(self) -> None:
        if self.fix_fingers not in (None, *powerlaw.FIX_FINGERS):
            modes = ", ".join(("none", *powerlaw.FIX_FINGERS))
            raise UserInputError(f"esd fix_fingers={self.fix_fingers!r}: use one of {modes}")
        spectrum.parse_dtype(self.eig_dtype)
        spectrum.check_solver(self.eig_solver)
        checks = (
            ("evals_thresh", self.evals_thresh >= 0, ">= 0"),
            ("bins", self.bins >= 1, ">= 1"),
            ("xmin_pos", self.xmin_pos > 1, "> 1"),
            ("conv_norm", self.conv_norm > 0, "> 0"),
            ("batch_gib", self.batch_gib > 0, "> 0"),
            ("eig_streams", self.eig_streams >= 1, ">= 1"),
        )
        for name, ok, limit in checks:
            if not ok:
                raise UserInputError(f"esd {name}={getattr(self, name)!r}: must be {limit}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> ESDOptions:
        """Options as given in YAML/JSON (strings, numbers, booleans); keys not named here are ignored."""
        values: dict[str, Any] = {}
        for name in cls.names():
            if name not in options:
                continue
            value = options[name]
            if name == "fix_fingers":
                value = None if value in (None, "none", "None", "") else value
            elif name == "filter_zeros":
                value = boolean_option(f"esd {name}", value)
            elif name == "eig_dtype":
                value = str(value).removeprefix("torch.")
            elif name == "eig_solver":
                value = str(value)
            else:
                value = _number(name, value, int if name in ("bins", "eig_streams") else float)
            values[name] = value
        return cls(**values)


def _number(name: str, value: Any, kind: type) -> float | int:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise UserInputError(f"esd {name}={value!r}: must be a number") from None
    if isinstance(value, bool) or (kind is int and number != float(value)) or not math.isfinite(number):
        raise UserInputError(f"esd {name}={value!r}: must be a finite {kind.__name__}")
    return number


class LayerInfo(Protocol):
    """What a row needs to know of a layer besides its spectrum (:class:`.spectrum.LayerWeight` has it)."""

    name: str
    M: int
    N: int
    params: int


@dataclass(frozen=True)
class ESDResult:
    """Per-layer rows (:data:`COLUMNS`) and where the time went, in seconds (device-synchronized)."""

    rows: list[dict[str, Any]]
    eig_seconds: float  # weights -> eigenvalues (Gram matmul + eigvalsh)
    fit_seconds: float  # eigenvalues -> metrics (norms, entropy, power-law fits)


def spectral_metrics(
    evals: torch.Tensor, max_dim: torch.Tensor, options: ESDOptions
) -> dict[str, torch.Tensor]:
    """All columns but the names/shapes for a batch of ascending spectra (B, n); each value (B,)."""
    evals = evals.to(torch.float64)
    n = evals.shape[-1]
    eps = torch.finfo(spectrum.parse_dtype(options.eig_dtype)).eps
    top = evals[:, -1]
    total = evals.sum(-1)
    rank = (evals > (top * max_dim.to(evals) * eps)[:, None]).sum(-1)
    p = evals / total[:, None] + ENTROPY_EPSILON
    entropy = -(p * torch.log(p)).sum(-1) / torch.log(rank.to(evals) + ENTROPY_EPSILON)
    if options.filter_zeros:
        start = (evals <= options.evals_thresh).sum(-1)
        start = torch.where(start == n, torch.zeros_like(start), start)
    else:
        start = torch.zeros(evals.shape[0], dtype=torch.long, device=evals.device)
    fit = powerlaw.fit_power_law(evals, start, options.fix_fingers, options.xmin_pos, options.bins)
    return {
        "num_evals": n - start,
        "alpha": fit.alpha,
        "alpha_weighted": fit.alpha * torch.log10(top),
        "D": fit.D,
        "xmin": fit.xmin,
        "xmax": top,
        "spectral_norm": top,
        "log_spectral_norm": torch.log10(top),
        "norm": total,
        "log_norm": torch.log10(total),
        "stable_rank": total / top,
        "entropy": entropy,
        "matrix_rank": rank,
    }


def eigenvalues(layers: Sequence[spectrum.LayerWeight], options: ESDOptions) -> list[torch.Tensor]:
    """All eigenvalues of each layer's WᵀW as ``options`` say (dtype, batch memory, streams, solver)."""
    return spectrum.layer_eigenvalues(
        layers,
        spectrum.parse_dtype(options.eig_dtype),
        options.conv_norm,
        int(options.batch_gib * 2**30),
        options.eig_streams,
        options.eig_solver,
    )


def layer_rows(
    layers: Sequence[LayerInfo], evals: Sequence[torch.Tensor], options: ESDOptions
) -> list[dict[str, Any]]:
    """One row of :data:`COLUMNS` per layer from its eigenvalues (spectra of one length and device are
    fitted together)."""
    groups: dict[tuple, list[int]] = {}
    for index, values in enumerate(evals):
        groups.setdefault((values.numel(), values.device), []).append(index)
    rows: list[dict[str, Any]] = [{} for _ in layers]
    for members in groups.values():
        stacked = torch.stack([evals[i] for i in members])
        max_dim = torch.tensor([max(layers[i].M, layers[i].N) for i in members], device=stacked.device)
        metrics = {k: v.tolist() for k, v in spectral_metrics(stacked, max_dim, options).items()}
        for position, i in enumerate(members):
            layer = layers[i]
            rows[i] = {"longname": layer.name, "M": layer.M, "N": layer.N, "params": layer.params}
            rows[i].update({k: metrics[k][position] for k in COLUMNS if k in metrics})
    return rows


def analyze(model: nn.Module, options: ESDOptions | None = None) -> ESDResult:
    """Per-layer ESD metrics of every analysed layer of ``model``, computed where its weights are."""
    options = options or ESDOptions()
    layers = spectrum.layer_weights(model)
    if not layers:
        raise UserInputError(f"{type(model).__name__} has no Linear or Conv layer to analyse")
    devices = sorted({w.weight.device.index or 0 for w in layers if w.weight.device.type == "cuda"})
    clock = clock_for(devices)
    started = clock.now()
    evals = eigenvalues(layers, options)
    computed = clock.now()
    rows = layer_rows(layers, evals, options)
    finished = clock.now()
    return ESDResult(rows, computed - started, finished - computed)
