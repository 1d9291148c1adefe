"""The plugin-task protocol, on the ground floor: how a plugin request is recognised and carried out.

A plugin task (``perf_throughput``, ``perf_forward``, ``esd``; :mod:`lm_eval_perf.tasks.plugin`) is an
lm-eval task whose single ``generate_until`` request carries ``{PLUGIN_KEY: {"plugin": name,
"options": {...}}}`` in its generation kwargs. ``perf-hf`` recognises the key and calls the plugin's
runner (:data:`RUNNERS`, imported only when called) with itself and the options instead of
generating; the runner returns a JSON object ``{"metrics": {name: number}, "higher_is_better":
{name: bool}, ...}``. The model side imports this module, never the tasks: the runners are named by string.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from lm_eval_perf.errors import UserInputError

PLUGIN_KEY = "lm_eval_perf_plugin"
RUNNERS = {
    "perf_throughput": "lm_eval_perf.tasks.throughput.runner:run",
    "perf_forward": "lm_eval_perf.tasks.forward.runner:run",
    "esd": "lm_eval_perf.tasks.esd.runner:run",
}


def is_plugin_request(generation_kwargs: Any) -> bool:
    return isinstance(generation_kwargs, Mapping) and PLUGIN_KEY in generation_kwargs


def plugin_name(generation_kwargs: Mapping) -> str:
    """The plugin a plugin request asks for."""
    return str(generation_kwargs[PLUGIN_KEY]["plugin"])


def run_plugin(lm: Any, generation_kwargs: Mapping) -> dict:
    """Carry out one plugin request on the ``perf-hf`` model ``lm``; its result (JSON-serializable)."""
    spec = generation_kwargs[PLUGIN_KEY]
    name = spec["plugin"]
    if name not in RUNNERS:
        raise UserInputError(f"unknown plugin {name!r}: known plugins are {', '.join(RUNNERS)}")
    module, _, attr = RUNNERS[name].partition(":")
    runner = getattr(importlib.import_module(module), attr)
    return runner(lm, dict(spec.get("options") or {}))
