"""Start-up hook: run :mod:`lm_eval_perf.registration` right after lm-eval's own modules load.

``lm_eval_perf.pth`` (installed into site-packages) imports this module when Python starts. It
imports nothing and only puts a finder on ``sys.meta_path`` that answers for three module names;
every other import passes through it with one set look-up. When one of the watched lm-eval modules
has executed, :func:`lm_eval_perf.registration.on_lm_eval_module_loaded` is called with it. A
program that never imports lm-eval never imports anything else of this package.

Set ``LM_EVAL_PERF_NO_AUTOLOAD=1`` to switch the hook off (``lm-eval-perf`` still works).
"""

import sys

WATCHED = frozenset({"lm_eval.models", "lm_eval.tasks.manager", "lm_eval.loggers.evaluation_tracker"})


class _AfterExecLoader:
    """Delegates to the real loader and calls the registration hook once the module ran."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = self._loader
        from lm_eval_perf.registration import on_lm_eval_module_loaded

        on_lm_eval_module_loaded(module)


class _LmEvalFinder:
    """A meta-path finder that only wraps the loaders of the modules named in ``WATCHED``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _AfterExecLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, _LmEvalFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _LmEvalFinder())


if __import__("os").environ.get("LM_EVAL_PERF_NO_AUTOLOAD", "") not in ("1", "true", "yes"):
    install()
