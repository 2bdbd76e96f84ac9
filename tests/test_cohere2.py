"""The cohere2 family (Command R7B, Command A, Tiny Aya) against transformers' Cohere2ForCausalLM.

Scaled-down configs keep each real checkpoint's head ratio (../shared/command-r/CONFIGS.md, second
table); the window is shrunk to 8 tokens so that every sequence here runs well past it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

import minicohere
from minicohere import model as mc
from conftest import REPO, rel_err, scramble, scrambled_reference

warnings.filterwarnings("ignore")

WINDOW = 8
BASE = dict(num_hidden_layers=4, max_position_embeddings=256, sliding_window=WINDOW, layer_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 50000.0}, pad_token_id=0)
# heads / kv heads, logit_scale and vocabulary follow the real ones; widths are cut down
FAMILY = {
    "r7b-like": dict(hidden_size=256, num_attention_heads=32, num_key_value_heads=8, intermediate_size=448,
                     logit_scale=0.25, vocab_size=512, bos_token_id=5, eos_token_id=7),
    "command-a-like": dict(hidden_size=384, num_attention_heads=96, num_key_value_heads=8, intermediate_size=512,
                           logit_scale=0.25, vocab_size=512, bos_token_id=5, eos_token_id=7),
    "tiny-aya-like": dict(hidden_size=64, num_attention_heads=16, num_key_value_heads=4, intermediate_size=160,
                          logit_scale=1.0, vocab_size=262144, bos_token_id=2, eos_token_id=3),
}


def reference(family, seed=0, embed_std=0.1, **overrides):
    from transformers import Cohere2Config, Cohere2ForCausalLM

    return scrambled_reference(Cohere2Config, Cohere2ForCausalLM, {**BASE, **FAMILY[family], **overrides}, seed, embed_std)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Per family: transformers' model and minicohere's, loaded from the saved (sharded) checkpoint."""
    made = {}
    for family in FAMILY:
        hf = reference(family)
        folder = tmp_path_factory.mktemp(family)
        hf.save_pretrained(folder, max_shard_size="2MB")
        made[family] = (hf, minicohere.from_pretrained(folder, progress=False), folder)
    return made


def ids_for(family, shape, seed=0):
    return torch.randint(8, min(FAMILY[family]["vocab_size"], 500), shape, generator=torch.Generator().manual_seed(seed))


# --- configuration --------------------------------------------------------------------------------


def test_config_reads_both_spellings_of_the_layer_pattern_as_transformers_does():
    from transformers import Cohere2Config

    for pattern in (4, 2, 3):
        theirs = Cohere2Config(num_hidden_layers=8, sliding_window_pattern=pattern)
        ours = mc.CohereConfig.from_dict({"model_type": "cohere2", "num_hidden_layers": 8,
                                          "sliding_window_pattern": pattern})
        assert ours.layer_types == theirs.layer_types
    ours = mc.CohereConfig.from_dict(Cohere2Config(num_hidden_layers=6).to_dict())
    assert ours.model_type == "cohere2" and ours.sliding_window == 4096
    assert ours.layer_types == ["sliding_attention"] * 3 + ["full_attention"] + ["sliding_attention"] * 2


