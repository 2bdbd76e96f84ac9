"""Chapter 15's accuracy table: grounded answers, citations and sums, before and after the LoRA adapter.

    OMP_NUM_THREADS=1 python benchmarks/bench_grounded.py [--limit N] [--adapter FOLDER] [--json OUT]
    # the two columns in two processes, then the table:
    python benchmarks/bench_grounded.py --only before --json /tmp/b.json &
    python benchmarks/bench_grounded.py --only after --json /tmp/a.json; wait
    python benchmarks/bench_grounded.py --merge /tmp/b.json /tmp/a.json

On the held-out split of assets/grounded/ (people, questions and number pairs the training never saw;
scripts/make_grounded_data.py), all greedy, through `minicohere.answer`:
- cited spans are quotes of the cited document (`answer`'s default, quote=True); --free decodes them freely;
- answers: the held-out fact (colour, place, pet's name, count) stands in the answer text; "naming the
  person": and the answer names the person the question asks about;
- citations: the answer cites at least one document, and every cited document is the one holding the fact;
- sums with the tool: the calculator is offered; the right total stands in the answer;
- sums without the tool: the plain chat prompt (the base model's own skill, "What is 23 plus 48?").
"before" is the bundled model (adapter=None), "after" the shipped adapter merged in.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import minicohere  # noqa: E402


def load_heldout(limit: int | None = None) -> tuple[list[dict], list[dict]]:
    """(grounded examples, sum examples) of the held-out split, the first `limit` of each."""
    rows = [json.loads(line) for line in (REPO / "assets" / "grounded" / "heldout.jsonl").read_text().splitlines()]
    grounded = [r for r in rows if r["kind"] == "grounded"][:limit]
    sums = [r for r in rows if r["kind"] == "sum"][:limit]
    return grounded, sums


def answer_right(result: dict, example: dict) -> bool:
    return example["fact"].lower() in result["answer"].lower()


def person_right(result: dict, example: dict) -> bool:
    """The answer names the person the question asks about ("What is Mia's cat called?" -> Mia)."""
    person = re.search(r"([A-Z][a-z]+)(?:'s | go\?| have\?)", example["question"]).group(1)
    return re.search(rf"\b{person}\b", result["answer"]) is not None


QUESTION_KINDS = (("called?", "pet names"), ("How many", "counts"), ("What colour", "colours"), ("Where did", "places"))


def question_kind(question: str) -> str:
    """The fact a question asks for, by its wording (scripts/make_grounded_data.py's four question shapes)."""
    return next((kind for marker, kind in QUESTION_KINDS if marker in question), "other")


def citation_right(result: dict, example: dict) -> bool:
    cited = {d for c in result["citations"] for d in c["documents"]}
    return cited == {example["gold"]}


def total_right(text: str, example: dict) -> bool:
    return str(example["result"]) in re.findall(r"\d+", text)


def evaluate(model, tokenizer, grounded: list[dict], sums: list[dict], adapter, quote: bool = True) -> dict:
    """Fractions right: answers, citations, sums with the calculator, sums without it."""
    results = [minicohere.answer(model, tokenizer, ex["question"], documents=ex["documents"], adapter=adapter,
                                 quote=quote) for ex in grounded]
    with_tool = [minicohere.answer(model, tokenizer, ex["question"], tools=["calculator"], adapter=adapter)
                 for ex in sums]
    plain = [minicohere.answer(model, tokenizer, f"What is {ex['expression'].replace('+', 'plus')}?",
                               adapter=adapter) for ex in sums]
    mean = lambda flags: sum(flags) / max(1, len(flags))  # noqa: E731
    by_kind: dict[str, list[int]] = {}  # kind -> [right, asked]
    for r, ex in zip(results, grounded):
        tally = by_kind.setdefault(question_kind(ex["question"]), [0, 0])
        tally[0] += answer_right(r, ex)
        tally[1] += 1
    return {"answers": mean([answer_right(r, ex) for r, ex in zip(results, grounded)]),
            "answers_by_kind": by_kind,
            "answers_and_person": mean([answer_right(r, ex) and person_right(r, ex) for r, ex in zip(results, grounded)]),
            "citations": mean([citation_right(r, ex) for r, ex in zip(results, grounded)]),
            "sums_with_tool": mean([total_right(r["answer"], ex) for r, ex in zip(with_tool, sums)]),
            "sums_without_tool": mean([total_right(r["answer"], ex) for r, ex in zip(plain, sums)])}


def print_table(table: dict, n_grounded: int, n_sums: int) -> None:
    quoting = "free spans" if table["after"].get("free") else "cited spans quoted from the cited document"
    print(f"held-out: {n_grounded} grounded questions, {n_sums} sums (greedy; {quoting})\n")
    print(f"| {'':22s} | before | after |\n| {'-' * 22} | ------ | ----- |")
    for key, name in (("answers", "answers right"), ("answers_and_person", "... naming the person"),
                      ("citations", "citations right"),
                      ("sums_with_tool", "sums right, calculator"), ("sums_without_tool", "sums right, no tool")):
        if key in table["before"] and key in table["after"]:
            print(f"| {name:22s} | {table['before'][key]:6.1%} | {table['after'][key]:5.1%} |")
    kinds = table["after"].get("answers_by_kind", {})
    if kinds:
        print("\nanswers right by kind, before -> after: " + ", ".join(
            f"{kind} {table['before'].get('answers_by_kind', {}).get(kind, ['?'])[0]} -> {right} of {asked}"
            for kind, (right, asked) in kinds.items()))
    print(f"\nseconds: before {table['before']['seconds']}, after {table['after']['seconds']}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="the first N grounded and N sum questions")
    parser.add_argument("--adapter", default="default", help="adapter folder (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--free", action="store_true",
                        help="decode cited spans freely (answer(quote=False)) instead of as quotes of the cited document")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    parser.add_argument("--only", choices=("before", "after"), default=None,
                        help="measure one column (e.g. in parallel); --merge joins two such --json files")
    parser.add_argument("--merge", type=Path, nargs=2, default=None, metavar=("BEFORE_JSON", "AFTER_JSON"))
    args = parser.parse_args(argv)
    if args.merge:
        table = {label: json.loads(path.read_text())[label] for label, path in zip(("before", "after"), args.merge)}
        print_table(table, *(table["after"]["counts"][k] for k in ("grounded", "sums")))
        return
    torch.set_num_threads(args.threads)
    model = minicohere.from_pretrained(minicohere.bundled_path("tiny-command-r"), progress=False)
    tokenizer = minicohere.Tokenizer.default()
    grounded, sums = load_heldout(args.limit)
    table = {}
    for label, adapter in (("before", None), ("after", args.adapter)):
        if args.only not in (None, label):
            continue
        start = time.time()
        table[label] = evaluate(model, tokenizer, grounded, sums, adapter, quote=not args.free)
        table[label]["seconds"] = round(time.time() - start, 1)
        table[label]["counts"] = {"grounded": len(grounded), "sums": len(sums)}
        table[label]["free"] = args.free
    if args.only is None:
        print_table(table, len(grounded), len(sums))
    else:
        print(json.dumps(table))
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
