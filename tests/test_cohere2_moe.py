"""cohere2_moe (Command A+, a mixture of experts) against transformers' Cohere2MoeForCausalLM.

Three tiny variants together cover every option of Cohere2MoeConfig: softmax and sigmoid routing (with
and without renormalising the top k), shared experts combined by "average" and by "sum" (and none),
dense prefix layers given by `first_k_dense_replace` or spelled out in `mlp_layer_types`, with their own
width and sliding pattern (pattern 1, which forces RoPE on them, and 2, which does not), RMSNorm and
LayerNorm, and a head_dim that is not hidden_size // heads. The window is 8 tokens, so every sequence
here runs well past it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

import minicohere
from minicohere import model as mc
from conftest import REPO, rel_err, scramble, scrambled_reference

warnings.filterwarnings("ignore")

try:
    from transformers import Cohere2MoeConfig, Cohere2MoeForCausalLM  # noqa: F401
    HAS_HF_MOE = True
except ImportError:
    HAS_HF_MOE = False
needs_hf = pytest.mark.skipif(not HAS_HF_MOE, reason="this transformers has no cohere2_moe (Cohere2MoeForCausalLM)")

WINDOW = 8
BASE = dict(vocab_size=160, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=4,
            max_position_embeddings=256, sliding_window=WINDOW, pad_token_id=0, bos_token_id=5, eos_token_id=7,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
VARIANTS = {
    # one dense layer first (all global, so RoPE is forced on it), LayerNorm, softmax, a shared expert averaged
    "softmax-average": dict(head_dim=16, intermediate_size=48, num_experts=8, num_experts_per_tok=2,
                            num_shared_experts=1, shared_expert_combination_strategy="average",
                            first_k_dense_replace=1, prefix_dense_intermediate_size=96, sliding_window_pattern=4,
                            logit_scale=0.5),
    # the explicit spelling; RMSNorm; sigmoid renormalised; two shared experts summed; a dense layer in the
    # middle whose prefix pattern (2) forces nothing; head_dim 24 while hidden / heads is 16
    "sigmoid-sum-rms": dict(head_dim=24, intermediate_size=40, num_experts=6, num_experts_per_tok=3,
                            expert_selection_fn="sigmoid", norm_topk_prob=True, num_shared_experts=2,
                            shared_expert_combination_strategy="sum", rms_norm_eps=1e-6,
                            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                            mlp_layer_types=["sparse", "dense", "sparse", "sparse"],
                            prefix_dense_sliding_window_pattern=2, prefix_dense_intermediate_size=72,
                            logit_scale=0.25),
    # sigmoid weights left as they are; no shared expert; two dense layers with their own pattern (2)
    "sigmoid-raw-prefix2": dict(head_dim=16, intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                                expert_selection_fn="sigmoid", norm_topk_prob=False, first_k_dense_replace=2,
                                prefix_dense_sliding_window_pattern=2, sliding_window_pattern=2,
                                logit_scale=1.0),
}


def reference(variant, seed=0, embed_std=0.1, **overrides):
    return scrambled_reference(Cohere2MoeConfig, Cohere2MoeForCausalLM, {**BASE, **VARIANTS[variant], **overrides},
                               seed, embed_std)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Per variant: transformers' model and minicohere's, loaded from the sharded checkpoint it saved."""
    if not HAS_HF_MOE:
        pytest.skip("this transformers has no cohere2_moe")
    made = {}
    for variant in VARIANTS:
        hf = reference(variant)
        folder = tmp_path_factory.mktemp(variant)
        hf.save_pretrained(folder, max_shard_size="60KB")
        made[variant] = (hf, minicohere.from_pretrained(folder, progress=False), folder)
    return made