def test_config_reads_an_r7b_style_file_in_the_older_spelling():
    """Top-level rope_theta, sliding_window_pattern, head_dim, and keys minicohere has no use for, with
    the R7B values of CONFIGS.md."""
    d = {"model_type": "cohere2", "architectures": ["Cohere2ForCausalLM"], "hidden_size": 4096,
         "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
         "intermediate_size": 14336, "sliding_window": 4096, "sliding_window_pattern": 4, "rope_theta": 50000.0,
         "rope_scaling": None, "logit_scale": 0.25, "vocab_size": 256000, "torch_dtype": "bfloat16",
         "max_position_embeddings": 132096, "cache_implementation": "hybrid", "order_of_interleaved_layers":
         "local_attn_first", "position_embedding_type": "rope_gptj", "use_cache": True}
    cfg = mc.CohereConfig.from_dict(d)
    assert cfg.rope_theta == 50000.0 and cfg.dtype == "bfloat16" and cfg.head_dim == 128
    assert cfg.layer_types.count("full_attention") == 8
    assert [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"] == list(range(3, 32, 4))
    assert cfg.uses_rope("sliding_attention") and not cfg.uses_rope("full_attention")


def test_config_round_trips_and_transformers_reads_ours():
    from transformers import Cohere2Config

    ours = mc.CohereConfig(model_type="cohere2", num_hidden_layers=5, sliding_window=128, hidden_size=256,
                           num_attention_heads=8, num_key_value_heads=2, logit_scale=1.0)
    d = ours.to_dict()
    assert d["model_type"] == "cohere2" and d["architectures"] == ["Cohere2ForCausalLM"] and d["head_dim"] == 32
    assert mc.CohereConfig.from_dict(d) == ours
    theirs = Cohere2Config(**{k: v for k, v in d.items() if k != "architectures"})
    assert theirs.layer_types == ours.layer_types and theirs.sliding_window == 128 and theirs.head_dim == 32
    assert "layer_types" not in mc.CohereConfig().to_dict()  # Command-R files stay as they were


@pytest.mark.parametrize("bad, message", [
    ({"layer_types": ["sliding_attention"] * 3}, "layer_types has 3 entries for num_hidden_layers=4"),
    ({"layer_types": ["sliding_attention"] * 3 + ["chunked_attention"]}, "'chunked_attention'"),
    ({"sliding_window": 0}, "sliding_window=0 must be a positive"),
    ({"head_dim": 64}, "head_dim=64 differs"),
])
def test_config_rejects_a_cohere2_config_it_cannot_run(bad, message):
    with pytest.raises(ValueError, match=message):
        mc.CohereConfig.from_dict({"model_type": "cohere2", "num_hidden_layers": 4, **bad})


def test_sliding_window_mask_sees_the_last_window_tokens_only():
    mask = mc.sliding_window_mask(None, 6, 0, 3, "cpu")[0, 0]
    for i in range(6):
        assert mask[i].nonzero().flatten().tolist() == list(range(max(0, i - 2), i + 1))
    # a padded key stays hidden inside the window; the window counts slots, padding included
    padded = mc.sliding_window_mask(torch.tensor([[0, 0, 1, 1, 1, 1]]), 6, 0, 3, "cpu")[0, 0]
    assert padded[3].tolist() == [False, False, True, True, False, False]


def test_ring_slot_positions_name_the_tokens_a_full_ring_holds():
    assert mc.ring_slot_positions(9, 4, "cpu").tolist() == [8, 9, 6, 7]
    assert mc.ring_slot_positions(3, 4, "cpu").tolist() == [0, 1, 2, 3]


# --- the forward pass against transformers ------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY)
def test_logits_equal_transformers_past_the_window(pairs, family):
    hf, ours, _ = pairs[family]
    ids = ids_for(family, (2, 3 * WINDOW + 5))
    with torch.no_grad():
        theirs = hf(ids).logits
    ours_logits = ours(ids).logits
    assert rel_err(ours_logits, theirs) < 1e-5
    assert ours_logits.abs().mean() > 0.1  # O(1) logits: equality is not two near-zero tensors


def test_global_layers_use_no_positional_encoding(pairs):
    """With every layer global there is no positional encoding anywhere: spreading the positions apart
    (0, 3, 6, ...) changes nothing. Command-R's layers, with the same weights, rotate and do change
    (RoPE sees relative distances, so a plain shift would not tell the two apart)."""
    _, ours, _ = pairs["r7b-like"]
    assert ours.model.rotations(torch.tensor([[0, 1]]))["full_attention"] is None
    state = ours.state_dict()
    ids = ids_for("r7b-like", (1, 10))
    spread = 3 * torch.arange(10)[None]
    for model_type, invariant in (("cohere2", True), ("cohere", False)):
        d = {**ours.config.to_dict(), "model_type": model_type, "layer_types": ["full_attention"] * 4}
        if model_type == "cohere":
            d.update(layer_types=None, sliding_window=None)
        model = mc.CohereForCausalLM(mc.CohereConfig.from_dict(d)).eval()
        model.load_state_dict(state)
        same = torch.allclose(model(ids).logits, model(ids, position_ids=spread).logits, atol=1e-5)
        assert same == invariant, model_type


def test_eager_and_sdpa_agree_and_attention_weights_respect_the_window(pairs):
    _, ours, _ = pairs["r7b-like"]
    ids = ids_for("r7b-like", (1, 2 * WINDOW + 3))
    out = ours(ids, output_attentions=True)
    assert rel_err(out.logits, ours(ids).logits) < 1e-5
    sliding, full = out.attentions[0][0, 0], out.attentions[3][0, 0]
    last = ids.shape[1] - 1
    assert sliding[last, : last - WINDOW + 1].abs().max() == 0 and sliding[last, last - WINDOW + 1:].min() > 0
    assert full[last].min() > 0  # the global layer sees every token


def test_loss_with_labels_equals_transformers(pairs):
    hf, ours, _ = pairs["tiny-aya-like"]
    ids = ids_for("tiny-aya-like", (2, 20))
    labels = ids.clone()
    labels[0, :4] = -100
    with torch.no_grad():
        theirs = hf(ids, labels=labels).loss
    assert abs(ours(ids, labels=labels).loss.item() - theirs.item()) < 1e-5 * theirs.item()


@pytest.mark.parametrize("family", ["r7b-like", "tiny-aya-like"])
def test_left_padding_matches_transformers_on_real_tokens(pairs, family):
    hf, ours, _ = pairs[family]
    ids = ids_for(family, (2, 2 * WINDOW + 4), seed=1)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    ids[1, :5] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, position_ids=positions).logits
    got = ours(ids, attention_mask=mask, position_ids=positions).logits
    real = mask.bool()
    assert rel_err(got[real], theirs[real]) < 1e-5


