"""Sequence classifiers in perf-hf: labels answer multiple-choice requests, other requests are refused.

Real parts: a DistilBERT-shaped encoder (random weights, WordPiece tokenizer) and a Qwen2-shaped
decoder classifier trained on the CPU (tests/classifiers.py), lm-eval's Instance objects.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from lm_eval.api.instance import Instance

from lm_eval_perf.errors import UserInputError
from lm_eval_perf.models.classifier import Labels
from lm_eval_perf.models.perf_hf import PerfHFLM
from tests.classifiers import examples, write_csv


def requests(texts: list[str], choices: list[str]) -> list[Instance]:
    """lm-eval's requests of multiple-choice documents: one per (text, choice), as " " + choice."""
    return [
        Instance("loglikelihood", {}, (text, " " + choice), i, ("sst2_like", i, 1))
        for i, text in enumerate(texts)
        for choice in choices
    ]


@pytest.fixture(scope="module")
def encoder(encoder_dir) -> PerfHFLM:
    return PerfHFLM(
        pretrained=str(encoder_dir),
        device="cpu",
        batch_size=3,
        label_map="negative:NEGATIVE|positive:1",
        print_summary=False,
    )


def test_choices_name_labels_by_label_map_name_any_case_or_id():
    config = transformers.PretrainedConfig(id2label={0: "NEGATIVE", 1: "POSITIVE", 2: "neutral"})
    labels = Labels.of(config, "good:POSITIVE|meh:2")
    assert [labels.index(c) for c in (" good", "meh", "negative", "Neutral", "1")] == [1, 2, 0, 2, 1]
    with pytest.raises(UserInputError, match=r"choice 'bad' names none of .*NEGATIVE, POSITIVE, neutral"):
        labels.index(" bad")
    with pytest.raises(UserInputError, match="label_map gives 'NOPE'"):
        Labels.of(config, "x:NOPE").index("x")
    with pytest.raises(UserInputError, match="choice:label pairs"):
        Labels.of(config, "good=POSITIVE")


def test_each_choice_scores_the_log_softmax_of_its_label_in_its_own_unpadded_forward(encoder, encoder_dir):
    texts = [t for t, _ in examples(5, seed=3)]  # different lengths: batches of 3 are padded
    results = encoder.loglikelihood(requests(texts, ["negative", "positive"]))

    model = transformers.AutoModelForSequenceClassification.from_pretrained(encoder_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(encoder_dir)
    for i, text in enumerate(texts):
        ids = tokenizer(text, return_tensors="pt")
        assert ids.input_ids[0, 0] == tokenizer.cls_token_id  # the tokenizer's own special tokens
        with torch.no_grad():
            expected = torch.log_softmax(model(**ids).logits[0], dim=-1)
        scored = results[2 * i : 2 * i + 2]
        assert [s for s, _ in scored] == pytest.approx(expected.tolist(), abs=1e-5)
        assert [greedy for _, greedy in scored] == [bool(expected.argmax() == k) for k in (0, 1)]
    assert len({round(s, 6) for s, _ in results}) > 2  # not a constant output


def test_the_record_counts_each_context_once_and_an_encoders_pooled_head_once_per_row(encoder):
    texts = [t for t, _ in examples(4, seed=4)]
    encoder.finish_measurement()  # the module's earlier requests make a record of their own
    encoder.loglikelihood(requests(texts, ["negative", "positive"]))
    record = encoder.finish_measurement()
    block = record["kinds"]["loglikelihood"]
    assert block["requests"] == 8 and block["samples"] == 4 and block["batches"] == 2
    assert record["load"]["head"] == {"kind": "sequence_classification", "labels": ["NEGATIVE", "POSITIVE"]}
    assert record["model"]["bidirectional"] and record["model"]["head_pooled"]
    tokenizer = encoder.tokenizer
    assert block["prompt_tokens"] == sum(len(tokenizer(t).input_ids) for t in texts)  # unpadded rows


def test_a_classifier_refuses_generation_and_rolling_loglikelihood_in_one_line(encoder):
    generation = Instance("generate_until", {}, ("Hello", {"until": ["\n"]}), 0, ("gen_task", 0, 1))
    with pytest.raises(UserInputError, match=r"sequence classifier: .* not generate_until \(gen_task\)"):
        encoder.generate_until([generation])
    rolling = Instance("loglikelihood_rolling", {}, ("Hello",), 0, ("wikitext", 0, 1))
    with pytest.raises(UserInputError, match="not loglikelihood_rolling"):
        encoder.loglikelihood_rolling([rolling])


def test_label_map_on_a_causal_lm_and_an_unknown_head_are_one_line_errors(tiny_model_dir):
    with pytest.raises(UserInputError, match="label_map= applies to sequence classifiers only"):
        PerfHFLM(pretrained=str(tiny_model_dir), device="cpu", label_map="a:0", print_summary=False)
    with pytest.raises(UserInputError, match="head='classifier': use one of auto, classification"):
        PerfHFLM(pretrained=str(tiny_model_dir), device="cpu", head="classifier", print_summary=False)


def test_head_classification_puts_a_new_head_of_num_labels_on_a_causal_checkpoint(tiny_model_dir):
    lm = PerfHFLM(
        pretrained=str(tiny_model_dir), device="cpu", head="classification", num_labels=4, print_summary=False
    )
    assert isinstance(lm.model, transformers.LlamaForSequenceClassification)
    assert lm.classifier.names == ("LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3")
    (score, greedy), *_ = lm.loglikelihood(requests(["a b c"], ["2"]))
    assert score < 0 and isinstance(greedy, bool)


def test_random_weight_presets_build_their_classifier_and_fold_larger_tokenizer_ids():
    lm = PerfHFLM(pretrained="arch:distilbert-base", dtype="float32", device="cpu", print_summary=False)
    assert isinstance(lm.model, transformers.DistilBertForSequenceClassification)
    assert lm.shape.params == 66_955_010  # distilbert-base-uncased-finetuned-sst-2-english
    assert lm.folded_ids and "folded modulo 30522" in lm.folded_ids
    text = "naïve ☃ résumé " * 3  # ids of the SmolLM2 tokenizer beyond DistilBERT's 30,522
    assert max(lm.tokenizer(text).input_ids) >= 30522
    scored = lm.loglikelihood(requests([text], ["negative", "positive"]))
    assert sum(torch.tensor([s for s, _ in scored]).exp()) == pytest.approx(1.0, abs=1e-5)


def test_classification_local_reads_named_columns_of_csv_and_jsonl_and_scores_macro_f1(tmp_path):
    from lm_eval_perf.tasks.classification_local import data

    rows = [("two apples", "10"), ("a pear", "2"), ("one fig", "2")]
    csv_file = write_csv(tmp_path / "d.csv", rows, columns=("utterance", "intent"))
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"utterance": t, "intent": int(label)}) + "\n" for t, label in rows))
    for path in (csv_file, jsonl):
        docs = data.load(str(path), text_column="utterance", label_column="intent")["test"]
        assert docs[0] == {"text": "two apples", "choices": ["2", "10"], "gold": 1}  # numeric order
    ordered = data.load(str(csv_file), "utterance", "intent", labels=["10", "2"])["test"]
    assert ordered[1]["choices"] == ["10", "2"] and ordered[1]["gold"] == 1
    assert data.process_results({"gold": 1}, [(-2.0, False), (-0.5, True)]) == {
        "acc": 1.0,
        "f1_macro": (1, 1),
    }
    # (gold, predicted): per-label F1 of labels 0, 1, 2 is 2/3, 1/2, 2/3; macro-F1 is their unweighted mean
    pairs = [(0, 0), (0, 1), (1, 1), (2, 2), (2, 1)]
    assert data.macro_f1(pairs) == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)