def ids_for(shape, seed=0):
    return torch.randint(8, BASE["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def own_config(variant, **overrides):
    """minicohere's config for a variant, built without transformers."""
    d = {**BASE, **VARIANTS[variant], **overrides, "model_type": "cohere2_moe"}
    return mc.CohereConfig.from_dict(d)


def own_model(variant="softmax-average", seed=0, **overrides):
    torch.manual_seed(seed)
    return scramble(mc.CohereForCausalLM(own_config(variant, **overrides)).eval(), seed, 0.1)


def set_experts(model, implementation):
    for m in model.modules():
        if isinstance(m, mc.CohereExperts):
            m.implementation = implementation
    return model


# --- configuration --------------------------------------------------------------------------------


@needs_hf
@pytest.mark.parametrize("variant", VARIANTS)
def test_config_reads_each_spelling_as_transformers_does(variant):
    theirs = Cohere2MoeConfig(**{**BASE, **VARIANTS[variant]})
    ours = own_config(variant)
    assert ours.layer_types == theirs.layer_types and ours.mlp_layer_types == theirs.mlp_layer_types
    assert ours.head_dim == theirs.head_dim
    # and from the file transformers writes
    again = mc.CohereConfig.from_dict(theirs.to_dict())
    assert again.layer_types == theirs.layer_types and again.mlp_layer_types == theirs.mlp_layer_types


@needs_hf
@pytest.mark.parametrize("first_k, prefix, pattern, layers", [(0, 1, 4, 6), (2, 1, 4, 6), (3, 2, 3, 8), (1, 3, 2, 5)])
def test_first_k_dense_replace_gives_transformers_layer_lists(first_k, prefix, pattern, layers):
    kw = dict(num_hidden_layers=layers, first_k_dense_replace=first_k, prefix_dense_sliding_window_pattern=prefix,
              sliding_window_pattern=pattern)
    theirs = Cohere2MoeConfig(**kw)
    ours = mc.CohereConfig.from_dict({"model_type": "cohere2_moe", **kw})
    assert (ours.layer_types, ours.mlp_layer_types) == (theirs.layer_types, theirs.mlp_layer_types)
    assert [ours.layer_uses_rope(i) for i in range(layers)] == [
        t == "sliding_attention" or (m == "dense" and prefix == 1)
        for t, m in zip(theirs.layer_types, theirs.mlp_layer_types)]


@needs_hf
def test_config_defaults_equal_transformers_cohere2_moe_defaults():
    theirs = Cohere2MoeConfig()
    ours = mc.CohereConfig(model_type="cohere2_moe")
    for name in mc.MOE_FIELDS + ("head_dim", "sliding_window", "layer_types", "layer_norm_eps", "vocab_size",
                                 "hidden_size", "intermediate_size", "num_hidden_layers", "logit_scale"):
        assert getattr(ours, name) == getattr(theirs, name), name


def test_config_defaults_follow_cohere2_moe_and_leave_other_families_files_alone():
    moe = mc.CohereConfig.from_dict({"model_type": "cohere2_moe", "num_hidden_layers": 4})
    assert moe.head_dim == 128 and moe.sliding_window == 4096 and moe.mlp_layer_types == ["sparse"] * 4
    d = moe.to_dict()
    assert d["architectures"] == ["Cohere2MoeForCausalLM"] and d["num_experts"] == 8 and d["head_dim"] == 128
    assert mc.CohereConfig.from_dict(d) == moe
    for family in ("cohere", "cohere2"):
        d = mc.CohereConfig(model_type=family, num_hidden_layers=4).to_dict()
        assert not {"num_experts", "mlp_layer_types", "rms_norm_eps"} & set(d)
    assert "head_dim" not in mc.CohereConfig().to_dict()


@pytest.mark.parametrize("bad, message", [
    ({"mlp_layer_types": ["sparse", "moe", "sparse", "sparse"]}, "'moe'"),
    ({"mlp_layer_types": ["sparse"] * 3}, "mlp_layer_types has 3 entries"),
    ({"expert_selection_fn": "relu"}, "expert_selection_fn='relu'"),
    ({"shared_expert_combination_strategy": "max"}, "shared_expert_combination_strategy='max'"),
    ({"num_experts_per_tok": 9}, "num_experts_per_tok=9"),
    ({"head_dim": 15}, "head_dim=15"),
])
def test_config_rejects_a_cohere2_moe_config_it_cannot_run(bad, message):
    with pytest.raises(ValueError, match=message):
        mc.CohereConfig.from_dict({"model_type": "cohere2_moe", "num_hidden_layers": 4, **bad})


# --- the forward pass against transformers ------------------------------------------------------------


def padded_batch(seed=1):
    ids = ids_for((2, 3 * WINDOW + 4), seed)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    ids[1, :5] = 0
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@needs_hf
@pytest.mark.parametrize("variant", VARIANTS)
def test_fp32_logits_of_a_left_padded_batch_past_the_window_equal_transformers(pairs, variant):
    hf, ours, _ = pairs[variant]
    ids, mask, positions = padded_batch()
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, position_ids=positions).logits
    for implementation in ("grouped", "loop"):
        got = set_experts(ours, implementation)(ids, attention_mask=mask, position_ids=positions).logits
        real = mask.bool()
        assert rel_err(got[real], theirs[real]) < 1e-5, implementation
    set_experts(ours, "grouped")
    assert theirs.abs().mean() > 0.1  # O(1) logits: equality is not two near-zero tensors


@needs_hf
def test_loss_with_labels_equals_transformers(pairs):
    hf, ours, _ = pairs["sigmoid-sum-rms"]
    ids = ids_for((2, 20), seed=2)
    labels = ids.clone()
    labels[0, :4] = -100
    with torch.no_grad():
        theirs = hf(ids, labels=labels).loss
    assert abs(ours(ids, labels=labels).loss.item() - theirs.item()) < 1e-5 * theirs.item()


@needs_hf
@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_logits_stay_within_transformers_own_bf16_error(pairs, variant):
    """Both models in bf16 against transformers in fp32, each of minicohere's expert implementations beside
    transformers' counterpart (the loop beside its "eager", the grouped multiply beside its "grouped_mm":
    they round differently, by up to 2x here). minicohere's error may exceed transformers' by a quarter."""
    hf, ours, folder = pairs[variant]
    ids = ids_for((2, 2 * WINDOW + 5), seed=3)
    theirs16 = Cohere2MoeForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    ours16 = minicohere.from_pretrained(folder, dtype="bfloat16", progress=False)
    assert ours16.dtype == torch.bfloat16
    with torch.no_grad():
        exact = hf(ids).logits
        for ours_impl, theirs_impl in (("grouped", "grouped_mm"), ("loop", "eager")):
            theirs16.set_experts_implementation(theirs_impl)
            bound = rel_err(theirs16(ids).logits, exact)
            got = set_experts(ours16, ours_impl)(ids).logits
            assert 0 < rel_err(got, exact) <= 1.25 * bound + 1e-3, ours_impl


# --- checkpoints ----------------------------------------------------------------------------------------


@needs_hf
def test_bf16_sharded_checkpoint_loads_with_dtype_auto_and_matches_in_fp32(tmp_path):
    hf = reference("softmax-average").to(torch.bfloat16)
    hf.save_pretrained(tmp_path, max_shard_size="30KB")
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    names = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in names  # the per-expert layout on disk
    ours = minicohere.from_pretrained(tmp_path, progress=False)
    assert ours.dtype == torch.bfloat16 and ours.config.model_type == "cohere2_moe"
    theirs32 = Cohere2MoeForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = ids_for((1, 2 * WINDOW + 3))
    with torch.no_grad():
        expected = theirs32(ids).logits
    assert rel_err(ours.float()(ids).logits, expected) < 1e-5


@needs_hf
def test_save_pretrained_writes_experts_one_by_one_and_transformers_loads_it_back(pairs, tmp_path):
    hf, ours, _ = pairs["sigmoid-sum-rms"]
    ours.save_pretrained(tmp_path, max_shard_size="60KB")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "cohere2_moe" and config["mlp_layer_types"] == hf.config.mlp_layer_types
    names = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert {f"model.layers.0.mlp.experts.{e}.gate_proj.weight" for e in range(6)} <= set(names)
    back = Cohere2MoeForCausalLM.from_pretrained(tmp_path).eval()
    ids = ids_for((1, 20))
    with torch.no_grad():
        assert rel_err(back(ids).logits, hf(ids).logits) < 1e-6


# --- generation -------------------------------------------------------------------------------------------


def hf_generate(hf, ids, mask, n):
    hf.generation_config.eos_token_id = None
    return hf.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=0)


