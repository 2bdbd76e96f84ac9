"""Train the LoRA adapter chapter 14 ships: the bundled model learns to answer "Who has the kite?".

    python scripts/train_adapter.py            # writes assets/adapters/who-has/ (peft's format)

The bundled tiny-command-r answers "Mia has a red kite. Who has the kite?" with "The kite is red.": the
corpus only ever asks for the colour. This trains a rank-8 LoRA on every projection of every block, the loss
on the chatbot's turn only, on 1,024 seeded chats (notebooks/course.py `who_has_chats`). Seeded and run on
one thread, so a rerun on the same machine and libraries gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "notebooks"))

import course  # noqa: E402  (the chats' generator, shared with the notebook)
import minicohere  # noqa: E402
from minicohere.lora import add_lora, save_adapter  # noqa: E402


def chat_batch(tokenizer, chats):
    """ids, attention mask and labels (-100 outside the chatbot's turn and on padding), right-padded."""
    rows, labels = [], []
    for chat in chats:
        prompt = tokenizer.apply_chat_template(chat[:-1], add_generation_prompt=True)
        full = tokenizer.apply_chat_template(chat)
        rows.append(full)
        labels.append([-100] * len(prompt) + full[len(prompt):])
    width = max(map(len, rows))
    pad = lambda row, value: row + [value] * (width - len(row))  # noqa: E731
    ids = torch.tensor([pad(r, tokenizer.pad_token_id or 0) for r in rows])
    mask = torch.tensor([pad([1] * len(r), 0) for r in rows])
    return ids, mask, torch.tensor([pad(l, -100) for l in labels])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "assets" / "adapters" / "who-has"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--train-chats", type=int, default=1024)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    path = minicohere.bundled_path("tiny-command-r")
    tokenizer = minicohere.Tokenizer.from_pretrained(path)
    model = add_lora(minicohere.from_pretrained(path, progress=False), r=args.r, alpha=args.alpha)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                  weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10)
                                                 * max(0.1, 1 - s / args.steps))
    train = course.who_has_chats(args.train_chats, seed=0)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
    losses, start = [], time.time()
    for step in range(args.steps):
        at = (step * args.batch) % len(train)
        ids, mask, labels = chat_batch(tokenizer, [train[i] for i in order[at:at + args.batch]])
        loss = model(ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(round(loss.item(), 5))
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  {time.time() - start:.0f}s", flush=True)
    save_adapter(model, args.out)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    (Path(args.out) / "training.json").write_text(json.dumps({"settings": settings, "loss": losses,
                                                              "seconds": round(time.time() - start)}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
