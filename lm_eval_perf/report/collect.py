"""Find and read what a results directory holds; nothing here decides what goes in a table.

Under ``results_dir`` (searched recursively):

* ``results_*.json`` - lm-eval's results files (``lm_eval --output_path`` or batch_eval's
  ``results/<model>/<precision>/<task>/``). Files inside batch_eval's staging folders
  (``.<task>.staging-*``, attempts still running or killed) are left out.
* ``job.json`` - batch_eval's record of the job whose result folder holds a results file; it names
  the row (see :mod:`.identity`).
* ``failures.jsonl`` - batch_eval's failed jobs, one JSON object per line.
* ``matrix.json`` - batch_eval's matrix plan (:mod:`lm_eval_perf.records.layout`): the jobs it planned
  and their states, which say which cells are missing. Also read from the parent folder when
  ``results_dir`` is a batch output's ``results/`` folder.

A file that cannot be read or parsed (truncated, not JSON, not a results file) becomes a
:class:`Problem` and is skipped: reading never stops on bad input.

Each run's row names its device (:mod:`.identity`) only when the runs and matrix plans together name
two or more devices (``Inputs.by_device``); otherwise the device is dropped from every row, and the
tables are what they were before devices were told apart.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.records.artifacts import Artifact
from lm_eval_perf.records.efficiency import check_version
from lm_eval_perf.records.layout import JOB_FILE, PLAN_FILE, STAGING_MARK, MatrixPlan, read_plan
from lm_eval_perf.report.identity import RowKey, model_args, row_of

FAILURES_FILE = "failures.jsonl"


@dataclass(frozen=True)
class Problem:
    """A file (or line of one) that was skipped, and why."""

    path: Path
    reason: str


@dataclass
class Run:
    """One lm-eval results file: its data, the row it belongs to and when it was written."""

    path: Path
    data: dict
    row: RowKey
    date: float  # Unix seconds: the results' "date", else the file's modification time
    job: dict | None = None

    @property
    def origin(self) -> str:
        return "batch_eval" if self.job else "lm_eval"

    def artifact(self, artifact: Artifact) -> Path:
        """A file a plugin task wrote for this run.

        perf-hf lists them in ``config.lm_eval_perf_artifacts``; a recorded path that no longer
        exists (a results folder copied elsewhere) is looked up by its file name next to this results
        JSON. Runs without the list use the artifact's file name in ``artifacts_dir=`` or next to the JSON.
        """
        recorded = ((self.data.get("config") or {}).get("lm_eval_perf_artifacts") or {}).get(artifact.key)
        if recorded:
            path = Path(recorded).expanduser()
            return path if path.exists() else self.path.parent / path.name
        folder = model_args(self.data).get("artifacts_dir")
        return (Path(folder).expanduser() if folder else self.path.parent) / artifact.filename


@dataclass
class Inputs:
    """Everything read from one results directory."""

    root: Path
    runs: list[Run] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    plans: list[MatrixPlan] = field(default_factory=list)
    by_device: bool = False  # the runs and plans name several devices: rows are told apart by device

    def relative(self, path: Path) -> str:
        """``path`` relative to the results directory (as written in reports)."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def read_json(path: Path) -> tuple[dict | None, str | None]:
    """(object, None) or (None, why it is unusable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    except ValueError as exc:
        return None, f"corrupt or truncated JSON ({exc})"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, None


def read_jsonl(path: Path, problems: list[Problem]) -> list[dict]:
    """The JSON objects of a JSON-lines file; each bad line is reported in ``problems``."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        problems.append(Problem(path, f"cannot read: {exc.strerror or exc}"))
        return []
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            problems.append(Problem(path, f"line {number}: corrupt or truncated JSON ({exc}); line skipped"))
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            problems.append(Problem(path, f"line {number}: not a JSON object; line skipped"))
    return records


def _job_for(path: Path, root: Path, problems: list[Problem], cache: dict[Path, dict | None]) -> dict | None:
    """The batch_eval ``job.json`` whose result folder holds ``path``, if any."""
    folder = path.parent
    while folder != root and root in folder.parents:
        candidate = folder / JOB_FILE
        if candidate.is_file():
            if candidate not in cache:
                job, reason = read_json(candidate)
                if reason:
                    problems.append(Problem(candidate, f"{reason}; its results are read without it"))
                cache[candidate] = job
            job = cache[candidate]
            listed = (job or {}).get("results")
            if job is not None and (listed is None or str(path.relative_to(folder)) in listed):
                return job
            return None
        folder = folder.parent
    return None


