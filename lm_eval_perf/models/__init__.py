"""lm-eval model wrappers (``perf-hf``) and how their models are loaded. Import ``perf_hf`` lazily."""
