"""On a GPU: minicohere vs transformers at Command-R's true width (2 layers, random weights, fp16).

    python benchmarks/gpu_true_width.py [--layers 2 --dtype float16] [--quantize int4 --group-size 64]

hidden 8192, 64 heads (MHA, like c4ai-command-r-v01), intermediate 22528, vocab 256000, rope_theta 8e6,
logit_scale 0.0625. The reference is built by transformers, saved sharded in fp16, and loaded by
minicohere; both run the same prompts. Prints the relative error of the logits and of every layer's
hidden state, and exits non-zero when they disagree beyond fp16 tolerance. Needs about 16 GB of GPU memory.

--quantize int8 | int4 | nf4 loads minicohere's side with `from_pretrained(quantize=...)` (quantized on the
GPU tensor by tensor) and adds its parameter bytes, the peak GPU memory while loading and running, and the
quantized model's agreement with the fp16 reference; the tolerance then defaults to a loose 0.35, since
the difference is the quantization error, not a bug. (Not run in this project: its machines have no GPU.)
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import warnings

import torch


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    ap.add_argument("--tolerance", type=float, default=None, help="default 2e-2, or 0.35 with --quantize")
    ap.add_argument("--quantize", default=None, choices=["int8", "int4", "nf4"])
    ap.add_argument("--group-size", type=int, default=64)
    args = ap.parse_args()
    if args.tolerance is None:
        args.tolerance = 0.35 if args.quantize else 2e-2
    if not torch.cuda.is_available():
        sys.exit("no GPU here: this check runs only where CUDA is available")
    warnings.simplefilter("ignore")
    from transformers import CohereConfig, CohereForCausalLM
    from transformers.utils import logging

    import minicohere

    logging.disable_progress_bar()
    dtype = getattr(torch, args.dtype)
    cfg = CohereConfig(hidden_size=8192, num_attention_heads=64, num_key_value_heads=64, intermediate_size=22528,
                       vocab_size=256000, num_hidden_layers=args.layers, rope_theta=8e6, logit_scale=0.0625)
    torch.manual_seed(0)
    with torch.device("cuda"):
        reference = CohereForCausalLM(cfg).to(dtype).eval()
        with torch.no_grad():  # embeddings of unit scale give O(1) logits instead of near-zero ones
            reference.model.embed_tokens.weight.normal_(0, 1.0)
    prompts = torch.randint(6, 255000, (2, 64), generator=torch.Generator().manual_seed(1)).cuda()
    with torch.no_grad():
        theirs = reference(prompts, output_hidden_states=True)
    theirs_logits, theirs_hidden = theirs.logits.float().cpu(), [h.float().cpu() for h in theirs.hidden_states]
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp, max_shard_size="4GB")
        del reference, theirs
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        quant = {"quantize": args.quantize, "group_size": args.group_size} if args.quantize else {}
        ours = minicohere.from_pretrained(tmp, dtype=dtype, device="cuda", **quant)
        load_peak = torch.cuda.max_memory_allocated()
        with torch.no_grad():
            got = ours(prompts, output_hidden_states=True)
            torch.cuda.synchronize()
    report = {
        "gpu": torch.cuda.get_device_name(),
        "dtype": args.dtype,
        "quantize": args.quantize and f"{args.quantize}" + (f" g{args.group_size}" if args.quantize == "int4" else ""),
        "parameter_bytes": minicohere.parameter_bytes(ours),
        "peak_gpu_bytes_loading": load_peak,
        "peak_gpu_bytes_total": torch.cuda.max_memory_allocated(),
        "layers": args.layers,
        "logits_std": round(theirs_logits.std().item(), 4),
        "logits_rel_err": rel(got.logits.float().cpu(), theirs_logits),
        "hidden_rel_err": [rel(h.float().cpu(), t) for h, t in zip(got.hidden_states, theirs_hidden)],
        "argmax_agreement": (got.logits.float().cpu().argmax(-1) == theirs_logits.argmax(-1)).float().mean().item(),
    }
    print(json.dumps(report, indent=2))
    if report["logits_rel_err"] > args.tolerance:
        sys.exit(f"logits differ: relative error {report['logits_rel_err']:.3g} > {args.tolerance}")


if __name__ == "__main__":
    main()
