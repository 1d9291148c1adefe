"""Weight matrices of a model and the eigenvalues of WᵀW, batched on the weights' own devices.

Which layers: every ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and transformers' ``Conv1D`` (the
GPT-2 family's 2-D "linear" weight), as the reference ``net_esd_estimator`` selects them. A 2-D
weight W (M×N) is one matrix. A convolution weight (out, in, *kernel) is, as in the reference,
``k = prod(kernel)`` matrices of shape out×in scaled by ``sqrt(conv_norm)`` (one per kernel position),
and the layer's spectrum is the union of theirs.

How: the eigenvalues of WᵀW are the squared singular values of W. Instead of an SVD, each matrix is
reduced to its Gram matrix on the smaller side (WᵀW if M ≥ N, else WWᵀ: both have the same non-zero
eigenvalues; large weights slice by slice, see :func:`gram_matrices`) and ``torch.linalg.eigvalsh``
solves that symmetric n×n problem, n = min(M, N). Same-shape matrices on the same device are stacked
and handled in one batched matmul/eigvalsh.

Accuracy. Both steps are backward stable, so every eigenvalue carries an absolute error of order
``n · eps · λmax``: it is accurate relative to λmax, and an eigenvalue λ on its own is accurate to about
``n · eps · λmax / λ``. (An SVD, as in the reference, resolves small eigenvalues better: its error on λ is
about ``eps · sqrt(λ · λmax)``.) Computed eigenvalues that come out negative are set to 0.

* ``eig_dtype=float64`` (the default; eps = 2.2e-16): even a trained attention projection whose smallest
  eigenvalue is 4e-10·λmax (SmolLM2's q_proj) gets it to 1e-8 relative, measured against a float64
  SVD. Every column matches an SVD-based float64 computation to float tolerance. On an H100 (FP64
  tensor cores) this took 13.7 s for the 197 Linear weights of a 7B model (bench/esd.py measures it).
* ``eig_dtype=float32`` (eps = 1.19e-7, faster where FP64 is slow): eigenvalues within ~1e-6·λmax. That bounds
  the top of the spectrum (alpha with ``fix_fingers`` None or ``xmin_mid``, spectral_norm, norm,
  stable_rank) but not its bottom: eigenvalues below ~1e-4·λmax are mostly rounding, and measured on
  SmolLM2 that changes ``xmin_peak`` alpha (its histogram starts at the smallest eigenvalue) on 37 of
  211 layers, ``matrix_rank``/``entropy`` (counted against ``λmax · max(M,N) · eps``) and what
  ``filter_zeros`` removes. Use it for alpha screening, not for those columns.

TF32 is switched off for the Gram matmul (:func:`exact_fp32_matmul`): TF32 keeps 10 mantissa bits and
would cost ~1e-3·λmax.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.tasks.esd.streams import map_on_streams

DTYPES = {"float32": torch.float32, "float64": torch.float64}
SOLVERS = ("auto", "torch", "cusolver_batched")  # see gram_eigenvalues
DEFAULT_BATCH_BYTES = 1 << 30  # device memory one stacked batch (weights, Gram, workspace) may take
GRAM_CHUNK_BYTES = 1 << 28  # at most this much of a stack is converted to the Gram's dtype at once


@dataclass(frozen=True)
class LayerWeight:
    """One analysed layer: its dotted name, weight, and the reference's M, N and params columns."""

    name: str
    weight: torch.Tensor
    M: int  # weight.shape[0] (out_features of a Linear / out_channels of a Conv)
    N: int  # weight.shape[1] (in_features / in_channels; out_features for transformers' Conv1D)
    params: int  # elements of all parameters of the module (weight and bias)

    @property
    def kernel_positions(self) -> int:
        """How many matrices the weight is: 1 for 2-D weights, prod(kernel) for a convolution."""
        return math.prod(self.weight.shape[2:])

    @property
    def matrix_shape(self) -> tuple[int, int]:
        return int(self.weight.shape[0]), int(self.weight.shape[1])


def _is_analysed(module: nn.Module) -> bool:
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        return True
    # transformers.pytorch_utils.Conv1D (GPT-2 style): a Linear with its weight stored transposed
    return type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None


