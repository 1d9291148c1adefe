"""What Slurm says about jobs: ``squeue`` for the jobs the controller still holds, ``sacct`` for the
ones it let go.

submitit's own watcher asks only ``sacct``, which needs Slurm's accounting daemon (``slurmdbd``; many
small clusters, and the test cluster, run without it) and caches its answer for up to 600 s.
``squeue --states=all`` answers from the controller at once, for queued and running jobs and for
ended ones during ``MinJobAge`` (default 300 s) after their end; ``sacct`` is asked only about jobs
``squeue`` no longer lists. A job neither lists has ended, in a state nobody can tell (None).

Job ids are Slurm's: ``123`` for a job, ``123_4`` for task 4 of array job 123.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

# States in which a job may still run (or run again): it is waited for.
ALIVE = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SUSPENDED",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
    }
)
MEANING = {
    "TIMEOUT": "its Slurm time limit was reached",
    "OUT_OF_MEMORY": "it ran out of memory (slurm.mem_gb)",
    "NODE_FAIL": "its node failed",
    "CANCELLED": "it was cancelled (scancel, or an administrator)",
    "PREEMPTED": "it was preempted",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "its deadline passed",
    "FAILED": "the job's script or Python failed before the attempt could report",
    "COMPLETED": "it exited 0 but left no result file",
}
# Slurm ended the job (whatever the attempt reported then is a consequence).
BY_SLURM = frozenset(MEANING) - {"FAILED", "COMPLETED"}
# A job that ended in one of these did nothing wrong itself: it is submitted again (not a retry).
RESUBMIT = frozenset({"PREEMPTED"})
QUERY_TIMEOUT_S = 60.0


def states(job_ids: Iterable[str]) -> dict[str, str | None] | None:
    """Each job's state (``RUNNING``, ``TIMEOUT``, ...; None: ended in an unknown state), or None when
    the controller cannot be asked now (ask again later)."""
    wanted = set(job_ids)
    if not wanted:
        return {}
    bases = ",".join(sorted({i.split("_")[0] for i in wanted}))
    listed = _table(["squeue", "--noheader", "--states=all", "--array", "--format=%i|%T", f"--jobs={bases}"])
    if listed is None:
        return None
    missing = wanted - listed.keys()
    if missing:
        bases = ",".join(sorted({i.split("_")[0] for i in missing}))
        sacct = ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State"]
        listed |= _table([*sacct, f"--jobs={bases}"]) or {}
    return {i: listed.get(i) for i in wanted}


def base_ids_by_name(names: Iterable[str]) -> dict[str, str]:
    """The (array) job id of each job name Slurm knows, from ``squeue``, else ``sacct``."""
    names = sorted(set(names))
    if not names:
        return {}
    wanted = ",".join(names)
    found: dict[str, str] = {}
    for command in (
        ["squeue", "--noheader", "--states=all", "--format=%j|%F", f"--name={wanted}"],
        ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobName,JobID", f"--name={wanted}"],
    ):
        for name, job_id in (_table(command) or {}).items():
            found.setdefault(name, job_id.split("_")[0])
    return found


def _table(command: list[str]) -> dict[str, str] | None:
    """``first|second`` lines of ``command``'s output as a mapping (a state's ``by 123`` suffix and
    unexpanded ``[...]`` array ranges dropped); {} when Slurm knows none of the ids asked about,
    None when the command failed."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode:
        return {} if "Invalid job id" in proc.stderr else None
    table = {}
    for line in proc.stdout.splitlines():
        first, sep, second = line.strip().partition("|")
        if sep and "[" not in first:
            table[first] = second.split()[0] if second.split() else ""
    return table
