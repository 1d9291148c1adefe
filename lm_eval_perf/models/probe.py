"""How large a batch lm-eval's ``batch_size=auto`` probe may start with on a CPU.

HFLM's probe runs five forward passes of ``max_batch_size`` rows (64 by default) at the longest
length it will see, then halves the rows on an out-of-memory error. A GPU raises that error; a CPU
with an overcommitting kernel does not - the process is killed once the pages are touched (tiny-llama
at 2048 positions: 64 rows × 2048 × 49,152 float32 logits is 26 GB per logits tensor). So on a CPU
the probe starts at the largest power of two of rows whose estimated peak fits in half of the host
memory available now.
"""

from __future__ import annotations

from collections.abc import Sequence

import psutil
import torch

# Share of the host's available memory the probe may plan to use; the rest is left for the
# allocator's slack, the tokenizer and whatever else runs.
HOST_SHARE = 0.5


def probe_length(requests: Sequence | None, pos: int, max_length: int) -> int:
    """Positions per row of HFLM's probe: the request at ``pos`` as HFLM truncates it, else
    ``max_length`` (generation and rolling loglikelihood probe at the model's full length)."""
    if not requests:
        return max_length
    _, context, continuation = requests[pos]
    return len((context + continuation)[-(max_length + 1) :][:-1])


def row_bytes(config, positions: int, dtype: torch.dtype) -> int:
    """Estimated peak bytes one probe row holds, in ``dtype``.

    Three logits-sized tensors (positions × vocabulary) are alive at once in HFLM's probe loop: the
    previous pass's log-softmax, the new logits and their log-softmax. Activations of one layer add
    about four hidden-sized and three intermediate-sized tensors per position.
    """
    text = getattr(config, "text_config", None) or config
    vocab = int(getattr(text, "vocab_size", 0) or 0)
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    intermediate = int(getattr(text, "intermediate_size", 0) or 4 * hidden)
    element = torch.empty((), dtype=dtype).element_size()
    return element * positions * (3 * vocab + 4 * hidden + 3 * intermediate)


def rows_that_fit(
    config, positions: int, dtype: torch.dtype, max_rows: int, available_bytes: int | None = None
) -> int:
    """The largest power of two ≤ ``max_rows`` whose probe fits :data:`HOST_SHARE` of
    ``available_bytes`` (default: the host memory available now); at least 1."""
    available = psutil.virtual_memory().available if available_bytes is None else available_bytes
    budget = HOST_SHARE * available
    per_row = max(1, row_bytes(config, positions, dtype))
    rows = 1
    while rows * 2 <= max_rows and rows * 2 * per_row <= budget:
        rows *= 2
    return rows
