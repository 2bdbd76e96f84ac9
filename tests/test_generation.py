"""Generation: KV caches, sampling warpers and generate, against transformers token for token."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers.generation import logits_process as hf_lp

import minicohere
from minicohere import model as mc
from conftest import reference_model

warnings.filterwarnings("ignore")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """A transformers model and minicohere's copy of it, per family. Small embeddings and logit_scale 4
    give O(1) logits that do not simply repeat the prompt's last token."""
    made = {}
    for family in ("v01-mha", "08-2024-gqa", "plus-qknorm"):
        hf = reference_model(family, logit_scale=4.0, embed_std=0.1)
        folder = tmp_path_factory.mktemp(family)
        hf.save_pretrained(folder)
        made[family] = (hf, minicohere.from_pretrained(folder, progress=False))
    return made


def prompts():
    ids = torch.randint(4, 96, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = 0  # left padding
    return ids, mask


@pytest.mark.parametrize("family", ["v01-mha", "08-2024-gqa", "plus-qknorm"])
def test_greedy_equals_transformers_for_one_prompt(pairs, family):
    hf, ours = pairs[family]
    ids = torch.tensor([[5, 17, 42, 8, 60]])
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=15, do_sample=False,
                         pad_token_id=0, eos_token_id=None)
    got = ours.generate(ids, max_new_tokens=15, eos_token_id=None)
    assert got.shape == (1, 20)
    assert torch.equal(got, theirs)


def test_greedy_equals_transformers_on_a_varied_continuation(pairs):
    hf, ours = pairs["plus-qknorm"]  # this seed wanders instead of settling on one token
    ids = torch.tensor([[5, 17, 42, 8, 60]])
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=15, do_sample=False,
                         pad_token_id=0, eos_token_id=None)
    got = ours.generate(ids, max_new_tokens=15, eos_token_id=None)
    assert len(set(got[0, 5:].tolist())) >= 8
    assert torch.equal(got, theirs)


@pytest.mark.parametrize("family", ["v01-mha", "08-2024-gqa", "plus-qknorm"])
def test_greedy_equals_transformers_for_a_left_padded_batch(pairs, family):
    hf, ours = pairs[family]
    ids, mask = prompts()
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0,
                         eos_token_id=None)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None)
    assert torch.equal(got, theirs)


def test_padded_row_generates_what_it_generates_alone(pairs):
    _, ours = pairs["08-2024-gqa"]
    ids, mask = prompts()
    batch = ours.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=None)
    alone = ours.generate(ids[1:, 3:], max_new_tokens=10, eos_token_id=None)
    assert torch.equal(batch[1, 3:], alone[0])


@pytest.mark.parametrize("cache", ["dynamic", None])
def test_tokens_with_and_without_cache_are_identical(pairs, cache):
    _, ours = pairs["plus-qknorm"]
    ids, mask = prompts()
    static = ours.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None, cache="static")
    other = ours.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None, cache=cache)
    assert torch.equal(static, other)


def test_static_cache_logits_equal_full_recompute(pairs):
    _, ours = pairs["08-2024-gqa"]
    ids = torch.randint(4, 96, (1, 12), generator=torch.Generator().manual_seed(3))
    full = ours(ids).logits
    cache = mc.StaticKVCache(ours.config, 1, 16)
    first = ours(ids[:, :8], cache=cache).logits
    rest = torch.cat([ours(ids[:, i:i + 1], cache=cache).logits for i in range(8, 12)], dim=1)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.seq_len == 12
    assert cache.nbytes() == 2 * 2 * 1 * 2 * 16 * 8 * 4  # k,v x layers x batch x kv heads x slots x dim x fp32


