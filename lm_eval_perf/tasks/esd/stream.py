"""Streamed ESD: the per-layer rows of a checkpoint, read tensor by tensor, without building the model.

    from lm_eval_perf.tasks.esd.checkpoint import open_checkpoint
    streamed = analyze_checkpoint(open_checkpoint("org/model"), ESDOptions(), torch.device("cuda"))
    streamed.result.rows   # the same rows as estimator.analyze(loaded model)

1. **Which layers**: the checkpoint's config builds the model on the ``meta`` device (no memory) and
   :func:`.spectrum.analysed_modules` selects the layers exactly as for a loaded model (same names,
   order, ``params``; a tied weight once, under the same name). Each layer's weight is found under
   one of its parameter names (a tied ``lm_head`` under the embedding's), also with or without the
   model's ``base_model_prefix``; shape and dtype are checked against the file before anything is read.
2. **Reading** (:mod:`.checkpoint`): the weights in file order, one tensor at a time, by a reader
   thread that may run up to ``batch_gib`` of weights ahead of the solver, so that reading the
   next batch (and its host-to-device copies, on their own CUDA stream) overlaps the current
   eigensolve. A PEFT LoRA adapter is merged into each weight on the device as it arrives
   (:mod:`.adapter`).
3. **Solving**: weights wait on the device until the next one would take the pending set over
   ``batch_gib``; then :func:`.estimator.eigenvalues` solves them (same-shape matrices batched), and
   they are freed. The rows come from :func:`.estimator.layer_rows`, as in the loaded path.

Memory bound: host - the tensor being read, copied out of its file, which is closed again (never a
whole shard or model); device - the pending batch (``batch_gib``, counting each matrix's solve
memory) plus at most ``batch_gib`` of weights read ahead. On a CPU the device *is* the host, so
there both count as host memory. The largest tensor and ``batch_gib``, not the model, set the peak:
a 70B model streams through the memory its biggest matrix and two batches need.
"""

from __future__ import annotations

import contextlib
import math
import resource
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import psutil
import torch

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.monitor.clock import clock_for
from lm_eval_perf.tasks.esd import spectrum
from lm_eval_perf.tasks.esd.adapter import LoraAdapter
from lm_eval_perf.tasks.esd.checkpoint import Checkpoint, TensorRef, build_skeleton, weight_aliases
from lm_eval_perf.tasks.esd.estimator import ESDOptions, ESDResult, eigenvalues, layer_rows

_DONE = object()


@dataclass(frozen=True)
class PlannedLayer:
    """An analysed layer (the estimator's name, M, N, params) and where its weight is stored."""

    name: str
    M: int
    N: int
    params: int
    ref: TensorRef
    tied_to: tuple[str, ...] = ()  # other modules holding the same weight


@dataclass(frozen=True)
class StreamStats:
    """How a streamed run went: sizes in bytes, times in seconds (wall clock, device-synchronized)."""

    layers: int
    files: int  # checkpoint files (shards) read
    bytes_read: int  # bytes of the analysed tensors as stored
    largest_tensor_bytes: int
    stored_dtypes: tuple[str, ...]
    read_seconds: float  # reader thread: reading, host-to-device copy, adapter merge
    wait_seconds: float  # solver thread waiting for the reader (the reading that did not overlap)
    total_seconds: float  # skeleton, reading, eigenvalues and fits
    host_rss_start_bytes: int  # resident memory before the first tensor was read
    host_rss_peak_bytes: int  # the process's peak resident memory (getrusage ru_maxrss)
    gpu_peak_bytes: int | None  # torch.cuda.max_memory_allocated during the run (None: not on a GPU)
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamedESD:
    result: ESDResult
    stats: StreamStats


def _candidates(name: str, prefix: str) -> list[str]:
    """``name`` as stored with and without the model's ``base_model_prefix``."""
    if prefix and name.startswith(prefix + "."):
        return [name, name[len(prefix) + 1 :]]
    return [name, f"{prefix}.{name}"] if prefix else [name]


