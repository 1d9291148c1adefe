"""The model side of a sweep point's key: which model, as loaded and placed, was measured."""

from __future__ import annotations


def _precision(lm) -> str | None:
    """perf-hf's ``precision=`` (with backend, group size and ``lm_head`` when it is quantized too),
    or ``None`` when not given."""
    spec = getattr(getattr(lm, "plan", None), "precision", None)
    if spec is None:
        return None
    parts = (spec.name, spec.backend, spec.group_size, "lm_head" if spec.quantize_lm_head else None)
    return ":".join(str(p) for p in parts if p is not None)


def _compression(lm) -> str | None:
    """perf-hf's low-rank compression (``svd_ratio=0.6``, ``svd_rank=64``, ``compressed=PATH``), if any."""
    plan = getattr(lm, "plan", None)
    for name in ("svd_ratio", "svd_rank", "compressed"):
        value = getattr(plan, name, None)
        if value is not None:
            return f"{name}={value}"
    return None


def model_identity(lm) -> dict:
    """Model label, dtype, weight bytes, precision, compression and device of the ``perf-hf`` model."""
    return {
        "model": lm.model_label,
        "dtype": str(lm.model.dtype).removeprefix("torch."),
        "weight_bytes": lm.shape.weight_bytes,
        "precision": _precision(lm),
        "compression": _compression(lm),
        "device": lm.peaks.device,
    }
