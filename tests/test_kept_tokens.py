"""Generated tokens kept vs computed: each row cut where lm-eval cuts its text (the SmolLM2 tokenizer,
and perf-hf's generate_until on a tiny random model), the tokens past a row's stop counted apart."""

from __future__ import annotations

import pytest
import torch
import transformers
from lm_eval.api.instance import Instance

from lm_eval_perf.models.perf_hf import PerfHFLM
from lm_eval_perf.models.stops import kept_row_tokens, kept_tokens

EOS = PAD = 2  # SmolLM2's <|im_end|> is both


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return transformers.AutoTokenizer.from_pretrained(smollm2_dir)


def test_a_row_keeps_its_tokens_through_the_one_that_completes_its_first_stop_string(tokenizer):
    def enc(text):
        return tokenizer.encode(text, add_special_tokens=False)

    answer, blank, question = enc("The answer is 42."), enc("\n\n"), enc("Q: more text")
    assert blank == [1116] and len(answer) == 7  # "\n\n" is one token of its own
    ids = answer + blank + question
    # lm-eval's text is "The answer is 42." (cut at "\n\n"); the "\n\n" token completed the stop
    assert kept_row_tokens(ids, tokenizer.decode, ["Q:", "\n\n"], {EOS}, PAD) == 7 + 1
    # "Q:" is two tokens: the row keeps both
    assert kept_row_tokens(ids, tokenizer.decode, ["Q:"], {EOS}, PAD) == 7 + 1 + 2
    # no stop string: the row ends at its end-of-sequence token (kept), the padding after it is not
    assert kept_row_tokens([*answer, EOS, PAD, PAD], tokenizer.decode, ["Q:"], {EOS}, PAD) == 7 + 1
    # a pad token that is not end-of-sequence ends the row before itself; "" stop strings are ignored
    assert kept_row_tokens([*answer, 0, 0], tokenizer.decode, [""], {EOS}, 0) == 7
    rows = torch.tensor([ids, answer + blank + [EOS] + [PAD] * 3])
    assert kept_tokens(rows, tokenizer.decode, ["\n\n"], {EOS}, PAD) == 8 + 8


def test_generate_until_records_kept_and_computed_generated_tokens(tiny_model_dir):
    lm = PerfHFLM(
        pretrained=str(tiny_model_dir), device="cpu", dtype="float32", batch_size=2, print_summary=False
    )
    contexts = ["The capital of France is", "One, two, three, four, five,"]
    ids, mask = lm.tok_batch_encode(contexts)
    with torch.no_grad():
        out = lm.model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=PAD)
    rows = out[:, ids.shape[1] :].tolist()
    stop = lm.tok_decode(rows[0][:3])  # row 0 completes this stop string at its third token
    assert stop and stop not in lm.tok_decode(rows[0][:2]) and stop not in lm.tok_decode(rows[1])
    assert EOS not in rows[0] + rows[1] and len(rows[1]) == 8

    def request(context):
        return Instance(
            "generate_until", {}, (context, {"until": [stop], "max_gen_toks": 8}), 0, ("kept", 0, 1)
        )

    answers = lm.generate_until([request(c) for c in contexts])
    assert answers[0] == ""  # lm-eval cut row 0 at the stop string
    block = lm.get_model_info()["efficiency"]["kinds"]["generate_until"]
    # the batch ran 8 steps (row 1 never stopped): 16 computed, 3 + 8 kept
    assert block["generated_tokens_computed"] == 16
    assert block["generated_tokens"] == 3 + 8
    assert block["it_tokens_per_s"] == pytest.approx(11 / block["seconds"])
    assert block["it_computed_tokens_per_s"] == pytest.approx(16 / block["seconds"])