def test_bf16_sharded_checkpoint_loads_in_bf16_and_matches_in_fp32(tmp_path):
    from transformers import Cohere2ForCausalLM

    hf = reference("r7b-like").to(torch.bfloat16)
    hf.save_pretrained(tmp_path, max_shard_size="200KB")
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ours = minicohere.from_pretrained(tmp_path, progress=False)  # dtype "auto": the checkpoint's
    assert ours.dtype == torch.bfloat16 and ours.config.model_type == "cohere2"
    theirs32 = Cohere2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = ids_for("r7b-like", (1, 2 * WINDOW + 3))
    with torch.no_grad():
        expected = theirs32(ids).logits
    assert rel_err(ours.float()(ids).logits, expected) < 1e-5


def test_save_pretrained_round_trips_into_transformers(pairs, tmp_path):
    from transformers import Cohere2ForCausalLM

    hf, ours, _ = pairs["command-a-like"]
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "cohere2" and config["layer_types"] == hf.config.layer_types
    back = Cohere2ForCausalLM.from_pretrained(tmp_path).eval()
    ids = ids_for("command-a-like", (1, 20))
    with torch.no_grad():
        assert rel_err(back(ids).logits, hf(ids).logits) < 1e-6


# --- the windowed cache and generation --------------------------------------------------------------


def test_static_cache_keeps_a_window_for_sliding_layers_and_everything_for_global_ones(pairs):
    _, ours, _ = pairs["r7b-like"]
    cfg = ours.config
    max_len = 5 * WINDOW
    cache = mc.StaticKVCache(cfg, 2, max_len)
    per_slot = 2 * 2 * cfg.num_key_value_heads * cfg.head_dim * 4  # k and v, batch 2, fp32
    sliding = cfg.layer_types.count("sliding_attention")
    assert cache.ring == WINDOW
    assert cache.nbytes() == per_slot * (sliding * WINDOW + (cfg.num_hidden_layers - sliding) * max_len)
    for kind, keys in zip(cfg.layer_types, cache.keys):
        assert keys.shape[2] == (WINDOW if kind == "sliding_attention" else max_len)
    # an all-global cache of the same length, as Command-R would need
    assert mc.StaticKVCache(mc.CohereConfig.from_dict({**cfg.to_dict(), "model_type": "cohere", "layer_types": None,
                                               "sliding_window": None}), 2, max_len).nbytes() \
        == per_slot * cfg.num_hidden_layers * max_len


def test_static_cache_logits_equal_full_recompute_once_the_ring_has_wrapped(pairs):
    _, ours, _ = pairs["r7b-like"]
    ids = ids_for("r7b-like", (1, 3 * WINDOW + 2), seed=4)
    full = ours(ids).logits
    cache = mc.StaticKVCache(ours.config, 1, ids.shape[1])
    first = WINDOW + 3  # a prompt longer than the ring
    got = [ours(ids[:, :first], cache=cache).logits]
    got += [ours(ids[:, i:i + 1], cache=cache).logits for i in range(first, ids.shape[1])]
    assert rel_err(torch.cat(got, dim=1), full) < 1e-5
    with pytest.raises(ValueError, match="one token at a time"):
        ours(ids[:, :2], cache=cache)


