"""The ESD estimator against an independent float64 numpy reference written from the definitions here.

The reference is deliberately slow and simple: eigenvalues from a float64 SVD (λ = σ²), and for the
power-law fit a Python loop over candidate xmins, each with its own Hill estimate and KS distance.

Accuracy contract checked here (see lm_eval_perf/tasks/esd/spectrum.py for why):

* ``eig_dtype=float64`` (the default): every eigenvalue within 1e-9·λmax of the SVD's, every column to
  rtol 1e-9 (integers exactly), for every ``fix_fingers`` mode.
* ``eig_dtype=float32``: "relative" means relative to λmax - every eigenvalue within 1e-5·λmax - and, per
  eigenvalue, within 1e-5 of itself for the eigenvalues at or above the fit's xmin (the part of the
  spectrum the fit uses). A float32 Gram matrix cannot resolve eigenvalues far below λmax on their own
  (its rounding error is ~eps32·λmax), so no per-eigenvalue bound is claimed below xmin. alpha
  (``fix_fingers`` None and ``xmin_mid``) within 1e-3 relative; spectral_norm, norm, stable_rank and
  their logs within 1e-5 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.tasks.esd import spectrum
from lm_eval_perf.tasks.esd.estimator import ESDOptions, analyze

# -- the reference ---------------------------------------------------------------------------------


def reference_eigenvalues(weight: np.ndarray, conv_norm: float = 0.5) -> np.ndarray:
    """All eigenvalues of WᵀW, ascending, from a float64 SVD; a convolution as one matrix per tap."""
    weight = weight.astype(np.float64)
    if weight.ndim == 2:
        matrices = [weight]
    else:
        taps = weight.reshape(weight.shape[0], weight.shape[1], -1)
        matrices = [taps[:, :, k] * math.sqrt(conv_norm) for k in range(taps.shape[2])]
    return np.sort(np.concatenate([np.linalg.svd(m, compute_uv=False) ** 2 for m in matrices]))


def reference_hill(tail: np.ndarray) -> float:
    """alpha = 1 + n / Σ ln(λ_j / xmin) over the tail λ_j ≥ xmin = tail[0]."""
    return 1.0 + len(tail) / float(np.sum(np.log(tail / tail[0])))


def reference_ks(tail: np.ndarray, alpha: float) -> float:
    """max_j |1 - (λ_j/xmin)^(1-alpha) - j/n|: fitted power-law CDF vs the tail's empirical CDF."""
    n = len(tail)
    return float(np.max(np.abs(1 - (tail / tail[0]) ** (1 - alpha) - np.arange(n) / n)))


def reference_fit(evals: np.ndarray, fix_fingers: str | None, xmin_pos: float, bins: int) -> tuple:
    """(alpha, D, xmin) of ascending ``evals`` as the reference net_esd_estimator chooses them."""
    n = len(evals)
    if n < 2:
        return math.nan, math.nan, math.nan
    if fix_fingers == "xmin_mid":
        i = int(n / xmin_pos)
        alpha = reference_hill(evals[i:])
        return alpha, reference_ks(evals[i:], alpha), evals[i]
    low, high = -math.inf, math.inf
    if fix_fingers == "xmin_peak":
        counts, edges = np.histogram(np.log10(evals[evals > 0]), bins=bins)
        peak = 10 ** edges[int(np.argmax(counts))]
        low, high = math.log10(0.95 * peak), 1.5 * peak  # the reference compares λ with a log here
    best = (math.inf, 0.0, 0)  # (D, alpha, index); D = 1 and alpha = 0 for candidates left out
    for i in range(n - 1):
        if not low <= evals[i] <= high:
            distance, alpha = 1.0, 0.0
        else:
            alpha = reference_hill(evals[i:])
            distance = reference_ks(evals[i:], alpha) if alpha > 1 else 1.0
        if distance < best[0]:
            best = (distance, alpha, i)
    return best[1], best[0], evals[best[2]]


