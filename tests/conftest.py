"""Shared fixtures: offline hub settings, the local BBH data, the bundled real model, tiny models."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# every efficiency record perf-hf writes in a test (subprocesses too) is checked against the shipped schema
os.environ.setdefault("LM_EVAL_PERF_VALIDATE", "1")
# Under xdist each worker's torch, and that of the processes its tests start, gets an equal share of the
# cores, as batch_eval gives its parallel jobs: two workers of torch's default one thread per core on a
# 2-core machine spin OpenMP threads against each other (two 2-thread lm_eval runs side by side there
# take 40 % more CPU time than two 1-thread runs). Set before any test module imports torch.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    _share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

REPO = Path(__file__).resolve().parents[1]

# The files that take longest go first, longest first (measured on the 2-core machine, 1 thread per
# worker): test_readme.py's module fixture runs the README's first hour (the demo and the hf comparison,
# at the same time) for minutes and holds its worker alone, while the other worker starts on the rest;
# `make test`'s workers (--dist loadfile --no-loadscope-reorder: files in this order, not largest test
# count first) then finish together instead of one starting a long file when the other is nearly done.
LONGEST_FIRST = (
    "test_readme.py",
    "test_runs_as_typed.py",
    "test_batch_runs.py",
    "test_esd_stream.py",
    "test_compress.py",
    "test_report_outputs.py",
    "test_esd_task.py",
    "test_perf_hf_equivalence.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests of :data:`LONGEST_FIRST` to the front, in that order; the rest keep theirs."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def _bbh_candidates() -> list[Path]:
    """Where the shared BBH files may be: $LM_EVAL_PERF_BBH_DIR, ../shared beside this checkout, or
    beside the checkout this one was cloned from."""
    found = [Path(os.environ["LM_EVAL_PERF_BBH_DIR"])] if os.environ.get("LM_EVAL_PERF_BBH_DIR") else []
    found.append(REPO.parent / "shared" / "data" / "bbh")
    origin = subprocess.run(
        ["git", "-C", str(REPO), "remote", "get-url", "origin"], capture_output=True, text=True
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        found.append(Path(origin).resolve().parent / "shared" / "data" / "bbh")
    return found


@pytest.fixture(scope="session")
def bbh_dir() -> Path:
    """The directory of BIG-Bench Hard JSON files (never copied into the repository)."""
    for candidate in _bbh_candidates():
        if (candidate / "boolean_expressions.json").is_file():
            return candidate
    pytest.skip("BBH data not found: set LM_EVAL_PERF_BBH_DIR to the folder of BBH json files")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct as a Hugging Face directory (converted once, cached)."""
    from lm_eval_perf.models.bundled import smollm2_hf_dir

    return smollm2_hf_dir()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> Path:
    """tiny-llama with seeded random weights and the SmolLM2 tokenizer, saved as a HF directory."""
    import torch
    import transformers

    from lm_eval_perf.models.sources import load_architecture, transformers_config

    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    config = transformers_config(load_architecture("tiny-llama"))
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def labelled_csv(tmp_path_factory) -> Path:
    """A held-out labelled set (text,label) of the classifiers' generated examples: 60 rows, 3 labels."""
    from tests.classifiers import examples, write_csv

    return write_csv(tmp_path_factory.mktemp("labelled") / "intents.csv", examples(60, seed=1))


@pytest.fixture(scope="session")
def trained_classifier_dir(tmp_path_factory, smollm2_dir) -> Path:
    """A Qwen2-shaped sequence classifier trained for a few CPU steps on the generated set."""
    from tests.classifiers import train_decoder_classifier

    return train_decoder_classifier(tmp_path_factory.mktemp("classifier"), smollm2_dir)


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory) -> Path:
    """A DistilBERT-shaped classifier (random weights, NEGATIVE/POSITIVE) with a WordPiece tokenizer."""
    from tests.classifiers import encoder_classifier

    return encoder_classifier(tmp_path_factory.mktemp("encoder"), {0: "NEGATIVE", 1: "POSITIVE"})


TINY_TASK = """task: batch_tiny
dataset_path: json
dataset_kwargs:
  data_files: {{test: {data}}}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: ["yes", "no"]
doc_to_target: "{{{{label}}}}"
metric_list: [{{metric: acc}}]
"""


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """A folder with the ``batch_tiny`` task (tasks/: a two-document multiple-choice task, scored with
    ``--limit 1`` so a job's time is mostly lm-eval's start-up) and a 1-layer tiny-llama variant
    (tiny-1layer.json), for batch_eval matrices."""
    root = tmp_path_factory.mktemp("batch_tiny")
    data = root / "tasks" / "tiny.jsonl"
    data.parent.mkdir()
    data.write_text(
        '{"question": "Is the sky blue?", "label": 0}\n{"question": "Is fire cold?", "label": 1}\n'
    )
    (root / "tasks" / "batch_tiny.yaml").write_text(TINY_TASK.format(data=data))
    arch = json.loads((REPO / "lm_eval_perf/models/architectures/tiny-llama.json").read_text())
    (root / "tiny-1layer.json").write_text(json.dumps({**arch, "num_hidden_layers": 1}))
    return root


def bbh_group_yaml(group: str, subsets: list[str]) -> str:
    """A task group of lm-eval's own ``leaderboard_bbh_<subset>`` tasks reading the local BBH files
    (what ``leaderboard_bbh_local`` is, for a few subsets): the report's BBH column."""
    tasks = "".join(
        f"  - task: leaderboard_bbh_{name}\n    dataset_kwargs: {{bbh_subset: {name}}}\n" for name in subsets
    )
    return (
        f"group: {group}\ncustom_dataset: !function lm_eval_perf.tasks.bbh_local.data.load\ntask:\n{tasks}"
        "aggregate_metric_list:\n  - metric: acc_norm\n    aggregation: mean\n    weight_by_size: true\n"
        "metadata:\n  version: 1.0\n"
    )