def analysed_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The analysed modules of ``model`` in ``named_modules`` order, a shared weight counted once (under
    the first module that holds it). Works on a model built on the ``meta`` device: the streamed path
    (:mod:`.stream`) selects its layers with this same function."""
    selected: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        if _is_analysed(module) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            selected.append((name, module))
    return selected


def module_params(module: nn.Module) -> int:
    """The ``params`` column: elements of the module's own parameters (weight and bias)."""
    return sum(p.numel() for p in module.parameters(recurse=False))


def layer_weights(model: nn.Module) -> list[LayerWeight]:
    """The analysed layers of ``model`` (see :func:`analysed_modules`) with their loaded weights."""
    layers: list[LayerWeight] = []
    for name, module in analysed_modules(model):
        weight = module.weight
        if not weight.is_floating_point() or weight.dim() < 2:
            raise UserInputError(
                f"layer {name} holds a {str(weight.dtype).removeprefix('torch.')} weight of shape "
                f"{tuple(weight.shape)}: ESD needs the unquantized floating-point model"
            )
        if weight.is_meta:
            raise UserInputError(f"layer {name} has no weights loaded (meta device): load the model fully")
        layers.append(
            LayerWeight(name, weight, int(weight.shape[0]), int(weight.shape[1]), module_params(module))
        )
    return layers


def _matrices(layer: LayerWeight, conv_norm: float, dtype: torch.dtype) -> torch.Tensor:
    """The layer as a stack of matrices (k, rows, cols): a view of a 2-D weight, a scaled copy of a conv's."""
    weight = layer.weight.detach()
    if weight.dim() == 2:
        return weight.unsqueeze(0)
    stacked = weight.flatten(start_dim=2).permute(2, 0, 1).to(dtype)  # (out, in, k) -> (k, out, in)
    return stacked * math.sqrt(conv_norm)


def _stacked_itemsize(layer: LayerWeight, dtype: torch.dtype) -> int:
    """Bytes per element of the layer's matrices as stacked: its own dtype's, or ``dtype``'s for a
    convolution (scaled copies, :func:`_matrices`)."""
    return layer.weight.element_size() if layer.weight.dim() == 2 else dtype.itemsize


