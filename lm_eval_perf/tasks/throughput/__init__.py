"""``perf_throughput``: batch-size x generation-length throughput sweeps on the ``perf-hf`` model.

    lm_eval --model perf-hf --model_args pretrained=arch:qwen2.5-7b,dtype=bfloat16 \\
            --tasks perf_throughput --output_path results/ [--metadata '{"batch_sizes": [1, 8]}']

Modules, in the order data flows: :mod:`.sweep` (options, points, keys) -> :mod:`.prompts` ->
:mod:`.generation` (eager and static paths, one timed iteration) -> :mod:`.measure` (one point in
a monitor window) -> :mod:`.figures` (arithmetic) -> :mod:`.runner` (lm-eval metrics) ->
:mod:`.table`. What every sweep task shares - the JSONL resume file, the sweep loop with its OOM
handling, the bottleneck rule, profiling, the point's window and memory/energy fields - is in
:mod:`lm_eval_perf.tasks.sweeps`.
"""
