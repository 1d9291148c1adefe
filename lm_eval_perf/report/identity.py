"""Which row of the tables a run belongs to: (model, precision, compression ratio[, device]).

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
  ``None`` means compressed by an unknown amount;
* device - the kind of device the model ran on (``cpu``, ``cuda``), from the run itself: the
  efficiency record's ``load.device``, else ``config.lm_eval_perf_device`` (perf-hf writes it for
  every run, plugin tasks only included), else batch_eval's ``device`` (its ``devices`` axis), else
  unknown (``None``: lm-eval's own model records only the device it was asked for). The device is
  part of a row only where the results (or matrix plans) hold two or more devices
  (:func:`lm_eval_perf.report.collect.collect` drops it otherwise), so a results folder of one
  device has the rows it always had.
"""

from __future__ import annotations

from dataclasses import dataclass

from lm_eval_perf.records.efficiency import RUN_DEVICE
from lm_eval_perf.records.names import model_name
from lm_eval_perf.records.precisions import PRECISIONS

UNCOMPRESSED = 1.0
CPU = "cpu"


def device_order(device: str | None) -> tuple:
    """Sort key of devices: not recorded first, then the CPU, then the others by name."""
    return (device is not None, device != CPU, device or "")


@dataclass(frozen=True)
class RowKey:
    """One row of the tables."""

    model: str
    precision: str
    ratio: float | None = UNCOMPRESSED
    device: str | None = None  # cpu, cuda, ...; None: one device in the results (or not recorded)

    @property
    def compressed(self) -> bool:
        return self.ratio != UNCOMPRESSED

    def ratio_text(self) -> str:
        return "?" if self.ratio is None else f"{self.ratio:g}"

    def label(self) -> str:
        """The row's name within its model: ``bfloat16``, ``bfloat16 r=0.6``, ``bfloat16 on cuda``."""
        text = self.precision + (f" r={self.ratio_text()}" if self.compressed else "")
        return text + (f" on {self.device}" if self.device else "")

    def sort_key(self) -> tuple:
        """Precisions in :data:`PRECISIONS` order, ratios descending, then devices (the CPU first)."""
        order = list(PRECISIONS)
        rank = order.index(self.precision) if self.precision in order else len(order)
        ratio = (self.ratio is None, -(self.ratio or 0.0))
        return (self.model, rank, self.precision, *ratio, device_order(self.device))


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


def device_kind(device: object) -> str | None:
    """``cuda`` of ``cuda:0``, ``cpu`` of ``cpu``; None for nothing."""
    text = str(device or "").strip()
    return text.split(":", 1)[0] or None


def _device(data: dict, job: dict) -> str | None:
    recorded = load_block(data).get("device") or (data.get("config") or {}).get(RUN_DEVICE)
    return device_kind(recorded or job.get("device"))


def row_of(data: dict, job: dict | None) -> RowKey:
    """The row of a results JSON ``data`` (``job``: batch_eval's ``job.json`` beside it, if any)."""
    job = job or {}
    ratio = job.get("compression_ratio")
    return RowKey(
        model=str(job.get("model") or _model(data)),
        precision=str(job.get("precision") or _precision(data)),
        ratio=float(ratio) if ratio is not None else _ratio(data),
        device=_device(data, job),
    )
