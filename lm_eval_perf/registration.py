"""How lm-eval finds this project's model, tasks and output folder.

lm-eval 0.4.13 has no plugin entry point for models or task folders, so three small hooks are
applied the moment the corresponding lm-eval module has loaded (``lm_eval_perf._autoload`` calls
:func:`on_lm_eval_module_loaded`; the ``lm-eval-perf`` command calls :func:`ensure_registered`):

1. ``lm_eval.models`` - the lazy placeholder ``"perf-hf" -> "lm_eval_perf.models.perf_hf:PerfHFLM"``
   is added to lm-eval's model registry, beside lm-eval's own placeholders. Nothing is imported
   until ``--model perf-hf`` is looked up.
2. ``lm_eval.tasks.manager`` - every ``TaskManager`` that includes lm-eval's built-in tasks also
   indexes :data:`TASKS_DIR`, so ``--tasks perf_throughput``, ``esd`` and ``leaderboard_bbh_local``
   need no ``--include_path``. When the command line's task names are matched (before the model
   loads), the inputs of the tasks in :data:`INPUT_CHECKS` are checked (the BBH folder), and lm-eval's
   generic notice "Custom kwargs can be passed to ``--metadata``", which it logs for every task with
   a ``custom_dataset`` function (24 times per BBH run), is dropped for this project's tasks (their
   options are documented in the README) - lm-eval's own tasks keep it. lm-eval's index of its own
   task folder is read from a cache while the folder is unchanged (:mod:`lm_eval_perf.task_index`).
3. ``lm_eval.loggers.evaluation_tracker`` - the run's ``EvaluationTracker`` is remembered
   (:func:`output_path`, :func:`results_dir`), so ``perf-hf`` can refuse an unwritable output path
   before evaluating, and plugin tasks write their per-point and per-layer files next to lm-eval's
   results JSON.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import sys
from pathlib import Path
from types import ModuleType

MODEL_NAME = "perf-hf"
MODEL_TARGET = "lm_eval_perf.models.perf_hf:PerfHFLM"
TASKS_DIR = Path(__file__).resolve().parent / "tasks"

# Checks of a task's inputs, run when the task is selected on the command line (before the model
# loads): task name -> "module:function", called with the run's metadata (--model_args | --metadata).
INPUT_CHECKS = {"leaderboard_bbh_local": "lm_eval_perf.tasks.bbh_local.data:check_inputs"}
CUSTOM_KWARGS_NOTICE = "Custom kwargs can be passed to `--metadata`"

_state: dict[str, object] = {"tracker": None}


def output_path() -> str | None:
    """The ``--output_path`` of the running lm-eval evaluation, if one was given."""
    tracker = _state["tracker"]
    path = getattr(tracker, "output_path", None)
    return str(path) if path else None


def results_dir() -> Path | None:
    """The folder lm-eval writes this run's ``results_*.json`` into, if there is an output path.

    ``<output_path>/<model_name_sanitized>/`` as lm-eval's ``EvaluationTracker`` builds it (known once
    ``simple_evaluate`` logged the model arguments), or the parent of an ``output_path`` ending in .json.
    """
    path = output_path()
    if path is None:
        return None
    base = Path(path).expanduser()
    if base.suffix == ".json":
        return base.parent
    name = getattr(getattr(_state["tracker"], "general_config_tracker", None), "model_name_sanitized", None)
    return base / name if name else base


def _register_model(models_module: ModuleType) -> None:
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


def _check_inputs(names: list[str], metadata: dict | None) -> None:
    """Run the :data:`INPUT_CHECKS` of the selected task ``names`` (a failed one ends ``lm_eval`` with
    one line, as perf-hf's checks do)."""
    for name in names:
        if name in INPUT_CHECKS:
            from lm_eval_perf.errors import install_excepthook

            install_excepthook()
            module, _, attr = INPUT_CHECKS[name].partition(":")
            getattr(importlib.import_module(module), attr)(metadata or {})


class _OwnTaskNotice(logging.Filter):
    """Drops lm-eval's custom-kwargs notice when the task logging it reads its data with a function
    of this package. ``ConfigurableTask.download`` logs it just before calling ``custom_dataset``; the
    task is that call's ``self``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if CUSTOM_KWARGS_NOTICE not in record.getMessage():
            return True
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_name != "download":
            frame = frame.f_back
        task = frame.f_locals.get("self") if frame is not None else None
        reader = getattr(getattr(task, "config", None), "custom_dataset", None)
        return not str(getattr(reader, "__module__", "")).startswith(f"{__package__}.")


def _extend_task_manager(manager_module: ModuleType) -> None:
    """Hook 2 (module docstring): this project's task folder, input checks, the notice filter."""
    cls = manager_module.TaskManager
    if getattr(cls.__init__, "_lm_eval_perf", False):
        return
    from importlib.metadata import version

    from lm_eval_perf.task_index import install

    install(manager_module.TaskIndex, Path(manager_module.__file__).parent, version("lm_eval"))
    original = cls.__init__
    original_match = cls.match_tasks
    task_logger = logging.getLogger("lm_eval.api.task")
    if not any(isinstance(f, _OwnTaskNotice) for f in task_logger.filters):
        task_logger.addFilter(_OwnTaskNotice())

    @functools.wraps(original_match)
    def match_tasks(self, task_list):
        matched = original_match(self, task_list)
        _check_inputs(matched, self.metadata)
        return matched

    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        if bound.arguments["include_defaults"]:
            given = bound.arguments["include_path"]
            paths = [] if given is None else list(given if isinstance(given, (list, tuple)) else [given])
            if all(Path(p).resolve() != TASKS_DIR for p in paths):
                # Indexed after lm-eval's defaults and before the user's paths: a user's own
                # --include_path still overrides a task of ours with the same name.
                paths.insert(0, TASKS_DIR)
            bound.arguments["include_path"] = paths
        original(*bound.args, **bound.kwargs)

    __init__._lm_eval_perf = True  # type: ignore[attr-defined]
    cls.__init__ = __init__
    cls.match_tasks = match_tasks


def _remember_output_path(tracker_module: ModuleType) -> None:
    cls = tracker_module.EvaluationTracker
    if getattr(cls.__init__, "_lm_eval_perf", False):
        return
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _state["tracker"] = self

    __init__._lm_eval_perf = True  # type: ignore[attr-defined]
    cls.__init__ = __init__


_HOOKS = {
    "lm_eval.models": _register_model,
    "lm_eval.tasks.manager": _extend_task_manager,
    "lm_eval.loggers.evaluation_tracker": _remember_output_path,
}


def on_lm_eval_module_loaded(module: ModuleType) -> None:
    """Apply the hook that belongs to ``module`` (called by the start-up finder)."""
    _HOOKS[module.__name__](module)


def ensure_registered() -> None:
    """Apply all hooks now, importing the lm-eval modules they need (used by ``lm-eval-perf``)."""
    for name, hook in _HOOKS.items():
        module = sys.modules.get(name) or importlib.import_module(name)
        hook(module)
