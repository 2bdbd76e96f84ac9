"""Batch-1 greedy decode and prefill speed: minicohere vs transformers' generate, same weights.

    python benchmarks/bench_generate.py [--threads 1 --rounds 5 --new-tokens 128 --baseline REV --bf16
                                         --cohere2 --cpu-time]

A Command-R-shaped model (vocab 32000, hidden 256, 4 layers, 8 heads sharing 2 kv heads, fp32, random
weights) is built by transformers, saved, and loaded by minicohere. Runs alternate between the two
libraries in one process; the table gives the median of the rounds. eos is disabled so both always
generate the full length, and the two outputs are checked to be the same tokens.
`--baseline REV` also times minicohere/model.py as it was at git revision REV (loaded beside the current one,
sharing its weight tensors), so a change to the decode loop is measured before and after in one process. `--bf16`
adds both libraries in bfloat16 (weights and activations).
The last row times the decode's matrix products alone: fp32 batch-1 decoding reads every weight once
per token, so memory bandwidth, not arithmetic, sets this floor.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings

import torch

import minicohere
from _timing import add_timing_args, apply_timing_args, clock_name, timed


def build(tmp: str, cohere2: bool = False):
    from transformers import Cohere2Config, Cohere2ForCausalLM, CohereConfig, CohereForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    shape = dict(vocab_size=32000, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048,
                 eos_token_id=2, pad_token_id=0, bos_token_id=5)
    if cohere2:  # the same shape as Command R7B's family: 3 sliding layers (window 64) and 1 global one
        cfg, cls = Cohere2Config(**shape, sliding_window=64), Cohere2ForCausalLM
    else:
        cfg, cls = CohereConfig(**shape), CohereForCausalLM
    torch.manual_seed(0)
    reference = cls(cfg).eval()
    reference.save_pretrained(tmp)
    # eos off for transformers too, so both always run the full length (rather than min_new_tokens,
    # which would add a logits processor to every one of its steps).
    reference.generation_config.eos_token_id = None
    return reference, minicohere.from_pretrained(tmp, progress=False)


def load_baseline(rev: str, ours):
    """minicohere's model.py at git revision `rev`, as a separate module, holding `ours`' weights."""
    import importlib.util
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(["git", "-C", root, "show", f"{rev}:minicohere/model.py"], check=True,
                            capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "baseline_model.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("baseline_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_model"] = module
    spec.loader.exec_module(module)
    old = module.CohereForCausalLM(module.CohereConfig.from_dict(ours.config.to_dict())).eval()
    # assign=True: the very same tensors, so both versions read identical memory (a copy would sit in
    # fresh anonymous pages, which decode measurably faster than the memory-mapped checkpoint's).
    old.load_state_dict(ours.state_dict(), assign=True)
    return module, old




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
    add_timing_args(ap)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prefill-tokens", type=int, default=512)
    ap.add_argument("--baseline", metavar="REV", help="also time model.py as of this git revision")
    ap.add_argument("--bf16", action="store_true", help="also time both libraries in bfloat16")
    ap.add_argument("--cohere2", action="store_true",
                    help="a cohere2 model of the same shape (sliding window 64, so decoding runs past it)")
    args = ap.parse_args()
    apply_timing_args(args)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        reference, ours = build(tmp, args.cohere2)
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
        if args.baseline:
            module, old = load_baseline(args.baseline, ours)
            name = f"minicohere at {args.baseline}"
            runs[name] = lambda: module.generate(old, prompt, max_new_tokens=n, eos_token_id=None)
            prefill[name] = lambda: old(long_prompt, logits_to_keep=1)
        if args.bf16:
            import copy

            ours16, reference16 = copy.deepcopy(ours).to(torch.bfloat16), copy.deepcopy(reference).to(torch.bfloat16)
            runs["minicohere bf16"] = lambda: ours16.generate(prompt, max_new_tokens=n, eos_token_id=None)
            runs["transformers bf16"] = lambda: reference16.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False, pad_token_id=0)
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
        if args.bf16:  # the two libraries round differently in bf16: report agreement, do not demand it
            same = (outputs["minicohere bf16"] == outputs["transformers bf16"]).float().mean().item()
            print(f"bf16: {same:.0%} of positions equal between the two libraries")

    tok_s = {k: n / statistics.median(v) for k, v in decode_s.items()}
    pre_s = {k: args.prefill_tokens / statistics.median(v) for k, v in prefill_s.items() if v}
    print(f"\n{'cohere2 (window 64)' if args.cohere2 else 'cohere'}, batch 1, greedy, prompt {args.prompt_tokens} + {n} new tokens; prefill of {args.prefill_tokens} "
          f"tokens; {args.threads} thread(s); median of {args.rounds} alternating rounds; "
          f"{clock_name(args)}\n")
    print("| | decode tokens/s | prefill tokens/s |")
    print("| --- | ---: | ---: |")
    for name in runs:
        print(f"| {name} | {tok_s[name]:.0f} | {f'{pre_s[name]:.0f}' if name in pre_s else ''} |")
    print(f"| minicohere / transformers | {tok_s['minicohere'] / tok_s['transformers']:.2f}x "
          f"| {pre_s['minicohere'] / pre_s['transformers']:.2f}x |")
    if args.baseline:
        old = f"minicohere at {args.baseline}"
        print(f"| minicohere / minicohere at {args.baseline} | {tok_s['minicohere'] / tok_s[old]:.3f}x "
              f"| {pre_s['minicohere'] / pre_s[old]:.3f}x |")
    if args.bf16:
        print(f"| bf16: minicohere / transformers | {tok_s['minicohere bf16'] / tok_s['transformers bf16']:.2f}x | |")


if __name__ == "__main__":
    main()
