"""Teach the bundled tiny Command-R grounded answers with citations and the calculator, as a LoRA adapter.

The base weights (assets/tiny-command-r/model.safetensors) are frozen and never written: the skills live in
a LoRA adapter saved in peft's format (assets/tiny-command-r/grounded-adapter/), which `minicohere.answer`
merges into a copy of the model. Plain generation runs the base weights and is exactly what it was.

Training data: scripts/make_grounded_data.py's train split (assets/grounded/train.jsonl), rendered by
minicohere.grounded's own prompt functions, so the prompts trained on are the prompts `answer` writes.
Each grounded example gives one sequence (prompt -> the four-line grounded output); each sum gives two
(prompt -> `Action:` with the calculator call; prompt + call + result turn -> `Answer:`). The loss is on
the model's turns only (labels -100 on the prompt).

    # the shipped adapter is OUT itself, the last step of this run (37 minutes on the unloaded 2-core machine):
    python scripts/train_grounded.py --full --r 128 --half --lr 1.5e-3 --batch-size 12 --steps 2400 --save-every 100 --threads 2 --out /tmp/full
    python scripts/train_grounded.py --steps 50 --out /tmp/adapter          # LoRA r=16, a quick try

`--full` trains the projection matrices themselves and saves their change cut to rank r by SVD, in the same
adapter format (`--half`: float16 tensors; r=128 is 5.6 MB). The run is seeded (torch and the batch order):
an earlier run of this script, rerun, logged the same losses and wrote the same bytes (0.7 s a step on the
unloaded machine, 2-7 s under load).

What was measured (2026-12-03, the shared 2-core machine, 5-23 s a step under other sessions' load):
- LoRA r=16, lr 3e-3, 160 steps of 12 (the first data: 32 training people) and full fine-tuning, lr 1e-3,
  60 steps: both learned the four-line format and the Action format within ~40 steps, but not to copy the
  fact, the person or the numbers from the prompt: 0% of held-out answers.
- The first shipped run (`--r 96 --lr 1e-3 --batch-size 8 --steps 360`, its step 160; the data with a
  thousand invented training people, so that guessing a name does not pay; the prompts in BM25+'s order,
  exactly as `answer` writes them): after 160 steps (~37 minutes)
  it cites the answering document of held-out questions and calls the calculator with a well-formed
  Action, but still copies neither the fact nor the operands (benchmarks/bench_grounded.py has the table).
  The loss per token shows where it stands: the document numbers and the format are ~0, the copied
  tokens (the name, the thing, the fact, the digits) stay at 3-8 nats, even where the token was written a
  line earlier in the same answer. The base model does not copy in this format either (the same tokens,
  teacher-forced, cost it 6-15 nats), so the copying circuit has to be grown, which a few hundred CPU
  steps did not do (the same run on to step 240: 1 of 24 held-out answers, 0 of 12 sums).

The copying warm-up (`--copy-steps`, `--copy-rows`, `--attention-weight`; tried 2026-12-03, not shipped):
- The bundled model has no copying circuit at all: a random 20- or 50-token string repeated costs it as
  much the second time as the first (11.8 nats a token both times), and no head of a story puts more than
  0.22 of its weight on the previous token.
- Random strings repeated after random fillers, the loss on the repeat (copy_sequence), next-token loss
  alone, full fine-tuning at lr 1e-3: 300 steps of 16 left the repeat at 8.6-8.9 nats (no copying).
- With copy_attention_loss (two heads told where to look): a previous-token head forms in about 10 steps
  in layer 1 (the weight on the previous token goes to ~1.0; in layer 0, where the input is the normed
  embedding with no common direction for a position-only pattern, it reached only ~0.2). The induction
  head in layer 2 did not follow: after 200-500 steps it put 2-5% of its weight on its target (uniform is
  ~1.3%). A likely reason, not proven here: a head of 32 dimensions with RoPE at theta 10000 keeps only its
  ~10 slowest-turning dimensions for matching content at any distance, too few to tell one of 4,083 random
  tokens from the others.
- Grounded training after that warm-up (lr 1.5e-3, 160 steps of 12 + 2 copy rows): loss 0.7-1.3 on the
  answers, citations 36 of 40 held-out questions, but 1 of 40 answers and 0 of 20 sums right: the same
  picture as without it (the first 40 held-out questions and 20 sums through `minicohere.answer` with
  OUT/step-200, scored as benchmarks/bench_grounded.py scores them). The command of that run:
  `--full --r 128 --half --lr 1.5e-3 --batch-size 12 --copy-steps 40 --copy-rows 2 --steps 900 --threads 2`.
What did work is plain training for longer (no warm-up). With a cosine over 1500 steps, step 300 still
answered ~0 of the held-out questions and step 500 copied what comes from a small set (counts, colours, the
digits of the operands and of the calculator's result) in 22.5% of answers and 50% of sums. The shipped run,
2400 steps: 61.5% of answers, 100% of citations, 99% of sums with the calculator, decoded freely
(`benchmarks/bench_grounded.py --free`; the table, and the default decoding's, are in the README). It copies counts and colours, never the invented pet and town names, not even those of one
token: the copying it learned is of a small set of tokens seen in many answers, not of any token.
Ten times the data (make_grounded_data.py --n-train 24000 --n-train-sums 2400 --train-only; each sequence
seen about once, so nothing can be learned by heart), the same command with --data: at step 1400 counts and
colours right on the first 12 held-out questions of each kind, pet names 0 of 12 (one invented name written
for every pet), places 0 of 8. Not shipped.
What closed the gap is not training: `minicohere.answer` decodes the grounded answer under two rules
(`minicohere.grounded.generate_quoting`: a cited span is a quote of the cited document, every other word is
one of the question's or the documents'), and with the same adapter 87.5% of held-out answers are right.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import minicohere  # noqa: E402
from minicohere import grounded  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


ANSWER_TOKENS = 96  # minicohere.answer's max_new_tokens: its prompts keep this much of the context free


def sequences(tokenizer, example: dict, context: int = 256) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids ending in end-of-turn) pairs for one example, the prompts exactly as
    `minicohere.answer` writes them (documents in BM25's order, so the gold one is renumbered)."""
    eot = [tokenizer.eos_token_id]
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False) + eot  # noqa: E731
    if example["kind"] == "grounded":
        prompt, chosen = grounded.grounded_prompt(tokenizer, example["question"], example["documents"],
                                                  context - ANSWER_TOKENS)
        if example["gold"] not in chosen:  # the prompt had no room for the answering document: nothing to learn
            return []
        cited = [chosen.index(example["gold"])]
        return [(prompt, encode(grounded.format_grounded(example["answer"], example["fact"], cited)))]
    user = [{"role": "user", "content": example["question"]}]
    action = grounded.format_action([{"tool_name": "calculator", "parameters": {"expression": example["expression"]}}])
    result = grounded.tool_results_text([{"name": "calculator", "result": example["result"]}])
    followed = user + [{"role": "assistant", "content": action}, {"role": "tool", "content": result}]
    tools = [grounded.CALCULATOR]
    return [(grounded.render_tools(tokenizer, user, tools, style="compact"), encode(action)),
            (grounded.render_tools(tokenizer, followed, tools, style="compact"), encode("Answer: " + example["answer"]))]


