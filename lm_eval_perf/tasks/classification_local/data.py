"""Documents of ``classification_local``: the examples of a local labelled file (see
:mod:`lm_eval_perf.tasks.labelled`), asked as multiple choice among the file's labels.

Options (``--metadata``): ``path`` (required), ``text_column`` (``text``), ``label_column``
(``label``), ``labels`` (the choices in this order; default: the file's labels sorted, numerically
when every label is a number). Each document is ``{"text", "choices", "gold"}``: the context is the
text as it stands, each choice is scored as ``" " + label``. A sequence classifier answers from its
label logits (:mod:`lm_eval_perf.models.classifier`), a causal LM from the label strings'
loglikelihoods. Metrics: accuracy and macro-F1 (the unweighted mean of the per-label F1 scores).
"""

from __future__ import annotations

import datasets
import numpy as np

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.tasks.labelled import read_examples


def _choices(found: list[str], labels: list | None) -> list[str]:
    if labels is None:
        distinct = set(found)
        numeric = all(label.lstrip("-").isdigit() for label in distinct)
        return sorted(distinct, key=int) if numeric else sorted(distinct)
    choices = [str(label) for label in labels]
    missing = sorted(set(found) - set(choices))
    if missing:
        raise UserInputError(
            f"classification_local: labels {missing} of the file are not in labels={choices}"
        )
    return choices


def load(
    path: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    labels: list | None = None,
    **_metadata,
) -> datasets.DatasetDict:
    """lm-eval ``custom_dataset`` hook: the ``test`` split of the labelled file at ``path``."""
    if path is None:
        raise UserInputError(
            'classification_local needs the labelled file: --metadata \'{"path": "data.csv"}\''
        )
    examples = read_examples(path, text_column, label_column)
    choices = _choices([e.label for e in examples], labels)  # type: ignore[misc]
    rows = [{"text": e.text, "choices": choices, "gold": choices.index(e.label)} for e in examples]  # type: ignore[arg-type]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_results(doc: dict, results: list[tuple[float, bool]]) -> dict:
    """Accuracy of the most likely choice, and the (gold, predicted) pair macro-F1 aggregates."""
    predicted = int(np.argmax([loglikelihood for loglikelihood, _ in results]))
    return {"acc": float(predicted == doc["gold"]), "f1_macro": (doc["gold"], predicted)}


def macro_f1(pairs: list[tuple[int, int]]) -> float:
    """Macro-F1 over the labels that occur as gold or predicted ones (scikit-learn's definition)."""
    from sklearn.metrics import f1_score

    golds, predicted = zip(*pairs)
    return float(f1_score(golds, predicted, average="macro"))
