"""Train the tiny Command-R that ships in assets/tiny-command-r/, on a CPU, in two stages.

    # stage 1: 1,000 steps from scratch on train.txt (the model shipped before, git 23a835a)
    python scripts/train_tiny.py --threads 1 --train-files train.txt --steps 1000 --lr 3e-3 --warmup 50 --out /tmp/tiny-stage1
    # stage 2: continue on train.txt + extra.txt -> the shipped model in assets/tiny-command-r/
    python scripts/train_tiny.py --threads 1 --init-from /tmp/tiny-stage1
    python scripts/train_tiny.py --steps 60 --out /tmp/tiny     # a quick try elsewhere

The model is built by minicohere itself (CohereForCausalLM(CohereConfig(...))) with the project's own
4,096-token tokenizer, and trained on the project's synthetic corpus (assets/corpus/, MIT): the stories
as plain text, the dialogues rendered through the chat template so the model learns to answer in turns.
Everything is seeded: the same command on the same machine and library versions gives the same weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import shutil
import time
from pathlib import Path

import torch

import minicohere

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "assets" / "corpus"
OUT = REPO / "assets" / "tiny-command-r"
CONTEXT = 256
ROLES = {"User": "user", "Assistant": "assistant", "System": "system"}

# ---------------------------------------------------------------------------------------------------
# the model


def tiny_config(tokenizer: minicohere.Tokenizer, logit_scale: float = 0.0625) -> minicohere.CohereConfig:
    """c4ai-command-r-08-2024's layout at toy size: GQA (8 query heads share 2 kv heads), no q/k norm,
    parallel blocks, tied embeddings, Command-R's own logit_scale of 1/16.

    No q/k norm, as in v01 and 08-2024 (only R+ has it): the training chapter uses this model to show the
    attention-score overflow that fp16 suffers and q/k norm would prevent.
    """
    return minicohere.CohereConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=256, intermediate_size=704, num_hidden_layers=5,
        num_attention_heads=8, num_key_value_heads=2, use_qk_norm=False, logit_scale=logit_scale,
        max_position_embeddings=CONTEXT, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)


# ---------------------------------------------------------------------------------------------------
# the data: one packed token stream per split


def read_documents(path: Path) -> list[str]:
    """The corpus files hold one document per paragraph (make_corpus.py never puts a blank line inside one)."""
    return [doc for doc in path.read_text(encoding="utf-8").split("\n\n") if doc.strip()]


def as_chat(document: str) -> list[dict] | None:
    """A "User: ...\\nAssistant: ..." document as chat messages; None for a story."""
    messages = []
    for line in document.splitlines():
        role, sep, content = line.partition(": ")
        if not sep or role not in ROLES:
            return None
        messages.append({"role": ROLES[role], "content": content})
    return messages or None


def encode_document(tokenizer: minicohere.Tokenizer, document: str) -> list[int]:
    """A story becomes BOS + text + END_OF_TURN (the eos, so the model learns to stop); a dialogue goes
    through the chat template, which already wraps every turn in START/END_OF_TURN tokens."""
    chat = as_chat(document)
    if chat is not None:
        return tokenizer.apply_chat_template(chat)
    return tokenizer.encode(document) + [tokenizer.eos_token_id]


TRAIN_FILES = ("train.txt", "extra.txt")


def token_stream(tokenizer: minicohere.Tokenizer, split: str) -> torch.Tensor:
    """All documents of `split` ("train", "extra" or "val") back to back. Packing wastes no padding; the
    BOS at each document's start tells the model that what came before is unrelated."""
    ids: list[int] = []
    for document in read_documents(CORPUS / f"{split}.txt"):
        ids += encode_document(tokenizer, document)
    return torch.tensor(ids, dtype=torch.long)


def datasets(tokenizer: minicohere.Tokenizer | None = None,
             train_files: tuple[str, ...] = TRAIN_FILES) -> tuple[torch.Tensor, torch.Tensor]:
    """(training stream, validation stream). The validation split is always val.txt alone."""
    tokenizer = tokenizer or minicohere.Tokenizer.default()
    for name in train_files:
        if name == "val.txt" or not (CORPUS / name).is_file():
            raise ValueError(f"--train-files: {name!r} is not a training file in {CORPUS}")
    train = torch.cat([token_stream(tokenizer, name.removesuffix(".txt")) for name in train_files])
    return train, token_stream(tokenizer, "val")


