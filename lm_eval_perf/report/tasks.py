"""Table columns from lm-eval's task and group names, and each column's primary metric.

The EfficientLLM layout ``Model | Precision | MMLU-Pro | BBH | GPQA | IFEval | MATH | MUSR`` is
used as soon as one of these leaderboard benchmarks is in the results; the column's value is the
benchmark's primary metric:

============  ==============================================  =============================
column        lm-eval names                                    primary metric
============  ==============================================  =============================
MMLU-Pro      leaderboard_mmlu_pro                             ``acc``
BBH           leaderboard_bbh, leaderboard_bbh_local, ...      ``acc_norm``
GPQA          leaderboard_gpqa                                 ``acc_norm``
IFEval        leaderboard_ifeval                               ``prompt_level_strict_acc``
MATH          leaderboard_math_hard                            ``exact_match``
MUSR          leaderboard_musr                                 ``acc_norm``
============  ==============================================  =============================

A name maps to a column when it is one of the names above or a group whose every leaf task is a
member of that benchmark (``leaderboard_bbh_local``, or a group of a few ``leaderboard_bbh_*``
subtasks) - a lone subtask is not the benchmark and keeps its own column. A group holding
benchmarks (``leaderboard``) is replaced by its members. Other tasks get a column each, named after
the task; groups are preferred over their subtasks: only the outermost entries that report a metric
become columns (a group without a metric of its own is replaced by its members). Their primary
metric is the first of the task's ``metric_list`` (for a group, the first metric it reports); the
``none`` filter is preferred.

The sweeps (recognised by their ``points_ok`` metric: ``perf_forward`` by its task name or its
``samples_per_s`` metrics, else ``perf_throughput``) and the ESD analysis (``esd``, by
``alpha_layers``) are measurements, not accuracy: they become columns of kind ``throughput`` /
``forward`` / ``esd`` that the accuracy table leaves out. A throughput column's value is the sweep's
best decode tokens/s, a forward column's the best samples/s at its first sequence length.

An accuracy column is also defined by the evaluation settings (:class:`Settings`): the few-shot count
(lm-eval's ``n-shot``), ``--limit``, the batch size and the task's version. Results that differ in
any of them are not comparable and land in different columns - ``BBH`` 0-shot and ``BBH`` 3-shot -
never in one cell.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ACCURACY, THROUGHPUT, FORWARD, ESD = "accuracy", "throughput", "forward", "esd"
KINDS = (ACCURACY, THROUGHPUT, FORWARD, ESD)
FORWARD_TASK = "perf_forward"
FORWARD_BEST = "best_samples_per_s@"  # a forward sweep's metric prefix, one per sequence length
_NOT_METRICS = frozenset({"alias", "name", "sample_len", "sample_count", "samples", " "})


@dataclass(frozen=True)
class Benchmark:
    """A leaderboard benchmark of the EfficientLLM layout."""

    column: str
    names: tuple[str, ...]  # lm-eval task/group names that are the whole benchmark
    prefix: str  # every member task's name starts with this
    metric: str


BENCHMARKS = (
    Benchmark("MMLU-Pro", ("leaderboard_mmlu_pro",), "leaderboard_mmlu_pro", "acc"),
    Benchmark("BBH", ("leaderboard_bbh", "leaderboard_bbh_local"), "leaderboard_bbh", "acc_norm"),
    Benchmark("GPQA", ("leaderboard_gpqa",), "leaderboard_gpqa", "acc_norm"),
    Benchmark("IFEval", ("leaderboard_ifeval",), "leaderboard_ifeval", "prompt_level_strict_acc"),
    Benchmark("MATH", ("leaderboard_math_hard",), "leaderboard_math", "exact_match"),
    Benchmark("MUSR", ("leaderboard_musr",), "leaderboard_musr", "acc_norm"),
)


@dataclass(frozen=True)
class Settings:
    """The settings an accuracy value was measured with (``None``: not recorded in the results file).

    ``num_fewshot``: ``"3"``, or ``"0-3"`` for a group whose tasks differ; ``limit``: ``--limit`` (a
    document count per task, or a fraction of the documents below 1); ``batch_size``: as given
    (``"8"``, ``"auto"``); ``version``: the task's (or group's) version - its prompts and data.
    """

    num_fewshot: str | None = None
    limit: float | None = None
    batch_size: str | None = None
    version: str | None = None

    def parts(self) -> dict[str, str]:
        """Each setting as shown in a table: ``{"num_fewshot": "3-shot", "limit": "limit 10", ...}``."""
        return {
            "num_fewshot": "n-shot ?" if self.num_fewshot is None else f"{self.num_fewshot}-shot",
            "limit": "no limit" if self.limit is None else f"limit {self.limit:g}",
            "batch_size": f"batch {self.batch_size or '?'}",
            "version": f"version {self.version or '?'}",
        }

    def sort_key(self) -> tuple:
        return tuple(str(v) for v in (self.num_fewshot, self.limit, self.batch_size, self.version))


@dataclass(frozen=True)
class Column:
    """A column of the tables: a leaderboard benchmark or one task/group, and for accuracy the
    settings its values were measured with (``None`` for measurement columns and for the empty
    EfficientLLM columns no result has)."""

    key: str
    kind: str = ACCURACY
    benchmark: int | None = None  # position in BENCHMARKS
    settings: Settings | None = None

    def sort_key(self) -> tuple:
        settings = self.settings.sort_key() if self.settings else ()
        return (KINDS.index(self.kind), self.benchmark is None, self.benchmark or 0, self.key, settings)


@dataclass(frozen=True)
class Entry:
    """The value one results file gives one column."""

    column: Column
    task: str  # the lm-eval task or group the value comes from
    metric: str | None  # "acc_norm,none"; None: the entry reports no usable metric
    value: float | None
    higher_is_better: bool | None
    members: tuple[str, ...]  # ``task`` and every task/group below it


def metric_keys(block: dict) -> list[str]:
    """The ``metric,filter`` keys of a results block, stderr left out, in file order."""
    return [
        k
        for k, v in block.items()
        if k not in _NOT_METRICS and "," in k and "_stderr," not in k and isinstance(v, (int, float))
    ]


def number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _pick(block: dict, metric: str) -> str | None:
    """The key of ``metric`` in ``block``, with the ``none`` filter if it has one."""
    keys = [k for k in metric_keys(block) if k.split(",", 1)[0] == metric]
    return f"{metric},none" if f"{metric},none" in keys else (keys[0] if keys else None)


def _version(value) -> str | None:
    """A task version as text: lm-eval writes ``1.0`` for tasks and ``"1.0"`` for groups."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


