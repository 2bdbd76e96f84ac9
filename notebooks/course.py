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


def plot_histograms(panels, title, bins=40, show_mean=True, xlabel=None):
    """One histogram per {name: tensor}, side by side on a shared y axis; each panel's title gives its mean.

    `title` states what the panels show (chapter 03: LayerNorm centres the values, RMSNorm keeps the shift).
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(8, 2.4), sharey=True)
    for ax, (name, values) in zip(axes, panels.items()):
        values = values.detach().flatten().float()
        ax.hist(values.numpy(), bins=bins)
        mean = round(values.mean().item(), 2) + 0.0                        # + 0.0: no "-0.00"
        ax.set_title(f"{name}: mean {mean:.2f}" if show_mean else name, fontsize=9)
        if xlabel:
            ax.set_xlabel(xlabel)
    fig.suptitle(title, fontsize=9)
    plt.tight_layout()
    plt.show()


def plot_architecture_map():
    """Chapter 00's map of the forward pass: one box per component, with the chapter and minicohere's name."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))

    def box(x, y, w, text, color, name):
        ax.add_patch(plt.Rectangle((x - w / 2, y - 0.22), w, 0.44, color=color, alpha=0.3))
        ax.text(x, y + 0.07, text, ha="center", va="center", fontsize=9)
        ax.text(x, y - 0.11, name, ha="center", va="center", fontsize=7, family="monospace", color="dimgray")

    boxes = [(2, 0.3, 2.2, "token ids", "gray", "input_ids [B, T]"),
             (2, 1.1, 2.6, "embedding (02)", "C0", "model.embed_tokens"),
             (2, 2.0, 2.6, "LayerNorm (03)", "C1", "input_layernorm"),
             (1.15, 3.0, 1.7, "attention + RoPE (04, 05)", "C2", "self_attn"),
             (3.0, 3.0, 1.6, "SwiGLU MLP (06)", "C3", "mlp"),
             (2, 4.1, 2.4, "x + attention + MLP", "gray", "the parallel block"),
             (2, 5.2, 2.6, "final LayerNorm (03)", "C1", "model.norm"),
             (2, 6.0, 3.4, "tied head x logit_scale (02, 07)", "C0", "lm_head = embed_tokens"),
             (2, 6.8, 2.2, "logits", "gray", "[B, T, vocab]")]
    for b in boxes:
        box(*b)
    ax.add_patch(plt.Rectangle((0.1, 1.6), 3.8, 3.1, fill=False, linestyle="--"))
    ax.text(3.85, 4.55, "x num_hidden_layers (06)", ha="right", fontsize=8)
    for x0, y0, x1, y1 in [(2, 0.52, 2, 0.88), (2, 1.32, 2, 1.78), (2, 2.22, 1.15, 2.78), (2, 2.22, 3.0, 2.78),
                           (1.15, 3.22, 1.9, 3.88), (3.0, 3.22, 2.1, 3.88), (2, 4.32, 2, 4.98), (2, 5.42, 2, 5.78),
                           (2, 6.22, 2, 6.58)]:
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="->", lw=1))
    ax.annotate("", xy=(0.2, 4.0), xytext=(0.2, 1.9), arrowprops=dict(arrowstyle="->", lw=1, color="gray"))
    ax.text(0.13, 2.9, "residual", rotation=90, fontsize=7, color="gray", va="center")
    ax.set_xlim(0, 4)
    ax.set_ylim(0, 7.1)
    ax.axis("off")
    ax.set_title("Command-R's forward pass: one LayerNorm feeds attention and MLP in parallel")
    plt.show()


