"""Which row of the tables a run belongs to: (model, precision, compression ratio).

With batch_eval's ``job.json`` beside the results, its ``model`` (the result-folder name),
``precision`` and ``compression_ratio`` are used. Otherwise (or where ``job.json`` leaves a field
empty) they come from the results JSON:

* model - :func:`lm_eval_perf.records.names.model_name` of ``config.model_args`` (``pretrained``,
  ``revision``, ``peft``): the name batch_eval gives the same model by default, so direct
  ``lm_eval`` runs and batch runs of one model share rows;
* precision - the ``precision=`` name, else the dtype the model was loaded in
  (``config.efficiency.load.dtype``, else ``config.model_dtype``);
* compression ratio - ``config.efficiency.load.compression.compression_ratio``, else its
  ``linear_params_kept`` (a checkpoint that recorded no ratio), else 1.0 (not compressed).
  ``None`` means compressed by an unknown amount.
"""

from __future__ import annotations

from dataclasses import dataclass

from lm_eval_perf.records.names import model_name
from lm_eval_perf.records.precisions import PRECISIONS

UNCOMPRESSED = 1.0


@dataclass(frozen=True)
class RowKey:
    """One row of the tables."""

    model: str
    precision: str
    ratio: float | None = UNCOMPRESSED

    @property
    def compressed(self) -> bool:
        return self.ratio != UNCOMPRESSED

    def ratio_text(self) -> str:
        return "?" if self.ratio is None else f"{self.ratio:g}"

    def label(self) -> str:
        """The row's name within its model: ``bfloat16`` or ``bfloat16 r=0.6``."""
        return self.precision + (f" r={self.ratio_text()}" if self.compressed else "")

    def sort_key(self) -> tuple:
        order = list(PRECISIONS)
        rank = order.index(self.precision) if self.precision in order else len(order)
        return (self.model, rank, self.precision, self.ratio is None, -(self.ratio or 0.0))


def model_args(data: dict) -> dict:
    """``config.model_args`` as a dict (lm-eval writes a dict or a ``k=v,k=v`` string)."""
    args = (data.get("config") or {}).get("model_args") or {}
    if isinstance(args, str):
        pairs = (part.split("=", 1) for part in args.split(",") if "=" in part)
        args = {k.strip(): v.strip() for k, v in pairs}
    return args if isinstance(args, dict) else {}


def load_block(data: dict) -> dict:
    """``config.efficiency.load`` (empty for runs not made with perf-hf)."""
    efficiency = (data.get("config") or {}).get("efficiency") or {}
    return efficiency.get("load") or {}


def _model(data: dict) -> str:
    args = model_args(data)
    pretrained = args.get("pretrained") or load_block(data).get("model") or data.get("model_name")
    if not pretrained:
        return "unknown-model"
    return model_name(str(pretrained), args.get("revision"), args.get("peft"))


def _precision(data: dict) -> str:
    load = load_block(data)
    named = model_args(data).get("precision") or (load.get("precision") or {}).get("name")
    dtype = load.get("dtype") or str((data.get("config") or {}).get("model_dtype") or "")
    return str(named or dtype.removeprefix("torch.") or "default")


def _ratio(data: dict) -> float | None:
    block = load_block(data).get("compression")
    if not block:
        return UNCOMPRESSED
    for key in ("compression_ratio", "linear_params_kept"):
        if block.get(key) is not None:
            return round(float(block[key]), 4)
    return None


def row_of(data: dict, job: dict | None) -> RowKey:
    """The row of a results JSON ``data`` (``job``: batch_eval's ``job.json`` beside it, if any)."""
    job = job or {}
    ratio = job.get("compression_ratio")
    return RowKey(
        model=str(job.get("model") or _model(data)),
        precision=str(job.get("precision") or _precision(data)),
        ratio=float(ratio) if ratio is not None else _ratio(data),
    )
