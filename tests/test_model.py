"""minicohere's model against transformers' CohereForCausalLM: each component, then the whole model."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from transformers import CohereConfig as HFConfig
from transformers.models.cohere import modeling_cohere as ref
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import minicohere
from minicohere import CohereConfig, CohereForCausalLM, model as mc
from conftest import FAMILY, reference_model, rel_err, tiny_kwargs

torch.set_grad_enabled(False)

ROPE_CASES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
    "yarn": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16},
    "llama3": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
}


def load(saved_reference, family="08-2024-gqa", **overrides):
    hf, folder = saved_reference(family, **overrides)
    return hf, minicohere.from_pretrained(folder, progress=False)


# --- configuration ------------------------------------------------------------------------------


def test_config_defaults_equal_transformers_defaults():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = HFConfig()
    ours = CohereConfig()
    for f in dataclasses.fields(CohereConfig):
        if f.name in ("dtype", "layer_types", "sliding_window"):  # the last two are cohere2's (test_cohere2)
            continue
        if f.name == "head_dim" or f.name in mc.MOE_FIELDS:  # cohere2_moe's (test_cohere2_moe)
            continue
        assert getattr(ours, f.name) == getattr(theirs, f.name), f.name
    assert ours.layer_types == ["full_attention"] * ours.num_hidden_layers and ours.sliding_window is None


def test_config_reads_legacy_c4ai_spelling():
    legacy = {"model_type": "cohere", "rope_theta": 8000000.0, "torch_dtype": "float16", "hidden_size": 8192,
              "num_attention_heads": 64, "rope_scaling": None, "architectures": ["CohereForCausalLM"]}
    cfg = CohereConfig.from_dict(legacy)
    assert cfg.rope_parameters == {"rope_type": "default", "rope_theta": 8000000.0}
    assert cfg.dtype == "float16" and cfg.num_key_value_heads == 64


def test_config_reads_new_spelling_and_round_trips():
    new = {"rope_parameters": {"rope_type": "linear", "rope_theta": 4e6, "factor": 2.0}, "dtype": "bfloat16",
           "num_key_value_heads": 8}
    cfg = CohereConfig.from_dict(new)
    assert cfg.rope_theta == 4e6 and cfg.rope_parameters["factor"] == 2.0 and cfg.dtype == "bfloat16"
    assert CohereConfig.from_dict(cfg.to_dict()) == cfg


def test_config_accepts_legacy_rope_scaling_with_type_key():
    cfg = CohereConfig.from_dict({"rope_theta": 1e4, "rope_scaling": {"type": "dynamic", "factor": 2.0}})
    assert cfg.rope_parameters == {"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}


@pytest.mark.parametrize("bad, message", [
    ({"model_type": "llama"}, "model_type='llama' is not supported"),
    ({"sliding_window": 16}, "only 'cohere2' has sliding-window layers"),
    ({"hidden_size": 100, "num_attention_heads": 64}, "hidden_size=100 is not divisible"),
    ({"num_attention_heads": 64, "num_key_value_heads": 7}, "num_key_value_heads=7"),
    ({"rope_parameters": {"rope_type": "banana", "rope_theta": 1.0}}, "rope_type='banana'"),
    ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1.0}}, "needs 'factor'"),
    ({"hidden_act": "gelu_new"}, "hidden_act='gelu_new'"),
])
def test_config_rejects_what_it_cannot_run(bad, message):
    with pytest.raises(ValueError, match=message):
        CohereConfig.from_dict(bad)


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "gemma2"}')
    with pytest.raises(ValueError, match="config.json.*gemma2"):
        CohereConfig.from_json_file(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        CohereConfig.from_json_file(path)


# --- components ----------------------------------------------------------------------------------


def test_layernorm_equals_reference_and_subtracts_the_mean():
    x = torch.randn(2, 5, 64) * 3 + 2
    theirs = ref.CohereLayerNorm(64, eps=1e-5)
    ours = mc.CohereLayerNorm(64, eps=1e-5)
    w = torch.rand(64) + 0.5
    theirs.weight.copy_(w)
    ours.weight.copy_(w)
    torch.testing.assert_close(ours(x), theirs(x))
    rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w  # RMSNorm is not the same thing
    assert (ours(x) - rms).abs().max() > 0.1


def test_layernorm_in_fp16_does_not_overflow_on_large_activations():
    x = (torch.randn(2, 4, 64) * 2000).half()  # x**2 exceeds fp16's 65504
    naive = x - x.mean(-1, keepdim=True)
    assert torch.isinf(naive.pow(2).mean(-1)).any()  # the trap the fp32 upcast avoids
    out = mc.CohereLayerNorm(64)(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref.CohereLayerNorm(64)(x))


def test_qk_norm_normalises_each_head_with_its_own_weight():
    norm = mc.CohereLayerNorm((4, 16))
    norm.weight.copy_(torch.rand(4, 16) + 0.5)
    theirs = ref.CohereLayerNorm((4, 16))
    theirs.weight.copy_(norm.weight)
    x = torch.randn(2, 3, 4, 16)
    torch.testing.assert_close(norm(x), theirs(x))


def test_rotate_pairs_equals_reference_rotate_half():
    x = torch.randn(2, 4, 5, 16)
    torch.testing.assert_close(mc.rotate_pairs(x), ref.rotate_half(x), rtol=0, atol=0)


def llama_rotate_half(x):
    """Llama's layout: dimension i is paired with i + head_dim/2. Used as a negative control."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def test_apply_rotary_equals_reference_and_llama_layout_does_not():
    cfg = CohereConfig(**tiny_kwargs())
    rope = mc.CohereRotaryEmbedding(cfg)
    q, k = torch.randn(2, 8, 7, 8), torch.randn(2, 2, 7, 8)
    pos = torch.arange(7)[None].expand(2, 7)
    cos, sin = rope(q, pos)
    ours = mc.apply_rotary(q, k, cos, sin)
    theirs = ref.apply_rotary_pos_emb(q, k, cos, sin)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    # The fast complex-number form is the definition x * cos + rotate_pairs(x) * sin.
    torch.testing.assert_close(ours[0], q * cos[:, None] + mc.rotate_pairs(q) * sin[:, None])
    # Negative control: Llama's half-split rotation with Llama's cos/sin layout gives other numbers.
    half_angles = pos[..., None].float() * rope.inv_freq
    lcos, lsin = torch.cat([half_angles.cos()] * 2, -1)[:, None], torch.cat([half_angles.sin()] * 2, -1)[:, None]
    llama_q = q * lcos + llama_rotate_half(q) * lsin
    with pytest.raises(AssertionError):
        torch.testing.assert_close(llama_q, theirs[0])


