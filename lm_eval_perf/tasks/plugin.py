"""Plugin tasks: lm-eval tasks whose one request is carried out by ``perf-hf`` itself.

A throughput sweep or a weight-spectrum analysis is not a set of prompts to score: it needs the
loaded model object. Such a task still goes through lm-eval like any other - registered by YAML,
selected with ``--tasks``, reported in the results JSON - but it has a single document and a single
``generate_until`` request whose generation kwargs carry ``{PLUGIN_KEY: {"plugin": name,
"options": {...}}}``. ``perf-hf`` recognises that key and calls the plugin's runner
(:data:`RUNNERS`) with itself and the options instead of generating; the runner returns a JSON
object ``{"metrics": {name: number}, "higher_is_better": {name: bool}, ...}`` that the task turns
into lm-eval metrics. ``--model hf`` does not know the key and refuses the request.

Options come from the task YAML's ``metadata`` merged with ``--metadata '{...}'`` on the command line.
"""

from __future__ import annotations

import json

import datasets
from lm_eval.api.instance import Instance
from lm_eval.api.metrics import mean
from lm_eval.api.task import ConfigurableTask

from lm_eval_perf.plugins import PLUGIN_KEY

# metadata keys lm-eval itself puts into every task config; not plugin options
_LM_EVAL_METADATA = frozenset({"version", "config_source", "pretrained"})


def single_doc(**_metadata) -> datasets.DatasetDict:
    """``custom_dataset`` of every plugin task: one document, the request is the whole job."""
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([{"job": 0}])})


class _MeanOfAnything(dict):
    """Aggregation table for metric names known only after the run: every metric is a mean."""

    def __missing__(self, key: str):
        return mean


class PluginTask(ConfigurableTask):
    """Base of the plugin tasks; subclasses set ``PLUGIN`` (a key of :data:`RUNNERS`)."""

    PLUGIN: str = ""

    def __init__(self, config: dict | None = None) -> None:
        # the YAML's ``class:`` key chose this class; TaskConfig does not accept it
        super().__init__(config={k: v for k, v in (config or {}).items() if k != "class"})
        self._higher_is_better: dict[str, bool] = {}

    def plugin_options(self) -> dict:
        """The runner's options: task-YAML metadata, overridden by ``--metadata``."""
        metadata = self.config.metadata or {}
        return {k: v for k, v in metadata.items() if k not in _LM_EVAL_METADATA}

    def construct_requests(self, doc: dict, ctx: str, **kwargs) -> Instance:
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        spec = {"plugin": self.PLUGIN, "options": self.plugin_options()}
        return Instance(
            request_type="generate_until", doc=doc, arguments=(ctx, {PLUGIN_KEY: spec}), idx=0, **kwargs
        )

    def process_results(self, doc: dict, results: list[str]) -> dict[str, float]:
        result = json.loads(results[0])
        self._higher_is_better.update(result.get("higher_is_better", {}))
        return {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float))}

    def aggregation(self) -> dict:
        return _MeanOfAnything()

    def higher_is_better(self) -> dict[str, bool]:
        return dict(self._higher_is_better)
