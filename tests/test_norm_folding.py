"""RMSNorms folded into the low-rank layers they feed (models/compress/norm_folding.py)."""

from __future__ import annotations

import torch
import transformers

from lm_eval_perf.models.compress.norm_folding import fold_input_norms
from lm_eval_perf.models.compress.svd import apply_svd
from lm_eval_perf.models.perf_hf import PerfHFLM
from lm_eval_perf.models.sources import load_architecture

LAYERS = load_architecture("tiny-llama")["num_hidden_layers"]
IDS = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))
TOKEN = IDS[:1, :1]  # one row: what a decode step at batch 1 feeds each layer


def _perf_hf(path, **args) -> PerfHFLM:
    return PerfHFLM(
        pretrained=str(path), dtype="float32", device="cpu", batch_size=1, print_summary=False, **args
    )


def _compressed(path, targets: str = "*") -> torch.nn.Module:
    """The HF model of ``path`` with SVD at ratio 0.5, not folded."""
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    apply_svd(model, ratio=0.5, targets=targets, solver="exact")
    return model


def _dynamo_ops(model: torch.nn.Module, ids: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """The call targets Dynamo captures for ``model(ids)``, dead code removed, and its logits."""
    targets: list[str] = []

    def capture(gm, example_inputs):
        gm.graph.eliminate_dead_code()
        targets.extend(str(n.target) for n in gm.graph.nodes if n.op.startswith("call_"))
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        logits = torch.compile(model, backend=capture)(ids).logits
    return targets, logits


def test_perf_hf_folds_both_norms_of_every_layer_and_eager_logits_stay_bit_identical(tiny_model_dir):
    lm = _perf_hf(tiny_model_dir, svd_ratio=0.5, svd_solver="exact")
    assert lm.plan.record(lm.model)["compression"]["folded_norms"] == 2 * LAYERS
    with torch.no_grad():
        assert torch.equal(lm.model(IDS).logits, _compressed(tiny_model_dir)(IDS).logits)


def test_saved_state_keeps_its_keys_when_norms_are_folded(tiny_model_dir):
    model = _compressed(tiny_model_dir)
    keys = list(model.state_dict())
    assert fold_input_norms(model) == 2 * LAYERS
    assert list(model.state_dict()) == keys


def test_compiled_one_token_step_computes_no_norm_of_its_own_before_low_rank_layers(tiny_model_dir):
    plain, folded = _compressed(tiny_model_dir), _compressed(tiny_model_dir)
    fold_input_norms(folded)
    plain_ops, plain_logits = _dynamo_ops(plain, TOKEN)
    folded_ops, folded_logits = _dynamo_ops(folded, TOKEN)
    assert plain_ops.count("mean") == 2 * LAYERS + 1  # every norm, the final one included
    assert folded_ops.count("mean") == 1  # only the final norm before lm_head
    assert torch.allclose(folded_logits, plain_logits, atol=1e-5, rtol=1e-4)


def test_compiled_one_token_step_of_a_folded_model_matches_eager_under_inductor(tiny_model_dir):
    model = _compressed(tiny_model_dir)
    fold_input_norms(model)
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(model, fullgraph=True)(TOKEN).logits
        assert torch.allclose(compiled, model(TOKEN).logits, atol=1e-5, rtol=1e-4)


def test_several_rows_compiled_run_the_norm_as_before(tiny_model_dir):
    model = _compressed(tiny_model_dir)
    fold_input_norms(model)
    ops, logits = _dynamo_ops(model, IDS)
    assert ops.count("mean") == 2 * LAYERS + 1
    with torch.no_grad():
        assert torch.allclose(logits, model(IDS).logits, atol=1e-5, rtol=1e-4)


def test_a_norm_with_a_dense_reader_is_not_folded(tiny_model_dir):
    model = _compressed(tiny_model_dir, targets="*.mlp.*")  # q/k/v stay dense
    assert fold_input_norms(model) == LAYERS
    assert all(layer.self_attn.q_proj.__class__ is torch.nn.Linear for layer in model.model.layers)


def test_a_norm_that_is_not_an_rms_norm_is_not_folded(tiny_model_dir):
    model = _compressed(tiny_model_dir)
    hidden = model.config.hidden_size
    for layer in model.model.layers:
        layer.input_layernorm = torch.nn.LayerNorm(hidden)
    assert fold_input_norms(model) == LAYERS  # the post-attention RMSNorms only


def test_an_architecture_outside_the_known_families_is_not_folded(tiny_model_dir):
    model = _compressed(tiny_model_dir)
    model.config.model_type = "gemma2"  # its post_attention_layernorm reads the attention output
    assert fold_input_norms(model) == 0