@pytest.mark.parametrize(
    ("name", "content", "options", "message"),
    [
        ("d.txt", "text,label\na,b\n", {}, r"use a \.csv, \.tsv, \.jsonl file"),
        ("d.csv", "text,label\n", {}, "has no examples"),
        ("d.csv", "text,label\na,\n", {}, "example 1: 'label' is empty"),
        ("d.jsonl", '{"text": "a"}\n[1]\n', {"label_column": None}, "line 2 is not a JSON object"),
        ("d.csv", "text,label\na,x\n", {"labels": ["y"]}, r"labels \['x'\] of the file are not in"),
    ],
)
def test_bad_labelled_files_are_one_line_errors(tmp_path, name, content, options, message):
    from lm_eval_perf.tasks.classification_local import data
    from lm_eval_perf.tasks.labelled import read_examples

    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserInputError, match=message):
        if "labels" in options:
            data.load(str(path), **options)
        else:
            read_examples(path, **options)
    with pytest.raises(UserInputError, match="needs the labelled file"):
        data.load(None)


def test_batch_size_auto_probes_once_at_the_longest_context_outside_the_record(encoder_dir):
    lm = PerfHFLM(
        pretrained=str(encoder_dir), device="cpu", batch_size="auto", max_batch_size=4, print_summary=False
    )
    texts = [t for t, _ in examples(6, seed=5)]
    lm.loglikelihood(requests(texts, ["NEGATIVE", "POSITIVE"]))
    lm.loglikelihood(requests(texts[:2], ["NEGATIVE", "POSITIVE"]))
    record = lm.finish_measurement()
    (probe,) = record["batch_size_probe"]  # once per model, at the longest context's tokens
    assert probe["chosen_batch_size"] == 4
    assert probe["positions"] == max(len(lm.tokenizer(t).input_ids) for t in texts)
    assert record["kinds"]["loglikelihood"]["batches"] == 2 + 1  # 6 rows in 4 + 2, then 2
    assert [e["what"] for e in record["overall"]["excluded"]] == ["batch_size_probe"]