def test_rotary_keeps_vector_length_and_relative_angles():
    cfg = CohereConfig(**tiny_kwargs())
    rope = mc.CohereRotaryEmbedding(cfg)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i, j):
        cq, sq = rope(q, torch.tensor([[i]]))
        ck, sk = rope(k, torch.tensor([[j]]))
        rq, _ = mc.apply_rotary(q, q, cq, sq)
        rk, _ = mc.apply_rotary(k, k, ck, sk)
        assert torch.allclose(rq.norm(), q.norm(), atol=1e-5)
        return (rq * rk).sum().item()

    assert score(3, 1) == pytest.approx(score(12, 10), abs=1e-4)  # depends on i - j only
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)


@pytest.mark.parametrize("rope", sorted(ROPE_CASES))
def test_rope_inverse_frequencies_equal_reference(rope):
    kw = tiny_kwargs(rope_parameters=dict(ROPE_CASES[rope]), max_position_embeddings=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_cfg = HFConfig(**{**kw, "rope_parameters": dict(ROPE_CASES[rope])})
    ours_cfg = CohereConfig(**kw)
    seq_len = 80 if rope == "dynamic" else None
    ours, ours_scale = mc.rope_inv_freq(ours_cfg, seq_len)
    if rope == "default":
        theirs, theirs_scale = ref.CohereRotaryEmbedding.compute_default_rope_parameters(hf_cfg)
    else:
        theirs, theirs_scale = ROPE_INIT_FUNCTIONS[rope](hf_cfg, "cpu", seq_len=seq_len)
    torch.testing.assert_close(ours, theirs)
    assert ours_scale == pytest.approx(theirs_scale)
    if rope != "default":
        assert not torch.allclose(ours, mc.rope_inv_freq(CohereConfig(**tiny_kwargs()))[0])


def test_mlp_equals_reference():
    cfg = CohereConfig(**tiny_kwargs())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ref.CohereMLP(HFConfig(**tiny_kwargs()))
    ours = mc.CohereMLP(cfg)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 5, 64)
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("family", sorted(FAMILY))
def test_decoder_layer_is_parallel_and_equals_reference(family):
    hf = reference_model(family)
    cfg = CohereConfig(**tiny_kwargs(family))
    ours = mc.CohereDecoderLayer(cfg, 0)
    ours.load_state_dict(hf.model.layers[0].state_dict())
    x = torch.randn(2, 6, 64)
    pos = torch.arange(6)[None].expand(2, 6)
    cos, sin = hf.model.rotary_emb(x, pos)
    mask = torch.full((6, 6), torch.finfo(torch.float32).min).triu(1)[None, None]
    theirs = hf.model.layers[0](x, attention_mask=mask, position_embeddings=(cos, sin))
    out, _ = ours(x, cos, sin, is_causal=True)
    torch.testing.assert_close(out, theirs)
    # The parallel block is not the sequential one: feeding the MLP the post-attention stream differs.
    h = ours.input_layernorm(x)
    attn, _ = ours.self_attn(h, cos, sin, is_causal=True)
    sequential = x + attn + ours.mlp(ours.input_layernorm(x + attn))
    assert rel_err(sequential, out) > 1e-3