@needs_hf
@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_tokens_past_the_window_equal_transformers(pairs, variant):
    hf, ours, _ = pairs[variant]
    ids = ids_for((1, 6), seed=2)
    n = 4 * WINDOW
    theirs = hf_generate(hf, ids, torch.ones_like(ids), n)
    got = ours.generate(ids, max_new_tokens=n, eos_token_id=None)
    assert torch.equal(got, theirs)
    assert len(set(got[0, 6:].tolist())) > 3  # a varied continuation, not one token repeated


@needs_hf
def test_greedy_tokens_of_a_left_padded_batch_equal_transformers_on_every_cache(pairs):
    hf, ours, _ = pairs["softmax-average"]
    ids = ids_for((2, 11), seed=3)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    ids[1, :4] = 0
    n = 3 * WINDOW
    theirs = hf_generate(hf, ids, mask, n)
    for cache in ("static", "dynamic", None):
        got = ours.generate(ids, attention_mask=mask, max_new_tokens=n, eos_token_id=None, cache=cache)
        assert torch.equal(got, theirs), cache


# --- the experts: the loop and the grouped multiply -------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_experts_equal_the_loop_in_prefill_and_in_decode(dtype):
    block = own_model("sigmoid-sum-rms").model.layers[0].mlp.to(dtype)
    experts = block.experts
    g = torch.Generator().manual_seed(0)
    for tokens in (1, 3, 40):  # a decode step of one row, of a small batch, and a prompt
        x = torch.randn(tokens, 64, generator=g).to(dtype)
        with torch.no_grad():
            _, weights, chosen = block.gate(x)
            experts.implementation = "loop"
            loop = experts(x, weights, chosen)
            experts.implementation = "grouped"
            grouped = experts(x, weights, chosen)
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        assert rel_err(grouped, loop) < tol and loop.abs().mean() > 0