FIRST_PLAIN_ID = 13  # ids below are the special tokens (pad, bos, the turn markers)


def copy_sequence(rng: random.Random, vocab_size: int, bos_id: int) -> tuple[list[int], list[int]]:
    """A warm-up sequence that only copying can predict: BOS, filler, a random token string, filler, the
    same string again; the loss is on the repeat. The bundled model has no copying circuit (a repeated random
    string costs it as much the second time as the first), and the grounded answers need one: the fact, the
    name and the operands are copied from the prompt. Random fillers put the two copies at varying places
    and distances, as the documents and the answer are in the grounded prompts."""
    draw = lambda n: [rng.randrange(FIRST_PLAIN_ID, vocab_size) for _ in range(n)]  # noqa: E731
    string = draw(rng.randint(4, 40))
    before = [bos_id] + draw(rng.randint(0, 40))
    prompt = before + string + draw(rng.randint(0, 40))
    return prompt, string, len(before)


# Two heads are told where to look on the copy sequences (an extra loss on their attention weights), which
# grows the copying circuit in tens of steps where the next-token loss alone sat on a plateau for hundreds:
# a previous-token head (each position looks one back, so its output carries the token before it) and, a
# layer later, an induction head (in the repeat, each position looks at the first copy's position just
# after its own token: there the previous-token head left a match, and that position's token comes next).
PREVIOUS_TOKEN_HEAD = (1, 3)  # (layer, query head); the bundled model has no such head of its own
INDUCTION_HEAD = (2, 7)