def plan_layers(skeleton: torch.nn.Module, refs: dict[str, TensorRef]) -> list[PlannedLayer]:
    """The analysed layers of ``skeleton`` (a ``meta`` model) and the stored tensor of each."""
    aliases = weight_aliases(skeleton)
    prefix = getattr(skeleton, "base_model_prefix", "")
    planned = []
    for name, module in spectrum.analysed_modules(skeleton):
        names = aliases[id(module.weight)]
        own = f"{name}.weight"
        ordered = [own, *(n for n in names if n != own)]
        found = [c for n in ordered for c in _candidates(n, prefix) if c in refs]
        if not found:
            raise UserInputError(
                f"the checkpoint has no weight for layer {name} (looked for {', '.join(ordered)}): "
                "ESD needs the floating-point weights of a transformers model"
            )
        ref = refs[found[0]]
        shape = tuple(module.weight.shape)
        if ref.shape != shape:
            raise UserInputError(
                f"{ref.key} has shape {ref.shape} in the checkpoint, the config says {shape}"
            )
        if not ref.is_float:
            raise UserInputError(
                f"{ref.key} is stored as {ref.dtype}: ESD needs floating-point weights "
                "(a quantized checkpoint?)"
            )
        others = tuple(n.removesuffix(".weight") for n in names if n != own)
        planned.append(PlannedLayer(name, shape[0], shape[1], spectrum.module_params(module), ref, others))
    if not planned:
        raise UserInputError(f"{type(skeleton).__name__} has no Linear or Conv layer to analyse")
    return planned


def _cost(layer: PlannedLayer, options: ESDOptions) -> int:
    """Device bytes a pending layer counts against ``batch_gib``: its weight as read and its solve."""
    dtype = spectrum.parse_dtype(options.eig_dtype)
    positions = math.prod(layer.ref.shape[2:])
    itemsize = layer.ref.loaded_bytes // math.prod(layer.ref.shape)
    stacked = itemsize if len(layer.ref.shape) == 2 else dtype.itemsize  # a convolution: scaled copies
    return layer.ref.loaded_bytes + spectrum.matrix_bytes(layer.M, layer.N, dtype, stacked) * positions