def test_growing_cache_grows_and_static_cache_refuses_overflow(pairs):
    _, ours = pairs["v01-mha"]
    dynamic = mc.KVCache()
    ours(torch.tensor([[5, 6, 7]]), cache=dynamic)
    ours(torch.tensor([[8]]), cache=dynamic)
    assert dynamic.seq_len == 4 and dynamic.keys[0].shape == (1, 4, 4, 16)
    static = mc.StaticKVCache(ours.config, 1, 3)
    ours(torch.tensor([[5, 6, 7]]), cache=static)
    with pytest.raises(ValueError, match="holds 3 tokens; this step would need 4"):
        ours(torch.tensor([[8]]), cache=static)


@pytest.mark.parametrize("family", ["v01-mha", "plus-qknorm"])
def test_decode_step_gives_the_logits_of_the_forward_pass(pairs, family):
    _, ours = pairs[family]
    ids, mask = prompts()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    slow, fast = mc.StaticKVCache(ours.config, 2, 9), mc.StaticKVCache(ours.config, 2, 9)
    for cache in (slow, fast):
        ours(ids, attention_mask=mask, position_ids=positions, cache=cache)
    token = torch.tensor([[11], [12]])
    full_mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
    expected = ours(token, attention_mask=full_mask, position_ids=positions[:, -1:] + 1, cache=slow).logits[:, -1]
    turns = ours.model.turns_by_type(ours.model.rotary_table(9)[positions[:, -1:] + 1][:, None])
    masks = {"full_attention": (full_mask.bool()[:, None, None], False)}
    got = ours.decode_step(token, turns, masks, fast)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert fast.seq_len == slow.seq_len == 8
    torch.testing.assert_close(fast.keys[1][:, :, :8], slow.keys[1][:, :, :8])


class RecordingLinear(torch.nn.Module):
    """Stands in for a quantized layer: it has no `.weight`, only forward(x), and counts its calls."""

    def __init__(self, linear):
        super().__init__()
        self.w, self.b, self.calls = linear.weight.detach().clone(), linear.bias, 0

    def forward(self, x):
        self.calls += 1
        return torch.nn.functional.linear(x, self.w, self.b)


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_decode_runs_through_the_modules_so_replaced_linears_are_used(pairs, cache):
    import copy

    _, ours = pairs["08-2024-gqa"]
    ids, mask = prompts()
    expected = ours.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None, cache=cache)
    swapped = copy.deepcopy(ours)
    replaced = []
    for layer in swapped.model.layers:
        for parent, name in [(layer.self_attn, "q_proj"), (layer.self_attn, "o_proj"), (layer.mlp, "down_proj")]:
            setattr(parent, name, RecordingLinear(getattr(parent, name)))
            replaced.append(getattr(parent, name))
    got = swapped.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None, cache=cache)
    assert torch.equal(got, expected)
    assert all(r.calls == 6 for r in replaced)  # the prompt once, then each of the 5 decode steps


def test_dynamic_rope_keeps_the_full_forward_and_matches_no_cache():
    from conftest import scramble, tiny_kwargs

    config = minicohere.CohereConfig(**tiny_kwargs(
        "08-2024-gqa", logit_scale=4.0, rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}))
    model = scramble(minicohere.CohereForCausalLM(config).eval(), embed_std=0.1)
    ids = torch.tensor([[5, 17, 42, 8]])
    static = model.generate(ids, max_new_tokens=10, eos_token_id=None)
    assert torch.equal(static, model.generate(ids, max_new_tokens=10, eos_token_id=None, cache=None))


def test_progress_bar_is_drawn_only_when_asked(pairs, capsys):
    _, ours = pairs["v01-mha"]
    ours.generate(torch.tensor([[5, 17]]), max_new_tokens=3, eos_token_id=None)
    assert "generating" not in capsys.readouterr().err
    ours.generate(torch.tensor([[5, 17]]), max_new_tokens=3, eos_token_id=None, progress=True)
    assert "generating" in capsys.readouterr().err


# --- sampling -------------------------------------------------------------------------------------