def reference_row(weight: np.ndarray, options: ESDOptions) -> dict:
    evals = reference_eigenvalues(weight, options.conv_norm)
    top, total = evals[-1], evals.sum()
    eps = float(np.finfo(np.float32 if options.eig_dtype == "float32" else np.float64).eps)
    rank = int(np.sum(evals > top * max(weight.shape[:2]) * eps))
    p = evals / total + 1e-10
    fit_set = evals[evals > options.evals_thresh] if options.filter_zeros else evals
    fit_set = fit_set if len(fit_set) else evals
    alpha, distance, xmin = reference_fit(fit_set, options.fix_fingers, options.xmin_pos, options.bins)
    return {
        "M": weight.shape[0],
        "N": weight.shape[1],
        "num_evals": len(fit_set),
        "alpha": alpha,
        "alpha_weighted": alpha * math.log10(top),
        "D": distance,
        "xmin": xmin,
        "xmax": fit_set[-1],
        "spectral_norm": top,
        "log_spectral_norm": math.log10(top),
        "norm": total,
        "log_norm": math.log10(total),
        "stable_rank": total / top,
        "entropy": float(-np.sum(p * np.log(p)) / math.log(rank + 1e-10)),
        "matrix_rank": rank,
    }


# -- fixtures --------------------------------------------------------------------------------------


def _model(seed: int = 0) -> nn.Module:
    """Linear layers of several shapes (M<N, M>N, square, three of one shape: a batch) and two convs."""
    torch.manual_seed(seed)
    layers = nn.ModuleDict(
        {
            "wide": nn.Linear(160, 96),  # weight 96x160: M < N
            "tall": nn.Linear(96, 160),  # weight 160x96: M > N
            "square": nn.Linear(128, 128, bias=False),
            "same_a": nn.Linear(200, 64),
            "same_b": nn.Linear(200, 64),
            "same_c": nn.Linear(200, 64),
            "conv2d": nn.Conv2d(6, 10, kernel_size=3),
            "conv1d": nn.Conv1d(12, 8, kernel_size=2),
        }
    )
    return layers.double()


def _pareto_matrix(alpha: float, rows: int, cols: int, seed: int) -> np.ndarray:
    """W = U diag(s) Vᵀ whose eigenvalues λ = s² are drawn from p(λ) ∝ λ^-alpha, λ ≥ 1."""
    rng = np.random.default_rng(seed)
    n = min(rows, cols)
    evals = (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))  # inverse CDF of the Pareto law
    u, _ = np.linalg.qr(rng.standard_normal((rows, n)))
    v, _ = np.linalg.qr(rng.standard_normal((cols, n)))
    return (u * np.sqrt(evals)) @ v.T


def _compare(rows: list[dict], model: nn.Module, options: ESDOptions, rtol: float) -> None:
    modules = dict(model.named_modules())
    for row in rows:
        expected = reference_row(modules[row["longname"]].weight.detach().numpy(), options)
        for column, value in expected.items():
            if isinstance(value, int):
                assert row[column] == value, (row["longname"], column)
            else:
                assert row[column] == pytest.approx(value, rel=rtol, abs=0), (row["longname"], column)


# -- float64: everything matches the reference ------------------------------------------------------


@pytest.mark.parametrize("fix_fingers", [None, "xmin_mid", "xmin_peak"])
def test_float64_rows_match_the_svd_reference_in_every_column(fix_fingers):
    model = _model()
    options = ESDOptions(fix_fingers=fix_fingers)
    result = analyze(model, options)
    assert [r["longname"] for r in result.rows] == [n for n, _ in model.named_children()]
    _compare(result.rows, model, options, rtol=1e-9)


def test_eigenvalues_match_the_svd_reference_relative_to_the_largest():
    model = _model()
    layers = spectrum.layer_weights(model.float())
    for dtype, bound in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        for layer, evals in zip(layers, spectrum.layer_eigenvalues(layers, dtype)):
            expected = reference_eigenvalues(layer.weight.detach().double().numpy())
            got = evals.double().numpy()
            assert got.shape == expected.shape
            assert np.max(np.abs(got - expected)) <= bound * expected[-1], layer.name


