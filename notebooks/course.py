"""Small helpers the course notebooks share: seeds, exercise checks, tiny models, the real configs.

Kept apart from `minicohere` because they are about teaching, not about the model.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import warnings
from pathlib import Path

# tqdm.auto warns that Jupyter widgets are missing; minicohere never shows bars in the notebooks anyway.
warnings.filterwarnings("ignore", message="IProgress not found")

import numpy as np
import torch

import minicohere
from minicohere import CohereConfig

# The published configs of the real checkpoints, as listed in ../shared/command-r/CONFIGS.md (the values of
# their config.json files: hidden, layers, heads / kv heads, intermediate, rope_theta, logit_scale,
# use_qk_norm, max_position_embeddings, dtype; vocab 256000 and layer_norm_eps 1e-5 are CohereConfig's
# defaults and the same in all three). Used to compute what each component costs at full scale; nothing
# here downloads anything.
REAL_CONFIGS = {
    "c4ai-command-r-v01": CohereConfig(
        hidden_size=8192, num_hidden_layers=40, num_attention_heads=64, num_key_value_heads=64,
        intermediate_size=22528, logit_scale=0.0625, max_position_embeddings=8192,
        rope_parameters={"rope_type": "default", "rope_theta": 8e6}, dtype="float16"),
    "c4ai-command-r-08-2024": CohereConfig(
        hidden_size=8192, num_hidden_layers=40, num_attention_heads=64, num_key_value_heads=8,
        intermediate_size=24576, logit_scale=0.0625, max_position_embeddings=131072,
        rope_parameters={"rope_type": "default", "rope_theta": 4e6}, dtype="bfloat16"),
    "c4ai-command-r-plus": CohereConfig(
        hidden_size=12288, num_hidden_layers=64, num_attention_heads=96, num_key_value_heads=8,
        intermediate_size=33792, logit_scale=0.8333333333333334, use_qk_norm=True,
        max_position_embeddings=8192, rope_parameters={"rope_type": "default", "rope_theta": 7.5e7},
        dtype="float16"),
}

# Tiny members of the family for experiments that run in seconds on a laptop.
TINY_FAMILIES = {
    "v01-mha": dict(num_attention_heads=4, num_key_value_heads=4),
    "08-2024-gqa": dict(num_attention_heads=8, num_key_value_heads=2),
    "plus-qknorm": dict(num_attention_heads=8, num_key_value_heads=2, use_qk_norm=True),
}


def asset(name: str) -> Path:
    """Path of a file minicohere ships: "tiny-command-r", "tokenizer/tokenizer.json", "corpus/val.txt", ...

    Found through `minicohere.bundled_path` (the MINICOHERE_ASSETS environment variable, the installed
    package, or the clone's assets/ folder), never relative to the notebook: nbgrader and JupyterHub run a
    notebook in a folder of their own, where `../assets` does not exist.
    """
    try:
        return minicohere.bundled_path(name)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} (this notebook runs in {os.getcwd()}; a path relative to it would not "
                                "help)") from None


def bundled_model_path() -> Path:
    """The folder of the tiny Command-R the project trained (config.json, model.safetensors, tokenizer)."""
    return asset("tiny-command-r")


def tokenizer_path() -> Path:
    """The project's own 4,096-token tokenizer.json."""
    return asset("tokenizer/tokenizer.json")


def corpus_text(split: str = "val") -> str:
    """The course corpus, "train" or "val" split, as one string."""
    if split not in ("train", "val"):
        raise ValueError(f"corpus split must be 'train' or 'val', got {split!r}")
    return asset(f"corpus/{split}.txt").read_text(encoding="utf-8")


# Chapter 14's fine-tuning task: a question the bundled model never saw ("Who has the kite?"), in the corpus's
# world. Same names, things and colours as scripts/make_corpus.py.
WHO_HAS_NAMES = ["Mia", "Leo", "Ava", "Sam", "Nora", "Ben", "Lily", "Omar", "Zoe", "Max", "Ivy", "Finn",
                 "Ruby", "Theo", "Luna", "Kai", "Ella", "Jack", "Maya", "Noah", "Rosa", "Eli", "Hana", "Tom"]
WHO_HAS_THINGS = ["ball", "kite", "book", "hat", "box", "shell", "key", "cake", "apple", "map", "boat", "drum",
                  "bell", "cup", "lamp", "sock", "stone", "feather", "coin", "flower", "leaf", "basket"]
WHO_HAS_COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "white", "black", "brown"]


