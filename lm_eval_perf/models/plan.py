"""How ``perf-hf`` turns its precision and compression model arguments into the model it measures.

Model arguments (all optional; see :mod:`lm_eval_perf.models.precision` and
:mod:`lm_eval_perf.models.compress`):

* ``precision`` - bfloat16 | float16 | float32 | int4 | awq | nf4; ``quant_backend`` - the 4-bit
  kernel; ``group_size`` - columns per scale for int4 (default 128); ``quantize_lm_head`` - int4/nf4
  quantize ``lm_head`` too (default false).
* ``svd_ratio`` (0 < r ≤ 1) or ``svd_rank`` (k ≥ 1) - SVD truncation of the linear layers matched by
  ``svd_targets`` (``|``-joined globs or ``re:`` regexes; default every linear but lm_head);
  ``svd_solver`` - exact | gram | lowrank.
* ``compressed`` - a compressed checkpoint (HF directory, state dict of low-rank factors, or a
  pickled model with ``allow_pickle=true``).

Data flows one way: :meth:`LoadPlan.pop_from` checks the arguments before anything is loaded (no
device is known yet: lm-eval's HFLM chooses it); :meth:`LoadPlan.bind` takes the device HFLM chose
(``--device``, its CPU fall-back, ``accelerate launch``, ``parallelize``) and checks the kernels
against it; :meth:`LoadPlan.load` loads what lm-eval's HFLM cannot (AWQ on this project's kernels,
compressed directories, pickles); :meth:`LoadPlan.finish` moves the model to its device and applies
state-dict factors, SVD and load-time quantization, in that order; :meth:`LoadPlan.record` describes
the result (the ``precision`` and ``compression`` blocks of ``efficiency.load``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models.compress import checkpoints
from lm_eval_perf.models.compress.svd import DEFAULT_TARGETS, SOLVERS, apply_svd, check_ratio
from lm_eval_perf.models.precision import PrecisionSpec, on_device, resolve_precision
from lm_eval_perf.models.shape import parameter_count, weight_bytes
from lm_eval_perf.models.surgery import is_output_projection


def _number(kwargs: dict, key: str, kind: type):
    value = kwargs.pop(key, None)
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"{key}={value!r} is not a {kind.__name__}") from exc


def _flag(kwargs: dict, key: str) -> bool:
    value = kwargs.pop(key, None)
    if isinstance(value, bool) or value is None:
        return bool(value)
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise UserInputError(f"{key}={value!r}: use true or false")


def held_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights as held in memory: :func:`shape.weight_bytes` plus bitsandbytes'
    quantization statistics (absmax, code), which live beside its 4-bit parameters."""
    extra = 0
    for parameter in model.parameters():
        state = getattr(parameter, "quant_state", None)
        if state is not None:
            extra += sum(
                t.numel() * t.element_size()
                for t in state.as_dict(packed=True).values()
                if torch.is_tensor(t)
            )
    return weight_bytes(model) + extra


