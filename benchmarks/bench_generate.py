"""Batch-1 greedy decode and prefill speed: minicohere vs transformers' generate, same weights.

    python benchmarks/bench_generate.py [--threads 1 --rounds 5 --new-tokens 128]

A Command-R-shaped model (vocab 32000, hidden 256, 4 layers, 8 heads sharing 2 kv heads, fp32, random
weights) is built by transformers, saved, and loaded by minicohere. Runs alternate between the two
libraries in one process; the table gives the median of the rounds. eos is disabled so both always
generate the full length, and the two outputs are checked to be the same tokens.
The last row times the decode's matrix products alone: fp32 batch-1 decoding reads every weight once
per token, so memory bandwidth, not arithmetic, sets this floor.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torch

import minicohere


def build(tmp: str):
    from transformers import CohereConfig, CohereForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    cfg = CohereConfig(vocab_size=32000, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048,
                       eos_token_id=2, pad_token_id=0, bos_token_id=5)
    torch.manual_seed(0)
    reference = CohereForCausalLM(cfg).eval()
    reference.save_pretrained(tmp)
    # eos off for transformers too, so both always run the full length (rather than min_new_tokens,
    # which would add a logits processor to every one of its steps).
    reference.generation_config.eos_token_id = None
    return reference, minicohere.from_pretrained(tmp, progress=False)


def timed(fn) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def matmuls_only(model, n: int) -> None:
    """The decode's matrix-vector products alone, n tokens' worth: a floor no decode loop can beat.
    Each token streams every weight (the 32000-row LM head is most of them) through memory once."""
    import torch.nn.functional as F

    x, wide = torch.randn(1, model.config.hidden_size), torch.randn(1, model.config.intermediate_size)
    for _ in range(n):
        for layer in model.model.layers:
            a, m = layer.self_attn, layer.mlp
            for w in (a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight,
                      m.gate_proj.weight, m.up_proj.weight):
                F.linear(x, w)
            F.linear(wide, m.down_proj.weight)
        F.linear(x, model.lm_head.weight)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prefill-tokens", type=int, default=512)
    ap.add_argument("--compile", action="store_true", help="also time generate(compile=True)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        reference, ours = build(tmp)
        g = torch.Generator().manual_seed(1)
        prompt = torch.randint(6, 32000, (1, args.prompt_tokens), generator=g)
        long_prompt = torch.randint(6, 32000, (1, args.prefill_tokens), generator=g)
        n = args.new_tokens
        runs = {
            "minicohere": lambda: ours.generate(prompt, max_new_tokens=n, eos_token_id=None),
            "transformers": lambda: reference.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                       max_new_tokens=n, do_sample=False, pad_token_id=0),
        }
        prefill = {
            "minicohere": lambda: ours(long_prompt, logits_to_keep=1),
            "transformers": lambda: reference(long_prompt, logits_to_keep=1),
        }
        if args.compile:  # the compiled decode step; prefill is the same eager forward
            runs["minicohere, compile=True"] = lambda: ours.generate(prompt, max_new_tokens=n, eos_token_id=None,
                                                                     compile=True)
            prefill["minicohere, compile=True"] = prefill["minicohere"]
        runs["matrix products only (floor)"] = lambda: matmuls_only(ours, n)
        decode_s = {k: [] for k in runs}
        prefill_s = {k: [] for k in runs}
        outputs = {}
        with torch.inference_mode():
            for fn in list(runs.values()) + list(prefill.values()):  # warm-up
                fn()
            for _ in range(args.rounds):
                for name in runs:
                    seconds, outputs[name] = timed(runs[name])
                    decode_s[name].append(seconds)
                    if name in prefill:
                        prefill_s[name].append(timed(prefill[name])[0])
        for name in prefill:
            assert torch.equal(outputs[name], outputs["transformers"]), f"{name} generated other tokens"

    tok_s = {k: n / statistics.median(v) for k, v in decode_s.items()}
    pre_s = {k: args.prefill_tokens / statistics.median(v) for k, v in prefill_s.items() if v}
    print(f"\nbatch 1, greedy, prompt {args.prompt_tokens} + {n} new tokens; prefill of {args.prefill_tokens} "
          f"tokens; {args.threads} thread(s); median of {args.rounds} alternating rounds\n")
    print("| | decode tokens/s | prefill tokens/s |")
    print("| --- | ---: | ---: |")
    for name in runs:
        print(f"| {name} | {tok_s[name]:.0f} | {f'{pre_s[name]:.0f}' if name in pre_s else ''} |")
    print(f"| minicohere / transformers | {tok_s['minicohere'] / tok_s['transformers']:.2f}x "
          f"| {pre_s['minicohere'] / pre_s['transformers']:.2f}x |")


if __name__ == "__main__":
    main()
