"""The sweep's options, its points and the key that identifies a measured point across runs.

Options come from the task YAML's ``metadata`` merged with ``--metadata '{...}'`` (see
:mod:`lm_eval_perf.tasks.plugin`); every one has a default here:

* ``batch_sizes`` (default ``[1, 4, 16, 64, 256]``) and ``gen_lengths`` (``[32, 128, 512]``, new
  tokens per sequence, each >= 2): the grid. Points run generation length by generation length,
  batch sizes ascending (so the batch sizes above one that ran out of memory can be skipped).
* ``prompt_len`` (128 tokens) and ``prompt_source``: ``text`` (the bundled public-domain passage
  ``sweeps/passage.txt``), ``bbh`` (BIG-Bench Hard inputs from ``bbh_dir`` or ``$LM_EVAL_PERF_BBH_DIR``) or
  ``random`` (token ids drawn with ``seed``). See :mod:`.prompts`.
* ``min_iterations`` (5) and ``min_seconds`` (3.0 s): each point repeats until both are reached;
  ``warmup_iterations`` (1) iterations run first and are not measured.
* ``static_compile`` (``"auto"``): whether ``generation_backend=static`` compiles its decode step
  with ``torch.compile`` - ``auto`` compiles on a GPU only (compiling on a CPU takes minutes).
* ``compile_shapes`` (``"dynamic"``): how the decode step is compiled - ``dynamic``: once for all
  cache lengths; ``static``: afresh for every point (minutes each for a 7B model), with Inductor's
  combo kernels, which form only under static shapes (see :mod:`.generation`).
* ``overhead_threshold`` (0.5): a phase running below this fraction of its roofline limit is
  overhead-bound (see :mod:`.bottleneck`).
* ``profile_point`` (e.g. ``"bs=1,gen=128"``): that point also writes a PyTorch profiler trace.
* ``max_sweep_seconds``: stop starting new points after this many seconds; a rerun resumes.
* ``inject_oom_from_batch_size``: test hook - every point with at least this batch size raises
  ``torch.OutOfMemoryError`` before generating, exactly like a real out-of-memory error.

lm-eval also copies every ``--model_args`` entry into the task metadata, so keys that are not
options are ignored - unless they look like a misspelt option, which is an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any, ClassVar

from lm_eval_perf.tasks.sweeps import options as checked
from lm_eval_perf.tasks.sweeps.options import digest
from lm_eval_perf.tasks.sweeps.tokens import PROMPT_SOURCES

TASK = "perf_throughput"
STATIC_COMPILE = ("auto", True, False)
COMPILE_SHAPES = ("dynamic", "static")
# Options that choose which points run or how they are reported, not how a point is measured:
# they are left out of the key, so a grown grid or a new profile point reuses finished points.
NOT_MEASUREMENT = frozenset(
    {"batch_sizes", "gen_lengths", "profile_point", "overhead_threshold", "max_sweep_seconds"}
)
_int = partial(checked.integer, TASK)
_number = partial(checked.number, TASK)
_int_list = partial(checked.int_list, TASK)
_choice = partial(checked.choice, TASK)


@dataclass(frozen=True)
class Point:
    """One measurement of the sweep: ``batch_size`` sequences generating ``new_tokens`` tokens each."""

    LENGTH: ClassVar[str] = "new_tokens"  # the length a batch size that ran out of memory rules out
    batch_size: int
    new_tokens: int

    @property
    def length(self) -> int:
        return self.new_tokens

    @property
    def label(self) -> str:
        """The point's name in metric names: ``bs4_gen128``."""
        return f"bs{self.batch_size}_gen{self.new_tokens}"