def test_stacked_experts_share_the_experts_memory_and_follow_a_dtype_change():
    model = own_model()
    experts = model.model.layers[1].mlp.experts
    with torch.no_grad():
        gate_up, down = experts.stacked()
    width = experts[3].up_proj.out_features
    assert experts[3].up_proj.weight.data_ptr() == gate_up[3, :, width:].data_ptr()
    assert torch.equal(experts[3].up_proj.weight, gate_up[3, :, width:].T)
    assert experts[5].down_proj.weight.data_ptr() == down[5].data_ptr()
    ids = ids_for((1, 12))
    with torch.no_grad():
        model(ids)
        model.to(torch.bfloat16).to(torch.float32)  # new tensors for every weight, each rounded to bf16
        grouped = model(ids).logits  # a stale stack would still hold the unrounded weights
        loop = set_experts(model, "loop")(ids).logits
        assert experts[2].down_proj.weight.data_ptr() == experts.stacked()[1][2].data_ptr()
        assert torch.equal(experts[2].down_proj.weight, experts.stacked()[1][2].T)
    assert rel_err(grouped, loop) < 1e-5


def test_training_through_grouped_experts_reaches_every_chosen_experts_weights():
    model = own_model().train()
    ids = ids_for((2, 10))
    with torch.enable_grad():  # (other test files turn gradients off for the whole session)
        model(ids, labels=ids).loss.backward()
    grads = [e.gate_proj.weight.grad for e in model.model.layers[1].mlp.experts]
    assert sum(g is not None and g.abs().sum() > 0 for g in grads) >= 2
    assert model.model.layers[1].mlp.gate.weight.grad.abs().sum() > 0


