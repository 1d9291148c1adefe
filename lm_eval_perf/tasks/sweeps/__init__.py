"""What the sweep tasks share: ``perf_throughput`` (generation) and ``perf_forward`` (forward passes).

Both measure a grid of points on the loaded ``perf-hf`` model and keep one JSON record per point in a
resumable file. Modules, in the order data flows: :mod:`.options` (checked option values, the key
hash) -> :mod:`.tokens` (rows of token ids: bundled passage, BBH inputs, random ids) ->
:mod:`.point` (one point's measured window, its memory and energy fields, the record around them) ->
:mod:`.bottleneck` (roofline label) and :mod:`.profiling` (one profiled iteration) -> :mod:`.oom`
(out-of-memory errors) -> :mod:`.store` (the JSONL file) -> :mod:`.loop` (the sweep: resume, OOM
skipping, time budget).
"""