def plot_paired_bars(pairs, labels, title, ylabel="count"):
    """Two bars per name from {name: (a, b)}: `labels` names a and b (chapter 01: bytes and tokens per text)."""
    import matplotlib.pyplot as plt

    names = list(pairs)
    fig, ax = plt.subplots(figsize=(8, 3))
    x = np.arange(len(names))
    for k, (offset, label) in enumerate(zip((-0.2, 0.2), labels)):
        ax.bar(x + offset, [pairs[n][k] for n in names], width=0.4, label=label)
    ax.set_xticks(x.tolist(), names, rotation=30, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, 1.3 * max(max(v) for v in pairs.values()))
    ax.legend(ncol=2, fontsize=8, loc="upper center")
    plt.tight_layout()
    plt.show()


def plot_similarity_maps(maps, words, title, limit=0.4):
    """One heat map per {panel title: square similarity matrix}, rows and columns labelled with `words`."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(10, 4.6))
    for ax, (name, sim) in zip(axes, maps.items()):
        image = ax.imshow(sim.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_xticks(range(len(words)), words, rotation=90, fontsize=6)
        ax.set_yticks(range(len(words)), words, fontsize=6)
        ax.set_title(name, fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.8, label="cosine similarity")
    fig.suptitle(title, fontsize=9)
    plt.show()


def plot_kv_groups(schemes, query_heads, title):
    """One strip per {name: kv heads}: each of `query_heads` squares coloured by the kv head it reads."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(schemes), 1, figsize=(8, 3))
    for ax, (name, n_kv) in zip(axes, schemes.items()):
        group = query_heads // n_kv
        kv_of = torch.arange(query_heads) // group
        ax.imshow(kv_of[None].numpy() % 10, cmap="tab10", vmin=0, vmax=9, aspect="auto")
        for boundary in range(group, query_heads, group):
            ax.axvline(boundary - 0.5, color="white", lw=1.5)
        if n_kv <= 8 and group > 1:
            for j in range(n_kv):
                ax.text(j * group + group / 2 - 0.5, 0, f"kv {j}", ha="center", va="center", fontsize=8)
        ax.set_yticks([])
        ax.set_xticks(range(0, query_heads + 1, 8))
        ax.set_title(name, fontsize=9)
    axes[-1].set_xlabel("query head")
    fig.suptitle(title, fontsize=10)
    plt.tight_layout()
    plt.show()


def plot_attention_maps(attentions, heads, group, title):
    """Attention weights [query, key] of `heads` in every layer of `attentions` (batch 0), one row per layer."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(attentions), len(heads), figsize=(8, 2.4 * len(attentions)), squeeze=False)
    for layer, weights in enumerate(attentions):
        for j, head in enumerate(heads):
            ax = axes[layer, j]
            ax.imshow(weights[0, head].detach().numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer}, head {head} (kv {head // group})", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    for ax in axes[:, 0]:
        ax.set_ylabel("query token", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("key token", fontsize=8)
    fig.suptitle(title, fontsize=10)
    plt.tight_layout()
    plt.show()


def plot_horizontal_bars(values, xlabel, title, colors=None):
    """One horizontal bar per {name: value}, top to bottom in the dict's order."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.4 * len(values) + 0.8))
    ax.barh(list(values), list(values.values()), color=colors)
    ax.set_xlabel(xlabel)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    plt.tight_layout()
    plt.show()