def test_float32_matches_the_reference_where_its_contract_says():
    model = _model().float()
    for fix_fingers in (None, "xmin_mid"):
        options = ESDOptions(fix_fingers=fix_fingers, eig_dtype="float32")
        layers = spectrum.layer_weights(model)
        evals = spectrum.layer_eigenvalues(layers, torch.float32)
        for layer, got, row in zip(layers, evals, analyze(model, options).rows):
            expected_row = reference_row(layer.weight.detach().double().numpy(), options)
            expected = reference_eigenvalues(layer.weight.detach().double().numpy())
            fitted = expected >= expected_row["xmin"]
            relative = np.abs(got.double().numpy() - expected)[fitted] / expected[fitted]
            assert relative.max() <= 1e-5, layer.name
            assert row["alpha"] == pytest.approx(expected_row["alpha"], rel=1e-3), layer.name
            for column in ("spectral_norm", "norm", "stable_rank", "log_spectral_norm", "log_norm"):
                assert row[column] == pytest.approx(expected_row[column], rel=1e-5), (layer.name, column)


def test_batching_does_not_change_the_result():
    model = _model()
    one_by_one = analyze(model, ESDOptions(batch_gib=1e-9)).rows  # batch size 1
    together = analyze(model, ESDOptions()).rows
    for a, b in zip(one_by_one, together):
        assert a["longname"] == b["longname"]
        for column in ("alpha", "D", "spectral_norm", "entropy", "matrix_rank"):
            assert a[column] == pytest.approx(b[column], rel=1e-12, abs=0)


# -- the fit itself ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fix_fingers", [None, "xmin_mid", "xmin_peak"])
def test_alpha_of_a_pareto_spectrum_is_near_the_true_exponent(fix_fingers):
    """Eigenvalues drawn from p(λ) ∝ λ^-2.5: the estimate lies within 4 standard errors of 2.5.

    The Hill/MLE estimate from n tail eigenvalues has standard error (alpha - 1) / sqrt(n) (Clauset,
    Shalizi & Newman 2009, eq. 3.2); 4 of them leave a fixed-seed draw no room to pass by luck while
    a wrong formula (e.g. a missing +1, or log10 for ln, off by 1 or by a factor 2.3) fails.
    """
    true_alpha = 2.5
    weight = _pareto_matrix(true_alpha, rows=768, cols=512, seed=7)
    layer = nn.Linear(512, 768, bias=False).double()
    layer.weight.data = torch.from_numpy(weight)
    row = analyze(layer, ESDOptions(fix_fingers=fix_fingers)).rows[0]
    evals = reference_eigenvalues(weight)
    tail = int(np.sum(evals >= row["xmin"]))
    standard_error = (row["alpha"] - 1) / math.sqrt(tail)
    assert tail >= 100
    assert abs(row["alpha"] - true_alpha) <= 4 * standard_error


def test_xmin_follows_each_fix_fingers_mode():
    model = _model()
    weight = model["tall"].weight.detach().numpy()
    evals = reference_eigenvalues(weight)
    rows = {
        ff: analyze(model["tall"], ESDOptions(fix_fingers=ff)).rows[0] for ff in ("xmin_mid", "xmin_peak")
    }
    assert rows["xmin_mid"]["xmin"] == pytest.approx(evals[len(evals) // 2], rel=1e-9)
    counts, edges = np.histogram(np.log10(evals), bins=100)
    peak = 10 ** edges[np.argmax(counts)]
    assert rows["xmin_peak"]["xmin"] <= 1.5 * peak


def test_filter_zeros_leaves_the_null_space_out_of_the_fit():
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((64, 20)) @ rng.standard_normal((20, 48)) * 0.05  # rank 20 of 48
    layer = nn.Linear(48, 64, bias=False).double()
    layer.weight.data = torch.from_numpy(weight)
    for filter_zeros in (False, True):
        options = ESDOptions(filter_zeros=filter_zeros)
        row = analyze(layer, options).rows[0]
        expected = reference_row(weight, options)
        assert row["num_evals"] == (20 if filter_zeros else 48)
        assert row["matrix_rank"] == expected["matrix_rank"] == 20
        assert row["alpha"] == pytest.approx(expected["alpha"], rel=1e-9)


def test_a_spectrum_too_short_to_fit_has_nan_alpha_not_zero():
    layer = nn.Linear(8, 1).double()
    row = analyze(layer, ESDOptions()).rows[0]
    assert row["num_evals"] == 1
    assert math.isnan(row["alpha"]) and math.isnan(row["D"])
    assert row["spectral_norm"] == pytest.approx(float((layer.weight.detach() ** 2).sum()), rel=1e-12)


# -- options and inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"fix_fingers": "xmin_median"}, "fix_fingers"),
        ({"eig_dtype": "bfloat16"}, "eig_dtype"),
        ({"bins": 0}, "bins"),
        ({"bins": 2.5}, "bins"),
        ({"xmin_pos": 1}, "xmin_pos"),
        ({"filter_zeros": "maybe"}, "filter_zeros"),
        ({"evals_thresh": "small"}, "evals_thresh"),
        ({"eig_streams": 0}, "eig_streams"),
        ({"eig_solver": "magma"}, "eig_solver"),
    ],
)
def test_bad_options_are_one_line_user_errors(options, message):
    with pytest.raises(UserInputError, match=message) as caught:
        ESDOptions.from_mapping(options)
    assert "\n" not in str(caught.value)