def random_logits(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 50, generator=g) * 3
    logits[0, :5] = 7.0  # a five-way tie at the top
    logits[1, 10:20] = -1.0  # ties in the middle
    logits[2] = 0.0  # a flat row
    logits[3, 7] = 40.0  # one overwhelming token
    return logits


@pytest.mark.parametrize("k", [1, 3, 5, 12, 50, 80])
def test_top_k_equals_transformers(k):
    logits = random_logits()
    theirs = hf_lp.TopKLogitsWarper(top_k=k)(None, logits)
    torch.testing.assert_close(mc.top_k_filter(logits, k), theirs)


@pytest.mark.parametrize("p", [0.01, 0.3, 0.5, 0.9, 0.99, 1.0])
def test_top_p_equals_transformers(p):
    logits = random_logits(1)
    theirs = hf_lp.TopPLogitsWarper(top_p=p)(None, logits)
    torch.testing.assert_close(mc.top_p_filter(logits, p), theirs)


@pytest.mark.parametrize("min_p", [0.0, 0.05, 0.2, 0.9, 1.0])
def test_min_p_equals_transformers(min_p):
    logits = random_logits(2)
    theirs = hf_lp.MinPLogitsWarper(min_p=min_p)(None, logits)
    torch.testing.assert_close(mc.min_p_filter(logits, min_p), theirs)


def test_warpers_in_transformers_order_equal_its_processor_list():
    logits = random_logits(3)
    chain = hf_lp.LogitsProcessorList([hf_lp.TemperatureLogitsWarper(0.7), hf_lp.TopKLogitsWarper(20),
                                       hf_lp.TopPLogitsWarper(0.8), hf_lp.MinPLogitsWarper(0.05)])
    torch.testing.assert_close(mc.warp_logits(logits, 0.7, 20, 0.8, 0.05), chain(None, logits))
    assert (mc.warp_logits(logits, 0.7, 20, 0.8, 0.05) == float("-inf")).any()  # something was ruled out


def test_seeded_sampling_is_reproducible_and_seed_dependent(pairs):
    _, ours = pairs["08-2024-gqa"]
    ids = torch.tensor([[5, 17, 42]])

    def draw(seed):
        return ours.generate(ids, max_new_tokens=20, do_sample=True, temperature=1.5, eos_token_id=None,
                             generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_top_k_one_sampling_equals_greedy(pairs):
    _, ours = pairs["v01-mha"]
    ids, mask = prompts()
    greedy = ours.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=None)
    sampled = ours.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=None, do_sample=True,
                            top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(greedy, sampled)


def test_a_row_stops_at_its_eos_and_is_padded(pairs):
    _, ours = pairs["08-2024-gqa"]
    ids, mask = prompts()
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=None)
    eos = int(free[0, 9])  # the third token row 0 generates
    assert eos not in free[1, 7:].tolist()  # row 1 never says it, so it runs on
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=[eos, 95], pad_token_id=0)
    first = free[0, 7:].tolist().index(eos) + 7
    assert out[0, first] == eos and (out[0, first + 1:] == 0).all()
    assert torch.equal(out[1], free[1])


def test_generation_stops_early_when_every_row_is_done(pairs):
    _, ours = pairs["v01-mha"]
    ids = torch.tensor([[5, 17, 42]])
    free = ours.generate(ids, max_new_tokens=6, eos_token_id=None)
    out = ours.generate(ids, max_new_tokens=6, eos_token_id=int(free[0, 4]))
    assert out.shape[1] == 5


def test_zero_new_tokens_returns_the_prompt(pairs):
    _, ours = pairs["v01-mha"]
    ids = torch.tensor([[5, 17, 42]])
    assert torch.equal(ours.generate(ids, max_new_tokens=0), ids)