def plot_curves(curves, xlabel, ylabel, title, x=None, log_y=False, log_x=False, marks=(), hline=None):
    """One line per {label: y values} (against `x`, or the index); `marks` are (x, label) vertical lines and
    `hline` a (y, label) horizontal one (chapters 04, 06, 07)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    for label, y in curves.items():
        xs = np.arange(len(y)) if x is None else np.asarray(x)
        ax.plot(xs, np.asarray(y), label=label, lw=2 if len(curves) <= 2 else 1.5)
    if log_y:
        ax.set_yscale("log")
    if log_x:
        ax.set_xscale("log")
    for k, (at, label) in enumerate(marks):
        ax.axvline(at, ls="--", lw=1, color=f"C{k + 1}", label=label)
    if hline is not None:
        ax.axhline(hline[0], color="gray", ls=":", label=hline[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def plot_block_diagrams(title):
    """Chapter 06: Command-R's parallel block beside Llama's sequential one."""
    import matplotlib.pyplot as plt

    def box(ax, center, text, color):
        ax.add_patch(plt.Rectangle((center[0] - 0.42, center[1] - 0.15), 0.84, 0.3, color=color, alpha=0.35))
        ax.text(*center, text, ha="center", va="center", fontsize=8)

    def arrow(ax, start, end):
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", lw=1))

    def skip(ax, y0, y1, left):
        # the residual path: around the boxes, from the stream at y0 back into the sum at y1
        side, edge = (-0.6, 0.08) if left else (1.6, 0.92)
        ax.plot([edge, side, side], [y0, y0, y1], color="gray", lw=1, ls="--")
        ax.annotate("", xy=(edge, y1), xytext=(side, y1), arrowprops=dict(arrowstyle="->", lw=1, ls="--", color="gray"))
        ax.text(side + (0.04 if left else -0.04), (y0 + y1) / 2, "residual", fontsize=7, color="gray", rotation=90,
                ha="left" if left else "right", va="center")

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    ax = axes[0]
    for center, text, color in [((0.5, 0.2), "x", "gray"), ((0.5, 0.85), "LayerNorm", "C0"),
                                ((0.0, 1.6), "attention", "C1"), ((1.0, 1.6), "MLP", "C2"),
                                ((0.5, 2.4), "x + attn + mlp", "gray")]:
        box(ax, center, text, color)
    for start, end in [((0.5, 0.35), (0.5, 0.7)), ((0.5, 1.0), (0.0, 1.45)), ((0.5, 1.0), (1.0, 1.45)),
                       ((0.0, 1.75), (0.4, 2.25)), ((1.0, 1.75), (0.6, 2.25))]:
        arrow(ax, start, end)
    skip(ax, 0.2, 2.4, left=True)
    ax.set_title("Command-R: parallel (one norm)", fontsize=9)
    ax = axes[1]
    steps = [("x", "gray"), ("LayerNorm 1", "C0"), ("attention", "C1"), ("x + attn", "gray"),
             ("LayerNorm 2", "C0"), ("MLP", "C2"), ("x + attn + mlp", "gray")]
    for i, (text, color) in enumerate(steps):
        box(ax, (0.5, 0.2 + 0.37 * i), text, color)
        if i:
            arrow(ax, (0.5, 0.2 + 0.37 * (i - 1) + 0.15), (0.5, 0.2 + 0.37 * i - 0.15))
    skip(ax, 0.2, 0.2 + 0.37 * 3, left=False)
    skip(ax, 0.2 + 0.37 * 3, 0.2 + 0.37 * 6, left=False)
    ax.set_title("Llama: sequential (two norms)", fontsize=9)
    for ax in axes:
        ax.set_xlim(-0.7, 1.7)
        ax.set_ylim(0, 2.65)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    plt.tight_layout()
    plt.show()


def plot_stacked_bars(parts, xlabel, title, colors=None):
    """One horizontal bar per name of {name: {part: value}}, its parts stacked left to right."""
    import matplotlib.pyplot as plt

    names = list(parts)
    fig, ax = plt.subplots(figsize=(8, 2.8))
    left = [0.0] * len(names)
    for k, part in enumerate(parts[names[0]]):
        values = [parts[n][part] for n in names]
        ax.barh(names, values, left=left, label=part, color=None if colors is None else colors[k])
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    plt.tight_layout()
    plt.show()


def check_parameter_shares(shares, model, name):
    """Fail (with a hint) unless `shares` gives `model`'s parameter fractions per group.

    Chapter 00's exercise 0.1 groups parameters by their names; this check groups them another way, by
    the class of the module that holds each tensor, so the check holds no table of answers to copy.
    """
    from torch import nn
    from minicohere.model import CohereLayerNorm, CohereMLP

    kinds = ((CohereLayerNorm, "norms"), (nn.Embedding, "embedding"), (CohereMLP, "mlp"))
    owner = {}  # id(tensor) -> (group, size); a tied tensor is one tensor, so it is counted once
    for module in model.modules():
        kind = next((k for cls, k in kinds if isinstance(module, cls)), None)
        for tensor in module.parameters() if kind else ():
            owner.setdefault(id(tensor), (kind, tensor.numel()))
    everything = {id(t): t.numel() for t in model.parameters()}
    sizes = {"embedding": 0, "mlp": 0, "norms": 0}
    for kind, size in owner.values():
        sizes[kind] += size
    sizes["attention"] = sum(everything.values()) - sum(sizes.values())  # projections outside the MLP
    total = sum(everything.values())
    check(all(abs(shares[k] - size / total) < 1e-9 for k, size in sizes.items()),
          f"{name}: not the expected shares; is the tied head counted once? Where do q_norm and k_norm go?")


def check_gqa_saving(saving, config, kv_heads=8):
    """Fail (with a hint) unless `saving` is the fraction of `config`'s parameters that sharing its keys and
    values among `kv_heads` heads removes. Counted by building both models (no weights: the meta device),
    not by a formula, so the check holds none to copy."""
    import dataclasses

    import torch
    from minicohere import CohereForCausalLM

    with torch.device("meta"):
        full, shared = (CohereForCausalLM(dataclasses.replace(config, num_key_value_heads=n)).num_parameters()
                        for n in (config.num_key_value_heads, kv_heads))
    check(isinstance(saving, float) and abs(saving - (full - shared) / full) < 1e-6,
          "which matrices have one slice per key/value head, and how much of each is left with 8 heads?")


# ---------------------------------------------------------------------------------------------------
# Plots of chapters 08-11 (add below; keep this block's helpers here)
# ---------------------------------------------------------------------------------------------------

def _finish(ax, title):
    """Title (the finding), a small legend, and show."""
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def pick_openings(last):
    """Chapter 09's two demo openings, from {opening: next-token logits}: the one the model is surest about,
    and the least sure one on which top-p and min-p keep clearly different numbers of tokens. Computed,
    not hand-picked, so that the choice holds for any retraining of the model."""
    def kept_by_min_p(logits, m):
        p = logits.softmax(-1)
        return int((p >= m * p.max()).sum())

    def kept_by_top_p(logits, q):
        p = logits.softmax(-1).sort(descending=True).values
        return int(((p.cumsum(0) - p) < q).sum())

    def filters_disagree(logits):
        mins = [kept_by_min_p(logits, m) for m in (0.02, 0.1, 0.5)]
        tops = [kept_by_top_p(logits, q) for q in (0.5, 0.9, 0.99)]
        return mins[0] > mins[1] > mins[2] and tops[0] < tops[1] < tops[2]

    confidence = {text: float(logits.softmax(-1).max()) for text, logits in last.items()}
    sure = max(last, key=confidence.get)
    unsure = next(t for t in sorted(last, key=confidence.get) if filters_disagree(last[t]))
    return sure, unsure


def plot_positions_fed(fed):
    """Positions fed to the model at each decode step, one line per {name: counts}; the title gives the range."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    for name, steps in fed.items():
        ax.plot(range(len(steps)), steps, marker=".", label=f"{name}: {sum(steps)} positions in all")
    uncached, cached = fed["no cache"], fed["static"]
    ax.set_xlabel("decode step")
    ax.set_ylabel("positions fed to the model")
    _finish(ax, f"without a cache the steps feed {uncached[0]} to {uncached[-1]} positions; with one, "
                f"{cached[0]} then {max(cached[1:])} per step ({sum(uncached) / sum(cached):.0f}x less in all)")