def hf_generate(hf, ids, mask, n):
    hf.generation_config.eos_token_id = None
    return hf.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=0)


@pytest.mark.parametrize("family", FAMILY)
def test_greedy_generation_past_the_window_equals_transformers_for_one_prompt(pairs, family):
    hf, ours, _ = pairs[family]
    ids = ids_for(family, (1, 6), seed=2)
    n = 4 * WINDOW  # prompt + new tokens several times the window
    theirs = hf_generate(hf, ids, torch.ones_like(ids), n)
    got = ours.generate(ids, max_new_tokens=n, eos_token_id=None)
    assert torch.equal(got, theirs)
    assert len(set(got[0, 6:].tolist())) > 3  # a varied continuation, not one token repeated


@pytest.mark.parametrize("family", ["r7b-like", "tiny-aya-like"])
def test_greedy_generation_of_a_left_padded_batch_equals_transformers(pairs, family):
    hf, ours, _ = pairs[family]
    ids = ids_for(family, (2, 11), seed=3)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    ids[1, :4] = 0
    n = 3 * WINDOW
    theirs = hf_generate(hf, ids, mask, n)
    for cache in ("static", "dynamic", None):
        got = ours.generate(ids, attention_mask=mask, max_new_tokens=n, eos_token_id=None, cache=cache)
        assert torch.equal(got, theirs), cache


# --- true width, one layer of each type -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sliding_attention", "full_attention"])
def test_one_layer_at_command_r7b_width_equals_transformers(kind):
    """hidden 4096, 32 / 8 heads, intermediate 14336 (R7B's, per CONFIGS.md); vocabulary cut to 512.
    minicohere shares transformers' tensors (about 0.9 GB fp32 in all), so memory stays modest."""
    from transformers import Cohere2Config, Cohere2ForCausalLM

    cfg = Cohere2Config(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
                        num_hidden_layers=1, layer_types=[kind], sliding_window=16, vocab_size=512,
                        logit_scale=0.25, rope_parameters={"rope_type": "default", "rope_theta": 50000.0})
    torch.manual_seed(0)
    with torch.device("meta"):
        hf = Cohere2ForCausalLM(cfg).eval()
    hf = hf.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.normal_(0, 1 / p.shape[-1] ** 0.5, generator=g)
        # built on meta: the buffers hold nothing yet, so transformers computes its own frequencies again
        inv_freq = hf.model.rotary_emb.compute_default_rope_parameters(cfg)[0]
        hf.model.rotary_emb.inv_freq.copy_(inv_freq)
        hf.model.rotary_emb.original_inv_freq.copy_(inv_freq)
    hf.lm_head.weight = hf.model.embed_tokens.weight  # to_empty leaves the head untied
    with torch.device("meta"):
        ours = mc.CohereForCausalLM(mc.CohereConfig.from_dict(cfg.to_dict()))
    ours.load_state_dict(hf.state_dict(), assign=True, strict=False)
    ours.lm_head.weight = ours.model.embed_tokens.weight
    ours.model.rotary_emb.reset()
    ids = torch.randint(4, 512, (1, 40), generator=g)
    with torch.no_grad():
        theirs = hf(ids).logits
    assert rel_err(ours(ids).logits, theirs) < 1e-5


# --- the command line -------------------------------------------------------------------------------