def test_options_from_yaml_spellings():
    options = ESDOptions.from_mapping(
        {"fix_fingers": "none", "filter_zeros": "true", "bins": "50", "xmin_pos": 3, "other_task_key": 1}
    )
    assert options == ESDOptions(fix_fingers=None, filter_zeros=True, bins=50, xmin_pos=3.0)


def test_a_quantized_weight_is_refused():
    layer = nn.Linear(4, 4)
    layer.weight = nn.Parameter(torch.zeros(4, 4, dtype=torch.int8), requires_grad=False)
    with pytest.raises(UserInputError, match="floating-point"):
        analyze(layer)


def test_tf32_setting_is_restored_after_the_gram_matmul():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        with spectrum.exact_fp32_matmul():
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_the_batched_cusolver_path_is_refused_off_the_gpu_and_auto_falls_back_to_torch():
    with pytest.raises(UserInputError, match="CUDA device") as caught:
        analyze(_model(), ESDOptions(eig_solver="cusolver_batched"))
    assert "\n" not in str(caught.value)
    assert analyze(_model()).rows == analyze(_model(), ESDOptions(eig_solver="torch")).rows


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuSOLVER's XsyevBatched needs a CUDA GPU")
@pytest.mark.parametrize("eig_dtype", ["float64", "float32"])
def test_the_batched_cusolver_path_gives_the_default_paths_rows(eig_dtype):
    model = _model().cuda()
    default = analyze(model, ESDOptions(eig_dtype=eig_dtype, eig_solver="torch")).rows
    batched = analyze(model, ESDOptions(eig_dtype=eig_dtype, eig_solver="cusolver_batched")).rows
    rel = 1e-9 if eig_dtype == "float64" else 1e-4
    for a, b in zip(batched, default):
        for column in ("alpha", "spectral_norm", "stable_rank", "norm"):
            assert a[column] == pytest.approx(b[column], rel=rel), (a["longname"], column)


def test_a_gram_summed_over_slices_equals_the_one_matmul_gram(monkeypatch):
    """A weight larger than GRAM_CHUNK_BYTES is converted slice by slice: same Gram, same rows."""
    model = _model()
    whole = analyze(model).rows
    torch.manual_seed(1)
    stack = torch.randn(3, 301, 40, dtype=torch.float32)
    monkeypatch.setattr(spectrum, "GRAM_CHUNK_BYTES", 3 * 40 * 8 * 7)  # 7 rows (columns) per slice
    for matrices in (stack, stack.mT.contiguous()):  # tall: WᵀW; wide: WWᵀ (40 × 40 both)
        w = matrices.double()
        expected = w.mT @ w if w.shape[-2] >= w.shape[-1] else w @ w.mT
        sliced = spectrum.gram_matrices(matrices, torch.float64)
        assert sliced.shape == (3, 40, 40)
        assert torch.allclose(sliced, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))
    for a, b in zip(analyze(model).rows, whole):
        for column in ("alpha", "spectral_norm", "stable_rank", "entropy", "matrix_rank"):
            assert a[column] == pytest.approx(b[column], rel=1e-9, abs=0), (a["longname"], column)