class _Ahead:
    """Weights handed from the reader thread to the solver; the reader may be ``limit`` bytes ahead
    (always at least one tensor)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: deque[tuple[object, int]] = deque()
        self.bytes = 0
        self.closed = False
        self.changed = threading.Condition()

    def room(self, nbytes: int) -> bool:
        """Wait until ``nbytes`` more fit (False: the solver stopped)."""
        with self.changed:
            self.changed.wait_for(lambda: self.closed or not self.items or self.bytes + nbytes <= self.limit)
            return not self.closed

    def put(self, item: object, nbytes: int = 0) -> None:
        with self.changed:
            self.items.append((item, nbytes))
            self.bytes += nbytes
            self.changed.notify_all()

    def get(self) -> object:
        with self.changed:
            self.changed.wait_for(lambda: bool(self.items))
            item, nbytes = self.items.popleft()
            self.bytes -= nbytes
            self.changed.notify_all()
            return item

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.items.clear()
            self.changed.notify_all()


def _read_ahead(
    layers: Sequence[PlannedLayer],
    checkpoint: Checkpoint,
    adapter: LoraAdapter | None,
    device: torch.device,
    ahead_bytes: int,
    timing: dict[str, float],
) -> Iterator[tuple[PlannedLayer, torch.Tensor]]:
    """Each layer's (merged) weight on ``device``, read by a thread up to ``ahead_bytes`` (as read)
    ahead of the consumer, so that reading overlaps solving.

    On a GPU the thread copies on its own stream and the consumer's stream waits for that copy; the
    tensor is marked as used there, so its memory is not handed out again before the consumer is done.
    """
    ahead = _Ahead(ahead_bytes)
    side = torch.cuda.Stream(device) if device.type == "cuda" else None

    def work() -> None:
        try:
            for layer in layers:
                if not ahead.room(layer.ref.loaded_bytes):
                    return
                started = time.perf_counter()
                with torch.no_grad(), torch.cuda.stream(side) if side else contextlib.nullcontext():
                    weight = checkpoint.read(layer.ref, device)
                    if adapter is not None:
                        weight = adapter.merged(layer.name, weight)
                    event = side.record_event() if side else None
                timing["read_seconds"] += time.perf_counter() - started
                ahead.put((layer, weight, event), layer.ref.loaded_bytes)
            ahead.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            ahead.put(exc)

    reader = threading.Thread(target=work, name="esd-reader", daemon=True)
    reader.start()
    try:
        while True:
            started = time.perf_counter()
            item = ahead.get()
            timing["wait_seconds"] += time.perf_counter() - started
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            layer, weight, event = item  # type: ignore[misc]
            if event is not None:
                consumer = torch.cuda.current_stream(device)
                consumer.wait_event(event)
                weight.record_stream(consumer)
            yield layer, weight
    finally:
        ahead.close()
        reader.join()


def analyze_checkpoint(
    checkpoint: Checkpoint,
    options: ESDOptions | None = None,
    device: torch.device | None = None,
    adapter: LoraAdapter | None = None,
) -> StreamedESD:
    """Per-layer ESD rows of ``checkpoint`` (with ``adapter`` merged), weights streamed to ``device``."""
    options = options or ESDOptions()
    device = device or torch.device("cpu")
    started = time.perf_counter()
    skeleton = build_skeleton(checkpoint.config())
    layers = plan_layers(skeleton, checkpoint.tensors(skeleton))
    if adapter is not None:
        adapter.check_layers({layer.name: list(layer.tied_to) for layer in layers})
    order = sorted(layers, key=lambda layer: (str(layer.ref.file), layer.ref.offset))
    clock = clock_for([device.index or 0] if device.type == "cuda" else [])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_start = psutil.Process().memory_info().rss
    timing = {"read_seconds": 0.0, "wait_seconds": 0.0, "eig_seconds": 0.0}
    evals: dict[str, torch.Tensor] = {}
    pending: list[spectrum.LayerWeight] = []
    pending_bytes = 0

    def solve() -> None:
        begun = clock.now()
        for layer, values in zip(pending, eigenvalues(pending, options)):
            evals[layer.name] = values
        timing["eig_seconds"] += clock.now() - begun
        pending.clear()

    limit = int(options.batch_gib * 2**30)
    for layer, weight in _read_ahead(order, checkpoint, adapter, device, limit, timing):
        cost = _cost(layer, options)
        if pending and pending_bytes + cost > limit:
            solve()
            pending_bytes = 0
        pending.append(spectrum.LayerWeight(layer.name, weight, layer.M, layer.N, layer.params))
        pending_bytes += cost
    solve()
    fitted = clock.now()
    rows = layer_rows(layers, [evals[layer.name] for layer in layers], options)
    fit_seconds = clock.now() - fitted
    gpu_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    stats = StreamStats(
        layers=len(layers),
        files=len({layer.ref.file for layer in layers}),
        bytes_read=sum(layer.ref.nbytes for layer in layers),
        largest_tensor_bytes=max(layer.ref.nbytes for layer in layers),
        stored_dtypes=tuple(sorted({layer.ref.dtype for layer in layers})),
        read_seconds=timing["read_seconds"],
        wait_seconds=timing["wait_seconds"],
        total_seconds=time.perf_counter() - started,
        host_rss_start_bytes=rss_start,
        host_rss_peak_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        gpu_peak_bytes=gpu_peak,
        unavailable={} if gpu_peak is not None else {"gpu_peak_bytes": f"the weights went to {device}"},
    )
    return StreamedESD(ESDResult(rows, timing["eig_seconds"], fit_seconds), stats)