def test_eager_and_sdpa_attention_agree_with_padding():
    hf = reference_model("08-2024-gqa")
    attn = mc.CohereAttention(CohereConfig(**tiny_kwargs()), 0)
    attn.load_state_dict(hf.model.layers[0].self_attn.state_dict())
    x = torch.randn(2, 6, 64)
    cos, sin = hf.model.rotary_emb(x, torch.arange(6)[None].expand(2, 6))
    padding = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    mask = mc.causal_mask(padding, 6, 0, "cpu")
    eager, weights = attn(x, cos, sin, mask, eager=True)
    fused, _ = attn(x, cos, sin, mask)
    torch.testing.assert_close(eager, fused, rtol=1e-5, atol=1e-5)
    assert weights.shape == (2, 8, 6, 6)
    assert weights[1, :, 2:, :2].abs().max() == 0  # real tokens never look at the padding
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 8, 6))


# --- the whole model -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILY))
def test_logits_equal_reference_fp32(saved_reference, family):
    hf, ours = load(saved_reference, family)
    ids = torch.randint(0, 96, (2, 11), generator=torch.Generator().manual_seed(1))
    theirs = hf(ids).logits
    assert theirs.std() > 0.5  # O(1) logits: a real test, not near-zero noise
    assert rel_err(ours(ids).logits, theirs) < 1e-5


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_mask_matches_reference_on_real_tokens(saved_reference, side):
    hf, ours = load(saved_reference)
    ids = torch.randint(4, 96, (3, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, 9, dtype=torch.long)
    pads = [0, 3, 5]
    for row, n in enumerate(pads):
        if n:
            mask[row, :n] = 0 if side == "left" else 1
            if side == "right":
                mask[row, -n:] = 0
    theirs = hf(ids, attention_mask=mask).logits
    for impl in ("sdpa", "eager"):
        ours.model.attn_implementation = impl
        got = ours(ids, attention_mask=mask).logits
        real = mask.bool()
        assert rel_err(got[real], theirs[real]) < 1e-5, impl
        assert torch.isfinite(got).all()


def test_loss_ignores_minus_100_and_equals_reference(saved_reference):
    hf, ours = load(saved_reference)
    ids = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(3))
    labels = ids.clone()
    labels[0, :4] = -100
    labels[1, 7:] = -100
    theirs = hf(ids, labels=labels).loss
    got = ours(ids, labels=labels).loss
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, theirs, rtol=1e-6, atol=1e-6)
    assert abs(got - ours(ids, labels=ids).loss) > 1e-4  # the ignored positions really were ignored


def test_logits_to_keep_slices_like_reference(saved_reference):
    hf, ours = load(saved_reference)
    ids = torch.randint(0, 96, (1, 8), generator=torch.Generator().manual_seed(4))
    full = ours(ids).logits
    assert ours(ids, logits_to_keep=1).logits.shape == (1, 1, 96)
    torch.testing.assert_close(ours(ids, logits_to_keep=3).logits, full[:, -3:])
    keep = torch.tensor([0, 5])
    torch.testing.assert_close(ours(ids, logits_to_keep=keep).logits, hf(ids, logits_to_keep=keep).logits)


