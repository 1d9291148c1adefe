"""SVD truncation of linear layers: ``svd_ratio=`` / ``svd_rank=`` / ``svd_targets=``.

A targeted ``nn.Linear`` with weight W (M = out_features × N = in_features) becomes a
:class:`LowRankLinear`: ``down`` (N → k, no bias) then ``up`` (k → M, W's bias), with
``up.weight = U_k·√Σ_k`` and ``down.weight = √Σ_k·V_kᵀ`` from the truncated SVD W ≈ U_k Σ_k V_kᵀ.
It holds k·(M + N) weights instead of M·N. The rank is

    k = floor(r · M · N / (M + N))      (at least 1) for ``svd_ratio=r``, 0 < r ≤ 1,

i.e. the fraction r of the layer's parameters is kept; ``svd_rank=k`` fixes k for every layer
instead (k ≥ min(M, N) reproduces W up to float rounding). ``svd_ratio=1.0`` leaves the model
untouched (the baseline row). The SVD runs in float32 on the model's device (the GPU when there is
one); ``svd_solver`` picks how (:data:`SOLVERS`).

Decoding one token at a time, both factors are matrix-vector products of odd, skinny shapes
(k = 179 or 1205 for Qwen2.5-7B at r = 0.4), on which cuBLAS reads the weights at 58 % of the speed
it reaches on dense layers (H100: 1.36 against 2.33 TB/s). Under ``torch.compile`` (the throughput
task's static decode path), a single input row is therefore multiplied as an element-wise product
and a float32 sum, which Inductor turns into one bandwidth-bound reduction kernel per factor;
``bench/lowrank_kernels.py`` measures the difference. Eager calls and inputs of several rows use ``F.linear``.
Inductor would inline the element-wise work that produced the input row (the RMSNorm before
q/k/v and gate/up, ``silu(gate)·up`` before ``down``) into that reduction and redo it for every
output row; the input is therefore stored once first (:func:`stored_once`), which costs no kernel of
its own (the kernel that computes it normally writes it).
An odd rank also misaligns the rows of ``up`` (M × k) and leaves the reduction over k no vector
width; so ``up.weight`` is a view of zero-filled storage whose row stride is k rounded up to
:data:`RANK_ALIGN`, and the compiled row path reduces over that padded width (the extra columns
are zeros; the code vector is zero-padded to match). The parameter count stays k·(M + N); the
padding is in the weight bytes (:func:`lm_eval_perf.models.shape.weight_bytes` counts the span of
each tensor): at most ``RANK_ALIGN - 1`` columns per layer, 0.17 % of the factors' bytes for
Qwen2.5-7B at r = 0.4. A copy of the model (``.to(dtype)``) stores ``up`` densely and takes the
unpadded path.

``svd_targets`` selects layers by qualified module name: one or more patterns joined by ``|``; a
pattern is an ``fnmatch`` glob (``*.mlp.*``, ``*.self_attn.[qk]_proj``) or, prefixed ``re:``, a
Python regular expression matched with ``re.fullmatch``. Default ``*``: every ``nn.Linear`` except
``lm_head`` (embeddings are not linear layers and are always kept). A pattern that matches no linear
layer is a one-line error.
"""

from __future__ import annotations

import fnmatch
import math
import re
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models.surgery import is_output_projection, set_module

DEFAULT_TARGETS = "*"
RANK_ALIGN = 8  # elements: 16 bytes of bf16, one vector load
SOLVERS = {
    "exact": "torch.linalg.svd of each weight in float32 (LAPACK on CPU, cuSOLVER on GPU)",
    "gram": "eigendecomposition of the smaller Gram matrix W·Wᵀ or Wᵀ·W in float64 (fast on GPU)",
    "lowrank": "randomized torch.svd_lowrank with k + 16 columns and 2 power iterations (approximate)",
}


