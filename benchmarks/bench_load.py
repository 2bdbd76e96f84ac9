"""Load a sharded checkpoint of a few hundred MB with minicohere and with transformers: wall time and RSS.

    python benchmarks/bench_load.py [--hidden 1024 --layers 6 --rounds 3]

Each load runs in a fresh subprocess (peak RSS can only go up inside one process), alternating between
the two loaders. Memory is reported as the peak resident set size above the process's own baseline
after its imports, right after loading (memory-mapped weights count once they are read, so a forward
pass afterwards pulls the whole file in for either loader: that column is shown too). The checkpoint is made once with transformers (random weights, fp32, sharded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

CHILD = r"""
import gc, json, sys, time, warnings
warnings.simplefilter("ignore")
import torch

def status_mb(field):
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

rss_mb = lambda: status_mb("VmRSS")

which, path = sys.argv[1], sys.argv[2]
if which == "minicohere":
    import minicohere
    load = lambda: minicohere.from_pretrained(path, progress=False)
else:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging
    logging.disable_progress_bar()
    load = lambda: AutoModelForCausalLM.from_pretrained(path)
gc.collect()
base = rss_mb()
t0 = time.perf_counter()
model = load()
seconds = time.perf_counter() - t0
peak = status_mb("VmHWM")
with torch.no_grad():  # then use the model once, to check both loaded the same numbers
    logits = model(torch.tensor([[5, 6, 7, 8]])).logits
print(json.dumps({"seconds": seconds, "peak_mb_above_base": peak - base,
                  "rss_mb_after_forward": rss_mb() - base, "logits": logits[0, -1, 1:9].tolist()}))
"""


def make_checkpoint(folder: Path, hidden: int, layers: int) -> float:
    from transformers import CohereConfig, CohereForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    cfg = CohereConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                       num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                       eos_token_id=2)
    torch.manual_seed(0)
    model = CohereForCausalLM(cfg)
    model.save_pretrained(folder, max_shard_size="100MB")
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e6


def run(which: str, folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, which, str(folder)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode:
        raise SystemExit(f"{which} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ckpt"
        size = make_checkpoint(folder, args.hidden, args.layers)
        shards = len(list(folder.glob("*.safetensors")))
        print(f"checkpoint: {size:.0f} MB fp32 in {shards} shards (hidden {args.hidden}, {args.layers} layers)")
        results = {"minicohere": [], "transformers": []}
        for _ in range(args.rounds):
            for which in results:
                results[which].append(run(which, folder))
        logit = {k: torch.tensor(v[0]["logits"]) for k, v in results.items()}
        assert torch.allclose(logit["minicohere"], logit["transformers"], atol=1e-5), logit  # same numbers loaded
    print("\n| loader | load time (median s) | peak RSS above baseline after loading (MB) "
          "| RSS after one forward (MB) |")
    print("| --- | ---: | ---: | ---: |")
    for which, rows in results.items():
        t = statistics.median(r["seconds"] for r in rows)
        m = statistics.median(r["peak_mb_above_base"] for r in rows)
        f = statistics.median(r["rss_mb_after_forward"] for r in rows)
        print(f"| {which} | {t:.2f} | {m:.0f} | {f:.0f} |")


if __name__ == "__main__":
    main()
