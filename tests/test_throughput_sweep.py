"""The ``perf_throughput`` sweep on the tiny random Llama on CPU: fields, OOM handling, resume, options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.model_args import model_arg_names
from lm_eval_perf.models.perf_hf import PerfHFLM
from lm_eval_perf.monitor.clock import Clock
from lm_eval_perf.records.artifacts import THROUGHPUT
from lm_eval_perf.tasks.throughput import generation, runner
from lm_eval_perf.tasks.throughput.prompts import prompt_ids
from lm_eval_perf.tasks.throughput.sweep import SweepOptions

FAST = {"prompt_len": 16, "min_iterations": 1, "min_seconds": 0, "warmup_iterations": 0}
STATS_FIELDS = ("ttft_s", "tpot_s", "e2e_latency_s")
NUMBER_FIELDS = (
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "output_tokens_per_s",
    "prefill_mfu",
    "prefill_mbu",
    "decode_mfu",
    "decode_mbu",
    "prepare_s",
    "window_s",
    "host_rss_peak_gib",
)
NONE_ON_CPU = (
    "peak_memory_allocated_gib",
    "peak_memory_reserved_gib",
    "device_memory_peak_gib",
    "energy_j",
    "energy_error_bound",
    "energy_per_token_j",
    "avg_power_w",
)
UNIT_SUFFIXES = ("_s", "_gib", "_j", "_w", "_per_s", "_mfu", "_mbu", "_fraction")
DIMENSIONLESS = ("iterations", "warmup_iterations", "energy_error_bound")  # a fraction of energy_j


@pytest.fixture(scope="module")
def lm() -> PerfHFLM:
    """tiny-llama on CPU with explicit peaks, so that MFU, MBU and the bottleneck are defined."""
    return PerfHFLM(
        pretrained="arch:tiny-llama",
        dtype="float32",
        device="cpu",
        peak_flops=1e11,
        peak_bandwidth=1e10,
        print_summary=False,
    )


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder: without an lm-eval output path, records go to ./lm_eval_perf_artifacts."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / "lm_eval_perf_artifacts"


def _lines(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / THROUGHPUT.filename).read_text().splitlines()]


def test_two_by_two_sweep_records_every_field_with_its_unit(lm, in_tmp):
    options = {
        **FAST,
        "batch_sizes": [1, 2],
        "gen_lengths": [3, 5],
        "min_iterations": 2,
        "warmup_iterations": 1,
    }
    result = runner.run(lm, options)
    records = _lines(in_tmp)
    assert [(r["key"]["batch_size"], r["key"]["new_tokens"]) for r in records] == [
        (1, 3),
        (2, 3),
        (1, 5),
        (2, 5),
    ]
    for r in records:
        assert r["status"] == "ok" and r["iterations"] >= 2 and r["decode_path"] == "hf_generate"
        for key in STATS_FIELDS:
            assert r[key]["unit"] == "s" and r[key]["p50"] > 0 and r[key]["p90"] >= r[key]["p50"]
        assert r["tpot_s"]["count"] == r["iterations"] * (r["key"]["new_tokens"] - 1)
        for key in NUMBER_FIELDS:
            assert r[key] > 0, key
        for key in NONE_ON_CPU:
            assert r[key] is None and r["unavailable"][key], key
        assert r["bottleneck"] in ("memory-bound", "compute-bound", "overhead-bound")
        assert r["bottleneck_phase"] in ("prefill", "decode")
        measured = [k for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        assert all(k.endswith(UNIT_SUFFIXES) or k in DIMENSIONLESS for k in measured)
    metrics = result["metrics"]
    assert metrics["points_ok"] == 4 and metrics["points_oom"] == 0
    assert metrics["best_decode_tokens_per_s"] == max(r["decode_tokens_per_s"] for r in records)
    assert metrics["decode_tokens_per_s@bs2_gen5"] == records[3]["decode_tokens_per_s"]
    assert result["higher_is_better"]["ttft_p50_s@bs1_gen3"] is False


def test_injected_oom_is_recorded_and_larger_batches_at_that_length_are_skipped(lm, in_tmp):
    options = {**FAST, "batch_sizes": [4, 1, 2], "gen_lengths": [3, 4], "inject_oom_from_batch_size": 2}
    result = runner.run(lm, options)
    status = {(r["key"]["batch_size"], r["key"]["new_tokens"]): r for r in _lines(in_tmp)}
    for new in (3, 4):
        assert status[(1, new)]["status"] == "ok"
        assert status[(2, new)]["status"] == "oom"
        assert "OutOfMemoryError" in status[(2, new)]["error"]
        assert status[(4, new)]["status"] == "skipped_after_oom"
        assert "batch_size 2" in status[(4, new)]["error"]
    assert result["metrics"]["points_oom"] == 2 and result["metrics"]["points_skipped"] == 2


def test_rerun_reuses_finished_points_and_a_grown_grid_measures_only_new_ones(lm, in_tmp):
    runner.run(lm, {**FAST, "batch_sizes": [1], "gen_lengths": [3]})
    first = _lines(in_tmp)
    runner.run(lm, {**FAST, "batch_sizes": [1], "gen_lengths": [3]})
    assert _lines(in_tmp) == first
    runner.run(lm, {**FAST, "batch_sizes": [1, 2], "gen_lengths": [3]})
    grown = _lines(in_tmp)
    assert grown[0] == first[0] and len(grown) == 2 and grown[1]["key"]["batch_size"] == 2
    runner.run(lm, {**FAST, "batch_sizes": [1], "gen_lengths": [3], "min_iterations": 3})
    changed = _lines(in_tmp)
    assert len(changed) == 3 and changed[2]["key"]["options_sha"] != first[0]["key"]["options_sha"]


def test_a_point_recorded_under_an_older_schema_is_measured_again(lm, in_tmp):
    options = {**FAST, "batch_sizes": [1], "gen_lengths": [3]}
    runner.run(lm, options)
    (record,) = _lines(in_tmp)
    assert record["schema"] == runner.SCHEMA
    old = {**record, "schema": "lm-eval-perf/throughput/1", "prefill_mfu": 123.0}  # the old formulas
    (in_tmp / THROUGHPUT.filename).write_text(json.dumps(old) + "\n")
    result = runner.run(lm, options)
    again = _lines(in_tmp)
    assert len(again) == 2 and again[1]["schema"] == runner.SCHEMA and again[1]["prefill_mfu"] != 123.0
    assert result["metrics"]["points_ok"] == 1


def test_max_sweep_seconds_leaves_the_rest_for_a_rerun(lm, in_tmp):
    options = {**FAST, "batch_sizes": [1, 2], "gen_lengths": [3], "max_sweep_seconds": 0}
    first = runner.run(lm, options)
    assert first["not_run"] == ["bs1_gen3", "bs2_gen3"] and not (in_tmp / THROUGHPUT.filename).exists()
    assert runner.run(lm, {**options, "max_sweep_seconds": None})["not_run"] == []
    assert len(_lines(in_tmp)) == 2


def test_profile_point_writes_a_chrome_trace_and_a_top_operators_table(lm, in_tmp):
    runner.run(lm, {**FAST, "batch_sizes": [1], "gen_lengths": [3, 4], "profile_point": "bs=1, gen=4"})
    records = _lines(in_tmp)
    assert records[0]["profile"] is None
    profile = records[1]["profile"]
    trace = json.loads(Path(profile["trace"]).read_text())
    assert trace["traceEvents"]
    assert "aten::" in Path(profile["top_ops"]).read_text()
    assert profile["trace"].endswith("perf_throughput_profile/eager-bs1_gen4/trace.json")


def test_static_backend_runs_on_cpu_and_says_how(lm, in_tmp, monkeypatch):
    monkeypatch.setattr(lm, "generation_backend", "static")
    runner.run(lm, {**FAST, "batch_sizes": [2], "gen_lengths": [3]})
    (record,) = _lines(in_tmp)
    assert record["key"]["backend"] == "static" and record["status"] == "ok"
    assert record["decode_path"] == "static_loop"
    assert "no CUDA graph on a CPU" in record["decode_path_note"]


def test_static_loop_generates_the_same_tokens_as_eager_greedy(lm, monkeypatch):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # larger random weights than the default init, so that greedy tokens vary
        original = {k: v.clone() for k, v in lm.model.state_dict().items()}
        for p in lm.model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    try:
        options = SweepOptions.from_mapping({"prompt_len": 12})
        prompts = prompt_ids(lm.tokenizer, lm.model.config.vocab_size, options, batch_size=3)
        eager = generation.prepare(lm, prompts, 12, Clock(), "auto", options.compile_shapes).run().tokens
        monkeypatch.setattr(lm, "generation_backend", "static")
        loop = generation.prepare(lm, prompts, 12, Clock(), "auto", options.compile_shapes)
        assert isinstance(loop, generation.StaticLoop)
        static = loop.run().tokens
        check = loop._check()  # what a compiled or graphed loop runs when prepared
    finally:
        lm.model.load_state_dict(original)
    assert eager.shape == static.shape == (3, 12)
    assert torch.equal(eager, static)
    assert eager.unique().numel() > 3  # the comparison is not between constant outputs
    assert check == {"steps": 4, "tokens_match_eager": True}


def test_static_compile_shapes_compile_each_point_afresh_and_decode_the_eager_tokens(lm, in_tmp, monkeypatch):
    monkeypatch.setattr(lm, "generation_backend", "static")
    compiled = []
    real_reset = torch._dynamo.reset
    monkeypatch.setattr(torch._dynamo, "reset", lambda: (compiled.append(1), real_reset()))
    options = {**FAST, "batch_sizes": [1], "gen_lengths": [6, 7], "static_compile": True}
    runner.run(lm, {**options, "compile_shapes": "static"})
    records = _lines(in_tmp)
    assert len(records) == 2 and len(compiled) == 2
    for record in records:
        assert record["status"] == "ok" and record["decode_path"] == "static_loop+compile+static_shapes"
        assert record["graph_check"] == {"steps": 4, "tokens_match_eager": True}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": [1]}, "did you mean 'batch_sizes'"),
        ({"compile_shapes": "fixed"}, "use one of dynamic, static"),
        ({"gen_lengths": [1]}, "gen_lengths=1 must be >= 2"),
        ({"batch_sizes": [2, 2]}, "repeats a value"),
        ({"prompt_source": "web"}, "use one of text, bbh, random"),
        ({"static_compile": "yes"}, "use one of auto, true, false"),
        ({"profile_point": "bs=3,gen=32"}, "is not a point of the sweep"),
        ({"profile_point": "batch 1"}, "write it as"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(UserInputError, match=message):
        SweepOptions.from_mapping(options)


def test_model_args_copied_into_metadata_are_not_options():
    model_args = model_arg_names()
    parsed = SweepOptions.from_mapping({"max_batch_size": 8, "batch_size": 4, "dtype": "float32"}, model_args)
    assert parsed == SweepOptions()
    with pytest.raises(UserInputError, match="did you mean 'batch_sizes'"):
        SweepOptions.from_mapping({"batch_size": [1, 8]}, model_args)


def test_prompts_are_real_text_rows_that_differ_and_keep_their_place(lm):
    options = SweepOptions.from_mapping({"prompt_len": 20})
    four = prompt_ids(lm.tokenizer, lm.model.config.vocab_size, options, batch_size=4)
    two = prompt_ids(lm.tokenizer, lm.model.config.vocab_size, options, batch_size=2)
    assert four.shape == (4, 20) and torch.equal(four[:2], two)
    assert len({tuple(row.tolist()) for row in four}) == 4
    assert lm.tokenizer.decode(four[0]).startswith("It is a truth universally acknowledged")


def test_bbh_prompts_come_from_the_bbh_inputs(lm, bbh_dir):
    options = SweepOptions.from_mapping({"prompt_len": 24, "prompt_source": "bbh", "bbh_dir": str(bbh_dir)})
    ids = prompt_ids(lm.tokenizer, lm.model.config.vocab_size, options, batch_size=2)
    examples = json.loads(sorted(bbh_dir.glob("*.json"))[0].read_text())["examples"]
    assert "\n\n".join(e["input"] for e in examples[:5]).startswith(lm.tokenizer.decode(ids[0]))


def test_a_sweep_run_as_an_lm_eval_request_is_listed_and_stays_out_of_the_evaluation_record(lm, in_tmp):
    from lm_eval.api.instance import Instance

    from lm_eval_perf.plugins import PLUGIN_KEY

    spec = {"plugin": "perf_throughput", "options": {**FAST, "batch_sizes": [1], "gen_lengths": [4]}}
    sweep = Instance("generate_until", {}, ("", {PLUGIN_KEY: spec}), 0, ("perf_throughput", 0, 1))
    normal = Instance(
        "generate_until", {}, ("Hello there", {"until": ["\n"], "max_gen_toks": 3}), 0, ("greeting", 0, 1)
    )
    answers = lm.generate_until([sweep, normal])
    assert json.loads(answers[0])["metrics"]["decode_tokens_per_s@bs1_gen4"] > 0
    assert isinstance(answers[1], str)
    info = lm.get_model_info()
    assert info["lm_eval_perf_artifacts"][THROUGHPUT.key] == str(in_tmp / THROUGHPUT.filename)
    generation = info["efficiency"]["kinds"]["generate_until"]
    assert generation["samples"] == 1  # the lm-eval request only; the sweep's generations measure themselves
    assert set(info["efficiency"]["tasks"]) == {"greeting"}
