"""Power-law fit of eigenvalue spectra: Hill/MLE exponent, xmin by minimum KS distance, batched.

Definitions (those of the reference ``net_esd_estimator`` of TempBalance / AlphaPruning, which follows
WeightWatcher's fit; Clauset, Shalizi & Newman 2009). For one spectrum λ_0 ≤ … ≤ λ_{N-1} (the fit set:
all eigenvalues, or those > ``evals_thresh`` with ``filter_zeros``) and a candidate index i
(xmin = λ_i, n_i = N - i eigenvalues in the tail):

* alpha_i = 1 + n_i / (Σ_{j≥i} ln λ_j - n_i · ln λ_i)                 (Hill / maximum likelihood)
* D_i = max_{j≥i} | 1 - (λ_j / λ_i)^(1 - alpha_i) - (j - i) / n_i |   (Kolmogorov-Smirnov distance
  between the fitted power law's CDF and the empirical CDF of the tail, as the reference writes it)

``fix_fingers`` chooses the candidate:

* ``None`` - every i in 0 … N-2 is a candidate; a candidate with alpha_i ≤ 1 (or undefined, e.g. at a
  zero eigenvalue) gets D = 1. The fit is the first i of minimum D.
* ``"xmin_peak"`` - as ``None``, restricted to candidates with ``log10(0.95·p) ≤ λ_i ≤ 1.5·p`` where p is
  the left edge of the fullest of ``bins`` equal-width bins of log10 λ over [min, max] (first one on a
  tie); left-out candidates get alpha = 0, D = 1. The lower bound compares λ with a *logarithm*
  exactly as the reference code does (WeightWatcher itself uses 0.95·p); it is kept so that results
  equal the published AlphaPruning/TempBalance numbers. Non-positive eigenvalues are left out of the
  histogram (the reference would fail on them).
* ``"xmin_mid"`` - the single candidate i = floor(N / xmin_pos) (the median for xmin_pos = 2); D is
  computed whatever alpha is.

A spectrum with fewer than 2 eigenvalues in the fit set has no fit: alpha, D and xmin are NaN.

Everything runs in float64 on the spectra's device: the Hill denominator is a difference of two sums of
thousands of logarithms (cancellation), and the KS search is O(N²) elementwise work done in chunks of
candidate rows - vectorized over all candidates of all spectra in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FIX_FINGERS = ("xmin_mid", "xmin_peak")
CHUNK_ELEMENTS = 1 << 24  # elements of one (batch, candidates, N) block of the KS search


@dataclass(frozen=True)
class PowerLawFit:
    """Per spectrum of a batch (all float64 tensors of shape (B,), on the spectra's device)."""

    alpha: torch.Tensor
    D: torch.Tensor
    xmin: torch.Tensor


def hill_alphas(log_evals: torch.Tensor) -> torch.Tensor:
    """alpha_i for every candidate i of ascending log-spectra (B, N); the last column is undefined."""
    n = log_evals.shape[-1]
    tail = torch.arange(n, 0, -1, device=log_evals.device, dtype=log_evals.dtype)  # n_i = N - i
    suffix = log_evals.flip(-1).cumsum(-1).flip(-1)  # Σ_{j≥i} ln λ_j
    return 1 + tail / (suffix - tail * log_evals)


def ks_distances(log_evals: torch.Tensor, alphas: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """D_i for the candidates ``wanted`` (B, N) bool marks; NaN elsewhere."""
    batch, n = log_evals.shape
    distances = torch.full_like(log_evals, float("nan"))
    columns = torch.nonzero(wanted.any(0)).flatten()
    if columns.numel() == 0:
        return distances
    j = torch.arange(n, device=log_evals.device)
    step = max(1, CHUNK_ELEMENTS // (batch * n))
    for start in range(0, columns.numel(), step):
        i = columns[start : start + step]
        offset = j[None, :] - i[:, None]  # (r, N): j - i
        empirical = offset.to(log_evals.dtype) / (n - i)[:, None].to(log_evals.dtype)
        exponent = (1 - alphas[:, i])[:, :, None] * (log_evals[:, None, :] - log_evals[:, i, None])
        gap = (1 - torch.exp(exponent) - empirical).abs()
        gap = torch.where(offset[None] >= 0, gap, torch.zeros((), dtype=gap.dtype, device=gap.device))
        distances[:, i] = gap.amax(-1)
    return distances


def _peak_candidates(evals: torch.Tensor, in_fit: torch.Tensor, bins: int) -> torch.Tensor:
    """The ``xmin_peak`` window of each spectrum as a (B, N) bool mask (see the module docstring)."""
    positive = in_fit & (evals > 0)
    logs = torch.log10(torch.where(positive, evals, torch.ones_like(evals)))
    low = torch.where(positive, logs, torch.full_like(logs, float("inf"))).amin(-1, keepdim=True)
    high = torch.where(positive, logs, torch.full_like(logs, float("-inf"))).amax(-1, keepdim=True)
    width = high - low
    scale = torch.where(width > 0, bins / width, torch.zeros_like(width))
    which = ((logs - low) * scale).floor().clamp(0, bins - 1).long()
    which = torch.where(positive, which, torch.zeros_like(which))
    counts = torch.zeros(evals.shape[0], bins, dtype=evals.dtype, device=evals.device)
    counts.scatter_add_(1, which, positive.to(evals.dtype))
    peak = 10 ** (low + counts.argmax(-1, keepdim=True) * width / bins)
    return (evals >= torch.log10(0.95 * peak)) & (evals <= 1.5 * peak)


def fit_power_law(
    evals: torch.Tensor,
    start: torch.Tensor,
    fix_fingers: str | None = None,
    xmin_pos: float = 2.0,
    bins: int = 100,
) -> PowerLawFit:
    """Fit each row of ascending spectra ``evals`` (B, N), using the eigenvalues from ``start`` (B,) on.

    ``start[b]`` is the index of the first eigenvalue of row b's fit set (those before it were filtered
    as zeros); the fit set's own indices are the row's indices minus ``start[b]``.
    """
    evals = evals.to(torch.float64)
    batch, n = evals.shape
    device = evals.device
    index = torch.arange(n, device=device)[None, :].expand(batch, n)
    start = start.to(device)[:, None]
    size = n - start  # eigenvalues in each fit set
    logs = torch.log(evals)
    alphas = hill_alphas(logs)
    nan = torch.full((batch,), float("nan"), dtype=torch.float64, device=device)
    if fix_fingers == "xmin_mid":
        chosen = start + torch.floor(size.to(torch.float64) / xmin_pos).long()
        chosen = chosen.clamp(max=n - 1)
        wanted = index == chosen
        distances = ks_distances(logs, alphas, wanted)
        alpha, dist = alphas.gather(1, chosen).squeeze(1), distances.gather(1, chosen).squeeze(1)
    else:
        candidate = (index >= start) & (index < n - 1)
        if fix_fingers == "xmin_peak":
            candidate &= _peak_candidates(evals, index >= start, bins)
        wanted = candidate & (alphas > 1)
        distances = ks_distances(logs, alphas, wanted)
        one, inf = torch.ones_like(evals), torch.full_like(evals, float("inf"))
        scored = torch.where(wanted, distances, one)
        scored = torch.where((index >= start) & (index < n - 1), scored, inf)  # outside the fit set
        chosen = scored.argmin(-1, keepdim=True)  # first index of the minimum, as torch.argmin
        alpha = torch.where(candidate, alphas, torch.zeros_like(alphas)).gather(1, chosen).squeeze(1)
        dist = scored.gather(1, chosen).squeeze(1)
    xmin = evals.gather(1, chosen).squeeze(1)
    fitted = size.squeeze(1) >= 2
    return PowerLawFit(
        alpha=torch.where(fitted, alpha, nan),
        D=torch.where(fitted, dist, nan),
        xmin=torch.where(fitted, xmin, nan),
    )