def plot_kv_cache_sizes(contexts, gib, gpu_gb=80):
    """KV cache size (GiB) against context length, one line per {checkpoint: [GiB per context]}; the title
    gives the ratio of the first checkpoint's cache to each other's, and which fit one GPU at the longest
    context."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    for name, sizes in gib.items():
        ax.plot([c // 1024 for c in contexts], sizes, marker="o", label=name)
    ax.axhline(gpu_gb * 1e9 / 2**30, color="gray", linestyle="--", label=f"one {gpu_gb} GB GPU")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context (k tokens)")
    ax.set_ylabel("KV cache, GiB (16-bit)")
    first, *others = gib
    ratios = " and ".join(f"{gib[first][0] / gib[o][0]:.0f}x {o.removeprefix('c4ai-command-r-')}'s" for o in others)
    fits = [n.removeprefix("c4ai-command-r-") for n, sizes in gib.items() if sizes[-1] * 2**30 < gpu_gb * 1e9]
    _finish(ax, f"{first.removeprefix('c4ai-command-r-')}'s KV cache is {ratios};\nthe cache of one {contexts[-1] // 1024}k-token "
                f"sequence fits in one {gpu_gb} GB GPU only for {' and '.join(fits)}")


def plot_layer_errors(labels, curves, tolerance):
    """Relative error after each layer, one line per {name: errors}, on a log axis, with the tolerance."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    for (name, errors), marker in zip(curves.items(), "osd^"):
        ax.semilogy(labels, errors, marker + "-", label=name)
    ax.axhline(tolerance, color="gray", ls="--", lw=1, label="float32 tolerance")
    ax.set_ylabel("relative error vs transformers")
    right, wrong = curves.values()
    _finish(ax, f"your model stays below {tolerance:.0e} of transformers after every layer;\n"
                f"a sequential block is off by {min(wrong):.0%} or more from the first layer on")


