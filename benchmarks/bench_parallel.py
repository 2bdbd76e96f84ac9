"""Tensor-parallel decode on this CPU: tokens per second at 1 and 2 ranks (gloo), bytes all-reduced per
token measured against the formula (the payload handed to the collectives, and the bytes each rank's
process really wrote to its sockets against the ring algorithm's 2 (w-1)/w), and the parameter bytes and peak memory of each rank.

    python benchmarks/bench_parallel.py [--new-tokens 32 --worlds 1 2 --skip-large]

Models: the bundled tiny-command-r (5 layers, hidden 256, vocab 4096) loaded with
`from_pretrained(..., tensor_parallel=True)`, and a larger random Command-R-shaped model (vocab 32000,
hidden 1024, 8 layers, 16 heads / 4 kv heads, fp32) saved once and loaded the same way. Each rank is a
process with one thread. Greedy decode of a 16-token prompt, eos off, batch 1; every rank's tokens are
checked to be the same as rank 0's and as the 1-rank run's.

Each rank is a process with one thread, so the 1-rank run uses one core and the 2-rank run two: what
2 ranks gain here is a second core's arithmetic and memory bandwidth, minus one gloo all-reduce per
layer through TCP loopback (tens of microseconds each, more when the ranks share their cores with other
work). On a 2-core machine shared with other jobs the timings vary by 2x from run to run; do not read a
speed-up of TP itself into them. TP pays off when each rank has its own GPU (its own memory bandwidth)
and the link is fast (NVLink): see gpu_tensor_parallel.py.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import torch

import minicohere
from minicohere import parallel


def peak_rss_bytes() -> int:
    """This process's peak resident memory. /proc's VmHWM, where there is one: getrusage's ru_maxrss
    survives exec, so a spawned rank would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bytes_written() -> int | None:
    """Bytes this process has written, sockets included (Linux's /proc/self/io); gloo's messages go
    through TCP sockets, so this is what a rank really sent. None where /proc is missing."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))
    except (OSError, StopIteration):
        return None


def ring_bytes_sent(config, world, dtype_bytes=4) -> float:
    """What one rank sends for one token in a ring: 2 (w-1)/w of each all-reduce's payload, and (w-1)/w of
    the gathered logits."""
    formula = parallel.all_reduce_bytes_per_token(config, dtype_bytes)
    return (world - 1) / world * (2 * formula["all_reduce_bytes"] + formula["all_gather_bytes"])


def decode_on_rank(rank, world, folder, new_tokens, rounds):
    """One rank: load its shard, count the collectives of one decode step, time greedy decoding."""
    import torch.distributed as dist

    tp = world > 1
    model = minicohere.from_pretrained(folder, progress=False, tensor_parallel=tp)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ids = torch.randint(10, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    payload = {"all_reduce": 0, "all_gather": 0, "sent": None}
    if tp:  # the bytes of one decode step's collectives (a forward of one token after the prompt)
        saved = dist.all_reduce, dist.all_gather

        def reduce(t, *a, **k):
            payload["all_reduce"] += t.numel() * t.element_size()
            return saved[0](t, *a, **k)

        def gather(parts, t, *a, **k):
            payload["all_gather"] += t.numel() * t.element_size() * len(parts)
            return saved[1](parts, t, *a, **k)

        dist.all_reduce, dist.all_gather = reduce, gather
        before = bytes_written()
        with torch.no_grad():
            model(ids[:, :1])
        after = bytes_written()
        dist.all_reduce, dist.all_gather = saved
        if before is not None and after is not None:
            payload["sent"] = after - before
    minicohere.generate(model, ids, max_new_tokens=4, eos_token_id=None)  # warm-up
    times = []
    for _ in range(rounds):
        if tp:
            dist.barrier()
        start = time.perf_counter()
        tokens = minicohere.generate(model, ids, max_new_tokens=new_tokens, eos_token_id=None)
        times.append(time.perf_counter() - start)
    peak_rss = peak_rss_bytes()
    return {"seconds": sorted(times)[len(times) // 2], "tokens": tokens, "param_bytes": param_bytes,
            "peak_rss": peak_rss, "payload": payload, "config": model.config}


def run(folder, world, new_tokens, rounds):
    # One process per rank, one thread each; the 1-rank run too, so its peak RSS is its own.
    return parallel.run_on_ranks(decode_on_rank, world, folder, new_tokens, rounds, timeout=1200)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--skip-large", action="store_true")
    args = ap.parse_args()
    models = {"tiny-command-r (bundled)": str(minicohere.bundled_path("tiny-command-r"))}
    tmp = tempfile.TemporaryDirectory()
    if not args.skip_large:
        config = minicohere.CohereConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816,
                                         num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=4,
                                         max_position_embeddings=512, eos_token_id=2, dtype="float32")
        torch.manual_seed(0)
        minicohere.CohereForCausalLM(config).save_pretrained(tmp.name)
        models["random 1024-wide, 8 layers"] = tmp.name
    print(f"| model | ranks | decode tok/s | param MB per rank | peak RSS MB per rank | all-reduce B/token "
          f"(formula) | all-gather B/token (formula) | B sent per rank per token (ring formula) | tokens equal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, folder in models.items():
        first = None
        for world in args.worlds:
            results = run(folder, world, args.new_tokens, args.rounds)
            r0 = results[0]
            first = r0["tokens"] if first is None else first
            same = all(torch.equal(r["tokens"], r0["tokens"]) for r in results) and torch.equal(r0["tokens"], first)
            if world > 1:
                formula = parallel.all_reduce_bytes_per_token(r0["config"], dtype_bytes=4)
                reduce = f"{r0['payload']['all_reduce']} ({formula['all_reduce_bytes']})"
                gather = f"{r0['payload']['all_gather']} ({formula['all_gather_bytes']})"
                sent = f"{r0['payload']['sent']} ({ring_bytes_sent(r0['config'], world):.0f})"
            else:
                reduce = gather = sent = "-"
            tok_s = args.new_tokens / max(r["seconds"] for r in results)
            print(f"| {label} | {world} | {tok_s:.1f} | {r0['param_bytes'] / 1e6:.1f} | "
                  f"{max(r['peak_rss'] for r in results) / 1e6:.0f} | {reduce} | {gather} | {sent} | {same} |", flush=True)
    tmp.cleanup()


if __name__ == "__main__":
    main()