def test_hidden_states_and_attentions_match_reference(saved_reference):
    hf, ours = load(saved_reference)
    ids = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(5))
    theirs = hf(ids, output_hidden_states=True, output_attentions=True)
    got = ours(ids, output_hidden_states=True, output_attentions=True)
    assert len(got.hidden_states) == len(theirs.hidden_states) == 3
    for a, b in zip(got.hidden_states, theirs.hidden_states):
        assert rel_err(a, b) < 1e-5
    for a, b in zip(got.attentions, theirs.attentions):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bare_model_returns_last_hidden_state(saved_reference):
    hf, ours = load(saved_reference)
    ids = torch.randint(0, 96, (1, 6), generator=torch.Generator().manual_seed(6))
    assert rel_err(ours.model(ids).last_hidden_state, hf.model(ids).last_hidden_state) < 1e-5


def test_inputs_embeds_path_equals_input_ids_path(saved_reference):
    hf, ours = load(saved_reference)
    ids = torch.randint(0, 96, (1, 6), generator=torch.Generator().manual_seed(7))
    embeds = ours.model.embed_tokens(ids)
    assert rel_err(ours(inputs_embeds=embeds).logits, hf(inputs_embeds=embeds).logits) < 1e-5
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        ours(ids, inputs_embeds=embeds)


@pytest.mark.parametrize("rope", sorted(ROPE_CASES))
def test_each_rope_type_matches_reference_past_the_trained_length(saved_reference, rope):
    hf, ours = load(saved_reference, rope_parameters=dict(ROPE_CASES[rope]), max_position_embeddings=32)
    ids = torch.randint(0, 96, (1, 48), generator=torch.Generator().manual_seed(8))  # 48 > 32 positions
    assert rel_err(ours(ids).logits, hf(ids).logits) < 1e-5


def test_logit_scale_is_applied_once(saved_reference):
    hf, ours = load(saved_reference, "plus-qknorm")
    ids = torch.randint(0, 96, (1, 5), generator=torch.Generator().manual_seed(9))
    raw = ours.lm_head(ours.model(ids).last_hidden_state)
    torch.testing.assert_close(ours(ids).logits, raw * 0.8333333333333334)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight  # tied


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_half_precision_tracks_fp32_reference(saved_reference, dtype, tol):
    hf, folder = saved_reference("plus-qknorm")
    ours = minicohere.from_pretrained(folder, dtype=dtype, progress=False)
    assert ours.dtype == dtype
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(10))
    got = ours(ids).logits
    assert got.dtype == dtype and torch.isfinite(got).all()
    theirs_half = hf.to(dtype)(ids).logits
    assert rel_err(got, hf.float()(ids).logits) < tol
    assert rel_err(got, theirs_half) < tol


def test_out_of_vocabulary_ids_are_rejected_by_name(saved_reference):
    _, ours = load(saved_reference)
    with pytest.raises(ValueError, match="token id 96, outside the vocabulary"):
        ours(torch.tensor([[1, 96]]))


def test_attention_mask_of_wrong_shape_is_rejected(saved_reference):
    _, ours = load(saved_reference)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\)"):
        ours(torch.tensor([[1, 2, 4, 5]]), attention_mask=torch.ones(1, 3))


def test_fresh_model_has_the_reference_init_and_a_zero_padding_row():
    torch.manual_seed(0)
    model = CohereForCausalLM(CohereConfig(**tiny_kwargs(vocab_size=4000, hidden_size=128)))
    embedding = model.model.embed_tokens.weight
    assert (embedding[0] == 0).all()  # pad_token_id = 0
    assert embedding[1:].std().item() == pytest.approx(0.02, rel=0.05)
    assert model.model.layers[0].mlp.up_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert (model.model.norm.weight == 1).all()


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    with torch.enable_grad():
        model = CohereForCausalLM(CohereConfig(**tiny_kwargs())).train()
        ids = torch.randint(0, 96, (4, 12))
        opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
        first = None
        for _ in range(30):
            loss = model(ids, labels=ids).loss
            first = first if first is not None else loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert loss.item() < first * 0.7


def test_a_command_r_config_copied_with_another_depth_keeps_every_layer_global():
    import dataclasses

    from minicohere import CohereConfig

    deep = CohereConfig(num_hidden_layers=40)
    shallow = dataclasses.replace(deep, num_hidden_layers=2)
    assert shallow.layer_types == ["full_attention", "full_attention"]
    assert len(deep.layer_types) == 40