def copy_attention_loss(attentions, rows, first_row: int = 0) -> torch.Tensor:
    """Mean -log attention weight of the two heads on their targets, over the copy sequences `rows`
    (batch rows first_row, first_row + 1, ...)."""
    previous = attentions[PREVIOUS_TOKEN_HEAD[0]][:, PREVIOUS_TOKEN_HEAD[1]]
    induction = attentions[INDUCTION_HEAD[0]][:, INDUCTION_HEAD[1]]
    terms = []
    for row, (prompt, string, first) in enumerate(rows, start=first_row):
        positions = torch.arange(1, len(prompt) + len(string))
        terms.append(-previous[row, positions, positions - 1].clamp_min(1e-9).log().mean())
        repeat = torch.arange(len(prompt), len(prompt) + len(string) - 1)  # holds string[0 .. n-2]
        terms.append(-induction[row, repeat, repeat - len(prompt) + first + 1].clamp_min(1e-9).log().mean())
    return torch.stack(terms).mean()


def batch(pairs, pad_id: int):
    """Right-padded input ids and labels (-100 on the prompt and the padding)."""
    width = max(len(p) + len(a) for p, a, *_ in pairs)
    ids = torch.full((len(pairs), width), pad_id)
    labels = torch.full((len(pairs), width), -100)
    for row, (p, a, *_) in enumerate(pairs):
        ids[row, :len(p) + len(a)] = torch.tensor(p + a)
        labels[row, len(p):len(p) + len(a)] = torch.tensor(a)
    return ids, labels


def answer_loss(model, ids, labels, copy_rows=(), first_copy_row: int = 0):
    """Next-token loss on the answer tokens, with the LM head run only where there is a target: most of a
    sequence is prompt, and the 4096-way head over every prompt position was ~a fifth of a step's work.
    With copy sequences in the batch, also their heads' attention loss: returns (next-token, attention)."""
    out = model.model(ids, output_attentions=bool(copy_rows))
    hidden = out.last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != -100
    logits = model.lm_head(hidden[keep]) * model.logit_scale
    loss = torch.nn.functional.cross_entropy(logits.float(), targets[keep])
    attention = copy_attention_loss(out.attentions, copy_rows, first_copy_row) if copy_rows else loss.new_zeros(())
    return loss, attention


class LoRALinear(torch.nn.Module):
    """y = W x + (alpha / r) B A x with W frozen; B starts at zero, so training starts at the base model.
    (Switch to minicohere.lora once it lands; the saved adapter is peft's format either way.)"""

    def __init__(self, base: torch.nn.Linear, r: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.base, self.scale = base, alpha / r
        self.lora_A = torch.nn.Parameter(torch.empty(r, base.in_features))
        torch.nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)
        self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale


def add_lora(model, r: int, alpha: float, seed: int) -> dict[str, LoRALinear]:
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    wrapped = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in TARGETS and isinstance(child, torch.nn.Linear):
                lora = LoRALinear(child, r, alpha, generator)
                setattr(module, child_name, lora)
                wrapped[f"{name}.{child_name}"] = lora
    return wrapped


def low_rank_delta(model, base: dict, r: int) -> dict:
    """The change full fine-tuning made to each projection, cut to rank r by SVD, as LoRA (A, B) pairs:
    W_tuned - W_base ~ B @ A with B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T (the best rank-r approximation)."""
    pairs = {}
    for name, param in model.named_parameters():
        if name in base:
            u, s, vh = torch.linalg.svd((param.detach() - base[name]).double(), full_matrices=False)
            root = s[:r].sqrt()
            a, b = (root[:, None] * vh[:r]).float(), (u[:, :r] * root).float()
            if a.shape[0] < r:  # a matrix narrower than r (k_proj: 64 rows): zero-pad, peft wants one rank
                a = torch.cat([a, a.new_zeros(r - a.shape[0], a.shape[1])])
                b = torch.cat([b, b.new_zeros(b.shape[0], r - b.shape[1])], dim=1)
            pairs[name[:-len(".weight")]] = SimpleNamespace(lora_A=a, lora_B=b)
    return pairs


