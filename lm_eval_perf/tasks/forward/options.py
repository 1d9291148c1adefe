"""The forward sweep's options, its points and the key of a measured point.

Options come from the task YAML's ``metadata`` merged with ``--metadata '{...}'``; every one has a
default here:

* ``batch_sizes`` (default ``[1, 4, 8, 16, 32, 64]``) and ``seq_lengths`` (``[128, 512]``, tokens
  per row): the grid. Points run sequence length by sequence length, batch sizes ascending (so the
  batch sizes above one that ran out of memory can be skipped).
* ``input_source``: ``csv`` (the texts of a labelled file ``path``, column ``text_column``; each row
  its model's tokenization - special tokens included - cut or right-padded to the sequence length),
  ``text`` (the bundled passage), ``bbh`` (BIG-Bench Hard inputs from ``bbh_dir``) or ``random``
  (ids drawn with ``seed``); the last three fill every row, no padding. ``auto`` (default): ``csv``
  when ``path`` is given, else ``text``. Row ``r`` of a batch is the same text at every batch size
  (the file's example ``r``, wrapping around).
* ``num_warmup`` (2) forward passes first, not measured; then ``num_runs`` (10) and ``min_seconds``
  (1.0 s): each point repeats until both are reached.
* ``logits`` (``last``): a causal LM's forward makes logits at the last position only, as a
  generation prefill does; ``all``: at every position, as loglikelihood scoring does. A sequence
  classifier always runs its own head.
* ``overhead_threshold`` (0.5): a point below this fraction of its roofline is overhead-bound.
* ``profile_point`` (e.g. ``"bs=8,seq=128"``): that point also writes a PyTorch profiler trace.
* ``max_sweep_seconds``: stop starting new points after this many seconds; a rerun resumes.
* ``inject_oom_from_batch_size``: test hook - every point with at least this batch size raises
  ``torch.OutOfMemoryError`` before running, exactly like a real out-of-memory error.

``label_column`` and ``labels`` (``classification_local``'s, often in the same ``--metadata``) and
the model arguments lm-eval copies into the metadata are not options and are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any, ClassVar

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.tasks.sweeps import options as checked
from lm_eval_perf.tasks.sweeps.options import digest
from lm_eval_perf.tasks.sweeps.tokens import PROMPT_SOURCES

TASK = "perf_forward"
INPUT_SOURCES = ("auto", "csv", *PROMPT_SOURCES)
LOGITS = ("last", "all")
SHARED_KEYS = frozenset({"label_column", "labels"})  # classification_local's, ignored here
# Options that choose which points run or how they are reported, not how a point is measured.
NOT_MEASUREMENT = frozenset(
    {"batch_sizes", "seq_lengths", "profile_point", "overhead_threshold", "max_sweep_seconds"}
)
_int = partial(checked.integer, TASK)
_number = partial(checked.number, TASK)


@dataclass(frozen=True)
class Point:
    """One measurement: forward passes of ``batch_size`` rows of ``seq_len`` tokens."""

    LENGTH: ClassVar[str] = "seq_len"
    batch_size: int
    seq_len: int

    @property
    def length(self) -> int:
        return self.seq_len

    @property
    def label(self) -> str:
        """The point's name in metric names: ``bs8_seq128``."""
        return f"bs{self.batch_size}_seq{self.seq_len}"


@dataclass(frozen=True)
class ForwardOptions:
    """The validated options of one forward sweep (see the module docstring)."""

    batch_sizes: tuple[int, ...] = (1, 4, 8, 16, 32, 64)
    seq_lengths: tuple[int, ...] = (128, 512)
    input_source: str = "auto"
    path: str | None = None
    text_column: str = "text"
    bbh_dir: str | None = None
    seed: int = 0
    num_warmup: int = 2
    num_runs: int = 10
    min_seconds: float = 1.0
    logits: str = "last"
    overhead_threshold: float = 0.5
    profile_point: str | None = None
    max_sweep_seconds: float | None = None
    inject_oom_from_batch_size: int | None = None

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], ignore: frozenset[str] = frozenset()) -> ForwardOptions:
        """Validate ``options`` (``ignore``: the model arguments' names, see
        :func:`~lm_eval_perf.tasks.sweeps.options.check_names`)."""
        names = [f.name for f in fields(cls)]
        checked.check_names(TASK, options, names, ignore | SHARED_KEYS)
        given = {k: v for k, v in options.items() if k in names and v is not None}
        v = {**{f.name: f.default for f in fields(cls)}, **given}
        source = checked.choice(TASK, "input_source", v["input_source"], INPUT_SOURCES)
        if source == "auto":
            source = "csv" if v["path"] is not None else "text"
        if source == "csv" and v["path"] is None:
            raise UserInputError(f'{TASK} input_source=csv needs the labelled file: "path": "data.csv"')
        parsed = cls(
            batch_sizes=checked.int_list(TASK, "batch_sizes", v["batch_sizes"], minimum=1),
            seq_lengths=checked.int_list(TASK, "seq_lengths", v["seq_lengths"], minimum=1),
            input_source=source,
            path=None if v["path"] is None else str(v["path"]),
            text_column=str(v["text_column"]),
            bbh_dir=None if v["bbh_dir"] is None else str(v["bbh_dir"]),
            seed=_int("seed", v["seed"], minimum=0),
            num_warmup=_int("num_warmup", v["num_warmup"], minimum=0),
            num_runs=_int("num_runs", v["num_runs"], minimum=1),
            min_seconds=_number("min_seconds", v["min_seconds"], minimum=0.0),
            logits=checked.choice(TASK, "logits", v["logits"], LOGITS),
            overhead_threshold=_number("overhead_threshold", v["overhead_threshold"], minimum=0.0),
            profile_point=None if v["profile_point"] is None else str(v["profile_point"]),
            max_sweep_seconds=checked.optional(
                v["max_sweep_seconds"], partial(_number, "max_sweep_seconds", minimum=0.0)
            ),
            inject_oom_from_batch_size=checked.optional(
                v["inject_oom_from_batch_size"], partial(_int, "inject_oom_from_batch_size", minimum=1)
            ),
        )
        parsed.profiled_point()  # validates profile_point against the grid
        return parsed

    def points(self) -> Iterator[Point]:
        """The grid in running order: sequence lengths as given, batch sizes ascending."""
        return checked.grid(Point, self.seq_lengths, self.batch_sizes)

    def profiled_point(self) -> Point | None:
        """The point named by ``profile_point`` (``"bs=8,seq=128"``), or ``None``."""
        return checked.named_point(TASK, self.profile_point, ("bs", "seq"), self.points())

    def measurement_options(self) -> dict:
        """The options that change how a point is measured (they go into the point's key); the
        source's own settings only for that source."""
        values = {k: v for k, v in asdict(self).items() if k not in NOT_MEASUREMENT}
        unused = {
            "csv": ("bbh_dir", "seed"),
            "bbh": ("path", "text_column", "seed"),
            "text": ("path", "text_column", "bbh_dir", "seed"),
            "random": ("path", "text_column", "bbh_dir"),
        }[self.input_source]
        return {k: v for k, v in values.items() if k not in unused}


def point_key(identity: Mapping[str, Any], options: ForwardOptions, inputs_sha: str, point: Point) -> dict:
    """What identifies a measured point: the model as loaded, the point, the measurement options and
    (``inputs_sha``) the texts the rows were made of."""
    return {
        **identity,
        "batch_size": point.batch_size,
        "seq_len": point.seq_len,
        "inputs_sha": inputs_sha,
        "options_sha": digest(options.measurement_options()),
    }