@pytest.mark.parametrize("kwargs, message", [
    (dict(do_sample=True, temperature=0.0), "temperature=0.0 must be > 0"),
    (dict(do_sample=True, top_p=0.0), r"top_p=0.0 must be in \(0, 1\]"),
    (dict(do_sample=True, top_p=1.5), r"top_p=1.5 must be in \(0, 1\]"),
    (dict(do_sample=True, top_k=0), "top_k=0 must be >= 1"),
    (dict(do_sample=True, min_p=-0.1), r"min_p=-0.1 must be in \[0, 1\]"),
    (dict(max_new_tokens=-1), "max_new_tokens=-1 must be >= 0"),
    (dict(max_new_tokens=62), "exceeds the model's max_position_embeddings=64"),
    (dict(cache="paged"), "cache='paged'"),
])
def test_bad_generate_arguments_are_named(pairs, kwargs, message):
    _, ours = pairs["v01-mha"]
    with pytest.raises(ValueError, match=message):
        ours.generate(torch.tensor([[5, 17, 42]]), **kwargs)


def test_bad_prompts_are_named(pairs):
    _, ours = pairs["v01-mha"]
    with pytest.raises(ValueError, match="non-empty"):
        ours.generate(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="token id 500, outside the vocabulary"):
        ours.generate(torch.tensor([[5, 500]]))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 2\)"):
        ours.generate(torch.tensor([[5, 6, 7]]), attention_mask=torch.ones(1, 2))


# --- streaming ------------------------------------------------------------------------------------


def test_streamer_holds_back_split_characters():
    tok = minicohere.Tokenizer.default()
    text = "Mia saw 한국어 and 🦊🎉 at the café."
    ids = tok.encode(text, add_special_tokens=False)
    pieces = []
    streamer = mc.TextStreamer(tok, on_text=pieces.append, skip_prompt=True)
    streamer.put(torch.tensor([[tok.bos_token_id]]))  # the prompt, skipped
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert len(pieces) > 5  # it really streamed


class PieceDecoder:
    """Each id stands for a byte string; "한" (ED 95 9C) and "🦊" (F0 9F A6 8A) are split across ids."""

    PIECES = {1: b"a", 2: b"\xed", 3: b"\x95", 4: b"\x9c", 5: b"\xf0\x9f", 6: b"\xa6\x8a", 7: b" b"}

    def decode(self, ids, skip_special_tokens=True):
        return b"".join(self.PIECES[i] for i in ids).decode("utf-8", errors="replace")


def test_streamer_emits_a_split_character_once_its_last_byte_arrives():
    pieces = []
    streamer = mc.TextStreamer(PieceDecoder(), on_text=pieces.append, skip_prompt=True)
    streamer.put(torch.tensor([[7, 7]]))  # the prompt, skipped
    for i in [1, 2, 3, 4, 5, 6, 7]:
        streamer.put(torch.tensor([i]))
    streamer.end()
    assert pieces == ["a", "한", "🦊", " b"]


def test_streamer_flushes_an_unfinished_character_at_the_end():
    pieces = []
    streamer = mc.TextStreamer(PieceDecoder(), on_text=pieces.append, skip_prompt=False)
    streamer.put(torch.tensor([[1]]))
    streamer.put(torch.tensor([2]))  # a lone first byte: held back while generation runs
    assert pieces == ["a"]
    streamer.end()
    assert pieces == ["a", "\ufffd"]


def test_stream_yields_the_decoded_generation(pairs):
    _, ours = pairs["08-2024-gqa"]

    class ByteDecoder:  # ids 4.. stand for bytes of UTF-8 text; splits multi-byte characters on purpose
        def decode(self, ids, skip_special_tokens=True):
            return bytes(i + 120 for i in ids if i >= 4).decode("utf-8", errors="replace")

    ids = torch.tensor([[5, 17, 42]])
    pieces = list(mc.stream(ours, ByteDecoder(), ids, max_new_tokens=12, eos_token_id=None))
    full = ours.generate(ids, max_new_tokens=12, eos_token_id=None)
    assert "".join(pieces) == ByteDecoder().decode(full[0, 3:].tolist())