def save_adapter(wrapped: dict, folder: Path, r: int, alpha: float, base: str, dtype=torch.float32) -> None:
    """adapter_model.safetensors + adapter_config.json, the files peft's PeftModel.from_pretrained reads."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, lora in wrapped.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = lora.lora_A.detach().to(dtype).contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = lora.lora_B.detach().to(dtype).contiguous()
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base, "r": r,
              "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": TARGETS, "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True, "modules_to_save": None}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "assets" / "tiny-command-r")
    parser.add_argument("--data", type=Path, default=REPO / "assets" / "grounded" / "train.jsonl")
    parser.add_argument("--out", type=Path, default=REPO / "assets" / "tiny-command-r" / "grounded-adapter")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="train the projection matrices themselves, then "
                        "save their change as a rank-r LoRA adapter (SVD)")
    parser.add_argument("--init-adapter", type=Path, default=None, help="start from this adapter's weights")
    parser.add_argument("--half", action="store_true", help="save the adapter in float16 (half the bytes)")
    parser.add_argument("--copy-steps", type=int, default=0, help="first train N steps on copy_sequence only "
                        "(the copying warm-up), then the grounded data")
    parser.add_argument("--copy-rows", type=int, default=0, help="after the warm-up, add this many copy "
                        "sequences to every batch")
    parser.add_argument("--attention-weight", type=float, default=1.0, help="weight of the copy heads' "
                        "attention loss (copy_attention_loss) on the copy sequences")
    parser.add_argument("--save-every", type=int, default=0, help="also save the adapter every N steps (OUT/step-N)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    tokenizer = minicohere.Tokenizer.from_pretrained(args.model)
    model = minicohere.from_pretrained(args.model, progress=False)
    model.train()
    if args.full:  # every projection matrix trains; embeddings and norms stay; the change becomes a LoRA after
        base = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("proj.weight")}
        for n, p in model.named_parameters():
            p.requires_grad_(n in base)
        wrapped = {}
    else:
        wrapped = add_lora(model, args.r, args.alpha, args.seed)
    if args.init_adapter:  # continue an earlier run (a fresh optimizer and schedule)
        from safetensors.torch import load_file

        saved = load_file(str(args.init_adapter / "adapter_model.safetensors"))
        with torch.no_grad():
            for name, lora in wrapped.items():
                lora.lora_A.copy_(saved[f"base_model.model.{name}.lora_A.weight"])
                lora.lora_B.copy_(saved[f"base_model.model.{name}.lora_B.weight"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    print(f"LoRA r={args.r} on {len(wrapped)} layers: {sum(p.numel() for p in trainable):,} trainable parameters "
          f"of {sum(p.numel() for p in model.parameters()):,}")

    examples = [json.loads(line) for line in args.data.read_text().splitlines()]
    context = model.config.max_position_embeddings
    pairs = [pair for ex in examples for pair in sequences(tokenizer, ex, context)]
    too_long = [len(p) + len(a) for p, a in pairs if len(p) + len(a) > context]
    if too_long:
        raise ValueError(f"{len(too_long)} training sequences exceed the context of {context} (longest {max(too_long)})")
    print(f"{len(examples)} examples -> {len(pairs)} sequences")

    dtype = torch.float16 if args.half else torch.float32
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    total = args.copy_steps + args.steps  # one warm-up and one cosine over the copying and the grounded steps
    warmup = max(1, total // 20)
    schedule = lambda s: min(1, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / total))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = random.Random(args.seed)
    order: list[int] = []
    log, start = [], time.time()
    copy_rng = random.Random(f"copy-{args.seed}")  # its own stream: the grounded batches stay as they were
    copy = lambda n: [copy_sequence(copy_rng, model.config.vocab_size, tokenizer.bos_token_id)  # noqa: E731
                      for _ in range(n)]
    for step in range(args.copy_steps + args.steps):
        if step < args.copy_steps:
            rows = copy_rows = copy(args.batch_size)
        else:
            if len(order) < args.batch_size:
                order += rng.sample(range(len(pairs)), len(pairs))
            chosen, order = order[:args.batch_size], order[args.batch_size:]
            copy_rows = copy(args.copy_rows)
            rows = [pairs[i] for i in chosen] + copy_rows
        ids, labels = batch(rows, tokenizer.pad_token_id)
        loss, attention = answer_loss(model, ids, labels, copy_rows, len(rows) - len(copy_rows))
        optimizer.zero_grad()
        (loss + args.attention_weight * attention).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        log.append(loss.item())
        if step % 20 == 0 or step == total - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  attention {attention.item():.3f}  "
                  f"{time.time() - start:.0f} s", flush=True)
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < total:
            adapter = low_rank_delta(model, base, args.r) if args.full else wrapped
            save_adapter(adapter, args.out / f"step-{step + 1}", args.r, args.r if args.full else args.alpha,
                         "tiny-command-r", dtype)
    minutes = (time.time() - start) / 60
    if args.full:
        wrapped = low_rank_delta(model, base, args.r)
        args.alpha = args.r  # scale 1: B @ A is the truncated change itself
    save_adapter(wrapped, args.out, args.r, args.alpha, "tiny-command-r", dtype)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("model", "data", "out", "init_adapter")}
    settings["init_adapter"] = args.init_adapter.name if args.init_adapter else None
    (args.out / "training.json").write_text(json.dumps(
        {"settings": settings, "minutes": round(minutes, 1), "sequences": len(pairs), "loss": log}, indent=1) + "\n")
    print(f"saved {args.out} after {minutes:.1f} minutes")


if __name__ == "__main__":
    main()
