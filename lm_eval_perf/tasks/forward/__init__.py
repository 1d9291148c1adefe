"""``perf_forward``: batch-size x sequence-length sweeps of forward passes on the ``perf-hf`` model.

    lm_eval --model perf-hf --model_args pretrained=arch:qwen2.5-0.5b-cls,dtype=bfloat16 \\
            --tasks perf_forward --output_path results/ [--metadata '{"batch_sizes": [1, 8]}']

Any model perf-hf loads: a causal LM (its prefill) or a sequence classifier / encoder. Modules, in
the order data flows: :mod:`.options` (options, points, keys) -> :mod:`.inputs` (rows of a labelled
file, the bundled passage, BBH inputs or random ids) -> :mod:`.measure` (one point in a monitor
window) -> :mod:`.figures` (arithmetic) -> :mod:`.runner` (lm-eval metrics) -> :mod:`.table`; the
machinery it shares with ``perf_throughput`` is :mod:`lm_eval_perf.tasks.sweeps`.
"""
