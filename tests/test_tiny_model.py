"""The bundled tiny Command-R: both libraries load it alike, its model card tells the truth, it speaks
the corpus's language, and fp16 overflows where the training chapter says it does."""

from __future__ import annotations

import json
import math
import re
import sys
import warnings

import pytest
import torch

import minicohere
from conftest import REPO, rel_err

sys.path.insert(0, str(REPO / "scripts"))
import train_tiny  # noqa: E402

TINY = REPO / "assets" / "tiny-command-r"
COMMON_WORDS = {"the", "a", "and", "to", "was", "with", "in", "of", "her", "his", "she", "he", "they", "went"}


@pytest.fixture(scope="module", autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def tiny():
    return minicohere.from_pretrained(TINY, progress=False)


@pytest.fixture(scope="module")
def tokenizer():
    return minicohere.Tokenizer.from_pretrained(TINY)


def card_number(label: str) -> float:
    card = (TINY / "README.md").read_text()
    return float(re.search(rf"\| {label} \| ([0-9.]+)", card).group(1))


def test_bundle_has_the_hub_layout_and_fits_in_40_mb():
    names = {p.name for p in TINY.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
            "loss_curve.json"} <= names
    assert sum(p.stat().st_size for p in TINY.iterdir()) <= 40 * 2**20


def test_config_is_a_small_gqa_command_r_with_the_projects_special_tokens(tokenizer):
    config = json.loads((TINY / "config.json").read_text())
    assert config["model_type"] == "cohere" and config["tie_word_embeddings"]
    assert config["num_key_value_heads"] < config["num_attention_heads"]
    assert config["vocab_size"] == tokenizer.vocab_size == 4096
    assert (config["bos_token_id"], config["pad_token_id"]) == (5, 0)
    assert config["eos_token_id"] == tokenizer.token_to_id("<|END_OF_TURN_TOKEN|>")


def test_transformers_and_minicohere_agree_on_its_logits(tiny, tokenizer):
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer.encode("Early one morning, Lucy went to the harbour with a soft mouse.")])
    assert rel_err(tiny(ids).logits, theirs(ids).logits) < 1e-5


def test_model_card_validation_loss_is_reproduced_from_the_shipped_weights(tiny):
    claimed = card_number("validation loss")
    _, val = train_tiny.datasets()
    measured = train_tiny.evaluate(tiny, val)  # every window of the held-out split, as the card says
    assert measured == pytest.approx(claimed, abs=5e-4)
    assert measured < 0.5 * math.log(4096)  # far below an untrained model's ln(4096) = 8.3


def test_model_card_examples_are_what_the_shipped_weights_generate(tiny, tokenizer):
    card = (TINY / "README.md").read_text()
    examples = train_tiny.greedy_examples(tiny, tokenizer)
    assert examples in card
    assert "    Once upon a time, " in examples  # the corpus knows this opening now: a story follows


def test_loss_log_covers_every_step_and_ends_lower_than_it_starts():
    curve = json.loads((TINY / "loss_curve.json").read_text())
    assert [e["step"] for e in curve] == list(range(1, len(curve) + 1))
    assert curve[-1]["train_loss"] < curve[0]["train_loss"] - 5
    assert str(len(curve)) in (TINY / "README.md").read_text()  # the card states the step count


@pytest.mark.parametrize("opening", ["One morning,", "Once upon a time,"])  # openings the corpus uses
def test_greedy_continuation_reads_like_the_corpus(tiny, tokenizer, opening):
    ids = torch.tensor([tokenizer.encode(opening)])
    out = tiny.generate(ids, max_new_tokens=40)
    words = re.findall(r"[a-z]+", tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True).lower())
    assert len(words) >= 8
    assert sum(w in COMMON_WORDS for w in words) >= 4


def test_chat_answers_a_colour_question_and_ends_its_turn(tiny, tokenizer):
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Theo has a purple drum. What colour is the drum?"}], add_generation_prompt=True)
    out = tiny.generate(torch.tensor([ids]), max_new_tokens=20)
    answer = tokenizer.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)
    assert "purple" in answer.lower()
    assert out[0, -1].item() == tokenizer.eos_token_id