def who_has_chats(n: int, seed: int, exclude=()) -> list[list[dict]]:
    """`n` one-turn chats: "Mia has a red kite. Who has the kite?" -> "Mia has the kite." (seeded).

    exclude: chats whose questions must not come again (the training set, when drawing held-out chats).
    """
    rng = random.Random(f"who-has-{seed}")
    seen = {chat[0]["content"] for chat in exclude}
    chats = []
    while len(chats) < n:
        name, thing, colour = rng.choice(WHO_HAS_NAMES), rng.choice(WHO_HAS_THINGS), rng.choice(WHO_HAS_COLOURS)
        article = "an" if colour[0] in "aeiou" else "a"
        if f"{name} has {article} {colour} {thing}. Who has the {thing}?" in seen:
            continue
        chats.append([{"role": "user", "content": f"{name} has {article} {colour} {thing}. Who has the {thing}?"},
                      {"role": "assistant", "content": f"{name} has the {thing}."}])
    return chats


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tiny_config(family: str = "08-2024-gqa", **overrides) -> CohereConfig:
    kw = dict(vocab_size=96, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
              max_position_embeddings=64, eos_token_id=3, bos_token_id=1, pad_token_id=0,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    kw.update(TINY_FAMILIES[family])
    kw.update(overrides)
    return CohereConfig(**kw)


def reference_pair(config: CohereConfig, seed: int = 0):
    """transformers' CohereForCausalLM with O(1)-logit random weights, and minicohere loaded from it.

    The reference is saved with its own save_pretrained and read back with minicohere.from_pretrained,
    so the two hold the very same numbers. Returns (reference, ours), both in eval mode.
    """
    from transformers import CohereConfig as HFConfig, CohereForCausalLM as HFModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its timings would differ from run to run in stored outputs
    hf_logging.set_verbosity_error()

    kw = config.to_dict()
    kw.pop("dtype", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_cfg = HFConfig(**kw)
        hf_cfg._attn_implementation = "eager"
        torch.manual_seed(seed)
        reference = HFModel(hf_cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        ours = minicohere.from_pretrained(tmp, progress=False)
        ours = _detach_from_files(ours)
    return reference, ours


def _detach_from_files(model):
    """Copy memory-mapped weights into ordinary memory so the temporary folder can go away."""
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    return model


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


# ---- plotting helpers of chapters 08-13 ----
def plot_token_distributions(distributions, title, decode, top=12):
    """One bar chart per {name: probabilities}: its `top` likeliest tokens, those with probability above 0."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(distributions), figsize=(8, 2.6), sharey=True)
    for ax, (name, p) in zip(axes, distributions.items()):
        best = p.topk(top)
        kept = best.values > 0
        values, ids = best.values[kept], best.indices[kept].tolist()
        ax.bar(range(len(ids)), values.numpy())
        ax.set_xticks(range(len(ids)), [decode([i]).strip() or repr(decode([i])) for i in ids], rotation=70, fontsize=7)
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel("probability")
    fig.suptitle(title, fontsize=10)
    plt.tight_layout()
    plt.show()


class ExerciseFailed(AssertionError):
    pass


def check(condition: bool, hint: str) -> None:
    """Fail an exercise check with a hint, instead of a bare AssertionError."""
    if not condition:
        raise ExerciseFailed(f"Not yet. Hint: {hint}")


def passed(name: str) -> None:
    print(f"PASS: {name}")


# ---------------------------------------------------------------------------------------------------
# Plots of chapters 00-07 (kept here so that the lessons hold only the code the learner writes)
# ---------------------------------------------------------------------------------------------------

def plot_pair_turns(freqs, pairs=(0, 3), positions=20):
    """Where each rotary pair's unit vector (1, 0) points at positions 0..positions-1, one marker per position.

    The title states how far each pair turned (in turns), measured from `freqs` (radians per position).
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    steps = torch.arange(positions).float()
    turned = []
    for i in pairs:
        angles = steps * freqs[i]
        ax.scatter(angles.cos().numpy(), angles.sin().numpy(), s=12 if i == pairs[0] else 40,
                   label=f"pair {i}: {float(freqs[i]):.3g} rad per position")
        turned.append(float(angles[-1]) / (2 * math.pi))
    ax.set_aspect("equal")
    ax.set_title(f"over {positions} positions pair {pairs[0]} turns {turned[0]:.1f} times round, "
                 f"pair {pairs[-1]} only {turned[-1]:.4f} of a turn")
    ax.legend(fontsize=8, loc="center")
    plt.show()
    return turned


# ---------------------------------------------------------------------------------------------------
# Plots of chapters 08-11 (add below; keep this block's helpers here)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Plots of chapters 12-14
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Plots of chapter 15
# ---------------------------------------------------------------------------------------------------

def plot_grounded_before_after(before: dict, after: dict) -> str:
    """Bars of each measure (a fraction right) before and after the adapter; the title states the change
    in the grounded answers and in the sums the calculator made, from the numbers given."""
    import matplotlib.pyplot as plt

    keys = list(before)
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(7.5, 3))
    ax.bar(x - 0.2, [before[k] for k in keys], 0.4, label="before (base weights)")
    ax.bar(x + 0.2, [after[k] for k in keys], 0.4, label="after (adapter merged)")
    ax.set_xticks(x, keys, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out, right")
    ax.legend(fontsize=8)
    title = (f"fine-tuned, the model cites the right document for {after['citations']:.0%} of held-out questions "
             f"(before {before['citations']:.0%}) and calls the calculator for {after['calls the calculator']:.0%} "
             f"of sums,\nbut copies the fact into {after['answers']:.0%} of its answers and gets "
             f"{after['sums, calculator']:.0%} of sums right with the tool")
    ax.set_title(title, fontsize=9)
    plt.show()
    return title


# ---------------------------------------------------------------------------------------------------
# Plots of chapters 16-17
# ---------------------------------------------------------------------------------------------------
