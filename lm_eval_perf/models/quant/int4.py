"""Asymmetric 4-bit group quantization and the AWQ "GEMM" packing, as plain tensor arithmetic.

A weight W (out_features N × in_features K) is split along K into groups of ``group_size`` columns;
each group of each row has a float scale ``s`` and an integer zero point ``z`` (0..15):

    q = clamp(round(w / s) + z, 0, 15)          w ≈ (q - z) · s

This is round-to-nearest (RTN) with min/max ranges, the quantizer AWQ uses after its scale search.
AWQ checkpoints (``quant_method: awq``, ``version: gemm``) store, per linear layer:

* ``qweight`` int32 [K, N/8]: eight 4-bit values of consecutive output columns per int32, in the
  interleaved order :data:`AWQ_ORDER` (nibble i holds column 8·j + AWQ_ORDER[i]);
* ``qzeros`` int32 [K/group, N/8]: the zero points, packed the same way;
* ``scales`` float16 [K/group, N].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BITS = 4
MAX_Q = 2**BITS - 1
PACK = 32 // BITS  # 4-bit values per int32
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


@dataclass
class GroupQuantized:
    """An int4 weight: ``q`` uint8 [N, K] (0..15), ``scales`` float [N, K/g], ``zeros`` uint8 [N, K/g]."""

    q: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    group_size: int

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.q.shape[0]), int(self.q.shape[1])

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W ≈ (q - z) · s as a dense [N, K] tensor."""
        n, k = self.shape
        groups = (self.q.float() - self.zeros.float().repeat_interleave(self.group_size, dim=1)).view(n, k)
        return (groups * self.scales.float().repeat_interleave(self.group_size, dim=1)).to(dtype)


def quantize_rtn(weight: torch.Tensor, group_size: int) -> GroupQuantized:
    """Round-to-nearest asymmetric int4 of ``weight`` [N, K] with min/max ranges per group."""
    n, k = weight.shape
    if k % group_size:
        raise ValueError(f"in_features {k} is not a multiple of group_size {group_size}")
    w = weight.detach().float().reshape(n, k // group_size, group_size)
    w_min = w.amin(dim=2).clamp(max=0.0)
    w_max = w.amax(dim=2).clamp(min=0.0)
    scales = ((w_max - w_min) / MAX_Q).clamp(min=1e-8)
    zeros = torch.round(-w_min / scales).clamp(0, MAX_Q)
    q = torch.clamp(torch.round(w / scales[..., None]) + zeros[..., None], 0, MAX_Q)
    return GroupQuantized(q.reshape(n, k).to(torch.uint8), scales, zeros.to(torch.uint8), group_size)


def _pack_columns(values: torch.Tensor) -> torch.Tensor:
    """[R, C] values 0..15 -> int32 [R, C/8] in AWQ's interleaved nibble order."""
    rows, cols = values.shape
    grouped = values.to(torch.int32).reshape(rows, cols // PACK, PACK)
    packed = torch.zeros(rows, cols // PACK, dtype=torch.int32, device=values.device)
    for nibble, column in enumerate(AWQ_ORDER):
        packed |= grouped[..., column] << (BITS * nibble)
    return packed


def _unpack_columns(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_pack_columns`: int32 [R, C/8] -> uint8 [R, C]."""
    rows, words = packed.shape
    out = torch.empty(rows, words, PACK, dtype=torch.uint8, device=packed.device)
    for nibble, column in enumerate(AWQ_ORDER):
        out[..., column] = ((packed >> (BITS * nibble)) & MAX_Q).to(torch.uint8)
    return out.reshape(rows, words * PACK)


def to_awq_tensors(weight: GroupQuantized) -> dict[str, torch.Tensor]:
    """``qweight``, ``qzeros``, ``scales`` of one layer in the AWQ GEMM layout."""
    return {
        "qweight": _pack_columns(weight.q.t().contiguous()),
        "qzeros": _pack_columns(weight.zeros.t().contiguous()),
        "scales": weight.scales.t().contiguous().to(torch.float16),
    }


def from_awq_tensors(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> GroupQuantized:
    """The :class:`GroupQuantized` weight stored as AWQ GEMM tensors."""
    q = _unpack_columns(qweight).t().contiguous()
    zeros = _unpack_columns(qzeros).t().contiguous()
    n, k = q.shape
    groups = scales.shape[0]
    if k % groups or scales.shape[1] != n or zeros.shape != (n, groups):
        raise ValueError(
            f"inconsistent AWQ tensors: qweight {tuple(qweight.shape)}, scales {tuple(scales.shape)}"
        )
    return GroupQuantized(q, scales.t().contiguous(), zeros, k // groups)