@dataclass(frozen=True)
class SweepOptions:
    """The validated options of one sweep (see the module docstring for their meaning)."""

    batch_sizes: tuple[int, ...] = (1, 4, 16, 64, 256)
    gen_lengths: tuple[int, ...] = (32, 128, 512)
    prompt_len: int = 128
    prompt_source: str = "text"
    bbh_dir: str | None = None
    seed: int = 0
    min_iterations: int = 5
    min_seconds: float = 3.0
    warmup_iterations: int = 1
    static_compile: str | bool = "auto"
    compile_shapes: str = "dynamic"
    overhead_threshold: float = 0.5
    profile_point: str | None = None
    max_sweep_seconds: float | None = None
    inject_oom_from_batch_size: int | None = None

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], ignore: frozenset[str] = frozenset()) -> SweepOptions:
        """Validate ``options``; unknown keys are ignored unless they look like a misspelt option.

        ``ignore``: names of model arguments (lm-eval copies ``--model_args`` into the metadata): not
        an error even when close to an option's name - unless the value is a list, which a model
        argument never is (``{"batch_size": [1, 8]}`` is a misspelt ``batch_sizes``).
        """
        names = [f.name for f in fields(cls)]
        checked.check_names(TASK, options, names, ignore)
        given = {k: v for k, v in options.items() if k in names and v is not None}
        values = {**{f.name: f.default for f in fields(cls)}, **given}
        parsed = cls(
            batch_sizes=_int_list("batch_sizes", values["batch_sizes"], minimum=1),
            gen_lengths=_int_list("gen_lengths", values["gen_lengths"], minimum=2),
            prompt_len=_int("prompt_len", values["prompt_len"], minimum=1),
            prompt_source=_choice("prompt_source", values["prompt_source"], PROMPT_SOURCES),
            bbh_dir=None if values["bbh_dir"] is None else str(values["bbh_dir"]),
            seed=_int("seed", values["seed"], minimum=0),
            min_iterations=_int("min_iterations", values["min_iterations"], minimum=1),
            min_seconds=_number("min_seconds", values["min_seconds"], minimum=0.0),
            warmup_iterations=_int("warmup_iterations", values["warmup_iterations"], minimum=0),
            static_compile=_choice("static_compile", values["static_compile"], STATIC_COMPILE),
            compile_shapes=_choice("compile_shapes", values["compile_shapes"], COMPILE_SHAPES),
            overhead_threshold=_number("overhead_threshold", values["overhead_threshold"], minimum=0.0),
            profile_point=None if values["profile_point"] is None else str(values["profile_point"]),
            max_sweep_seconds=checked.optional(
                values["max_sweep_seconds"], partial(_number, "max_sweep_seconds", minimum=0.0)
            ),
            inject_oom_from_batch_size=checked.optional(
                values["inject_oom_from_batch_size"], partial(_int, "inject_oom_from_batch_size", minimum=1)
            ),
        )
        parsed.profiled_point()  # validates profile_point against the grid
        return parsed

    def points(self) -> Iterator[Point]:
        """The grid in running order: generation lengths as given, batch sizes ascending."""
        return checked.grid(Point, self.gen_lengths, self.batch_sizes)

    def profiled_point(self) -> Point | None:
        """The point named by ``profile_point`` (``"bs=1,gen=128"``), or ``None``."""
        return checked.named_point(TASK, self.profile_point, ("bs", "gen"), self.points())

    def measurement_options(self) -> dict:
        """The options that change how a point is measured (they go into the point's key)."""
        values = {k: v for k, v in asdict(self).items() if k not in NOT_MEASUREMENT}
        if self.prompt_source != "bbh":
            values["bbh_dir"] = None
        if self.compile_shapes == "dynamic":  # the behaviour before the option: its records stay valid
            del values["compile_shapes"]
        return values


def point_key(identity: Mapping[str, Any], options: SweepOptions, point: Point) -> dict:
    """What identifies a measured point: the model and backend, the point, the measurement options."""
    return {
        **identity,
        "prompt_len": options.prompt_len,
        "batch_size": point.batch_size,
        "new_tokens": point.new_tokens,
        "options_sha": digest(options.measurement_options()),
    }
