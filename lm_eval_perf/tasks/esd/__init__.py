"""ESD task: per-layer empirical spectral density metrics (heavy-tailed self-regularization) of a model.

:mod:`.spectrum` (weights -> eigenvalues of WᵀW, batched on the device; :mod:`.streams` overlaps the
solves, :mod:`.cusolver` the optional one-call batched solver), :mod:`.powerlaw` (the reference's
power-law fit), :mod:`.estimator` (per-layer columns; usable without lm-eval), :mod:`.records` (the CSV
and model-level metrics), :mod:`.runner` (the ``esd`` plugin run by ``perf-hf``), :mod:`.task` (the
task class). Streamed from checkpoint files without loading the model: :mod:`.checkpoint` (safetensors
shards, GGUF, hub snapshots), :mod:`.adapter` (LoRA merged per tensor), :mod:`.stream` (the run),
:mod:`.cli` (``lm-eval-perf esd``), :mod:`.merge` (a model list's merged tables).
"""
