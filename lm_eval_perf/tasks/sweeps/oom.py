"""Out-of-memory errors at a sweep point: recognise them, free the memory, inject them for tests."""

from __future__ import annotations

import gc

import torch


def is_out_of_memory(exc: BaseException) -> bool:
    """``torch.OutOfMemoryError``, or a CUDA/cuBLAS error whose text says the memory ran out."""
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "cublas_status_alloc_failed" in text)
    )


def error_text(exc: BaseException) -> str:
    """``Type: first line of the message`` - how a failure is written into a record."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def release_memory() -> None:
    """Collect garbage and hand cached CUDA blocks back, after a failed point dropped its tensors."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def raise_injected(limit: int | None, batch_size: int) -> None:
    """The ``inject_oom_from_batch_size`` test hook: an ``OutOfMemoryError`` when ``batch_size`` is at
    least ``limit``, raised before the point runs, exactly like a real out-of-memory error."""
    if limit is not None and batch_size >= limit:
        raise torch.OutOfMemoryError(
            f"injected out-of-memory error: batch_size {batch_size} >= inject_oom_from_batch_size {limit}"
        )