@dataclass
class LoadPlan:
    """The checked precision/compression arguments and, after loading, what was done."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # set by :meth:`bind`
    precision: PrecisionSpec | None = None
    svd_ratio: float | None = None
    svd_rank: int | None = None
    svd_targets: str = DEFAULT_TARGETS
    svd_solver: str = "exact"
    compressed: Path | None = None
    compressed_kind: str | None = None
    allow_pickle: bool = False
    done: dict = field(default_factory=dict)  # filled by load/finish, read by record

    @classmethod
    def pop_from(cls, kwargs: dict) -> LoadPlan:
        """Take this module's keys out of perf-hf's ``kwargs``, check them, set ``kwargs["dtype"]``."""
        plan = cls()
        precision = kwargs.pop("precision", None)
        backend, group_size = kwargs.pop("quant_backend", None), _number(kwargs, "group_size", int)
        lm_head = _flag(kwargs, "quantize_lm_head")
        if precision is not None:
            dtype = kwargs.get("dtype")
            dtype = None if dtype is None else str(dtype).removeprefix("torch.")
            plan.precision = resolve_precision(str(precision), backend, group_size, dtype, lm_head)
            kwargs["dtype"] = plan.precision.dtype
        elif backend is not None or group_size is not None or lm_head:
            raise UserInputError("quant_backend/group_size/quantize_lm_head need precision=int4, awq or nf4")
        plan.svd_ratio = _number(kwargs, "svd_ratio", float)
        plan.svd_rank = _number(kwargs, "svd_rank", int)
        plan.svd_targets = str(kwargs.pop("svd_targets", None) or DEFAULT_TARGETS)
        plan.svd_solver = str(kwargs.pop("svd_solver", None) or "exact")
        plan.allow_pickle = _flag(kwargs, "allow_pickle")
        compressed = kwargs.pop("compressed", None)
        svd = plan.svd_ratio is not None or plan.svd_rank is not None
        if plan.svd_ratio is not None and plan.svd_rank is not None:
            raise UserInputError("give svd_ratio or svd_rank, not both")
        if plan.svd_ratio is not None:
            check_ratio(plan.svd_ratio)
        if plan.svd_rank is not None and plan.svd_rank < 1:
            raise UserInputError(f"svd_rank={plan.svd_rank} must be >= 1")
        if plan.svd_solver not in SOLVERS:
            raise UserInputError(f"svd_solver={plan.svd_solver!r}: use one of {', '.join(SOLVERS)}")
        if compressed is not None:
            if svd:
                raise UserInputError("compressed= is already compressed: drop svd_ratio/svd_rank")
            plan.compressed = Path(str(compressed)).expanduser()
            plan.compressed_kind = checkpoints.kind_of(plan.compressed)
        if plan.precision is not None and plan.precision.name == "awq" and (svd or compressed is not None):
            raise UserInputError("precision=awq loads a quantized checkpoint: it cannot be SVD-compressed")
        return plan

    def bind(self, device: torch.device) -> None:
        """The device the model is placed on, as lm-eval's HFLM resolved it; kernels checked for it."""
        self.device = torch.device(device)
        if self.precision is not None:
            self.precision = on_device(self.precision, self.device.type == "cuda")

    # -- loading ---------------------------------------------------------------------------------

    def load(self, pretrained: str, random_weights: bool, dtype) -> nn.Module | None:
        """The model, when this plan loads it itself; ``None`` for lm-eval's own loading."""
        torch_dtype = (
            torch.bfloat16 if dtype in (None, "auto") else getattr(torch, str(dtype).removeprefix("torch."))
        )
        spec = self.precision
        if spec is not None and spec.name == "awq":
            if random_weights:
                raise UserInputError(
                    "precision=awq needs an AWQ checkpoint; for arch: models use precision=int4"
                )
            if spec.backend == "gptqmodel":
                from lm_eval_perf.models.quant.kernels import require

                require("gptqmodel", "quant_backend=gptqmodel (transformers' AWQ loader)")
                return None
            from lm_eval_perf.models.quant.awq_checkpoint import load_awq

            model, layers, group_size = load_awq(pretrained, spec.backend, torch_dtype, self.device)  # type: ignore[arg-type]
            self.done["quant_layers"], self.done["group_size"] = layers, group_size
            return model
        directory = self.compressed if self.compressed_kind == "hf_dir" else Path(pretrained)
        if directory.is_dir() and checkpoints.compression_block(directory) is not None:
            model, block = checkpoints.load_hf_dir(directory, torch_dtype, self.device)
            self.done["compression"] = {"source": "hf_dir", "path": str(directory), **block}
            return model
        if self.compressed_kind == "pickle":
            model = checkpoints.load_pickle(self.compressed, self.allow_pickle, self.device)  # type: ignore[arg-type]
            if dtype not in (None, "auto"):
                model = model.to(torch_dtype)
            self.done["compression"] = {"source": "pickle", "path": str(self.compressed)}
            return model
        return None

    def finish(self, model: nn.Module) -> nn.Module:
        """Device placement, state-dict factors, SVD truncation and load-time quantization."""
        from lm_eval_perf.models.quant.kernels import quantize_model

        first = next(model.parameters(), None)
        movable = not getattr(model, "is_quantized", False)  # transformers-quantized models place themselves
        if movable and first is not None and first.device.type != self.device.type:
            model = model.to(self.device)
        if self.compressed_kind == "state_dict":
            ranks = checkpoints.apply_state_dict(model, self.compressed)  # type: ignore[arg-type]
            self.done["compression"] = {"source": "state_dict", "path": str(self.compressed), "ranks": ranks}
        if self.svd_ratio is not None or self.svd_rank is not None:
            params_before = parameter_count(model)
            result = apply_svd(model, self.svd_ratio, self.svd_rank, self.svd_targets, self.svd_solver)
            self.done["compression"] = {
                "source": "svd",
                "ratio": self.svd_ratio,
                "rank": self.svd_rank,
                "targets": self.svd_targets,
                "solver": self.svd_solver,
                "ranks": result.ranks,
                "params_base": params_before,
                "linear_params_dense": result.dense_params,
                "linear_params_lowrank": result.lowrank_params,
                "svd_seconds": result.seconds,
            }
        spec = self.precision
        if spec is not None and spec.name in ("int4", "nf4"):
            result = quantize_model(model, spec)
            self.done.update(quant_layers=result.layers, quant_skipped=result.skipped, kernel=result.kernel)
        return model

    # -- the record ------------------------------------------------------------------------------

    def record(self, model: nn.Module) -> dict:
        """``{"precision": {...}, "compression": {...} | None}`` for ``efficiency.load``."""
        from lm_eval_perf.models.quant.awq_checkpoint import quantization_config
        from lm_eval_perf.models.quant.kernels import kernel_name

        held, params = held_weight_bytes(model), parameter_count(model)
        spec = self.precision
        dtype = str(getattr(model, "dtype", "")).removeprefix("torch.") or None
        if spec is None:
            loaded = quantization_config(getattr(model, "config", None)) or {}
            precision = {
                "name": None,
                "method": loaded.get("quant_method", "as loaded"),
                "bits": loaded.get("bits"),
            }
            precision.update(group_size=loaded.get("group_size"), backend=None, kernel=None)
        else:
            kernel = self.done.get("kernel")
            if kernel is None and spec.backend is not None:
                kernel = kernel_name(spec.backend, self.device)
            precision = {"name": spec.name, "method": spec.method, "bits": spec.bits}
            precision.update(
                group_size=self.done.get("group_size", spec.group_size), backend=spec.backend, kernel=kernel
            )
            layers = self.done.get("quant_layers", [])
            precision.update(
                quantized_layers=len(layers),
                lm_head_quantized=any(is_output_projection(name) for name in layers),
                skipped_layers=self.done.get("quant_skipped", {}),
            )
        precision.update(compute_dtype=dtype, weight_bytes=held, params=params)
        return {"precision": precision, "compression": self._compression(model, held, params)}

    def _compression(self, model: nn.Module, held: int, params: int) -> dict | None:
        done = self.done.get("compression")
        if done is None:
            if self.svd_ratio == 1.0:  # the untouched baseline row of a ratio sweep
                return {
                    "source": "svd",
                    "compression_ratio": 1.0,
                    "layers": 0,
                    "params": params,
                    "weight_bytes": held,
                }
            return None
        ranks = done.get("ranks") or checkpoints.lowrank_ranks(model)
        block = {k: v for k, v in done.items() if k != "ranks"}
        ratio = done.get("ratio")
        dense, lowrank = done.get("linear_params_dense"), done.get("linear_params_lowrank")
        block.update(
            compression_ratio=ratio,
            compression_ratio_note=None if ratio is not None else "no ratio recorded: see linear_params_kept",
            linear_params_kept=None if not dense else lowrank / dense,
            layers=len(ranks),
            rank_min=min(ranks.values(), default=None),
            rank_max=max(ranks.values(), default=None),
            params=params,
            weight_bytes=held,
        )
        return block
