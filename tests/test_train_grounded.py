"""scripts/train_grounded.py's copying warm-up: the copy sequences and the attention loss that tells two heads
where to look (a previous-token head and an induction head)."""

import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_grounded  # noqa: E402
from train_grounded import INDUCTION_HEAD, PREVIOUS_TOKEN_HEAD, batch, copy_attention_loss, copy_sequence  # noqa: E402


def test_a_copy_sequence_repeats_a_random_string_after_fillers_and_the_loss_falls_on_the_repeat():
    rng = random.Random(0)
    for _ in range(50):
        prompt, string, first = copy_sequence(rng, vocab_size=4096, bos_id=5)
        assert prompt[0] == 5 and 4 <= len(string) <= 40
        assert prompt[first:first + len(string)] == string  # the first copy stands where `first` says
        assert all(train_grounded.FIRST_PLAIN_ID <= t < 4096 for t in prompt[1:] + string)  # no special token
        ids, labels = batch([(prompt, string, first)], pad_id=0)
        assert labels[0, len(prompt):].tolist() == string and (labels[0, :len(prompt)] == -100).all()


def perfect_heads(rows, layers=5, heads=8):
    """Attention weights [layers][B, heads, T, T] in which the previous-token head looks exactly one back and
    the induction head exactly at the first copy's next token; every other weight uniform over the past."""
    ids, _ = batch(rows, pad_id=0)
    B, T = ids.shape
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    weights = [uniform.expand(B, heads, T, T).clone() for _ in range(layers)]
    for row, (prompt, string, first) in enumerate(rows):
        prev = weights[PREVIOUS_TOKEN_HEAD[0]][row, PREVIOUS_TOKEN_HEAD[1]]
        for t in range(1, T):
            prev[t] = 0
            prev[t, t - 1] = 1
        induction = weights[INDUCTION_HEAD[0]][row, INDUCTION_HEAD[1]]
        for j in range(len(string) - 1):
            induction[len(prompt) + j] = 0
            induction[len(prompt) + j, first + 1 + j] = 1
    return weights


def test_the_attention_loss_is_zero_when_the_heads_look_at_their_targets_and_high_when_they_do_not():
    rng = random.Random(1)
    rows = [copy_sequence(rng, 4096, 5) for _ in range(3)]
    perfect = perfect_heads(rows)
    assert copy_attention_loss(perfect, rows).item() == pytest.approx(0.0, abs=1e-6)
    # the same heads looking one position off (a classic off-by-one) or spread evenly both cost a lot
    shifted = [w.clone() for w in perfect]
    layer, head = INDUCTION_HEAD
    shifted[layer][:, head] = torch.roll(perfect[layer][:, head], shifts=-1, dims=-1)
    assert copy_attention_loss(shifted, rows).item() > 5
    uniform = perfect_heads(rows, layers=5)
    for layer, head in (PREVIOUS_TOKEN_HEAD, INDUCTION_HEAD):
        uniform[layer][:, head] = perfect[(layer + 1) % 5][:, (head + 1) % 8]
    assert copy_attention_loss(uniform, rows).item() > 1