def random_windows(stream: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` windows of CONTEXT tokens at random offsets: [batch_size, CONTEXT]."""
    starts = torch.randint(0, len(stream) - CONTEXT, (batch_size,), generator=generator)
    return torch.stack([stream[s:s + CONTEXT] for s in starts.tolist()])


# ---------------------------------------------------------------------------------------------------
# evaluation: the number the model card states and tests/test_tiny_model.py reproduces


@torch.no_grad()
def evaluate(model: minicohere.CohereForCausalLM, stream: torch.Tensor, max_windows: int | None = None) -> float:
    """Mean next-token loss, in fp32, over consecutive non-overlapping CONTEXT-token windows of `stream`
    (all of them unless `max_windows` says fewer). Every window predicts CONTEXT - 1 tokens."""
    was_training = model.training
    model.eval()
    n = len(stream) // CONTEXT if max_windows is None else min(max_windows, len(stream) // CONTEXT)
    windows = stream[: n * CONTEXT].view(n, CONTEXT)
    total = 0.0
    for chunk in windows.split(16):
        total += model(chunk, labels=chunk).loss.item() * len(chunk)
    model.train(was_training)
    return total / n


# ---------------------------------------------------------------------------------------------------
# training


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warmup, then a cosine down to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def init_weights(model: minicohere.CohereForCausalLM, seed: int, embed_std: float) -> None:
    """Draw every weight from this script's own seeded generator: the shipped weights then depend on
    this function alone, not on how minicohere's constructor happens to use the global random stream.

    Matrices get N(0, 0.02) and LayerNorm weights 1, as in Command-R's own init, but the (tied) embedding
    gets a larger std: logits = (h @ E^T) * logit_scale with h layer-normed, so at std 0.02 and a scale of
    1/16 every logit starts within about +-0.02 of 0 and the first hundreds of steps go into growing E.
    The pad row stays zero, as nn.Embedding's padding_idx wants.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # the tied head is listed once, as the embedding
            if "norm" in name:
                p.fill_(1.0)
            elif "embed_tokens" in name:
                p.normal_(0.0, embed_std, generator=g)
                p[model.config.pad_token_id].zero_()
            else:
                p.normal_(0.0, model.config.initializer_range, generator=g)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.1) -> torch.optim.AdamW:
    """AdamW; no decay on norms and embeddings. The embeddings must stay free to grow: with a logit
    scale of 1/16, confident logits need long embedding rows (see the model card)."""
    decay, keep = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in name else keep).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def train_step(model, optimizer, batch: torch.Tensor, lr: float, bf16: bool, clip: float = 1.0) -> float:
    """One AdamW step on one batch; returns the batch's loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    # bf16 autocast runs the matmuls in bf16 (the weights stay fp32); LayerNorm, softmax and the loss
    # are computed in fp32 by minicohere and by autocast's own rules.
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(batch, labels=batch).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


def train(args, log=print) -> tuple[minicohere.CohereForCausalLM, list[dict], float]:
    """Build and train the model; returns (model, loss log, seconds)."""
    from tqdm import tqdm

    torch.manual_seed(args.seed)
    tokenizer = minicohere.Tokenizer.default()
    train_ids, val_ids = datasets(tokenizer, tuple(args.train_files))
    model = minicohere.CohereForCausalLM(tiny_config(tokenizer, args.logit_scale)).train()
    if args.init_from is None:
        init_weights(model, args.seed, args.embed_std)
    else:  # continue from an earlier stage: same architecture, fresh optimizer and schedule
        start = minicohere.from_pretrained(args.init_from, progress=False)
        shape = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "use_qk_norm", "logit_scale", "tie_word_embeddings", "max_position_embeddings")
        if any(getattr(start.config, k) != getattr(model.config, k) for k in shape):
            raise ValueError(f"--init-from {args.init_from}: its config.json is not this script's tiny config")
        model.load_state_dict(start.state_dict())
    optimizer = make_optimizer(model, args.lr)
    batches = torch.Generator().manual_seed(args.seed)
    log(f"{model.num_parameters() / 1e6:.2f}M parameters; {len(train_ids):,} training tokens "
        f"({' + '.join(args.train_files)}), "
        f"{len(val_ids):,} validation tokens; {args.steps} steps of {args.batch_size} x {CONTEXT} tokens")
    history = []
    started = time.perf_counter()
    bar = tqdm(range(args.steps), desc="training", unit="step", disable=args.quiet)
    for step in bar:
        lr = learning_rate(step, args.steps, args.lr, args.warmup)
        loss = train_step(model, optimizer, random_windows(train_ids, args.batch_size, batches), lr, args.bf16)
        entry = {"step": step + 1, "lr": round(lr, 6), "train_loss": round(loss, 4)}
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            # a quick look at the first 16 validation windows; the card's number uses all of them
            entry["val_loss"] = round(evaluate(model, val_ids, max_windows=16), 4)
            bar.set_postfix(train=f"{loss:.3f}", val=f"{entry['val_loss']:.3f}")
            (tqdm.write if not args.quiet else log)(f"step {step + 1:5d}  lr {lr:.2e}  train {loss:.4f}  "
                                                    f"val {entry['val_loss']:.4f}")
        history.append(entry)
    return model.eval(), history, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------
# why fp16 breaks where bf16 does not (used by notebook 11 and tests/test_tiny_model.py)

WATCHED = re.compile(r"model\.layers\.\d+(\.self_attn|\.mlp)?|model\.norm|lm_head")


def peak_outputs(model: minicohere.CohereForCausalLM, ids: torch.Tensor) -> dict[str, float]:
    """The largest |output| of each block-level module in one forward pass, in the order they ran.

    `lm_head` is the tied matmul h @ E^T *before* the multiplication by logit_scale. An output that
    overflowed reads inf; a NaN (what LayerNorm or softmax make of an inf) reads nan.
    """
    peaks: dict[str, float] = {}

    def recorder(name):
        def record(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            peaks[name] = out.detach().float().abs().max().item()
        return record

    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if WATCHED.fullmatch(n)]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    return peaks


def first_non_finite(peaks: dict[str, float]) -> str | None:
    """The first module (in execution order) whose output holds an inf or a NaN."""
    return next((name for name, peak in peaks.items() if not math.isfinite(peak)), None)


def with_grown_hidden_state(model: minicohere.CohereForCausalLM, factor: float, dtype: torch.dtype):
    """A copy of `model` in `dtype` whose final hidden state is `factor` times longer (its final norm's
    weight scaled): the logits grow by `factor`, as they do when a run drifts towards huge logits."""
    grown = copy.deepcopy(model).to(dtype)
    with torch.no_grad():
        grown.model.norm.weight.mul_(factor)
    return grown


# ---------------------------------------------------------------------------------------------------
# the bundle: weights, tokenizer, loss log, model card


def this_stage(args, seconds: float) -> dict:
    """What the card and stages.json say about the run that just finished."""
    command = f"python scripts/train_tiny.py --threads {args.threads}"
    if args.init_from is None:  # stage 1 of the shipped model: flags spelled out, the defaults are stage 2's
        command += (f" --train-files {' '.join(args.train_files)} --steps {args.steps} --lr {args.lr:g}"
                    f" --warmup {args.warmup} --out /tmp/tiny-stage1")
    else:
        command += " --init-from /tmp/tiny-stage1"
    return {"command": command, "init": "from scratch" if args.init_from is None else "from the stage before",
            "train_files": list(args.train_files), "steps": args.steps, "batch_size": args.batch_size,
            "lr": args.lr, "warmup": args.warmup, "bf16": args.bf16, "seed": args.seed, "threads": args.threads,
            "minutes": round(seconds / 60, 1)}


def earlier_stages(init_from: Path | None) -> tuple[list[dict], list[dict]]:
    """(stages, loss log) of the bundle a run started from; empty for a run from scratch.

    The first bundle (git 23a835a) predates stages.json: its one stage is read back from its card."""
    if init_from is None:
        return [], []
    curve = json.loads((init_from / "loss_curve.json").read_text(encoding="utf-8"))
    if (init_from / "stages.json").is_file():
        return json.loads((init_from / "stages.json").read_text(encoding="utf-8")), curve
    card = (init_from / "README.md").read_text(encoding="utf-8")
    field = lambda pattern: re.search(pattern, card).group(1)  # noqa: E731
    stage = {"init": "from scratch", "train_files": ["train.txt"], "steps": len(curve),
             "batch_size": int(field(r"steps of (\d+) x")), "lr": float(field(r"peak lr ([0-9.e-]+)")),
             "warmup": int(field(r"(\d+) warmup steps")), "bf16": "bf16 autocast" in card,
             "seed": int(field(r"seed (\d+)")), "threads": int(field(r"(\d+) thread")),
             "minutes": float(field(r"\| time \| ([0-9.]+) minutes"))}
    stage["command"] = (f"python scripts/train_tiny.py --threads {stage['threads']} --train-files train.txt"
                        f" --steps {stage['steps']} --lr {stage['lr']:g} --warmup {stage['warmup']}"
                        " --out /tmp/tiny-stage1")
    return [stage], [{**e, "stage": 1} for e in curve]


def stage_row(i: int, stage: dict) -> str:
    tokens = stage["steps"] * stage["batch_size"] * CONTEXT
    return (f"| stage {i} | {stage['init']}, on {' + '.join(stage['train_files'])}: {stage['steps']} steps of "
            f"{stage['batch_size']} x {CONTEXT} tokens = {tokens / 1e6:.2f}M tokens seen; peak lr {stage['lr']:g}, "
            f"{stage['warmup']} warmup steps, cosine to a tenth; {stage['minutes']:.1f} minutes, "
            f"{stage['threads']} thread(s) |")


STORY_OPENINGS = ["One morning", "Once upon a time", "Early one morning", "On a rainy afternoon", "One snowy evening"]
CARD_PROMPTS = [("generate", "Once upon a time,"), ("generate", "One morning,"), ("chat", "Hello! What is your name?"),
                ("chat", "Theo has a purple drum. What colour is the drum?"), ("chat", "Tell me a story.")]


@torch.no_grad()
def greedy_examples(model: minicohere.CohereForCausalLM, tokenizer: minicohere.Tokenizer,
                    max_new_tokens: int = 120) -> str:
    """The card's examples, generated by the weights it describes (greedy, so they are reproducible)."""
    lines = []
    for mode, text in CARD_PROMPTS:
        if mode == "generate":
            ids = tokenizer.encode(text)
        else:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens)
        reply = tokenizer.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)
        lines.append(f"    {text}{reply}" if mode == "generate" else f"    > {text}\n    {reply.strip()}")
    return "\n\n".join(lines)


def write_model_card(out: Path, model, history: list[dict], stages: list[dict], val_loss: float,
                     n_train: int, n_val: int) -> None:
    """README.md for the bundle; every number in it comes from the weights, the corpus or stages.json."""
    cfg, final = model.config, stages[-1]
    last = history[-50:]
    train_loss = sum(e["train_loss"] for e in last) / len(last)
    steps = sum(stage["steps"] for stage in stages)
    tokens_seen = sum(stage["steps"] * stage["batch_size"] for stage in stages) * CONTEXT
    minutes = sum(stage["minutes"] for stage in stages)
    windows = n_val // CONTEXT
    commands = "\n".join(f"    {stage['command']}" for stage in stages)
    stage_rows = "\n".join(stage_row(i + 1, stage) for i, stage in enumerate(stages))
    examples = greedy_examples(model, minicohere.Tokenizer.default())
    card = f"""# tiny-command-r

A {model.num_parameters() / 1e6:.2f}M-parameter language model with Command-R's architecture
(transformers `model_type: "cohere"`, `CohereForCausalLM`), built and trained from scratch by minicohere
on a CPU. It continues short children's stories and answers the corpus's small questions in Command-R's
chat format. It exists so the course, the command line and the tests have a model that speaks, offline.

| | |
| --- | --- |
| architecture | {cfg.num_hidden_layers} parallel blocks, hidden {cfg.hidden_size}, MLP {cfg.intermediate_size}, {cfg.num_attention_heads} query heads sharing {cfg.num_key_value_heads} kv heads (GQA), no q/k norm, tied embeddings, logit_scale {cfg.logit_scale} |
| parameters | {model.num_parameters():,} (the tied embedding counted once) |
| context | {CONTEXT} tokens, RoPE base {cfg.rope_theta:g} |
| tokenizer | the project's own byte-level BPE: 4,096 tokens with Command-R's special tokens and chat template (`assets/tokenizer/`); bos {cfg.bos_token_id}, eos `<|END_OF_TURN_TOKEN|>` = {cfg.eos_token_id}, pad {cfg.pad_token_id} |
| data | {' + '.join(f"`assets/corpus/{name}`" for name in final["train_files"])}, synthetic stories and dialogues generated by `scripts/make_corpus.py` (MIT; nothing downloaded): {n_train:,} tokens, stories as BOS + text + eos, dialogues through the chat template, packed |
| training | {steps} steps, {tokens_seen / 1e6:.2f}M tokens seen, in the {len(stages)} stage(s) below; AdamW (betas 0.9/0.95, weight decay 0.1 on matrices), a fresh optimizer and schedule per stage, gradient clipping at 1.0, {"bf16 autocast" if final["bf16"] else "fp32"}, seed {final["seed"]} |
{stage_rows}
| time | {minutes:.1f} minutes in all on this project's shared 2-core x86-64 CPU, {final["threads"]} thread(s) |
| final train loss | {train_loss:.3f} (mean of the last {len(last)} steps) |
| validation loss | {val_loss:.4f} |

**Validation loss** is the mean next-token loss (nats per token, fp32) of these weights over all
{windows} non-overlapping {CONTEXT}-token windows of the held-out split `assets/corpus/val.txt`
({n_val:,} tokens encoded as above), computed by `evaluate(model, val)` in `scripts/train_tiny.py`;
`tests/test_tiny_model.py` recomputes it from the shipped weights. An untrained model scores ln(4096) = 8.3.
val.txt holds stories and chats of train.txt's grammar only (none of extra.txt's greeting chats).
The corpus comes from a small grammar, so a low loss means the model has learned that grammar, no more:
it continues the corpus's openings with stories and answers the corpus's questions, but an opening or a
question the corpus never uses may get an odd reply.

**What the corpus knows.** Stories open with a time phrase and a comma: {", ".join(f'"{t},"' for t in STORY_OPENINGS)}.
Chats ask for sums ("What is 12 plus 7?"), colours ("Mia has a red kite. What colour is the kite?"), pets'
names, where someone went, counting ("Count to 5, please."), a story ("Tell me a story about a fox."), and,
from extra.txt, greetings, "What is your name?", "How are you?", "What can you do?", "Tell me a story.".
Greedy, as these weights answer (`python -m minicohere generate --greedy ...`, `chat --greedy`):

{examples}

**Why logit_scale 1/16.** Command-R multiplies its logits by 0.0625. The final hidden state is
layer-normed (length about sqrt(hidden)), so with the scale the logits can only be confident once the
tied embedding rows grow long; with the usual init (std 0.02) every logit starts close to 0 and the
first hundreds of steps go into growing the embeddings. In a 150-step trial (batch 8, this config) the
validation loss reached 4.5 at scale 1/16 with init std 0.02, 1.2 at scale 1/4, and 1.5 at scale 1/16
with the embedding matrix initialised at std 1.0 (rows as long as the normed hidden state). So the model
keeps Command-R's real 1/16 and starts its embeddings at std 1.0 (`--embed-std`); they are also kept out of
weight decay. Every initial weight is drawn by `init_weights` from the script's own seeded generator, so
the result does not depend on how minicohere's constructor initialises.

**Why two stages.** Stage 1 (its weights are in git commit 23a835a's assets/tiny-command-r): 1,000 steps from
scratch on train.txt. Stage 2 continues it on train.txt + extra.txt with a fresh optimizer and a lower
peak learning rate, instead of training again from scratch: on this shared CPU that keeps the first
stage's compute and spends the budget on more steps. Stage 2 run twice from the shipped stage-1 weights
gave these weights byte for byte. Stage 1 run again with the current code and libraries does not retrace the
shipped stage 1 exactly (its training loss differs in the fourth decimal from step 3 on), so the two
commands below give a close model, not these bytes. To get these bytes, start stage 2 from the shipped
stage 1: `mkdir /tmp/tiny-stage1 && git archive 23a835a assets/tiny-command-r | tar -x --strip-components=2 -C /tmp/tiny-stage1`.

`loss_curve.json` holds, per step of every stage (`stage` says which): the learning rate, the training
loss and, every few dozen steps (`val_loss`), the loss over the first 16 validation windows. `stages.json` holds
each stage's settings and time.

Reproduce it from scratch (about {minutes:.0f} minutes here; another CPU or library version may give
slightly different weights, and then a slightly different validation loss):

{commands}

Files: `config.json` and `model.safetensors` (fp32, written by minicohere's `save_pretrained`), and
`tokenizer.json` / `tokenizer_config.json` copied from `assets/tokenizer/`. Both
`minicohere.from_pretrained("assets/tiny-command-r")` and transformers'
`AutoModelForCausalLM.from_pretrained("assets/tiny-command-r")` load it.

Licence: MIT, like the rest of minicohere (weights, data and code are the project's own).
"""
    (out / "README.md").write_text(card, encoding="utf-8")


def save_bundle(out: Path, model, history: list[dict], seconds: float, args) -> float:
    """Write the HF-layout folder; returns the validation loss written into the card. The loss log and
    stages.json continue those of the `--init-from` bundle, so the card covers the model's whole training."""
    stages, curve = earlier_stages(args.init_from)  # read before `out` is written: it may be the same folder
    stages.append(this_stage(args, seconds))
    curve += [{**e, "step": len(curve) + e["step"], "stage": len(stages)} for e in history]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(REPO / "assets" / "tokenizer" / name, out / name)
    (out / "loss_curve.json").write_text(json.dumps(curve, indent=0) + "\n", encoding="utf-8")
    (out / "stages.json").write_text(json.dumps(stages, indent=1) + "\n", encoding="utf-8")
    train_ids, val_ids = datasets(train_files=tuple(args.train_files))
    val_loss = evaluate(model, val_ids)
    write_model_card(out, model, curve, stages, val_loss, len(train_ids), len(val_ids))
    return val_loss


def rewrite_card(out: Path) -> float:
    """Write `out`/README.md again from the bundle's own weights, loss log and stages.json (after an edit
    to the card's text, without training again); returns the validation loss."""
    model = minicohere.from_pretrained(out, progress=False)
    curve = json.loads((out / "loss_curve.json").read_text(encoding="utf-8"))
    stages = json.loads((out / "stages.json").read_text(encoding="utf-8"))
    train_ids, val_ids = datasets(train_files=tuple(stages[-1]["train_files"]))
    val_loss = evaluate(model, val_ids)
    write_model_card(out, model, curve, stages, val_loss, len(train_ids), len(val_ids))
    return val_loss


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the defaults are stage 2's (see the docstring); stage 1 was --steps 1000 --lr 3e-3 --warmup 50
    ap.add_argument("--steps", type=int, default=330)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=7e-4, help="peak learning rate")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--logit-scale", type=float, default=0.0625)
    ap.add_argument("--embed-std", type=float, default=1.0, help="init std of the tied embedding matrix")
    ap.add_argument("--fp32", dest="bf16", action="store_false", help="train in fp32 instead of bf16 autocast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-from", type=Path, default=None, metavar="DIR",
                    help="start from this earlier stage's bundle instead of a fresh init")
    ap.add_argument("--train-files", nargs="+", default=list(TRAIN_FILES), metavar="FILE",
                    help=f"training files in assets/corpus/ (default: {' '.join(TRAIN_FILES)})")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--card-only", action="store_true", help="only rewrite --out's README.md from its files")
    ap.add_argument("--out", type=Path, default=OUT, help="where to write the bundle (default: %(default)s)")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.card_only:
        print(f"wrote {args.out / 'README.md'}: validation loss {rewrite_card(args.out):.4f}")
        return
    model, history, seconds = train(args)
    val_loss = save_bundle(args.out, model, history, seconds, args)
    print(f"wrote {args.out}: validation loss {val_loss:.4f} after {args.steps} steps, {seconds / 60:.1f} minutes")


if __name__ == "__main__":
    main()
