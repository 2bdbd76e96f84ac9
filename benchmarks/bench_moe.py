"""Mixture-of-experts speed: minicohere's two expert implementations, transformers' two, and a dense model.

    python benchmarks/bench_moe.py [--threads 1 --rounds 3 --new-tokens 32 --prefill-tokens 256 --cpu-time]

A cohere2_moe model (vocab 8192, hidden 256, 4 layers, 8 / 2 heads, window 64; 16 experts of width 512,
2 routed per token plus 1 shared expert; fp32, random weights) is built by transformers, saved, and
loaded by minicohere. Side by side on the same weights, at batch 1 and batch 8:

    minicohere grouped     tokens sorted by expert, one torch._grouped_mm per projection (the default)
    minicohere loop        the teaching version: for each expert, its tokens
    transformers grouped_mm / eager   Cohere2MoeForCausalLM with each of its experts implementations
    dense, same active     minicohere with a plain MLP 3 x 512 wide in every layer: the same parameters
                           per token as the MoE's 2 routed + 1 shared experts, a third of its total

Decode tokens/s is batch x (n - 1) new tokens over the time generate(n) takes beyond generate(1), so the
prompt is not counted; prefill tokens/s is one forward over batch x prefill-tokens. eos is off and the
greedy tokens of every implementation are checked to be transformers' own. Median of alternating rounds.
The lesson of the last row: compute follows the active parameters, memory the total.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings

import torch

import minicohere
from _timing import add_timing_args, apply_timing_args, clock_name, timed

SHAPE = dict(vocab_size=8192, hidden_size=256, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
             num_hidden_layers=4, max_position_embeddings=2048, sliding_window=64, sliding_window_pattern=4,
             eos_token_id=2, pad_token_id=0, bos_token_id=5, intermediate_size=512, num_experts=16,
             num_experts_per_tok=2, num_shared_experts=1, rope_parameters={"rope_type": "default", "rope_theta": 1e4})


def build(tmp: str):
    from transformers import Cohere2MoeConfig, Cohere2MoeForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    torch.manual_seed(0)
    reference = Cohere2MoeForCausalLM(Cohere2MoeConfig(**SHAPE)).eval()
    with torch.no_grad():  # a router that spreads tokens over the experts, as a trained one does
        for layer in reference.model.layers:
            layer.mlp.gate.weight.normal_(0, 1)
    reference.save_pretrained(tmp)
    reference.generation_config.eos_token_id = None
    ours = minicohere.from_pretrained(tmp, progress=False)
    active = SHAPE["intermediate_size"] * (SHAPE["num_experts_per_tok"] + SHAPE["num_shared_experts"])
    dense_config = minicohere.CohereConfig.from_dict({
        **ours.config.to_dict(), "mlp_layer_types": ["dense"] * SHAPE["num_hidden_layers"],
        "prefix_dense_intermediate_size": active, "prefix_dense_sliding_window_pattern": 4})
    torch.manual_seed(0)
    dense = minicohere.CohereForCausalLM(dense_config).eval()
    return reference, ours, dense


def set_experts(model, implementation: str) -> None:
    for m in model.modules():
        if isinstance(m, minicohere.CohereExperts):
            m.implementation = implementation


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing_args(ap)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prefill-tokens", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    apply_timing_args(args)
    warnings.simplefilter("ignore")
    n = args.new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        reference, ours, dense = build(tmp)

        def ours_as(implementation, model=ours):
            def run(ids, new):
                set_experts(model, implementation)
                return model.generate(ids, max_new_tokens=new, eos_token_id=None)

            def forward(ids):
                set_experts(model, implementation)
                return model(ids, logits_to_keep=1)
            return run, forward

        def theirs_as(implementation):
            def run(ids, new):
                reference.set_experts_implementation(implementation)
                return reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                          do_sample=False, pad_token_id=0)

            def forward(ids):
                reference.set_experts_implementation(implementation)
                return reference(ids, logits_to_keep=1)
            return run, forward

        contenders = {"minicohere grouped": ours_as("grouped"), "minicohere loop": ours_as("loop"),
                      "transformers grouped_mm": theirs_as("grouped_mm"), "transformers eager": theirs_as("eager"),
                      "dense, same active parameters": ours_as("grouped", dense)}
        results = {}
        g = torch.Generator().manual_seed(1)
        for batch in args.batches:
            prompt = torch.randint(6, SHAPE["vocab_size"], (batch, args.prompt_tokens), generator=g)
            long_prompt = torch.randint(6, SHAPE["vocab_size"], (batch, args.prefill_tokens), generator=g)
            times = {name: ([], [], []) for name in contenders}
            with torch.inference_mode():
                expected = contenders["transformers grouped_mm"][0](prompt, n)
                for name, (run, forward) in contenders.items():
                    out = run(prompt, n)  # warm-up, and the tokens checked
                    if not name.startswith("dense"):
                        assert torch.equal(out, expected), f"{name} generated other tokens than transformers"
                    forward(long_prompt)
                for _ in range(args.rounds):
                    for name, (run, forward) in contenders.items():
                        full, one, pre = times[name]
                        full.append(timed(lambda: run(prompt, n))[0])
                        one.append(timed(lambda: run(prompt, 1))[0])
                        pre.append(timed(lambda: forward(long_prompt))[0])
            for name, (full, one, pre) in times.items():
                decode = batch * (n - 1) / max(statistics.median(full) - statistics.median(one), 1e-9)
                results[name, batch] = (decode, batch * args.prefill_tokens / statistics.median(pre))

    total = sum(p.numel() for p in ours.parameters())
    print(f"\ncohere2_moe, {SHAPE['num_experts']} experts of width {SHAPE['intermediate_size']}, top-"
          f"{SHAPE['num_experts_per_tok']} + {SHAPE['num_shared_experts']} shared; {total / 1e6:.1f}M parameters "
          f"(dense model: {sum(p.numel() for p in dense.parameters()) / 1e6:.1f}M); greedy, prompt "
          f"{args.prompt_tokens} + {n} new tokens; prefill of {args.prefill_tokens} tokens per row; "
          f"{args.threads} thread(s); median of {args.rounds} alternating rounds; "
          f"{clock_name(args)}\n")
    header = " | ".join(f"decode b{b} tok/s | prefill b{b} tok/s" for b in args.batches)
    print(f"| | {header} |")
    print("| --- |" + " ---: |" * (2 * len(args.batches)))
    for name in contenders:
        cells = " | ".join(f"{results[name, b][0]:.0f} | {results[name, b][1]:.0f}" for b in args.batches)
        print(f"| {name} | {cells} |")
    ratio = " | ".join(f"{results['minicohere grouped', b][0] / results['transformers grouped_mm', b][0]:.2f}x | "
                       f"{results['minicohere grouped', b][1] / results['transformers grouped_mm', b][1]:.2f}x"
                       for b in args.batches)
    print(f"| minicohere grouped / transformers grouped_mm | {ratio} |")


if __name__ == "__main__":
    main()
