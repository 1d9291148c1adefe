"""The lm-eval task object of ``perf_forward`` (one request, carried out by :mod:`.runner`)."""

from __future__ import annotations

from lm_eval_perf.tasks.forward.runner import parse_options
from lm_eval_perf.tasks.plugin import PluginTask


class ForwardTask(PluginTask):
    """``perf_forward``: see :mod:`lm_eval_perf.tasks.forward`."""

    PLUGIN = "perf_forward"

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config=config)
        parse_options(self.plugin_options())  # a bad option fails now, not after the other tasks ran
