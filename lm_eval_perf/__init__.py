"""lm-eval-perf: what a model knows (lm-eval accuracy) and what it costs (latency, energy, memory).

This module is imported at interpreter start-up by ``lm_eval_perf.pth`` (through
``lm_eval_perf._autoload``), so it must stay free of imports: public names are resolved lazily.
"""

__version__ = "0.1.0"

__all__ = ["PerformanceMonitor", "__version__"]


def __getattr__(name: str):
    if name == "PerformanceMonitor":
        from lm_eval_perf.monitor import PerformanceMonitor

        return PerformanceMonitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