@contextlib.contextmanager
def exact_fp32_matmul() -> Iterator[None]:
    """Full-precision float32 matmuls (no TF32 / bf16 passes) inside; the previous setting after."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def gram_matrices(matrices: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The Gram matrix on the smaller side (WᵀW if rows ≥ cols, else WWᵀ) of each matrix of a stack
    (B, rows, cols), in ``dtype``. The stack is converted to ``dtype`` in slices along its longer side
    of at most :data:`GRAM_CHUNK_BYTES` and the slices' Grams summed, so a large weight (a 152064×5120
    ``lm_head``: 6.2 GB in float64) never exists converted at once; a stack that fits in one slice is
    one matmul, as before."""
    w = matrices if matrices.shape[-2] >= matrices.shape[-1] else matrices.mT
    batch, long, short = w.shape
    step = max(1, GRAM_CHUNK_BYTES // (batch * short * dtype.itemsize))
    if step >= long:
        converted = w.to(dtype)
        return converted.mT @ converted
    gram = torch.zeros(batch, short, short, dtype=dtype, device=w.device)
    for start in range(0, long, step):
        part = w[:, start : start + step].to(dtype)
        gram.baddbmm_(part.mT, part)
    return gram


def gram_eigenvalues(matrices: torch.Tensor, dtype: torch.dtype, solver: str = "auto") -> torch.Tensor:
    """Eigenvalues of WᵀW for a stack (B, rows, cols): (B, min(rows, cols)), ascending, ≥ 0, ``dtype``.

    ``solver="torch"``: ``torch.linalg.eigvalsh`` (one cuSOLVER ``syevd`` call per matrix on a GPU);
    ``"cusolver_batched"``: one cuSOLVER ``XsyevBatched`` call for the whole stack (:mod:`.cusolver`;
    CUDA only); ``"auto"``: the batched call where it can run (a CUDA stack, cuSOLVER >= 11.7, order
    up to its limit), else torch's. On an H100 (BENCHMARKS.md, ESD) the batched call took the 197
    Gram matrices of a 7B-class model in 7.75 s (16 GiB batches) instead of eigvalsh's 13.36 s, with
    the same alpha (1e-13).
    """
    from lm_eval_perf.tasks.esd import cusolver

    grams = gram_matrices(matrices, dtype)
    if solver == "torch" or (solver == "auto" and not cusolver.usable(grams)):
        return torch.linalg.eigvalsh(grams).clamp_min_(0)
    return cusolver.eigvalsh_batched(grams).clamp_min_(0)


def matrix_bytes(rows: int, cols: int, dtype: torch.dtype, weight_itemsize: int) -> int:
    """Device memory one rows×cols matrix of a batch takes while it is solved: its copy in the stack
    (``weight_itemsize`` bytes per element) and its Gram with the solver's workspace, about 3 n²
    elements of ``dtype`` (n = min(rows, cols))."""
    n = min(rows, cols)
    return rows * cols * weight_itemsize + 3 * n * n * dtype.itemsize


def batch_size(rows: int, cols: int, dtype: torch.dtype, batch_bytes: int, weight_itemsize: int) -> int:
    """How many rows×cols matrices one batch stacks within ``batch_bytes`` of device memory (≥ 1),
    besides the slice being converted (:func:`gram_matrices`)."""
    converting = min(GRAM_CHUNK_BYTES, rows * cols * dtype.itemsize)
    return max(1, (batch_bytes - converting) // matrix_bytes(rows, cols, dtype, weight_itemsize))


def layer_eigenvalues(
    layers: Sequence[LayerWeight],
    dtype: torch.dtype = torch.float64,
    conv_norm: float = 0.5,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    streams: int = 1,
    solver: str = "auto",
) -> list[torch.Tensor]:
    """Per layer, all eigenvalues of WᵀW (k·min(M, N) for a convolution), ascending, on its device.

    Matrices of one shape and device are stacked into batches of at most ``batch_bytes`` of device
    memory; with ``streams`` > 1 that many batches are solved concurrently on CUDA side streams.
    ``solver``: see :func:`gram_eigenvalues`.
    """
    groups: dict[tuple, list[tuple[int, int]]] = {}  # (rows, cols, device) -> [(layer, position)]
    for index, layer in enumerate(layers):
        key = (*layer.matrix_shape, layer.weight.device)
        groups.setdefault(key, []).extend((index, k) for k in range(layer.kernel_positions))
    jobs: list[list[tuple[int, int]]] = []
    for (rows, cols, _device), members in groups.items():
        size = batch_size(rows, cols, dtype, batch_bytes, _stacked_itemsize(layers[members[0][0]], dtype))
        jobs.extend(members[start : start + size] for start in range(0, len(members), size))

    def solve(chunk: list[tuple[int, int]]) -> list[torch.Tensor]:
        matrices = {i: _matrices(layers[i], conv_norm, dtype) for i, _k in chunk}
        if len(chunk) == 1:  # a view, not a copy, of a lone weight
            ((i, k),) = chunk
            stack = matrices[i][k : k + 1]
        else:
            stack = torch.stack([matrices[i][k] for i, k in chunk])
        return [gram_eigenvalues(stack, dtype, solver)]

    with exact_fp32_matmul():
        solved = map_on_streams(solve, jobs, lambda chunk: layers[chunk[0][0]].weight.device, streams)
    parts: list[list[torch.Tensor]] = [[] for _ in layers]
    for chunk, [values] in zip(jobs, solved):
        for (i, _k), row in zip(chunk, values):
            parts[i].append(row)
    return [p[0] if len(p) == 1 else torch.sort(torch.cat(p)).values for p in parts]


def parse_dtype(name: str) -> torch.dtype:
    """``float32`` or ``float64`` as a torch dtype; anything else is a :class:`UserInputError`."""
    if name not in DTYPES:
        raise UserInputError(f"esd eig_dtype={name!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def check_solver(name: str) -> str:
    """``name`` if it is one of :data:`SOLVERS`; anything else is a :class:`UserInputError`."""
    if name not in SOLVERS:
        raise UserInputError(f"esd eig_solver={name!r}: use one of {', '.join(SOLVERS)}")
    return name