# where a results file nests objects: path of keys -> (type of the value, type of each of its values)
_SHAPE: dict[tuple[str, ...], tuple[type, type | None]] = {
    ("results",): (dict, dict),
    ("groups",): (dict, dict),
    ("group_subtasks",): (dict, list),
    ("configs",): (dict, dict),
    ("higher_is_better",): (dict, dict),
    ("config",): (dict, None),
    ("config", "efficiency"): (dict, None),
    ("config", "efficiency", "kinds"): (dict, dict),
    ("config", "efficiency", "tasks"): (dict, dict),
    ("config", "efficiency", "overall"): (dict, None),
    ("config", "efficiency", "load"): (dict, None),
    ("config", "efficiency", "model"): (dict, None),
    ("config", "efficiency", "peaks"): (dict, None),
}


def shape_problem(data: dict) -> str | None:
    """Why ``data`` is not an lm-eval results file this package can read (``None``: it is one).

    Only the nesting is checked (objects where objects are expected); absent or null parts are fine,
    except ``results``.
    """
    if not isinstance(data.get("results"), dict):
        return "not an lm-eval results file (no 'results' object)"
    for keys, (kind, item) in _SHAPE.items():
        value: object = data
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        if not isinstance(value, kind) or (item and not all(isinstance(v, item) for v in value.values())):
            return f"not an lm-eval results file ('{'.'.join(keys)}' is malformed)"
    return None


def _date(data: dict, path: Path) -> float:
    value = data.get("date")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return path.stat().st_mtime


def _results_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if STAGING_MARK not in d)
        found += [Path(folder) / f for f in sorted(files) if f.startswith("results_") and f.endswith(".json")]
    return found


def collect(root: Path, progress: bool = True) -> Inputs:
    """Read every results file and failures file under ``root`` (one-line error if it is no folder).

    ``progress``: a progress bar over the files on a terminal (never when stderr is not one).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserInputError(f"--results_dir {root}: no such folder")
    root = root.resolve()
    inputs = Inputs(root)
    files = _results_files(root)
    failures = sorted(root.rglob(FAILURES_FILE))
    jobs: dict[Path, dict | None] = {}
    for path in tqdm(
        [*files, *failures],
        desc="reading results",
        unit="file",
        disable=None if progress else True,
        leave=False,
    ):
        if path.name == FAILURES_FILE:
            for record in read_jsonl(path, inputs.problems):
                inputs.failures.append({**record, "file": inputs.relative(path)})
            continue
        data, reason = read_json(path)
        if data is not None:
            reason = shape_problem(data)
        if data is not None and not reason and (data.get("config") or {}).get("efficiency"):
            check_version(data["config"]["efficiency"], inputs.relative(path))
        if data is None or reason:
            inputs.problems.append(Problem(path, reason or "unreadable"))
            continue
        job = _job_for(path, root, inputs.problems, jobs)
        try:
            row = row_of(data, job)
        except (TypeError, ValueError) as exc:
            inputs.problems.append(Problem(path, f"cannot tell its model/precision/ratio: {exc}"))
            continue
        inputs.runs.append(Run(path, data, row, _date(data, path), job))
    plans = sorted(root.rglob(PLAN_FILE))
    if root.name == "results" and (root.parent / PLAN_FILE).is_file():
        plans.insert(0, root.parent / PLAN_FILE)
    for path in plans:
        try:
            inputs.plans.append(read_plan(path))
        except ValueError as exc:
            inputs.problems.append(Problem(path, f"{exc}; its missing cells are not listed"))
    devices = {run.row.device for run in inputs.runs} | {j.device for p in inputs.plans for j in p.jobs}
    inputs.by_device = len(devices - {None}) > 1
    if not inputs.by_device:
        for run in inputs.runs:
            run.row = replace(run.row, device=None)
    if not inputs.runs and not inputs.failures:
        where = f" ({len(inputs.problems)} unreadable)" if inputs.problems else ""
        raise UserInputError(f"--results_dir {root}: no results_*.json or failures.jsonl found{where}")
    return inputs
