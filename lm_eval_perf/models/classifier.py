"""Sequence classifiers in ``perf-hf``: which models are, and how their labels answer lm-eval.

A model is a sequence classifier (``AutoModelForSequenceClassification``: BERT, DistilBERT, RoBERTa,
ModernBERT, or a decoder such as Qwen2 with a ``score`` head) when its config's ``architectures``
name a ``...ForSequenceClassification`` class, or when the model argument ``head=classification``
says so (a causal LM checkpoint then gets a new, untrained head of ``num_labels`` outputs).

Multiple-choice tasks. lm-eval asks each document as one ``loglikelihood`` request per choice:
``(context, target_delimiter + choice)``. The classifier reads each distinct context once; the
loglikelihood of a choice is the log-softmax of the logit of the label the choice names, and
``is_greedy`` says whether that label is the argmax. A choice (stripped of surrounding white space)
names a label by, in this order: its entry in ``label_map``; a label name of the config's
``id2label``, exactly or ignoring case (a DistilBERT fine-tuned on SST-2 has ``NEGATIVE`` and
``POSITIVE``, lm-eval's ``sst2`` choices are ``negative`` and ``positive``); a label id written as a
number. ``label_map`` is ``choice:label`` pairs joined by ``|`` (``label_map=negative:LABEL_0|
positive:LABEL_1``; a label is a name or an id), or a mapping. A choice that names no label is a
one-line error before any forward pass. Rolling loglikelihood and generation are not a
classifier's answers: such requests are refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from lm_eval_perf.errors import UserInputError

CLASSIFICATION = "classification"
HEADS = ("auto", CLASSIFICATION)


def has_classification_head(config, head: str) -> bool:
    """Whether the model of ``config`` is loaded as a sequence classifier (``head`` is perf-hf's
    ``head=`` argument: ``auto`` reads the config's ``architectures``)."""
    if head not in HEADS:
        raise UserInputError(f"head={head!r}: use one of {', '.join(HEADS)}")
    architectures = getattr(config, "architectures", None) or []
    return head == CLASSIFICATION or any(a.endswith("ForSequenceClassification") for a in architectures)


def parse_label_map(value: str | Mapping | None) -> dict[str, str]:
    """``label_map=`` as ``{choice: label}``: ``"a:X|b:Y"`` or a mapping (a batch config's YAML)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k).strip(): str(v).strip() for k, v in value.items()}
    pairs = {}
    for part in str(value).split("|"):
        choice, sep, label = part.partition(":")
        if not sep or not choice.strip() or not label.strip():
            raise UserInputError(f"label_map={value!r}: write it as choice:label pairs joined by |")
        pairs[choice.strip()] = label.strip()
    return pairs


@dataclass(frozen=True)
class Labels:
    """A classifier's labels (``names[i]`` is label id ``i``) and the ``label_map`` of choices."""

    names: tuple[str, ...]
    label_map: Mapping[str, str]

    @classmethod
    def of(cls, config, label_map: str | Mapping | None) -> Labels:
        """The labels of a classifier's ``config`` (``id2label``; ``LABEL_<i>`` where it names none)."""
        count = int(getattr(config, "num_labels", 0) or 0)
        id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
        names = tuple(id2label.get(i, f"LABEL_{i}") for i in range(count))
        if not names:
            raise UserInputError("the classifier's config has no labels (num_labels is 0)")
        return cls(names, parse_label_map(label_map))

    def _label(self, name: str) -> int | None:
        if name in self.names:
            return self.names.index(name)
        folded = [n.casefold() for n in self.names]
        if folded.count(name.casefold()) == 1:
            return folded.index(name.casefold())
        if name.isdigit() and int(name) < len(self.names):
            return int(name)
        return None

    def index(self, choice: str) -> int:
        """The label id ``choice`` names (see the module docstring); one-line error if none."""
        text = choice.strip()
        mapped = self.label_map.get(text)
        found = self._label(mapped if mapped is not None else text)
        if found is None:
            via = f" (label_map gives {mapped!r})" if mapped is not None else ""
            raise UserInputError(
                f"choice {text!r}{via} names none of the classifier's labels "
                f"{', '.join(self.names)}: map it with label_map=CHOICE:LABEL|..."
            )
        return found


def score(
    requests: Sequence,
    labels: Labels,
    classify: Callable[[list[str]], torch.Tensor],
    batch_size: int,
) -> list[tuple[float, bool]]:
    """``(loglikelihood, is_greedy)`` of each lm-eval ``loglikelihood`` request (``args = (context,
    continuation)``): ``classify(texts)`` gives the logits (rows x labels) of up to ``batch_size``
    contexts; each distinct context is classified once, longest first (less padding per batch)."""
    wanted = [labels.index(r.args[1]) for r in requests]  # every choice checked before any forward
    contexts = sorted({r.args[0] for r in requests}, key=lambda text: (-len(text), text))
    logprobs: dict[str, torch.Tensor] = {}
    for start in range(0, len(contexts), batch_size):
        batch = contexts[start : start + batch_size]
        rows = torch.log_softmax(classify(batch).float(), dim=-1).cpu()
        logprobs.update(zip(batch, rows))
    results = []
    for request, label in zip(requests, wanted):
        row = logprobs[request.args[0]]
        results.append((float(row[label]), bool(int(row.argmax()) == label)))
    return results
