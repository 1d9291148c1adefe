"""The lm-eval task object of ``perf_throughput`` (one request, carried out by :mod:`.runner`)."""

from __future__ import annotations

from lm_eval_perf.tasks.plugin import PluginTask
from lm_eval_perf.tasks.throughput.runner import parse_options


class ThroughputTask(PluginTask):
    """``perf_throughput``: see :mod:`lm_eval_perf.tasks.throughput`."""

    PLUGIN = "perf_throughput"

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config=config)
        parse_options(self.plugin_options())  # a bad option fails now, not after the other tasks ran