def plot_training_runs(runs, curve, final_val):
    """Left: the short runs' train losses ({name: losses}). Right: the shipped model's logged curve
    (loss_curve.json entries: step, train_loss, optional val_loss and stage) and its final validation loss."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    for name, losses in runs.items():
        left.plot(range(1, len(losses) + 1), losses, label=name)
    fastest = min(runs, key=lambda n: runs[n][-1])
    slowest = max(runs, key=lambda n: runs[n][-1])
    left.set(title=f"your model, {len(next(iter(runs.values())))} steps: {fastest.split(',')[0]} learns fastest,\n"
                   f"{slowest} slowest", xlabel="step", ylabel="train loss (nats/token)")
    left.legend(fontsize=8)
    right.plot([e["step"] for e in curve], [e["train_loss"] for e in curve], lw=0.6, alpha=0.6, label="train (batch)")
    evals = [e for e in curve if "val_loss" in e]
    stage_one = [e for e in evals if e.get("stage", 1) == 1]
    right.plot([e["step"] for e in evals], [e["val_loss"] for e in evals], "o-", ms=3, label="validation (16 windows)")
    starts = [e["step"] for before, e in zip(curve, curve[1:]) if e.get("stage", 1) != before.get("stage", 1)]
    for s in starts:                               # a later training stage (see the model card)
        right.axvline(s, color="black", lw=0.8, ls="--", label=f"stage {curve[s - 1].get('stage')} starts")
    right.axhline(final_val, color="gray", ls=":", label=f"final validation, all windows: {final_val:.3f}")
    right.set(title=f"the shipped model: validation loss {evals[0]['val_loss']:.1f} at step {evals[0]['step']},\n"
                    f"{stage_one[-1]['val_loss']:.2f} after stage 1, {evals[-1]['val_loss']:.2f} after stage 2",
              xlabel="step", yscale="log", ylabel="loss")
    right.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    return starts, evals


# ---------------------------------------------------------------------------------------------------
# Plots of chapters 12-14
# ---------------------------------------------------------------------------------------------------

def plot_rounding_error(error_in_steps, title):
    """Histogram of rounding errors measured in quantization steps (chapter 12)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.hist(error_in_steps.flatten().numpy(), bins=50, range=(-0.6, 0.6))
    ax.set_xlabel("rounding error / scale")
    ax.set_ylabel("weights")
    ax.set_title(title, fontsize=10)
    plt.tight_layout()
    plt.show()


