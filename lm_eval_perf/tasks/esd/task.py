"""``--tasks esd``: the ESD plugin as an lm-eval task (see :mod:`lm_eval_perf.tasks.plugin`)."""

from __future__ import annotations

from lm_eval_perf.tasks.plugin import PluginTask


class ESDTask(PluginTask):
    """One request, carried out by :func:`lm_eval_perf.tasks.esd.runner.run` on the loaded model."""

    PLUGIN = "esd"
