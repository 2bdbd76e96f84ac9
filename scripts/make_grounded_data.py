"""Build the grounded-answer and calculator data of chapter 15 (seeded, nothing downloaded).

Documents live in the corpus's world (scripts/make_corpus.py: its children's names, things, colours,
places, invented pet and town names). Each grounded example is a question whose answer stands in exactly
one of three short documents; the two others are distractors about the same person or the same thing, so
that only reading the documents (not guessing from the question) finds the answer. Each sum example is a
question about two numbers that the calculator tool answers.

Held-out questions share no question with the training ones, and no person: the people of the held-out
split (every fifth name of the corpus) never appear in a training question or document, so a held-out
question is a new combination of person, thing and fact. Half the training people are invented names (the
corpus's pet names), so that copying the name from the question pays and guessing one of a few does not. Held-out sums use number pairs no training sum
uses.

    python scripts/make_grounded_data.py                 # -> assets/grounded/{train,heldout}.jsonl
    python scripts/make_grounded_data.py --seed 1 --out /tmp/g
    # ten times the training data, each example seen about once in a 2,400-step run (the adapter's data)
    python scripts/make_grounded_data.py --n-train 24000 --n-train-sums 2400 --train-only --out /tmp/g10

From Python (``scripts/`` on sys.path): ``from make_grounded_data import build``; ``build(seed)`` returns
``(train, heldout)``, lists of dicts:

    {"kind": "grounded", "question": str, "documents": [{"title", "text"}, ...], "gold": int,
     "fact": str, "answer": str}                  # fact: the words of documents[gold] that answer
    {"kind": "sum", "question": str, "expression": "23 + 48", "result": 71, "answer": str}
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from make_corpus import ANIMALS, COLOURS, NAMES, PET_NAMES, PLACES, THINGS, TOWN_NAMES, _plural  # noqa: E402

DEFAULT_OUT = REPO / "assets" / "grounded"
HELDOUT_NAMES = NAMES[::5]                      # 8 people only the held-out split meets
TRAIN_NAMES = [n for n in NAMES if n not in HELDOUT_NAMES]
# Half the training people are the corpus's invented names (its pets' names): with 32 people only, a model
# can lower its loss by guessing a likely name instead of copying the one in the question; with a thousand
# more it has to copy. None is a held-out person's name.
TRAIN_PEOPLE = TRAIN_NAMES * 30 + [n for n in PET_NAMES[:1000] if n not in HELDOUT_NAMES]
FACTS = ("colour", "place", "pet", "count")


def fact_document(rng: random.Random, kind: str, name: str, thing: str, animal: str):
    """(document, question, fact, answer) for one fact of `kind` about `name`."""
    if kind == "colour":
        colour = rng.choice(COLOURS)
        return ({"title": f"{name}'s {thing}", "text": f"{name} has a {colour} {thing}."},
                f"What colour is {name}'s {thing}?", colour, f"{name}'s {thing} is {colour}.")
    if kind == "place":
        place, town = rng.choice(PLACES), rng.choice(TOWN_NAMES)
        where = f"{place} in {town}"
        return ({"title": f"{name}'s trip", "text": f"{name} went to {where}."},
                f"Where did {name} go?", where, f"{name} went to {where}.")
    if kind == "pet":
        pet = rng.choice(PET_NAMES)
        return ({"title": f"{name}'s {animal}", "text": f"{name} has a {animal} called {pet}."},
                f"What is {name}'s {animal} called?", pet, f"{name}'s {animal} is called {pet}.")
    n = rng.randint(2, 19)
    return ({"title": f"{name}'s {_plural(thing)}", "text": f"{name} has {n} {_plural(thing)}."},
            f"How many {_plural(thing)} does {name} have?", str(n), f"{name} has {n} {_plural(thing)}.")


def grounded_example(rng: random.Random, names: list[str]) -> dict:
    """Three documents: the one that answers, one about the same person's other things, one about another
    person with the same kind of fact (so neither the name nor the question's kind alone finds it)."""
    kind = rng.choice(FACTS)
    name, other = rng.sample(names, 2)
    while other == name:  # a people list may repeat a name to weigh it
        other = rng.choice(names)
    thing, thing2 = rng.sample(THINGS, 2)
    animal, animal2 = rng.sample(ANIMALS, 2)
    gold_doc, question, fact, answer = fact_document(rng, kind, name, thing, animal)
    same_person = fact_document(rng, rng.choice([k for k in FACTS if k != kind]), name, thing2, animal2)[0]
    while True:  # the other person's fact must differ, so that the answer stands in one document only
        same_kind, _, other_fact, _ = fact_document(rng, kind, other, thing, animal)
        if other_fact != fact:
            break
    documents = [gold_doc, same_person, same_kind]
    rng.shuffle(documents)
    return {"kind": "grounded", "question": question, "documents": documents,
            "gold": documents.index(gold_doc), "fact": fact, "answer": answer}


def sum_example(a: int, b: int, rng: random.Random) -> dict:
    """A sum in words, sometimes about the corpus's people and things (a count the calculator adds)."""
    if rng.random() < 0.5:
        question = f"What is {a} plus {b}?"
        answer = f"{a} plus {b} is {a + b}."
    else:
        first, second = rng.sample(NAMES, 2)
        things = _plural(rng.choice(THINGS))
        question = f"{first} has {a} {things} and {second} has {b}. How many {things} do they have together?"
        answer = f"They have {a + b} {things} together."
    return {"kind": "sum", "question": question, "expression": f"{a} + {b}", "result": a + b, "answer": answer}


def build(seed: int = 0, n_train: int = 2400, n_heldout: int = 200, n_train_sums: int = 600,
          n_heldout_sums: int = 100) -> tuple[list[dict], list[dict]]:
    # one random stream per split, so that changing one split's size leaves the other as it is
    rng, held_rng = random.Random(f"grounded-{seed}"), random.Random(f"grounded-heldout-{seed}")
    train, heldout, questions = [], [], set()
    while len(heldout) < n_heldout:
        ex = grounded_example(held_rng, HELDOUT_NAMES)
        if ex["question"] not in questions:
            questions.add(ex["question"])
            heldout.append(ex)
    while len(train) < n_train:
        ex = grounded_example(rng, TRAIN_PEOPLE)
        if ex["question"] not in questions:  # never true (other names), kept as the rule's statement
            train.append(ex)
    # sums: two-digit numbers, the held-out pairs drawn first and kept out of training
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    rng.shuffle(pairs)
    heldout += [sum_example(a, b, held_rng) for a, b in pairs[:n_heldout_sums]]
    train += [sum_example(a, b, rng) for a, b in pairs[n_heldout_sums:n_heldout_sums + n_train_sums]]
    rng.shuffle(train)
    return train, heldout


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--n-train", type=int, default=2400, help="grounded training examples")
    parser.add_argument("--n-train-sums", type=int, default=600, help="training sums (at most 8,000)")
    parser.add_argument("--train-only", action="store_true",
                        help="write train.jsonl only, for the held-out split already in assets/grounded/: "
                             "training sums with one of its number pairs are dropped")
    args = parser.parse_args(argv)
    train, heldout = build(args.seed, n_train=args.n_train, n_train_sums=args.n_train_sums)
    splits = [("train", train), ("heldout", heldout)]
    if args.train_only:  # another size draws other held-out sums: keep the committed ones out of training
        kept = [json.loads(line) for line in (DEFAULT_OUT / "heldout.jsonl").read_text().splitlines()]
        held_questions = {r["question"] for r in kept}
        held_pairs = {r["expression"] for r in kept if r["kind"] == "sum"}
        splits = [("train", [r for r in train if r["question"] not in held_questions
                             and r.get("expression") not in held_pairs])]
    args.out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits:
        path = args.out / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{path}: {len(rows)} examples, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
