"""ESD task: per-layer empirical spectral density metrics (heavy-tailed self-regularization) of a model.

:mod:`.spectrum` (weights -> eigenvalues of WᵀW, batched on the device; :mod:`.streams` overlaps the
solves), :mod:`.powerlaw` (the reference's power-law fit), :mod:`.estimator` (per-layer columns; usable
without lm-eval), :mod:`.runner` (the ``esd`` plugin run by ``perf-hf``), :mod:`.task` (the task class).
"""