def test_chat_answers_what_a_new_user_asks_first_and_ends_its_turn(tiny, tokenizer):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hello! What is your name?"}],
                                        add_generation_prompt=True)
    out = tiny.generate(torch.tensor([ids]), max_new_tokens=48)
    answer = tokenizer.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)
    assert "my name is tiny" in answer.lower()  # extra.txt's greeting chats taught it
    assert out[0, -1].item() == tokenizer.eos_token_id


def test_fp16_overflows_in_the_pre_scale_logits_where_bf16_does_not(tiny, tokenizer):
    text = torch.tensor([tokenizer.encode(train_tiny.read_documents(train_tiny.CORPUS / "val.txt")[0])])
    fp32 = train_tiny.peak_outputs(tiny, text)
    assert train_tiny.first_non_finite(fp32) is None and fp32["lm_head"] < 65504  # fine as shipped
    factor = 1.5 * 65504 / fp32["lm_head"]  # grow the logits until h @ E^T passes fp16's largest number
    fp16 = train_tiny.peak_outputs(train_tiny.with_grown_hidden_state(tiny, factor, torch.float16), text)
    bf16 = train_tiny.peak_outputs(train_tiny.with_grown_hidden_state(tiny, factor, torch.bfloat16), text)
    assert fp16["model.norm"] < 65504  # the head's input is representable...
    assert train_tiny.first_non_finite(fp16) == "lm_head"  # ...the product before x logit_scale is not
    assert train_tiny.first_non_finite(bf16) is None
    assert bf16["lm_head"] == pytest.approx(1.5 * 65504, rel=0.02)


def test_a_short_training_run_is_reproducible_byte_for_byte_and_a_second_stage_continues_its_log(
        tmp_path, monkeypatch):
    """The shipped weights are only as reproducible as the script: two short runs with the same seed
    must write identical weight files, from scratch and when continuing from an earlier bundle."""
    monkeypatch.setattr(train_tiny, "greedy_examples", lambda *args, **kwargs: "")  # the card's slow part
    streams, encode = {}, train_tiny.token_stream  # tokenize each corpus file once, not once per run

    def token_stream(tokenizer, split):
        if split not in streams:
            streams[split] = encode(tokenizer, split)
        return streams[split]

    monkeypatch.setattr(train_tiny, "token_stream", token_stream)

    def run(out, *extra):
        args = train_tiny.parse_args(["--steps", "3", "--batch-size", "2", "--warmup", "2", "--eval-every", "100",
                                      "--quiet", "--out", str(out), *extra])
        torch.set_num_threads(1)
        with torch.enable_grad():
            model, history, seconds = train_tiny.train(args, log=lambda *_: None)
        train_tiny.save_bundle(out, model, history, seconds, args)
        return (out / "model.safetensors").read_bytes(), json.loads((out / "loss_curve.json").read_text())

    first, curve = run(tmp_path / "a")
    again, curve_again = run(tmp_path / "b")
    assert first == again and curve == curve_again
    assert [e["step"] for e in curve] == [1, 2, 3]
    second, curve2 = run(tmp_path / "c", "--init-from", str(tmp_path / "a"))
    assert second == run(tmp_path / "d", "--init-from", str(tmp_path / "a"))[0]
    assert second != first  # it trained on
    assert [(e["step"], e["stage"]) for e in curve2] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
    assert len(json.loads((tmp_path / "c" / "stages.json").read_text())) == 2


def test_shipped_corpus_files_are_what_make_corpus_writes(tmp_path):
    """train.txt, val.txt and extra.txt are regenerated byte for byte, and extra.txt (more training text
    with greetings and "Once upon a time," stories) shares with the validation split no more than
    train.txt does: the short chats that a small grammar repeats ("Count to 6, please."), no story."""
    import make_corpus

    make_corpus.main(["--out", str(tmp_path)])
    for name in ("train.txt", "val.txt", "extra.txt"):
        assert (tmp_path / name).read_bytes() == (train_tiny.CORPUS / name).read_bytes(), name
    extra, val = (set(train_tiny.read_documents(train_tiny.CORPUS / f"{name}.txt")) for name in ("extra", "val"))
    shared = extra & val
    assert len(shared) < 0.05 * len(val) and all(d.startswith("User: ") for d in shared)
    assert any(d.startswith("Once upon a time,") for d in extra)
    assert any("User: What is your name?" in d for d in extra)
