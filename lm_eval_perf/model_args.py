"""The names of ``perf-hf``'s model arguments, on the ground floor.

``perf-hf`` checks ``--model_args`` against them (with a did-you-mean hint), and plugin tasks leave
them out of their options: lm-eval copies every ``--model_args`` key into each task's metadata.
"""

from __future__ import annotations

import functools
import inspect

# perf-hf's own arguments (the keyword parameters of ``PerfHFLM.__init__`` besides ``pretrained``)
PERF_HF_ARGS = (
    "monitor_interval",
    "warmup_batches",
    "print_summary",
    "peak_flops",
    "peak_bandwidth",
    "artifacts_dir",
    "generation_backend",
    "head",
    "label_map",
)
# precision and compression arguments, taken by :class:`lm_eval_perf.models.plan.LoadPlan`
PLAN_ARGS = (
    "precision",
    "quant_backend",
    "group_size",
    "quantize_lm_head",
    "svd_ratio",
    "svd_rank",
    "svd_targets",
    "svd_solver",
    "compressed",
    "allow_pickle",
)
# Keyword arguments HFLM forwards to ``from_pretrained`` that are not config attributes.
FROM_PRETRAINED_ARGS = frozenset(
    {
        "attn_implementation",
        "device_map",
        "low_cpu_mem_usage",
        "load_in_8bit",
        "load_in_4bit",
        "bnb_4bit_compute_dtype",
        "bnb_4bit_quant_type",
        "bnb_4bit_use_double_quant",
        "max_memory",
        "offload_state_dict",
        "use_safetensors",
        "variant",
        "cache_dir",
        "local_files_only",
        "token",
        "key_mapping",
        "use_kernels",
        "quantization_config",
        "force_download",
        "proxies",
    }
)


@functools.cache
def hflm_args() -> frozenset[str]:
    """The keyword parameters of lm-eval's ``HFLM.__init__``."""
    from lm_eval.models.huggingface import HFLM

    return frozenset(inspect.signature(HFLM.__init__).parameters) - {"self", "kwargs"}


def model_arg_names() -> frozenset[str]:
    """Every name ``--model perf-hf`` accepts in ``--model_args`` but config attributes."""
    return hflm_args() | FROM_PRETRAINED_ARGS | {"pretrained", *PERF_HF_ARGS, *PLAN_ARGS}
