"""notebooks/previous_chapters.py, chapters 08 and later: the course's cached model, decode loop and sampler
give minicohere's tokens, and its caches give the full forward pass's logits."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import FAMILY, REPO, reference_model, rel_err

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
