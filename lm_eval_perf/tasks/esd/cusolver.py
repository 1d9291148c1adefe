"""Eigenvalues of a stack of symmetric matrices in one cuSOLVER ``XsyevBatched`` call (ctypes, CUDA only).

Why: ``torch.linalg.eigvalsh`` of a (B, n, n) stack with n > 32 calls cuSOLVER's ``syevd`` once per
matrix, and for the 3584² Gram matrices of a 7B model each call is bound by the latency of its ~n
sequential steps (kernel launches, host round trips), not by the GPU's arithmetic or bandwidth: 84 of
them took 13.4 s on an H100 in float64 and barely less in float32 (BENCHMARKS.md, ESD). cuSOLVER 11.7
(CUDA 12.6 update 2) added ``cusolverDnXsyevBatched``, which solves a whole stack in one call, so the
per-step latency is paid once per batch instead of once per matrix. torch uses it only for n ≤ 32,
hence this binding. Documented limits: n ≤ 32768 and n²·batch < 2³¹ (the batch is cut to fit).

The ESD estimator uses it wherever it can run (``eig_solver: auto``, the default; see :func:`usable`):
a backward-stable dense solver like ``syevd``. On an H100 (``python -m bench.esd``, BENCHMARKS.md) it
solved the 197 Gram matrices of a 7B-class model in 7.75 s (16 GiB batches) against 13.36 s, with
alpha equal to a float64 SVD reference within 1e-13 in every ``fix_fingers`` mode; the CPU test suite
cannot run it.

The library is the ``libcusolver`` torch itself loaded (``nvidia-cusolver`` wheels or the CUDA
toolkit); one handle per thread and device, bound to the current CUDA stream at each call.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import torch

from lm_eval_perf.errors import UserInputError

_NOVECTOR = 0  # cusolverEigMode_t CUSOLVER_EIG_MODE_NOVECTOR
_LOWER = 0  # cublasFillMode_t CUBLAS_FILL_MODE_LOWER (the matrices are symmetric: either triangle)
_DATA_TYPES = {torch.float32: 0, torch.float64: 1}  # cudaDataType CUDA_R_32F, CUDA_R_64F
MAX_N = 32768
MAX_ELEMENTS = 2**31 - 1  # n * n * batch must stay below this
_SONAMES = ("libcusolver.so.12", "libcusolver.so.11", "libcusolver.so")
_local = threading.local()
_library: ctypes.CDLL | None = None


def _candidates() -> list[str]:
    """Where libcusolver may be: already loaded by torch (found by soname), or in an nvidia wheel."""
    found = list(_SONAMES)
    try:
        import nvidia  # namespace package of the nvidia-* wheels torch depends on

        for root in map(Path, nvidia.__path__):
            found += [str(p) for p in sorted(root.glob("*/lib/libcusolver.so*"))]
    except ImportError:
        pass
    return found


def _load() -> ctypes.CDLL:
    global _library
    if _library is not None:
        return _library
    torch.linalg.eigvalsh(torch.eye(2, device="cuda"))  # makes torch load its own cuSOLVER first
    errors = []
    for name in _candidates():
        try:
            library = ctypes.CDLL(name)
            library.cusolverDnXsyevBatched  # noqa: B018 - raises AttributeError on cuSOLVER < 11.7
        except (OSError, AttributeError) as exc:
            errors.append(f"{name}: {exc}")
            continue
        _library = library
        return library
    raise UserInputError(
        "esd eig_solver=cusolver_batched needs cuSOLVER >= 11.7 (CUDA 12.6 update 2) with "
        f"cusolverDnXsyevBatched; not found ({'; '.join(errors[-2:])})"
    )


def usable(grams: torch.Tensor) -> bool:
    """Whether :func:`eigvalsh_batched` can solve ``grams``: on a CUDA device, of an order it takes,
    with a cuSOLVER that has ``XsyevBatched``."""
    if grams.device.type != "cuda" or grams.shape[-1] > MAX_N:
        return False
    try:
        _load()
    except UserInputError:
        return False
    return True


def _check(status: int, call: str) -> None:
    if status != 0:
        raise RuntimeError(f"cuSOLVER {call} failed with status {status}")


def _handles(device: torch.device) -> tuple[ctypes.c_void_p, ctypes.c_void_p]:
    """This thread's cuSOLVER handle and params object for ``device`` (created once)."""
    library = _load()
    cache = _local.__dict__.setdefault("handles", {})
    if device not in cache:
        handle, params = ctypes.c_void_p(), ctypes.c_void_p()
        with torch.cuda.device(device):
            _check(library.cusolverDnCreate(ctypes.byref(handle)), "cusolverDnCreate")
            _check(library.cusolverDnCreateParams(ctypes.byref(params)), "cusolverDnCreateParams")
        cache[device] = (handle, params)
    return cache[device]