def plot_levels(normed, levels, even, title):
    """Weights (scaled into [-1, 1]) as a grey histogram, with two sets of 4-bit levels drawn over it."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.hist(normed.numpy(), bins=80, color="lightgray")
    for v in levels:
        ax.axvline(float(v), color="tab:blue", lw=0.8)
    for v in even:
        ax.axvline(float(v), color="tab:orange", lw=0.8, ls=":")
    ax.set_xlabel("weight / absmax of its block of 64 (blue: NF4 levels, orange dotted: evenly spaced)")
    ax.set_title(title, fontsize=10)
    plt.tight_layout()
    plt.show()


def plot_masks(masks, title):
    """Boolean [T, T] masks side by side, {panel title: mask} (chapter 13)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(masks), figsize=(4 * len(masks), 3.4))
    for ax, (name, m) in zip(axes, masks.items()):
        ax.imshow(m.numpy(), cmap="Blues", vmin=0, vmax=1.3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("key position")
    axes[0].set_ylabel("query position")
    fig.suptitle(title, fontsize=10)
    plt.tight_layout()
    plt.show()


def plot_cache_growth(contexts, gib, window, title):
    """KV cache size against context, one line per model ({name: [GiB per context]}); dashed lines for names
    starting with c4ai-command-r- (all layers global), a grey line at the window (chapter 13)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    k = [c // 1024 for c in contexts]
    for name, sizes in gib.items():
        ax.plot(k, sizes, "--" if name.startswith("c4ai-command-r-") else "-", marker="o", label=name)
    ax.axvline(window // 1024, color="gray", lw=0.8)
    ax.text(window // 1024 * 1.07, 0.6 * max(max(v) for v in gib.values()), f"window {window}", fontsize=8, color="gray")
    ax.set_xscale("log", base=2)
    ax.set_xticks(k, [f"{c}k" for c in k])
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("KV cache, GiB (bf16)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()



def plot_finetuning(curves, right, total, title):
    """Training losses ({label: losses}) on the left, held-out right answers ({run: count}) on the right."""
    import matplotlib.pyplot as plt

    fig, (left, bars) = plt.subplots(1, 2, figsize=(10, 3.5))
    for (label, losses), style in zip(curves.items(), ["-", "--", ":"]):
        left.plot(losses, style, label=label)
    left.set_xlabel("step")
    left.set_ylabel("training loss, chatbot tokens")
    left.legend()
    bars.bar(range(len(right)), list(right.values()))
    bars.set_xticks(range(len(right)), list(right), fontsize=8)
    bars.set_ylabel(f"held-out answers right (of {total})")
    fig.suptitle(title, fontsize=10)
    plt.tight_layout()
    plt.show()


# ---------------------------------------------------------------------------------------------------
# Plots of chapter 15
# ---------------------------------------------------------------------------------------------------

def plot_grounded_before_after(before: dict, after: dict) -> str:
    """Bars of each measure (a fraction right) before and after the adapter, each bar labelled with its
    value; the title, built from the numbers given, names the measures the adapter lifted most and those
    it moved least."""
    import textwrap

    import matplotlib.pyplot as plt

    keys = list(before)
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    for shift, values, label in ((-0.2, before, "before (base weights)"), (0.2, after, "after (adapter merged)")):
        bars = ax.bar(x + shift, [values[k] for k in keys], 0.4, label=label)
        ax.bar_label(bars, [f"{values[k]:.0%}" for k in keys], fontsize=7)
    ax.set_xticks(x, [textwrap.fill(k, 13) for k in keys], fontsize=8)
    ax.set_ylim(0, 1.35)
    ax.set_ylabel("fraction right (the held-out\nquestions measured)", fontsize=8)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    gain = {k: after[k] - before[k] for k in keys}
    order = sorted(keys, key=lambda k: -gain[k])
    top = [k for k in order if gain[k] >= gain[order[0]] - 0.25 and gain[k] > 0] or order[:1]
    change = lambda k: f"{k} ({before[k]:.0%} to {after[k]:.0%})"  # noqa: E731
    title = f"the adapter lifts {', '.join(change(k) for k in top)} most"
    if moved := [change(k) for k in order if k not in top and gain[k] != 0]:
        title += "; less: " + ", ".join(moved)
    if same := [f"{k} ({after[k]:.0%})" for k in order if k not in top and gain[k] == 0]:
        title += "; unchanged: " + ", ".join(same)
    title = textwrap.fill(title, 115)
    ax.set_title(title, fontsize=9)
    plt.show()
    return title


def finishes_within(fn, argument, seconds: float) -> bool:
    """Whether fn(argument) returns or raises within `seconds`. It runs in a forked child, killed when time
    is up, so a check stays short even for an answer that would compute for hours (a learner's calculator
    that works out 10 ** 10 ** 10 before looking at its size)."""
    import multiprocessing
    import os
    import warnings

    def run():
        try:
            fn(argument)
        except BaseException:  # noqa: BLE001 - the child only reports that it finished
            pass
        os._exit(0)

    with warnings.catch_warnings():  # Python 3.12+ warns about forking a process that has threads
        warnings.simplefilter("ignore", DeprecationWarning)
        child = multiprocessing.get_context("fork").Process(target=run, daemon=True)
        child.start()
    child.join(seconds)
    if child.is_alive():
        child.kill()
        child.join()
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# Plots of chapters 16-17
# ---------------------------------------------------------------------------------------------------

def tp_run_on_ranks(fn, world_size: int, *args, timeout: float = 120.0) -> list:
    """Run `fn(rank, world_size, *args)` in `world_size` processes joined by a gloo process group on this
    machine, and return each rank's result in rank order (chapter 16).

    minicohere's `parallel.run_on_ranks` with the processes *forked* from this one, so `fn`, and everything
    it calls, may be defined in notebook cells: each rank starts with a copy of the notebook's functions,
    models and tensors (copied only where a rank writes to them). Fork is what Linux offers by default;
    macOS has it too.
    """
    from minicohere.parallel import run_on_ranks

    with warnings.catch_warnings():  # Python 3.12+ warns about forking a process that has threads
        warnings.simplefilter("ignore", DeprecationWarning)
        return run_on_ranks(fn, world_size, *args, timeout=timeout, start_method="fork")


def _bytes_written() -> int | None:
    """Bytes this process has handed to write()-like calls, sockets included (Linux's /proc/self/io)."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))
    except (OSError, StopIteration):
        return None


class tp_count_collectives:
    """`with course.tp_count_collectives() as calls:` counts the all-reduces and all-gathers this rank makes
    inside the block, the bytes of the tensors it hands them (`payload_bytes`: for an all-gather, the
    slice it contributes) and, on Linux, the bytes the process actually sent (`sent_bytes`: gloo writes its
    messages to TCP sockets, and /proc/self/io counts every byte written; None elsewhere). Chapter 17: also
    the `all_to_all_single` calls (`all_to_all`) and the bytes of the floating-point tensors this rank hands
    them (`all_to_all_row_bytes`: the rows, its own share included; integer counts and ids left out)."""

    def __enter__(self):
        import torch.distributed as dist

        self.calls = {"all_reduce": 0, "all_gather": 0, "payload_bytes": 0, "sent_bytes": None,
                      "all_to_all": 0, "all_to_all_row_bytes": 0}
        self.saved = dist.all_reduce, dist.all_gather, dist.all_to_all_single

        def counted(kind, collective, payload):
            def call(*args, **kwargs):
                self.calls[kind] += 1
                self.calls["payload_bytes"] += payload(*args).numel() * payload(*args).element_size()
                return collective(*args, **kwargs)
            return call

        dist.all_reduce = counted("all_reduce", self.saved[0], lambda t, *rest: t)
        dist.all_gather = counted("all_gather", self.saved[1], lambda parts, t, *rest: t)

        def all_to_all(out, inp, *args, **kwargs):
            self.calls["all_to_all"] += 1
            if inp.is_floating_point():
                self.calls["all_to_all_row_bytes"] += inp.numel() * inp.element_size()
            return self.saved[2](out, inp, *args, **kwargs)

        dist.all_to_all_single = all_to_all
        self.start = _bytes_written()
        return self.calls

    def __exit__(self, *exc):
        import torch.distributed as dist

        end = _bytes_written()
        dist.all_reduce, dist.all_gather, dist.all_to_all_single = self.saved
        if self.start is not None and end is not None:
            self.calls["sent_bytes"] = end - self.start
        return False


def tp_plot_gpus_needed(needed: dict, contexts: list, title: str) -> None:
    """Chapter 16: for each model ({name: GPUs needed at each context}), a step of the GPU count against the
    context length. The title states the finding."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    styles = ["-", "--", ":"]   # lines that coincide stay visible: wide solid under narrower dashes
    for k, (name, counts) in enumerate(needed.items()):
        ax.step(range(len(contexts)), counts, where="post", label=name, linestyle=styles[k % 3], linewidth=4 - k)
    ax.set_yscale("log", base=2)
    ticks = sorted({c for counts in needed.values() for c in counts})
    ax.set_yticks(ticks, [str(c) for c in ticks])
    ax.set_xticks(range(len(contexts)), [f"{t // 1024}k" for t in contexts])
    ax.set(xlabel="context (tokens), batch 1, bf16", ylabel="80 GB GPUs needed")
    ax.set_title(title, fontsize=10)
    ax.legend()
    plt.show()


def moe_plot_shares(before: torch.Tensor, after: torch.Tensor, steps: int) -> str:
    """Chapter 17: for each layer, the range of the experts' shares of the routed tokens (least to most used
    expert), after upcycling (`before`, [layers, experts]) and after `steps` training steps (`after`). The
    title, computed from the shares, says whether training pulled them apart or evened them out, in how many
    layers the range widened, and where the least- and most-used experts' shares went. Returns the title."""
    import matplotlib.pyplot as plt

    widths = [(shares.max(dim=1).values - shares.min(dim=1).values) for shares in (before, after)]
    wider = int((widths[1] > widths[0]).sum())
    verb = "pull the experts' shares apart" if after.std() > before.std() else "even the experts' shares out"
    title = (f"Without a balance loss, {steps} training steps {verb} (a wider range in {wider} of "
             f"{before.shape[0]} layers):\nthe least-used expert's share goes from {before.min():.0%} to "
             f"{after.min():.0%}, the busiest's from {before.max():.0%} to {after.max():.0%}")
    fig, ax = plt.subplots(figsize=(9, 3.4))
    layers = torch.arange(before.shape[0]).float()
    for shares, label, shift, color in ((before, "upcycled", -0.1, "tab:gray"),
                                        (after, f"after {steps} steps", 0.1, "tab:red")):
        ax.vlines(layers + shift, shares.min(dim=1).values, shares.max(dim=1).values, color=color, lw=6, label=label)
    ax.axhline(1 / before.shape[1], ls="--", color="black", lw=1, label="an even split")
    ax.set_xticks(layers.tolist(), [str(i) for i in range(before.shape[0])])
    ax.set(xlabel="layer", ylabel="share of routed tokens\n(least to most used expert)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=10)
    plt.tight_layout()
    plt.show()
    return title
