"""notebooks/previous_chapters.py, chapters 08 and later: the course's cached model, decode loop and sampler
give minicohere's tokens, and its caches give the full forward pass's logits."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import FAMILY, REPO, reference_model, rel_err, scramble

sys.path.insert(0, str(REPO / "notebooks"))
import previous_chapters as pc  # noqa: E402

import minicohere  # noqa: E402


@pytest.fixture(scope="module")
def bundled():
    folder = minicohere.bundled_path("tiny-command-r")
    reference = minicohere.from_pretrained(folder, progress=False).eval()
    model = pc.MyCachedCohereForCausalLM(reference.config).eval()
    model.load_state_dict(reference.state_dict())
    return model, reference


@pytest.mark.parametrize("family", list(FAMILY))
@pytest.mark.parametrize("make", [pc.GrowingCache, "static"], ids=["growing", "static"])
def test_cached_steps_give_the_full_forward_logits(family, make):
    reference = reference_model(family, seed=6)
    model = pc.MyCachedCohereForCausalLM(reference.config).eval()
    model.load_state_dict(reference.state_dict(), strict=False)
    ids = torch.randint(0, reference.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(1))
    cache = pc.StaticCache(reference.config, 2, 12) if make == "static" else make()
    with torch.no_grad():
        steps = [model(ids[:, :4], cache=cache).logits, model(ids[:, 4:7], cache=cache).logits]
        steps += [model(ids[:, t:t + 1], cache=cache).logits for t in range(7, 10)]
        full = reference(ids).logits
    assert cache.seq_len == 10
    assert rel_err(torch.cat(steps, 1), full) < 1e-5


@pytest.mark.parametrize("cache", ["static", "growing", None])
def test_cached_model_greedy_tokens_equal_minicohere_generate(bundled, cache):
    model, reference = bundled
    prompt = torch.tensor([[5, 812, 40, 977, 301, 12]])
    want = reference.generate(prompt, max_new_tokens=40, eos_token_id=None)
    assert torch.equal(pc.generate(model, prompt, 40, cache=cache), want)
    tokens, fed = pc.greedy_decode(model, prompt, 40, pc.GrowingCache())
    assert torch.equal(tokens, want) and fed == [6] + [1] * 39


@pytest.mark.parametrize("knobs", [dict(temperature=0.8, top_p=0.9), dict(temperature=1.3, min_p=0.1),
                                   dict(top_k=20)], ids=["top_p", "min_p", "top_k"])
def test_sampling_draws_the_tokens_minicohere_draws(bundled, knobs):
    model, reference = bundled
    prompt = torch.tensor([[5, 812, 40, 977]])
    for seed in range(3):
        ours = pc.generate(model, prompt, 30, do_sample=True, generator=torch.Generator().manual_seed(seed), **knobs)
        theirs = reference.generate(prompt, max_new_tokens=30, do_sample=True, eos_token_id=None,
                                    generator=torch.Generator().manual_seed(seed), **knobs)
        assert torch.equal(ours, theirs)


def test_static_cache_refuses_a_step_past_its_room():
    config = reference_model("mqa").config
    cache = pc.StaticCache(config, 1, 3)
    k = torch.zeros(1, config.num_key_value_heads, 4, config.hidden_size // config.num_attention_heads)
    with pytest.raises(ValueError, match="holds 3 positions"):
        cache.update(0, k, k)


def test_cached_model_refuses_an_object_that_is_not_a_cache():
    model = pc.MyCachedCohereForCausalLM(reference_model("mqa").config)
    with pytest.raises(TypeError, match="seq_len and update"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=[])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loader_builds_the_course_model_with_minicohere_logits(dtype):
    folder = minicohere.bundled_path("tiny-command-r")
    model = pc.load_model(folder, dtype)
    reference = minicohere.from_pretrained(folder, dtype=dtype, progress=False).eval()
    assert isinstance(model, pc.MyCachedCohereForCausalLM)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.randint(0, reference.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours, theirs = model(ids).logits.float(), reference(ids).logits.float()
    assert rel_err(ours, theirs) < (1e-5 if dtype == torch.float32 else 3e-2)


def test_loader_reads_a_sharded_folder_in_the_older_config_spelling(tmp_path):
    import json

    reference = reference_model("plus-qknorm", seed=7)
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_theta"] = config.pop("rope_parameters")["rope_theta"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert (tmp_path / "model.safetensors.index.json").exists()
    model = pc.load_model(tmp_path)
    ids = torch.randint(0, reference.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert rel_err(model(ids).logits, reference(ids).logits) < 1e-5


def test_loader_names_a_checkpoint_of_another_model_type(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="model_type 'llama'"):
        pc.load_model(tmp_path)


# ---- chapters 12-13: the quantized layers, the cohere2 model and its ring cache ----

def test_quantized_layers_hold_minicohere_integers():
    from minicohere import quant

    w = torch.randn(64, 704, generator=torch.Generator().manual_seed(8))      # 704: a ragged last group of 128
    for group_size in (64, 128):
        q, scale, offset = quant.quantize_int4(w, group_size)
        layer = pc.MyInt4Linear(w, group_size)
        assert torch.equal(pc.unpack_pairs(layer.packed), q)
        assert torch.equal(layer.weight, quant.dequantize_int4(q, scale, offset)[:, :704])
    codes, absmax = quant.quantize_nf4(w)
    assert torch.equal(pc.unpack_pairs(pc.MyNF4Linear(w).packed), codes)
    assert torch.equal(pc.MyInt8Linear(w).q, quant.Int8Linear(w).qweight)
    assert (pc.nf4_levels() - quant.NF4_LEVELS).abs().max() < 1e-6


def test_nf4_layer_names_a_weight_that_is_not_whole_blocks():
    with pytest.raises(ValueError, match="100 inputs"):
        pc.MyNF4Linear(torch.randn(8, 100))


def test_swapped_nf4_model_trains_through_its_frozen_layers():
    model = pc.load_model(minicohere.bundled_path("tiny-command-r"))
    fp32_bytes = pc.held_bytes(model)
    pc.swap_linears(model.model.layers, pc.MyNF4Linear)
    assert pc.held_bytes(model) < 0.4 * fp32_bytes
    assert sum(isinstance(m, pc.MyNF4Linear) for m in model.modules()) == 7 * model.config.num_hidden_layers
    model.model.norm.weight.requires_grad_(True)
    ids = torch.randint(0, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.enable_grad():            # other test modules switch autograd off for the whole process
        model(ids, labels=ids).loss.backward()
    assert model.model.layers[0].input_layernorm.weight.grad.abs().sum() > 0    # through four 4-bit blocks


def tiny_cohere2(seed=0, **overrides):
    from transformers import Cohere2Config, Cohere2ForCausalLM

    kw = dict(vocab_size=96, hidden_size=64, intermediate_size=160, num_hidden_layers=8, num_attention_heads=8,
              num_key_value_heads=2, sliding_window=6, logit_scale=0.25,
              rope_parameters={"rope_type": "default", "rope_theta": 50000.0})
    config = Cohere2Config(**{**kw, **overrides})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    reference = scramble(Cohere2ForCausalLM(config), seed).eval()
    model = pc.MyCohere2ForCausalLM(config).eval()
    model.load_state_dict(reference.state_dict())
    return model, reference


def test_cohere2_model_and_ring_cache_give_transformers_logits():
    model, reference = tiny_cohere2()
    ids = torch.randint(4, 96, (2, 31), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = reference(ids).logits
        assert rel_err(model(ids).logits, full) < 1e-5
        for prompt in (1, 5, 6, 7, 15):                   # shorter than, equal to, past the window
            cache = pc.WindowedCache(reference.config.layer_types, reference.config.sliding_window)
            steps = [model(ids[:, :prompt], cache=cache).logits]
            steps += [model(ids[:, t:t + 1], cache=cache).logits for t in range(prompt, 31)]
            assert cache.seq_len == 31 and cache.keys[0].shape[2] == 6 and cache.keys[3].shape[2] == 31
            assert rel_err(torch.cat(steps, 1), full) < 1e-5


def test_cohere2_greedy_tokens_equal_transformers_generate():
    model, reference = tiny_cohere2(seed=1)
    prompt = torch.randint(4, 96, (1, 5), generator=torch.Generator().manual_seed(4))
    cache = pc.WindowedCache(reference.config.layer_types, reference.config.sliding_window)
    tokens, _ = pc.greedy_decode(model, prompt, 30, cache)
    want = reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30, do_sample=False,
                              pad_token_id=0, eos_token_id=None)
    assert torch.equal(tokens, want)


def test_cohere2_model_refuses_a_chunk_after_a_prompt():
    model, reference = tiny_cohere2()
    cache = pc.WindowedCache(reference.config.layer_types, reference.config.sliding_window)
    with torch.no_grad():
        model(torch.tensor([[5, 6, 7]]), cache=cache)
        with pytest.raises(ValueError, match="2 tokens after 3"):
            model(torch.tensor([[8, 9]]), cache=cache)