def max_batch(n: int) -> int:
    """The largest stack of n×n matrices one call may take."""
    return max(1, MAX_ELEMENTS // (n * n))


def eigvalsh_batched(grams: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues (B, n) of a contiguous stack (B, n, n) of symmetric float32/float64 CUDA
    matrices, which are overwritten (they serve as the solver's workspace)."""
    if grams.device.type != "cuda":
        raise UserInputError("esd eig_solver=cusolver_batched needs the weights on a CUDA device")
    batch, n = grams.shape[0], grams.shape[-1]
    if n > MAX_N:
        raise UserInputError(f"esd eig_solver=cusolver_batched: matrices of order {n} > {MAX_N}")
    if batch > max_batch(n):
        step = max_batch(n)
        return torch.cat([eigvalsh_batched(grams[i : i + step]) for i in range(0, batch, step)])
    grams = grams.contiguous()
    library = _load()
    handle, params = _handles(grams.device)
    data_type = _DATA_TYPES[grams.dtype]
    values = torch.empty(batch, n, dtype=grams.dtype, device=grams.device)
    info = torch.zeros(batch, dtype=torch.int32, device=grams.device)
    device_bytes, host_bytes = ctypes.c_size_t(), ctypes.c_size_t()
    with torch.cuda.device(grams.device):
        stream = torch.cuda.current_stream(grams.device).cuda_stream
        _check(library.cusolverDnSetStream(handle, ctypes.c_void_p(stream)), "cusolverDnSetStream")
        _check(
            library.cusolverDnXsyevBatched_bufferSize(
                handle, params, _NOVECTOR, _LOWER, ctypes.c_int64(n), data_type,
                ctypes.c_void_p(grams.data_ptr()), ctypes.c_int64(n), data_type,
                ctypes.c_void_p(values.data_ptr()), data_type,
                ctypes.byref(device_bytes), ctypes.byref(host_bytes), ctypes.c_int64(batch),
            ),
            "cusolverDnXsyevBatched_bufferSize",
        )  # fmt: skip
        device_work = torch.empty(max(1, device_bytes.value), dtype=torch.uint8, device=grams.device)
        host_work = torch.empty(max(1, host_bytes.value), dtype=torch.uint8, pin_memory=True)
        _check(
            library.cusolverDnXsyevBatched(
                handle, params, _NOVECTOR, _LOWER, ctypes.c_int64(n), data_type,
                ctypes.c_void_p(grams.data_ptr()), ctypes.c_int64(n), data_type,
                ctypes.c_void_p(values.data_ptr()), data_type,
                ctypes.c_void_p(device_work.data_ptr()), ctypes.c_size_t(device_bytes.value),
                ctypes.c_void_p(host_work.data_ptr()), ctypes.c_size_t(host_bytes.value),
                ctypes.c_void_p(info.data_ptr()), ctypes.c_int64(batch),
            ),
            "cusolverDnXsyevBatched",
        )  # fmt: skip
        failed = int(torch.count_nonzero(info))  # synchronizes; keeps the workspaces alive until done
    if failed:
        raise RuntimeError(f"cuSOLVER XsyevBatched did not converge for {failed} of {batch} matrices")
    return values
