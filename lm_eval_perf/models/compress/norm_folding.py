"""An RMSNorm computed inside the low-rank layers it feeds, when one token is decoded under ``torch.compile``.

In the decoder layers of the families in :data:`FEEDS`, an RMSNorm's output goes only to the
projections listed there (``input_layernorm`` to q/k/v, ``post_attention_layernorm`` to gate/up).
When all of them are :class:`~lm_eval_perf.models.compress.svd.LowRankLinear`, :func:`fold_input_norms`
hands the norm's weight w and ε to each of them. For one token under ``torch.compile``, the norm
then returns its input h unchanged (its work is dead code), and each first factor V computes

    code_i = s · Σ_j V_ij · w_j · h_j,    s = 1 / √(mean_j h_j² + ε),

accumulating Σ_j h_j² in the same loop: Inductor emits one reduction kernel with two outputs, so
the norm's own kernel - a dependent launch before every q/k/v and gate/up, two per decoder layer -
is gone. Eager calls and inputs of several rows run the norm as before, with unchanged outputs.
The compiled code differs from norm-then-linear only by rounding: w·h·s stays in float32 instead
of being rounded to the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lm_eval_perf.models.compress.svd import LowRankLinear, single_compiled_row, stored_once
from lm_eval_perf.models.surgery import NORM_READERS

# model_type -> {norm attribute of a decoder layer: the projections that alone read its output}
FEEDS = {family: NORM_READERS for family in ("llama", "mistral", "qwen2", "qwen3")}


@dataclass(eq=False)
class FoldedNorm:
    """The RMSNorm a :class:`LowRankLinear` computes inside its first factor (module doc)."""

    weight: torch.Tensor  # w, the norm's parameter (shared, not copied)
    eps: float

    def row_matvec(self, hidden: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """``factor @ rmsnorm(hidden)`` for one row ``hidden`` (…, N) and ``factor`` (k, N), in float32,
        stored once (else Inductor redoes the scaling by s for every row of the next factor)."""
        h = hidden.float().unsqueeze(-2).expand(*hidden.shape[:-1], factor.shape[0], hidden.shape[-1])
        dot = (h * self.weight.float() * factor.float()).sum(-1)
        square = (h * h).sum(-1)  # the same reduction loop as dot
        return stored_once((dot * torch.rsqrt(square / hidden.shape[-1] + self.eps)).to(hidden.dtype))


def _pass_through_when_folded(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """Forward hook of a folded norm: its input, for one compiled row (the consumers normalize)."""
    hidden = args[0]
    return hidden if single_compiled_row(hidden) else None


def _rms_norm(norm: nn.Module, hidden: torch.Tensor, eps: float) -> torch.Tensor:
    """What a Llama-style RMSNorm computes (to check that ``norm`` is one)."""
    h = hidden.float()
    return norm.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(hidden.dtype)


def _epsilon(norm: nn.Module) -> float | None:
    """ε of a Llama-style RMSNorm, or ``None`` if ``norm`` does not compute one."""
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    weight = getattr(norm, "weight", None)
    if not isinstance(eps, float) or not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        return None
    probe = torch.randn(2, weight.shape[0], device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        return eps if torch.equal(norm(probe), _rms_norm(norm, probe, eps)) else None


def fold_input_norms(model: nn.Module) -> int:
    """Fold every RMSNorm whose readers are all low-rank layers into them (module doc); how many."""
    feeds = FEEDS.get(getattr(getattr(model, "config", None), "model_type", None))
    if feeds is None:
        return 0
    folded = 0
    for layer in model.modules():
        for norm_name, reader_names in feeds.items():
            norm = getattr(layer, norm_name, None)
            if not isinstance(norm, nn.Module):
                continue
            readers = [_submodule(layer, n) for n in reader_names]
            if not all(_foldable(r) for r in readers):
                continue
            eps = _epsilon(norm)
            if eps is None:
                continue
            for reader in readers:
                reader.input_norm = FoldedNorm(norm.weight, eps)
            norm.register_forward_hook(_pass_through_when_folded)
            folded += 1
    return folded


def _foldable(reader: nn.Module | None) -> bool:
    """A low-rank layer whose first factor is a plain floating-point linear layer, not yet folded."""
    return (
        isinstance(reader, LowRankLinear)
        and reader.input_norm is None
        and type(reader.down) is nn.Linear
        and reader.down.weight.is_floating_point()
    )


def _submodule(module: nn.Module, name: str) -> nn.Module | None:
    try:
        return module.get_submodule(name)
    except AttributeError:
        return None