def row_matvec(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for one input row, as multiply-and-sum in float32 (under
    ``torch.compile``: one Inductor reduction kernel)."""
    y = (x.unsqueeze(-2).float() * weight.float()).sum(-1)
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def stored_once(x: torch.Tensor) -> torch.Tensor:
    """``x``, forced into memory under Inductor, so that a reduction reading it per output row loads it
    instead of recomputing the element-wise ops that made it; ``x`` itself elsewhere (eager, other
    compiler backends)."""
    force = getattr(torch.ops.prims, "inductor_force_stride_order", None)  # registered by Inductor
    return x if force is None else force(x, x.stride())


class LowRankLinear(nn.Module):
    """y = up(down(x)): two linear layers of rank ``rank`` in place of one M × N layer."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)
        self.row_stride = math.ceil(rank / RANK_ALIGN) * RANK_ALIGN  # elements between rows of up
        if self.row_stride != rank:  # the initial values of nn.Linear are overwritten by every caller
            storage = torch.zeros(out_features, self.row_stride, device=device, dtype=dtype)
            self.up.weight = nn.Parameter(storage[:, :rank])

    def _padded_up(self) -> torch.Tensor | None:
        """``up.weight`` with its zero columns (M × row_stride), or ``None`` once stored densely."""
        weight = self.up.weight
        if self.row_stride == self.rank or weight.stride() != (self.row_stride, 1):
            return None
        return weight.as_strided((self.out_features, self.row_stride), (self.row_stride, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() and x.numel() == self.in_features:
            code = row_matvec(stored_once(x), self.down.weight)  # one decoded token (module doc)
            up = self._padded_up()
            if up is None:
                return row_matvec(code, self.up.weight, self.up.bias)
            return row_matvec(F.pad(code, (0, self.row_stride - self.rank)), up, self.up.bias)
        return self.up(self.down(x))


def rank_for_ratio(ratio: float, out_features: int, in_features: int) -> int:
    """k = floor(r · M · N / (M + N)), at least 1."""
    return max(1, math.floor(ratio * out_features * in_features / (out_features + in_features)))


def check_ratio(ratio: float) -> float:
    if not 0 < ratio <= 1:
        raise UserInputError(
            f"svd_ratio={ratio} must be in (0, 1]: the fraction of each layer's parameters kept"
        )
    return ratio


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        try:
            return re.fullmatch(pattern[3:], name) is not None
        except re.error as exc:
            raise UserInputError(
                f"svd_targets pattern {pattern!r} is not a regular expression: {exc}"
            ) from exc
    return fnmatch.fnmatchcase(name, pattern)


def select_targets(model: nn.Module, targets: str = DEFAULT_TARGETS) -> list[str]:
    """Names of the ``nn.Linear`` layers matched by ``targets`` (``lm_head`` only when named)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    patterns = [p.strip() for p in targets.split("|") if p.strip()]
    if not patterns:
        raise UserInputError("svd_targets is empty: give a pattern such as * or *.mlp.*")
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {n for n in linears if _matches(pattern, n)}
        if pattern in ("*", "re:.*"):
            hits = {n for n in hits if not is_output_projection(n)}
        if not hits:
            example = linears[0] if linears else "none"
            raise UserInputError(
                f"svd_targets pattern {pattern!r} matches no linear layer (names look like {example!r})"
            )
        chosen |= hits
    return [n for n in linears if n in chosen]


def low_rank_factors(weight: torch.Tensor, rank: int, solver: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(U_k·√Σ_k [M, k], √Σ_k·V_kᵀ [k, N]) of ``weight`` in float32."""
    w = weight.detach().float()
    m, n = w.shape
    k = min(rank, m, n)
    if solver == "exact":
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        u, s, vh = u[:, :k], s[:k], vh[:k]
    elif solver == "gram":
        wide = m < n  # eigendecompose the smaller Gram matrix
        gram = (w @ w.t() if wide else w.t() @ w).double()
        values, vectors = torch.linalg.eigh(gram)
        top = vectors[:, -k:].flip(1)
        s = values[-k:].flip(0).clamp(min=0).sqrt()
        safe = torch.where(s > 0, s, torch.ones_like(s))
        if wide:
            u, vh = top, ((w.double().t() @ top) / safe).t()
        else:
            u, vh = (w.double() @ top) / safe, top.t()
        u, s, vh = u.float(), s.float(), vh.float()
    elif solver == "lowrank":
        u, s, v = torch.svd_lowrank(w, q=min(k + 16, m, n), niter=2)
        u, s, vh = u[:, :k], s[:k], v[:, :k].t()
    else:
        raise UserInputError(f"svd_solver={solver!r}: use one of {', '.join(SOLVERS)}")
    root = s.sqrt()
    return u * root, root[:, None] * vh


@dataclass
class SvdResult:
    """What :func:`apply_svd` did, for the record."""

    ranks: dict[str, int] = field(default_factory=dict)
    dense_params: int = 0  # parameters of the replaced layers' weights before
    lowrank_params: int = 0  # ... and after
    seconds: float = 0.0


@torch.no_grad()
def apply_svd(
    model: nn.Module,
    ratio: float | None = None,
    rank: int | None = None,
    targets: str = DEFAULT_TARGETS,
    solver: str = "exact",
) -> SvdResult:
    """Replace the targeted linear layers of ``model`` (in place, on their device) by their SVD truncation."""
    if (ratio is None) == (rank is None):
        raise UserInputError("give exactly one of svd_ratio and svd_rank")
    if rank is not None and rank < 1:
        raise UserInputError(f"svd_rank={rank} must be >= 1")
    result = SvdResult()
    names = select_targets(model, targets)
    if ratio is not None and check_ratio(ratio) == 1.0:
        return result
    started = time.perf_counter()
    for name in names:
        linear = model.get_submodule(name)
        m, n = linear.out_features, linear.in_features
        k = rank if rank is not None else rank_for_ratio(ratio, m, n)  # type: ignore[arg-type]
        up, down = low_rank_factors(linear.weight, k, solver)
        k = up.shape[1]
        new = LowRankLinear(
            n, m, k, linear.bias is not None, device=linear.weight.device, dtype=linear.weight.dtype
        )
        new.up.weight.copy_(up)
        new.down.weight.copy_(down)
        if linear.bias is not None:
            new.up.bias.copy_(linear.bias)
        set_module(model, name, new)
        result.ranks[name] = k
        result.dense_params += m * n
        result.lowrank_params += k * (m + n)
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()
    result.seconds = time.perf_counter() - started
    return result
