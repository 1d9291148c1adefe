"""A sweep's answer to lm-eval: named numbers (the task's metrics), which way each is better, the
files it wrote and the points it left for a rerun (:mod:`lm_eval_perf.tasks.plugin` reads it)."""

from __future__ import annotations

from collections.abc import Sequence

from lm_eval_perf.tasks.sweeps.loop import SweepRun


class Summary:
    """Metrics of a sweep; a missing figure (``None``) is left out, never written as 0."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.higher_is_better: dict[str, bool] = {}

    def put(self, name: str, value: float | None, higher_is_better: bool) -> None:
        if value is not None:
            self.values[name] = float(value)
            self.higher_is_better[name] = higher_is_better

    def count_points(self, records: Sequence[dict]) -> None:
        """``points_ok``, ``points_oom`` and ``points_skipped`` of the sweep's records."""
        self.put("points_ok", sum(r["status"] == "ok" for r in records), True)
        self.put("points_oom", sum(r["status"] == "oom" for r in records), False)
        self.put("points_skipped", sum(r["status"] == "skipped_after_oom" for r in records), False)

    def result(self, artifact_key: str, run: SweepRun) -> dict:
        """The plugin runner's JSON answer."""
        return {
            "metrics": self.values,
            "higher_is_better": self.higher_is_better,
            "artifacts": {artifact_key: str(run.path)},
            "not_run": run.not_run,
        }
