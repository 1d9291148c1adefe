"""Batch evaluation: a matrix of models × precisions × compression ratios × tasks, run resumably.

``batch_eval.py --config FILE`` (:mod:`.cli`) reads a YAML config (:mod:`.config`, model lists in
:mod:`.model_list`), expands it into jobs (:mod:`.matrix`), sorts them against the job store and
the result folders (:mod:`.store`, :mod:`lm_eval_perf.records.layout`, :func:`.scheduler.plan`) and
runs the rest (:func:`.scheduler.run`) on the local GPU pool (:mod:`.local`, GPUs from
:mod:`.gpus`; jobs packed within a memory budget by :mod:`.packing` and :mod:`.memory`, what else ran
on a GPU and device isolation in :mod:`.sharing`), a Ray cluster (:mod:`.ray_pool`) or Slurm
(:mod:`.slurm`). Each job is one lm-eval process
with ``perf-hf`` (:mod:`.runner`; :mod:`lm_eval_perf.orphans`) whose results appear atomically under
``<output_dir>/results/<model>/<precision>/<task>/``.
"""