# --- quantization ----------------------------------------------------------------------------------------


# The CPU kernels multiply in bf16, and at this tiny width a rounded token can change its experts: the
# bounds are those of tests/test_quant.py's whole-model checks, doubled.
@pytest.mark.parametrize("scheme, tolerance", [("int8", 0.06), ("int4", 0.6)])
def test_quantized_experts_stay_close_and_the_router_stays_in_float(scheme, tolerance):
    model = own_model("softmax-average")
    ids = ids_for((2, 2 * WINDOW + 3))
    with torch.no_grad():
        exact = model(ids).logits
    minicohere.quantize(model, scheme, group_size=32, head=False)
    block = model.model.layers[1].mlp
    assert all(isinstance(e.down_proj, minicohere.QuantizedLinear) for e in block.experts)
    assert isinstance(block.shared_experts.up_proj, minicohere.QuantizedLinear)
    assert isinstance(block.gate.weight, torch.nn.Parameter) and block.gate.weight.dtype == torch.float32
    with torch.no_grad():
        got = model(ids).logits
    assert 0 < rel_err(got, exact) < tolerance
    out = model.generate(ids[:1, :6], max_new_tokens=3 * WINDOW, eos_token_id=None)
    assert out.shape == (1, 6 + 3 * WINDOW)


@needs_hf
def test_from_pretrained_quantizes_the_experts_as_it_reads_them(pairs):
    _, ours, folder = pairs["softmax-average"]
    q = minicohere.from_pretrained(folder, quantize="int4", group_size=32, progress=False)
    assert isinstance(q.model.layers[2].mlp.experts[0].gate_proj, minicohere.Int4Linear)
    assert minicohere.parameter_bytes(q) < minicohere.parameter_bytes(ours) / 3
    after = minicohere.quantize(minicohere.from_pretrained(folder, progress=False), "int4", group_size=32)
    ids = ids_for((1, 20))
    with torch.no_grad():  # quantized while read, or after loading: the same model
        assert torch.equal(q(ids).logits, after(ids).logits)


# --- the package needs no transformers ---------------------------------------------------------------------


def test_a_cohere2_moe_model_runs_without_importing_transformers(tmp_path):
    code = (
        "import sys, torch, minicohere\n"
        "from minicohere import model as mc\n"
        f"cfg = mc.CohereConfig.from_dict({{**{BASE!r}, **{VARIANTS['softmax-average']!r}, "
        "'model_type': 'cohere2_moe'})\n"
        "m = mc.CohereForCausalLM(cfg).eval()\n"
        f"m.save_pretrained({str(tmp_path)!r})\n"
        f"m = minicohere.from_pretrained({str(tmp_path)!r}, progress=False)\n"
        "m.generate(torch.tensor([[5, 9, 11]]), max_new_tokens=12)\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# --- the memory table ----------------------------------------------------------------------------------------


def test_kv_calculator_counts_a_cohere2_moe_cache_as_the_static_cache_allocates_it():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import memory_table

    config = own_config("softmax-average")  # 4 layers: one global prefix layer, then 3 sliding + 1 global
    for tokens in (5, 3 * WINDOW):
        cache = mc.StaticKVCache(config, 2, tokens, dtype=torch.bfloat16)
        assert memory_table.kv_bytes_for_config(config, tokens, batch=2) == cache.nbytes()
    table = memory_table.moe_table()
    assert "third-party summaries" in table and "218B" in table and "25B active" in table
    # bf16: 436 GB held, 50 GB read per token; six 80 GB GPUs (5 would hold 392.5 GB), four 141 GB ones
    assert "| bf16 | 436 GB | 50.0 GB | 6 | 4 |" in table
