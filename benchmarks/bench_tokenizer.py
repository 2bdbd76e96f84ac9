"""Encode throughput: the `tokenizers` library vs minicohere's plain-Python ByteLevelBPE.

    python benchmarks/bench_tokenizer.py [--repeat 3]

Uses the real Command-R tokenizer from ../shared/command-r/ when present, else
minicohere's own 4k tokenizer. Two fixed texts: the project's validation corpus (few
distinct words, so the word cache does most of the work) and 30,000 distinct invented
words (every word goes through the merge loop). ByteLevelBPE is timed cold (empty word
cache) and warm (second pass, cache filled).
"""

import argparse
import gzip
import sys
import time
from pathlib import Path

from tokenizers import Tokenizer as FastTokenizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from make_corpus import build_corpus, name_pool  # noqa: E402
from minicohere.bpe import ByteLevelBPE  # noqa: E402


def timed(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    real = REPO.parent / "shared" / "command-r" / "tokenizer.json.gz"
    path = real if real.is_file() else REPO / "assets" / "tokenizer" / "tokenizer.json"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        fast = FastTokenizer.from_str(f.read())
    t = time.perf_counter()
    bpe = ByteLevelBPE.from_file(path)
    load_s = time.perf_counter() - t

    _, val = build_corpus(seed=0)
    texts = {"corpus val": "\n\n".join(val), "unique words": " ".join(name_pool(seed=7, n=30_000))}
    print(f"tokenizer: {path.name} (ByteLevelBPE load {load_s:.1f}s)\n")
    print("| text | encoder | seconds | MB/s | tokens/s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for label, text in texts.items():
        mb = len(text.encode("utf-8")) / 1e6
        lib_s, lib_ids = timed(lambda: fast.encode(text, add_special_tokens=False).ids, args.repeat)
        bpe._cache.clear()
        cold_s, bpe_ids = timed(lambda: bpe.encode(text, add_special_tokens=False), 1)
        warm_s, _ = timed(lambda: bpe.encode(text, add_special_tokens=False), args.repeat)
        assert bpe_ids == lib_ids, "ByteLevelBPE and the library disagree"
        n = len(lib_ids)
        for name, s in [("tokenizers (Rust)", lib_s), ("ByteLevelBPE cold", cold_s),
                        ("ByteLevelBPE warm", warm_s)]:
            print(f"| {label} ({mb:.2f} MB, {n} tok) | {name} | {s:.3f} | {mb / s:.2f} | {n / s:,.0f} |")

if __name__ == "__main__":
    main()
