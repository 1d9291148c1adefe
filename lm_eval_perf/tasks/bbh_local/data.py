"""The local data source of ``leaderboard_bbh_local``.

The group reuses lm-eval's own ``leaderboard_bbh_*`` task configs unchanged (prompts, 3-shot
``first_n`` examples, ``acc_norm``) and only replaces where the documents come from: instead of the
hub dataset ``SaylorTwift/bbh``, the BIG-Bench Hard files ``<bbh_dir>/<subset>.json``
(``{"examples": [{"input": ..., "target": ...}]}``) become the ``test`` split.

The directory comes from ``--metadata '{"bbh_dir": "path"}'`` or ``$LM_EVAL_PERF_BBH_DIR``.
"""

from __future__ import annotations

import json

import datasets

from lm_eval_perf.bbh import bbh_directory
from lm_eval_perf.errors import UserInputError


def check_inputs(metadata: dict) -> None:
    """The group's check before the model loads (see :data:`lm_eval_perf.registration.INPUT_CHECKS`):
    the BBH folder of ``metadata`` (``bbh_dir``) or of ``$LM_EVAL_PERF_BBH_DIR`` must exist."""
    bbh_directory(metadata.get("bbh_dir"))


def load(bbh_subset: str, bbh_dir: str | None = None, **_metadata) -> datasets.DatasetDict:
    """lm-eval ``custom_dataset`` hook: the ``test`` split of one BBH subset."""
    path = bbh_directory(bbh_dir) / f"{bbh_subset}.json"
    if not path.is_file():
        raise UserInputError(f"BBH file {path} does not exist")
    try:
        examples = json.loads(path.read_text())["examples"]
    except (ValueError, KeyError) as exc:
        raise UserInputError(f"BBH file {path} is not a BIG-Bench Hard task file: {exc}") from exc
    rows = [{"input": e["input"], "target": e["target"]} for e in examples]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
