"""How many generated tokens lm-eval keeps of a ``generate`` call.

lm-eval's ``generate_until`` stops a batch only when every row has met a stop string, so a row that
stopped early goes on generating until then. It then decodes each row (``tok_decode``: special tokens
skipped) and cuts the text at the first occurrence of any of its ``until`` strings. The tokens a row
*keeps* are those up to and including the one whose decoding completes the first stop string; a
row that ends with an end-of-sequence token keeps it and nothing after (``generate`` pads finished
rows with the pad token). Everything after is computed and discarded.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch


def _row_end(ids: Sequence[int], eos_ids: Collection[int], pad_id: int | None) -> int:
    """Tokens up to the row's end: through its first end-of-sequence token, before its first pad."""
    for i, token in enumerate(ids):
        if token in eos_ids:
            return i + 1
        if token == pad_id:
            return i
    return len(ids)


def _stops_within(text: str, stops: Sequence[str]) -> bool:
    return any(stop in text for stop in stops)


def kept_row_tokens(
    ids: Sequence[int],
    decode: Callable[[list[int]], str],
    stops: Sequence[str],
    eos_ids: Collection[int],
    pad_id: int | None,
) -> int:
    """The tokens lm-eval keeps of one row of generated ``ids`` (see the module docstring).

    The shortest prefix whose decoded text holds a stop string is found by bisection, decoding
    grows with the prefix, so a stop string found in a prefix stays in every longer one.
    """
    end = _row_end(ids, eos_ids, pad_id)
    stops = [s for s in stops if s]
    if not stops or not _stops_within(decode(list(ids[:end])), stops):
        return end
    low, high = 1, end  # the answer lies in [low, high]; the prefix of ``high`` tokens has a stop
    while low < high:
        middle = (low + high) // 2
        if _stops_within(decode(list(ids[:middle])), stops):
            high = middle
        else:
            low = middle + 1
    return high


def kept_tokens(
    generated: torch.Tensor,
    decode: Callable[[list[int]], str],
    stops: Sequence[str],
    eos_ids: Collection[int],
    pad_id: int | None,
) -> int:
    """Σ over the rows of ``generated`` ``(batch, steps)`` of the tokens lm-eval keeps."""
    return sum(kept_row_tokens(row, decode, stops, eos_ids, pad_id) for row in generated.tolist())
