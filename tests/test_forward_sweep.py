"""The ``perf_forward`` sweep on CPU: a trained classifier's rows from a labelled file, a causal LM's
prefill; fields and units, the MFU arithmetic, OOM handling, resume, options.

Real parts: the Qwen2-shaped classifier trained in tests/classifiers.py, the DistilBERT-shaped encoder,
tiny-llama, the bundled passage and BBH files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models.forward_call import ForwardCall
from lm_eval_perf.models.perf_hf import PerfHFLM
from lm_eval_perf.monitor import metrics
from lm_eval_perf.records.artifacts import FORWARD
from lm_eval_perf.tasks.forward import runner, table
from lm_eval_perf.tasks.forward.options import ForwardOptions
from lm_eval_perf.tasks.throughput import runner as throughput
from tests.classifiers import write_csv

FAST = {"num_warmup": 0, "num_runs": 2, "min_seconds": 0}
PEAKS = {"peak_flops": 1e11, "peak_bandwidth": 1e10}  # so that MFU, MBU and the bottleneck are defined
UNIT_SUFFIXES = ("_s", "_gib", "_j", "_w", "_per_s", "_fraction", "mfu", "mbu")
COUNTS = ("runs", "warmup_runs", "flops_per_batch", "energy_error_bound")  # a count, FLOPs, a fraction
NONE_ON_CPU = (
    "peak_memory_allocated_gib",
    "peak_memory_reserved_gib",
    "device_memory_peak_gib",
    "energy_j",
    "energy_per_sample_j",
    "energy_per_token_j",
    "avg_power_w",
)


@pytest.fixture(scope="module")
def classifier(trained_classifier_dir) -> PerfHFLM:
    return PerfHFLM(pretrained=str(trained_classifier_dir), device="cpu", print_summary=False, **PEAKS)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder: without an lm-eval output path, records go to ./lm_eval_perf_artifacts."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / "lm_eval_perf_artifacts"


def _lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / FORWARD.filename).read_text().splitlines()]


def test_csv_sweep_records_every_field_with_its_unit(classifier, labelled_csv, in_tmp):
    options = {**FAST, "path": str(labelled_csv), "batch_sizes": [1, 3], "seq_lengths": [8, 32]}
    result = runner.run(classifier, options)
    records = _lines(in_tmp)
    assert [(r["key"]["batch_size"], r["key"]["seq_len"]) for r in records] == [
        (1, 8),
        (3, 8),
        (1, 32),
        (3, 32),
    ]
    texts = [line.split(",")[0] for line in labelled_csv.read_text().splitlines()[1:4]]
    lengths = [len(classifier.tokenizer(t).input_ids) for t in texts]  # 6 to 10 words: 32 pads them
    for r in records:
        batch, seq = r["key"]["batch_size"], r["key"]["seq_len"]
        assert r["status"] == "ok" and r["runs"] == 2 and r["logits"] == "classifier head"
        assert r["key"]["head"] == "sequence_classification" and r["key"]["inputs_sha"]
        for key in ("latency_per_batch_s", "latency_per_sample_s"):
            assert r[key]["unit"] == "s" and r[key]["count"] == 2 and r[key]["p99"] >= r[key]["p50"] > 0
        assert r["latency_per_sample_s"]["p50"] == pytest.approx(r["latency_per_batch_s"]["p50"] / batch)
        assert r["samples_per_s"] == pytest.approx(batch * r["batches_per_s"])
        assert r["positions_per_s"] == pytest.approx(batch * seq * r["batches_per_s"])
        for key in NONE_ON_CPU:
            assert r[key] is None and r["unavailable"][key], key
        assert r["host_rss_peak_gib"] > 0 and r["bottleneck"] in (
            "memory-bound",
            "compute-bound",
            "overhead-bound",
        )
        measured = [k for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        assert all(k.endswith(UNIT_SUFFIXES) or k in COUNTS for k in measured), measured
    for record, seq in ((records[1], 8), (records[3], 32)):  # texts cut to seq tokens, right-padded to it
        real = sum(min(n, seq) for n in lengths)
        assert record["pad_fraction"] == pytest.approx(1 - real / (3 * seq))
        assert record["tokens_per_s"] == pytest.approx(real * record["batches_per_s"])
    assert records[3]["pad_fraction"] > 0.5
    metrics_ = result["metrics"]
    assert metrics_["points_ok"] == 4 and metrics_["samples_per_s@bs3_seq32"] == records[3]["samples_per_s"]
    best = max(records[2:], key=lambda r: r["samples_per_s"])
    assert metrics_["best_batch_size@seq32"] == best["key"]["batch_size"]
    assert result["higher_is_better"]["latency_per_sample_p50_s@bs1_seq8"] is False


def test_mfu_counts_the_real_rows_flops_over_the_summed_latency(classifier, labelled_csv, in_tmp):
    runner.run(classifier, {**FAST, "path": str(labelled_csv), "batch_sizes": [2], "seq_lengths": [32]})
    (record,) = _lines(in_tmp)
    texts = [line.split(",")[0] for line in labelled_csv.read_text().splitlines()[1:3]]
    rows = [len(classifier.tokenizer(t).input_ids) for t in texts]
    shape = classifier.shape  # a decoder classifier: causal attention, its score head at every position
    assert not shape.bidirectional and not shape.head_pooled
    per_pair = 2 * shape.n_heads * 2 * shape.head_dim
    flops = sum(
        2 * shape.body_params * p + 2 * shape.lm_head_params * p + per_pair * shape.n_layers * p * (p + 1) / 2
        for p in rows
    )
    assert record["flops_per_batch"] == pytest.approx(flops)
    seconds = record["latency_per_batch_s"]["total"]
    assert record["mfu"] == pytest.approx(2 * flops / seconds / 1e11)


def test_a_causal_lms_prefill_makes_logits_at_the_last_position_unless_all_are_asked(in_tmp):
    lm = PerfHFLM(pretrained="arch:tiny-llama", dtype="float32", device="cpu", print_summary=False, **PEAKS)
    ids = torch.randint(0, 1000, (2, 12))
    assert ForwardCall(lm.model, None, last_position_only=True)(ids).shape == (2, 1, 49152)
    assert ForwardCall(lm.model, None, last_position_only=False)(ids).shape == (2, 12, 49152)
    grid = {**FAST, "batch_sizes": [2], "seq_lengths": [12], "input_source": "random"}
    runner.run(lm, {**grid, "logits": "last"})
    runner.run(lm, {**grid, "logits": "all"})
    last, every = _lines(in_tmp)
    assert (last["logits"], every["logits"]) == ("last", "all") and last["pad_fraction"] == 0.0
    assert every["flops_per_batch"] - last["flops_per_batch"] == 2 * lm.shape.lm_head_params * 2 * 11


def test_injected_oom_is_recorded_and_larger_batches_at_that_length_are_skipped(classifier, in_tmp):
    options = {**FAST, "batch_sizes": [4, 1, 2], "seq_lengths": [8, 16], "inject_oom_from_batch_size": 2}
    result = runner.run(classifier, options)
    status = {(r["key"]["batch_size"], r["key"]["seq_len"]): r for r in _lines(in_tmp)}
    for seq in (8, 16):
        assert status[(1, seq)]["status"] == "ok"
        assert status[(2, seq)]["status"] == "oom" and "OutOfMemoryError" in status[(2, seq)]["error"]
        assert status[(4, seq)]["status"] == "skipped_after_oom"
        assert status[(4, seq)]["error"] == f"batch_size 2 ran out of memory at seq_len {seq}"
    assert result["metrics"]["points_oom"] == 2 and result["metrics"]["points_skipped"] == 2


def test_rerun_reuses_finished_points_and_other_texts_are_measured_again(classifier, tmp_path, in_tmp):
    data = write_csv(tmp_path / "data.csv", [("the rain and the storm", "weather"), ("a song", "music")])
    options = {**FAST, "path": str(data), "batch_sizes": [1], "seq_lengths": [8]}
    runner.run(classifier, options)
    first = _lines(in_tmp)
    runner.run(classifier, options)
    assert _lines(in_tmp) == first
    runner.run(classifier, {**options, "batch_sizes": [1, 2]})
    grown = _lines(in_tmp)
    assert grown[0] == first[0] and len(grown) == 2 and grown[1]["key"]["batch_size"] == 2
    write_csv(data, [("football match today", "sport")])
    runner.run(classifier, options)
    changed = _lines(in_tmp)
    assert len(changed) == 3 and changed[2]["key"]["inputs_sha"] != first[0]["key"]["inputs_sha"]


def test_profile_point_writes_a_chrome_trace_and_a_top_operators_table(classifier, in_tmp):
    options = {**FAST, "batch_sizes": [1, 2], "seq_lengths": [8], "profile_point": "bs=2, seq=8"}
    runner.run(classifier, options)
    first, second = _lines(in_tmp)
    assert first["profile"] is None
    assert json.loads(Path(second["profile"]["trace"]).read_text())["traceEvents"]
    assert "aten::" in Path(second["profile"]["top_ops"]).read_text()
    assert second["profile"]["trace"].endswith("perf_forward_profile/bs2_seq8/trace.json")


def test_an_encoder_reads_bbh_rows_and_counts_bidirectional_attention(encoder_dir, bbh_dir, in_tmp):
    lm = PerfHFLM(pretrained=str(encoder_dir), device="cpu", print_summary=False, **PEAKS)
    options = {
        **FAST,
        "input_source": "bbh",
        "bbh_dir": str(bbh_dir),
        "batch_sizes": [2],
        "seq_lengths": [16],
    }
    runner.run(lm, options)
    (record,) = _lines(in_tmp)
    shape = lm.shape
    assert record["pad_fraction"] == 0.0 and shape.bidirectional and shape.head_pooled
    per_pair = 2 * shape.n_heads * 2 * shape.head_dim
    flops = 2 * (2 * shape.body_params * 16 + 2 * shape.lm_head_params + per_pair * shape.n_layers * 16 * 16)
    assert record["flops_per_batch"] == pytest.approx(flops)
    assert metrics.forward_flops(shape, [16, 16], all_logits=True) == pytest.approx(flops)


def test_sequence_lengths_beyond_the_models_positions_are_a_one_line_error(encoder_dir, in_tmp):
    lm = PerfHFLM(pretrained=str(encoder_dir), device="cpu", print_summary=False)  # 128 positions
    with pytest.raises(UserInputError, match=r"seq_lengths \[256\] exceed the model's 128 positions"):
        runner.run(lm, {**FAST, "seq_lengths": [64, 256]})
    assert not in_tmp.exists()


def test_perf_throughput_refuses_a_classifier_in_one_line(classifier, in_tmp):
    with pytest.raises(
        UserInputError, match="sequence classifier: measure its forward passes with perf_forward"
    ):
        throughput.run(classifier, {"batch_sizes": [1], "gen_lengths": [2]})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": [1]}, "did you mean 'batch_sizes'"),
        ({"seq_length": [128]}, "did you mean 'seq_lengths'"),
        ({"seq_lengths": [0]}, "seq_lengths=0 must be >= 1"),
        ({"input_source": "web"}, "use one of auto, csv, text, bbh, random"),
        ({"input_source": "csv"}, "input_source=csv needs the labelled file"),
        ({"logits": "first"}, "use one of last, all"),
        ({"profile_point": "bs=3,seq=128"}, "is not a point of the sweep"),
        ({"profile_point": "batch 1"}, "write it as 'bs=<batch size>,seq=<tokens>'"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(UserInputError, match=message):
        ForwardOptions.from_mapping(options)


def test_classification_options_in_the_same_metadata_are_not_options(labelled_csv):
    shared = {"path": str(labelled_csv), "label_column": "label", "labels": ["a"], "text_column": "text"}
    parsed = ForwardOptions.from_mapping(shared)
    assert parsed.input_source == "csv" and parsed.path == str(labelled_csv)
    assert ForwardOptions.from_mapping({}).input_source == "text"


def test_a_labelled_file_without_the_text_column_is_a_one_line_error(classifier, tmp_path, in_tmp):
    data = write_csv(tmp_path / "d.csv", [("hello", "x")], columns=("utterance", "intent"))
    with pytest.raises(UserInputError, match=r"has no column 'text' .*it has utterance, intent"):
        runner.run(classifier, {**FAST, "path": str(data), "batch_sizes": [1], "seq_lengths": [8]})
    assert not in_tmp.exists()


def test_the_tables_rates_keep_four_significant_figures_in_the_millions():
    """An H100 sweep printed 1,066,000 tokens/s as ``1e+06`` (one significant figure)."""
    point = {
        "key": {"batch_size": 32, "seq_len": 128},
        "status": "ok",
        "samples_per_s": 8325.9,
        "batches_per_s": 260.18,
        "tokens_per_s": 1_065_715.2,
        "avg_power_w": 233.7,
    }
    cells = [c.strip() for c in table.render([point]).splitlines()[2].split("|")[1:-1]]
    rates = dict(zip(table.HEADER, cells))
    assert (rates["samples/s"], rates["batches/s"], rates["tokens/s"], rates["W"]) == (
        "8326",
        "260.2",
        "1.066e+06",
        "233.7",
    )
