"""Batch-1 greedy decode speed: minicohere vs llama.cpp on the bundled model, same weights, same threads.

    python benchmarks/bench_gguf.py [--threads 1 2 --rounds 5 --new-tokens 128]

The bundled tiny-command-r is exported to GGUF (f32 and q8_0) with minicohere.gguf and run by llama.cpp
through llama-cpp-python (scripts/install_llama_cpp.sh); minicohere runs the same checkpoint in fp32 and
with quantize="int8" (per-channel int8 weights; llama.cpp's q8_0 keeps a scale per 32 weights).
Decode speed counts only the steps after the first new token (the time between the first and the last
new token), so neither side's prompt processing is in it. Runs alternate between the engines; the
table gives the median of the rounds, wall clock. The fp32 engines are checked to emit the same tokens.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

import minicohere
from minicohere.gguf import export_gguf


class Clock:
    """A streamer that notes when each new token arrives (minicohere calls put() once per step)."""

    def __init__(self):
        self.times, self.tokens, self.calls = [], [], 0

    def put(self, ids):
        self.calls += 1
        if self.calls > 1:  # the first call carries the prompt
            self.times.append(time.perf_counter())
            self.tokens.extend(ids.flatten().tolist())

    def end(self):
        pass


def minicohere_run(model, ids, n):
    clock = Clock()
    with torch.inference_mode():
        model.generate(torch.tensor([ids]), max_new_tokens=n, eos_token_id=None, streamer=clock)
    return (n - 1) / (clock.times[-1] - clock.times[0]), clock.tokens


def llama_run(llm, ids, n):
    times, tokens = [], []
    for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        times.append(time.perf_counter())
        tokens.append(token)
        if len(tokens) == n:
            break
    return (n - 1) / (times[-1] - times[0]), tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=128)
    args = ap.parse_args()
    import llama_cpp

    warnings.simplefilter("ignore")
    folder = minicohere.bundled_path("tiny-command-r")
    tokenizer = minicohere.Tokenizer.from_pretrained(folder)
    ids = tokenizer.encode("Once upon a time, in a small village by the sea, there lived")
    n = args.new_tokens
    if len(ids) + n > 256:
        raise SystemExit(f"prompt {len(ids)} + {n} new tokens exceed the bundled model's 256 positions")
    models = {"minicohere fp32": minicohere.from_pretrained(folder, dtype="float32"),
              "minicohere int8": minicohere.from_pretrained(folder, dtype="float32", quantize="int8")}
    with tempfile.TemporaryDirectory() as tmp:
        files = {dtype: export_gguf(folder, Path(tmp) / f"tiny-{dtype}.gguf", dtype, progress=False)
                 for dtype in ("f32", "q8_0")}
        print(f"bundled tiny-command-r, batch 1, greedy, prompt {len(ids)} + {n} new tokens; decode steps "
              f"only; median of {args.rounds} alternating rounds; wall clock\n")
        print("| threads | minicohere fp32 | llama.cpp f32 | minicohere int8 | llama.cpp q8_0 | "
              "llama.cpp / minicohere (f32) |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for threads in args.threads:
            torch.set_num_threads(threads)
            llms = {f"llama.cpp {dtype}": llama_cpp.Llama(model_path=str(path), n_ctx=256, n_batch=256,
                                                            n_threads=threads, n_threads_batch=threads,
                                                            verbose=False)
                    for dtype, path in files.items()}
            runs = {"minicohere fp32": lambda: minicohere_run(models["minicohere fp32"], ids, n),
                    "llama.cpp f32": lambda: llama_run(llms["llama.cpp f32"], ids, n),
                    "minicohere int8": lambda: minicohere_run(models["minicohere int8"], ids, n),
                    "llama.cpp q8_0": lambda: llama_run(llms["llama.cpp q8_0"], ids, n)}
            speeds = {name: [] for name in runs}
            tokens = {}
            for fn in runs.values():  # warm-up
                fn()
            for _ in range(args.rounds):
                for name, fn in runs.items():
                    speed, tokens[name] = fn()
                    speeds[name].append(speed)
            if tokens["minicohere fp32"] != tokens["llama.cpp f32"]:
                raise SystemExit("llama.cpp f32 and minicohere fp32 generated different tokens")
            med = {name: statistics.median(v) for name, v in speeds.items()}
            print(f"| {threads} | {med['minicohere fp32']:.0f} | {med['llama.cpp f32']:.0f} | "
                  f"{med['minicohere int8']:.0f} | {med['llama.cpp q8_0']:.0f} | "
                  f"{med['llama.cpp f32'] / med['minicohere fp32']:.1f}x |")
            del llms


if __name__ == "__main__":
    main()
