"""Expert-parallel decode on this CPU: tokens per second at 1, 2 and 4 ranks (gloo), the bytes each token
sends through the all-to-alls measured against the formula, and the parameter bytes and peak memory of
each rank.

    python benchmarks/bench_expert_parallel.py [--new-tokens 32 --rounds 3 --worlds 1 2 4]

Model: a random cohere2_moe (vocab 8192, hidden 512, 4 layers, 8 heads / 2 kv heads of 64, window 64;
16 experts of width 1024, 2 routed per token plus 1 shared; fp32), saved once and loaded on each rank
with `from_pretrained(..., tensor_parallel=True)`, which reads only that rank's experts. Greedy decode of
a 16-token prompt, eos off, batch 1; every rank's tokens are checked against rank 0's and the 1-rank run.

Each rank is a process with one thread. A decode step at batch 1 has one token: one rank routes it, the
others route nothing, and the all-to-alls (three per MoE layer, through TCP loopback) cost more than the
two experts' arithmetic they move. Expect no speed-up on a 2-core CPU; what the run shows is the memory:
each rank holds 1/world of the experts.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

import minicohere
from bench_parallel import peak_rss_bytes
from minicohere import parallel

CONFIG = dict(model_type="cohere2_moe", vocab_size=8192, hidden_size=512, num_attention_heads=8,
              num_key_value_heads=2, head_dim=64, num_hidden_layers=4, max_position_embeddings=512,
              sliding_window=64, sliding_window_pattern=4, intermediate_size=1024, num_experts=16,
              num_experts_per_tok=2, num_shared_experts=1, eos_token_id=2, pad_token_id=0, bos_token_id=5,
              dtype="float32")


def decode_on_rank(rank, world, folder, new_tokens, rounds):
    """One rank: load its shard, measure the all-to-all bytes of one decode step, time greedy decoding."""
    import torch.distributed as dist

    model = minicohere.from_pretrained(folder, progress=False, tensor_parallel=True)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ids = torch.randint(10, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    sent = {"rows": 0, "counts": 0}
    saved = dist.all_to_all_single

    def counted(out, inp, *a, **k):
        sent["rows" if inp.is_floating_point() else "counts"] += inp.numel() * inp.element_size()
        return saved(out, inp, *a, **k)

    dist.all_to_all_single = counted
    with torch.no_grad():
        model(ids[:, :1])  # one decode-sized step: one token
    dist.all_to_all_single = saved
    minicohere.generate(model, ids, max_new_tokens=4, eos_token_id=None)  # warm-up
    times = []
    for _ in range(rounds):
        dist.barrier()
        start = time.perf_counter()
        tokens = minicohere.generate(model, ids, max_new_tokens=new_tokens, eos_token_id=None)
        times.append(time.perf_counter() - start)
    return {"seconds": sorted(times)[len(times) // 2], "tokens": tokens, "param_bytes": param_bytes,
            "peak_rss": peak_rss_bytes(), "sent": sent, "config": model.config}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        minicohere.CohereForCausalLM(minicohere.CohereConfig.from_dict(CONFIG)).save_pretrained(folder)
        print("| ranks | decode tok/s | param MB per rank | peak RSS MB per rank | all-to-all B/token, all ranks "
              "(formula) | count B per rank and step | tokens equal |")
        print("|---|---|---|---|---|---|---|")
        first = None
        for world in args.worlds:
            results = parallel.run_on_ranks(decode_on_rank, world, folder, args.new_tokens, args.rounds, timeout=1200)
            r0 = results[0]
            first = r0["tokens"] if first is None else first
            same = all(torch.equal(r["tokens"], r0["tokens"]) for r in results) and torch.equal(r0["tokens"], first)
            formula = parallel.all_to_all_bytes_per_token(r0["config"], dtype_bytes=4)
            rows = sum(r["sent"]["rows"] for r in results)
            tok_s = args.new_tokens / max(r["seconds"] for r in results)
            print(f"| {world} | {tok_s:.1f} | {r0['param_bytes'] / 1e6:.1f} | "
                  f"{max(r['peak_rss'] for r in results) / 1e6:.0f} | {rows} ({formula['all_to_all_bytes']}) | "
                  f"{r0['sent']['counts']} | {same} |", flush=True)


if __name__ == "__main__":
    main()