class ResultsIndex:
    """The tasks and groups of one results JSON, and their entries for the tables."""

    def __init__(self, data: dict):
        self.blocks: dict[str, dict] = {**(data.get("results") or {}), **(data.get("groups") or {})}
        self.children: dict[str, list[str]] = {
            k: list(v) for k, v in (data.get("group_subtasks") or {}).items() if isinstance(v, list)
        }
        self.configs: dict = data.get("configs") or {}
        self.higher: dict = data.get("higher_is_better") or {}
        self.n_shot: dict = data.get("n-shot") if isinstance(data.get("n-shot"), dict) else {}
        self.versions: dict = data.get("versions") if isinstance(data.get("versions"), dict) else {}
        config = data.get("config") or {}
        self.limit = number(config.get("limit"))
        self.batch_size = None if config.get("batch_size") is None else str(config["batch_size"])

    def settings(self, name: str) -> Settings:
        """The settings task or group ``name`` was evaluated with."""
        shots = self.n_shot.get(name)
        if not isinstance(shots, int) or isinstance(shots, bool):
            found = {n for leaf in self.leaves(name) if isinstance(n := self.n_shot.get(leaf), int)}
            shots = None if not found else min(found) if len(found) == 1 else f"{min(found)}-{max(found)}"
        return Settings(
            num_fewshot=None if shots is None else str(shots),
            limit=self.limit,
            batch_size=self.batch_size,
            version=_version(self.versions.get(name)),
        )

    def members(self, name: str) -> tuple[str, ...]:
        """``name`` and everything below it."""
        out = [name]
        for child in self.children.get(name, []):
            out += [m for m in self.members(child) if m not in out]
        return tuple(out)

    def leaves(self, name: str) -> list[str]:
        kids = self.children.get(name)
        return [leaf for kid in kids for leaf in self.leaves(kid)] if kids else [name]

    def top_level(self) -> list[str]:
        below = {c for kids in self.children.values() for c in kids}
        names = [*self.blocks, *(n for n in self.children if n not in self.blocks)]
        return [n for n in names if n not in below]

    def benchmark(self, name: str) -> int | None:
        for i, bench in enumerate(BENCHMARKS):
            member = lambda n, b=bench: n == b.prefix or n.startswith(b.prefix + "_")  # noqa: E731
            if name in bench.names or (name in self.children and all(map(member, self.leaves(name)))):
                return i
        return None

    def holds_benchmark(self, name: str) -> bool:
        """Whether ``name`` is, or has below it, a leaderboard benchmark."""
        return self.benchmark(name) is not None or any(map(self.holds_benchmark, self.children.get(name, [])))

    def primary(self, name: str) -> str | None:
        """The primary ``metric,filter`` key of a task or group that is not a leaderboard benchmark."""
        block = self.blocks.get(name) or {}
        listed = (self.configs.get(name) or {}).get("metric_list") or []
        for item in listed:
            key = _pick(block, str(item.get("metric"))) if isinstance(item, dict) else None
            if key:
                return key
        keys = metric_keys(block)
        none = [k for k in keys if k.endswith(",none")]
        return (none or keys or [None])[0]

    def _entry(self, column: Column, name: str, key: str | None) -> Entry:
        if column.kind == ACCURACY:
            column = replace(column, settings=self.settings(name))
        block = self.blocks.get(name) or {}
        metric = (key or "").partition(",")[0]
        higher = (self.higher.get(name) or {}).get(metric) if key else None
        if not isinstance(higher, bool):  # leaderboard scores are accuracies; others: unknown
            higher = True if column.benchmark is not None else None
        return Entry(
            column=column,
            task=name,
            metric=key,
            value=number(block.get(key)) if key else None,
            higher_is_better=higher,
            members=self.members(name),
        )

    def _sweep_entry(self, name: str, block: dict) -> Entry:
        """The column of a sweep: ``perf_forward``'s or ``perf_throughput``'s (see the module docstring)."""
        keys = metric_keys(block)
        task = (self.configs.get(name) or {}).get("task")
        if task == FORWARD_TASK or any(k.startswith(("samples_per_s@", FORWARD_BEST)) for k in keys):
            best = next((k for k in keys if k.startswith(FORWARD_BEST)), None)
            return self._entry(Column(name, FORWARD), name, best)
        return self._entry(Column(name, THROUGHPUT), name, _pick(block, "best_decode_tokens_per_s"))

    def _resolve(self, name: str) -> list[Entry]:
        block = self.blocks.get(name) or {}
        kids = self.children.get(name, [])
        bench = self.benchmark(name)
        if bench is not None:
            key = _pick(block, BENCHMARKS[bench].metric)
            if key is None and kids:
                return [e for kid in kids for e in self._resolve(kid)]
            return [self._entry(Column(BENCHMARKS[bench].column, ACCURACY, bench), name, key)]
        if "points_ok,none" in block:
            return [self._sweep_entry(name, block)]
        if "alpha_layers,none" in block:
            return [self._entry(Column(name, ESD), name, _pick(block, "alpha_mean"))]
        if any(self.holds_benchmark(kid) for kid in kids):  # e.g. ``leaderboard``: split into benchmarks
            return [e for kid in kids for e in self._resolve(kid)]
        key = self.primary(name)
        if key is None and kids:
            return [e for kid in kids for e in self._resolve(kid)]
        return [self._entry(Column(name), name, key)] if key else []

    def entries(self) -> list[Entry]:
        """One entry per column this results file has a value (or an empty benchmark) for."""
        return [e for name in self.top_level() for e in self._resolve(name)]