def test_cli_runs_a_saved_cohere2_checkpoint(tmp_path):
    tokenizer_dir = minicohere.bundled_path("tokenizer")
    vocab = minicohere.Tokenizer.from_pretrained(tokenizer_dir).vocab_size
    config = mc.CohereConfig(model_type="cohere2", vocab_size=vocab, hidden_size=64, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=128, num_hidden_layers=4, sliding_window=8,
                             max_position_embeddings=256, logit_scale=1.0)
    torch.manual_seed(0)
    model = scramble(mc.CohereForCausalLM(config).eval(), embed_std=0.1)
    model.save_pretrained(tmp_path)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    out = subprocess.run([sys.executable, "-m", "minicohere", "generate", "--model", str(tmp_path), "--prompt",
                          "Once upon a time", "--greedy", "--max-new-tokens", "20"], capture_output=True, text=True,
                         cwd=REPO, timeout=120, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Once upon a time") and len(out.stdout) > len("Once upon a time")


# --- Tiny Aya's tokenizer and chat turn ---------------------------------------------------------------

# Written out from the turn format Cohere publishes for its cohere2 models (Command R7B, Command A, Tiny
# Aya): the reply opens with <|START_RESPONSE|> and closes with <|END_RESPONSE|>. The real
# tokenizer_config.json cannot be fetched here, so this template stands in for the one it ships.
COHERE2_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
    "{% if system %}<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{{ system }}<|END_OF_TURN_TOKEN|>{% endif %}"
    "{% for m in turns %}{% if m['role'] == 'user' %}<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{{ m['content'] }}"
    "<|END_OF_TURN_TOKEN|>{% else %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_RESPONSE|>{{ m['content'] }}"
    "<|END_RESPONSE|><|END_OF_TURN_TOKEN|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_RESPONSE|>{% endif %}"
)
# Ids 2 and 3 are Tiny Aya's bos and eos (CONFIGS.md); which strings sit there is this test's assumption.
SPECIALS = ["<PAD>", "<UNK>", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>",
            "<|CHATBOT_TOKEN|>", "<|SYSTEM_TOKEN|>", "<|START_RESPONSE|>", "<|END_RESPONSE|>"]


@pytest.fixture(scope="module")
def aya_tokenizer_dir(tmp_path_factory):
    """A byte-level BPE tokenizer of Tiny Aya's shape: 262144 ids, bos 2, eos 3, the cohere2 turn tokens,
    and none of Command-R's <CLS>/<SEP>/<MASK_TOKEN>."""
    from tokenizers import AddedToken, Tokenizer as Fast, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    byte_chars = sorted(set(ByteLevel.alphabet()))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + byte_chars)}
    merges = [("h", "e"), ("l", "l"), ("he", "ll")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    while len(vocab) < 262144:
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    fast = Fast(models.BPE(vocab=vocab, merges=merges))
    fast.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    fast.decoder = decoders.ByteLevel()
    fast.add_special_tokens([AddedToken(t, special=True) for t in SPECIALS])
    folder = tmp_path_factory.mktemp("tiny-aya-tokenizer")
    fast.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<BOS_TOKEN>", "eos_token": "<|END_OF_TURN_TOKEN|>", "pad_token": "<PAD>",
        "unk_token": "<UNK>", "chat_template": COHERE2_TEMPLATE}))
    return folder


def test_tiny_aya_tokenizer_loads_with_its_own_special_token_ids(aya_tokenizer_dir):
    tok = minicohere.Tokenizer.from_pretrained(aya_tokenizer_dir)
    assert tok.vocab_size == 262144
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (2, 3, 0)
    assert tok.special_tokens["cls_token"] is None  # Command-R's default is not in this vocabulary
    ids = tok.encode("hello world", add_special_tokens=False)
    assert tok.decode(ids) == "hello world" and tok.token_to_id("hell") in ids  # the merges applied


def test_tiny_aya_chat_turn_opens_the_reply_with_start_response(aya_tokenizer_dir):
    tok = minicohere.Tokenizer.from_pretrained(aya_tokenizer_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<BOS_TOKEN><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>Be brief.<|END_OF_TURN_TOKEN|>"
                    "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi<|END_OF_TURN_TOKEN|>"
                    "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_RESPONSE|>Hello!<|END_RESPONSE|>"
                    "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Bye<|END_OF_TURN_TOKEN|>"
                    "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_RESPONSE|>")
    ids = tok.apply_chat_template(messages, add_generation_prompt=True)
    assert ids[0] == 2 and ids.count(2) == 1  # one bos, Tiny Aya's id
    assert ids[-3:] == [tok.token_to_id(t) for t in ("<|START_OF_TURN_TOKEN|>", "<|CHATBOT_TOKEN|>",
                                                     "<|START_RESPONSE|>")]
    assert tok.decode(ids, skip_special_tokens=True) == "Be brief.HiHello!Bye"
