"""Quantization measured side by side: quality, memory and decode speed per scheme.

    python benchmarks/bench_quant.py [--model PATH] [--parts quality,memory,speed,true-width]
                                     [--threads 1 --rounds 5 --new-tokens 64]

quality     the model (default: the bundled tiny-command-r) over assets/corpus/val.txt in windows of the
            model's context: validation loss, perplexity and its change against fp32, and the mean KL
            divergence KL(fp32 || scheme) of the next-token distributions. Two rows per quantized scheme:
            as it runs (bf16 activations inside the CPU kernels) and with its dequantized weights in an
            fp32 model (the weight rounding alone). Each scheme runs with its default LM head (int8 under
            a 4-bit body); also the head kept in fp32 (`quantize_head=False`) and, under a 4-bit body, the
            head in the body's scheme (`quantize_head=True`).
memory      parameter bytes and the peak RSS of a fresh process that only loads the model, per scheme
            (`from_pretrained(quantize=...)`).
true-width  the same memory measurement on a one-layer c4ai-command-r-v01 (hidden 8192, 64 heads,
            intermediate 22528, vocab 256000; bf16 on disk, about 6 GB), written under /tmp one tensor at a
            time and deleted afterwards. Needs ~7 GB of disk and up to ~10 GB of RAM (the fp32 row).
speed       batch-1 greedy decode tok/s, minicohere and transformers on the same weights, alternating
            within one process, median of --rounds. transformers' quantized CPU path is tried through
            optimum-quanto, torchao and bitsandbytes where they import (run it with a venv that has them:
            python3 -m venv --system-site-packages V && V/bin/pip install --no-deps optimum-quanto torchao
            bitsandbytes accelerate); a backend that fails is named with its error under the table.

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

import minicohere
from minicohere.quant import QuantizedLinear

SCHEMES = [("int8", {}), ("int4", {"group_size": 32}), ("int4", {"group_size": 64}),
           ("int4", {"group_size": 128}), ("int4", {"group_size": 64, "symmetric": True}), ("nf4", {})]


def label(scheme: str, kw: dict) -> str:
    if scheme != "int4":
        return scheme
    return f"int4 g{kw['group_size']}" + (" sym" if kw.get("symmetric") else "")


# ---------------------------------------------------------------------------------------------------
# Quality
# ---------------------------------------------------------------------------------------------------


def val_windows(model_path, window: int) -> torch.Tensor:
    """The validation text as rows of `window` tokens (the remainder dropped)."""
    tok = minicohere.Tokenizer.from_file(Path(model_path) / "tokenizer.json") \
        if (Path(model_path) / "tokenizer.json").exists() else minicohere.Tokenizer.default()
    ids = tok.encode(Path(minicohere.bundled_path("corpus/val.txt")).read_text(), add_special_tokens=False)
    n = len(ids) // window
    return torch.tensor(ids[:n * window]).view(n, window)


@torch.inference_mode()
def evaluate(model, windows: torch.Tensor, reference_logprobs=None, batch: int = 8):
    """Mean next-token loss over every window, and the mean KL(reference || model) per position."""
    losses, kls, logprobs = [], [], []
    for i in range(0, len(windows), batch):
        x = windows[i:i + batch]
        lp = F.log_softmax(model(x).logits.float()[:, :-1], dim=-1)
        losses.append(F.nll_loss(lp.reshape(-1, lp.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"))
        if reference_logprobs is not None:
            ref = reference_logprobs[i // batch]
            kls.append(F.kl_div(lp, ref, log_target=True, reduction="sum"))  # KL(ref || model), summed
        logprobs.append(lp)
    n = windows.shape[0] * (windows.shape[1] - 1)
    loss = float(sum(losses)) / n
    kl = float(sum(kls)) / n if kls else 0.0
    return loss, kl, logprobs


def dequantized_copy(path, scheme, kw, head="auto"):
    """An fp32 model whose linear weights are the quantized ones turned back into fp32: the weight rounding
    alone, without the kernels' bf16 activations."""
    quantized = minicohere.from_pretrained(path, progress=False, quantize=scheme, quantize_head=head, **kw)
    model = minicohere.from_pretrained(path, progress=False)
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if isinstance(module, QuantizedLinear):
                model.get_submodule(name).weight.copy_(module.dequantize())
    return model  # tied: copying into lm_head.weight also changed the embedding, as the quantized model has


def quality(path, out):
    model = minicohere.from_pretrained(path, progress=False)
    windows = val_windows(path, min(256, model.config.max_position_embeddings))
    base, _, ref = evaluate(model, windows)
    rows = [("fp32", "", base, 0.0)]
    bf16 = minicohere.from_pretrained(path, progress=False, dtype="bfloat16")
    loss, kl, _ = evaluate(bf16, windows, ref)
    rows.append(("bf16", "weights and activations", loss, kl))
    for scheme, kw in SCHEMES:
        heads = ("auto", False) if (scheme, kw) in (("int8", {}), ("int4", {"group_size": 64}), ("nf4", {})) \
            else ("auto",)
        if scheme in ("int4", "nf4") and kw.get("group_size", 64) == 64 and not kw.get("symmetric"):
            heads += (True,)  # the 4-bit body with a 4-bit head
        for head in heads:
            q = minicohere.from_pretrained(path, progress=False, quantize=scheme, quantize_head=head, **kw)
            loss, kl, _ = evaluate(q, windows, ref)
            head_name = {False: "fp32", "auto": minicohere.quant.head_scheme(scheme), True: scheme}[head]
            note = f"as run (bf16 activations in the kernels), head {head_name}" + {
                "auto": " (default)", True: " (quantize_head=True)", False: " (quantize_head=False)"}[head]
            rows.append((label(scheme, kw), note, loss, kl))
            if head == "auto":
                loss, kl, _ = evaluate(dequantized_copy(path, scheme, kw), windows, ref)
                rows.append((label(scheme, kw), "weight rounding alone (fp32 activations)", loss, kl))
    print(f"\n### Quality: {Path(path).name} over corpus/val.txt ({windows.numel()} tokens, "
          f"{windows.shape[0]} windows of {windows.shape[1]})\n", file=out)
    print("| scheme | what runs | val loss | perplexity | ppl vs fp32 | mean KL(fp32 ‖ scheme), nats |", file=out)
    print("|---|---|---|---|---|---|", file=out)
    for name, note, loss, kl in rows:
        print(f"| {name} | {note} | {loss:.4f} | {math.exp(loss):.3f} | {100 * (math.exp(loss - base) - 1):+.3f}% "
              f"| {kl:.5f} |", file=out)


# ---------------------------------------------------------------------------------------------------
# Memory: a fresh process per scheme, so each peak RSS is its own
# ---------------------------------------------------------------------------------------------------

LOAD_SNIPPET = r"""
import json, sys, torch, minicohere
from minicohere.quant import parameter_bytes

def status_kib(key):  # VmHWM: the peak RSS, which clear_refs can reset (getrusage's cannot be)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

path, scheme, kw = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
minicohere.from_pretrained(minicohere.bundled_path("tiny-command-r"), progress=False, quantize="int8")  # imports
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM, the peak, to the current RSS
before = status_kib("VmRSS")
if scheme in ("fp32", "bf16"):
    m = minicohere.from_pretrained(path, progress=False, dtype={"fp32": "float32", "bf16": "bfloat16"}[scheme])
    for p in m.parameters():  # touch every weight: a memory-mapped page counts only once read
        float(p.sum())
else:
    m = minicohere.from_pretrained(path, progress=False, quantize=scheme, **kw)
print(json.dumps({"bytes": parameter_bytes(m), "peak_kib": status_kib("VmHWM"), "start_kib": before}))
"""


def measure_load(path, scheme, kw=None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, str(path), scheme, json.dumps(kw or {})],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def memory(path, out, title, disk_dtype, rows=None):
    size = sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))
    print(f"\n### Memory: {title} ({size / 1e6:.1f} MB of {disk_dtype} safetensors on disk)\n", file=out)
    print("| loaded as | parameter bytes | peak RSS while loading | peak RSS minus the process before loading |", file=out)
    print("|---|---|---|---|", file=out)
    rows = rows or [("fp32", {}), ("bf16", {}), ("int8", {}), ("int4", {"group_size": 64}),
                    ("int4", {"group_size": 128}), ("nf4", {})]
    for scheme, kw in rows:
        r = measure_load(path, scheme, kw)
        print(f"| {label(scheme, kw) if scheme not in ('fp32', 'bf16') else scheme} | {r['bytes'] / 1e6:,.1f} MB "
              f"| {r['peak_kib'] / 1024:,.0f} MiB | {(r['peak_kib'] - r['start_kib']) / 1024:,.0f} MiB |",
              file=out, flush=True)


def write_true_width(folder: Path) -> Path:
    """A one-layer c4ai-command-r-v01 in bf16, written tensor by tensor (never an fp32 copy, never all of it
    in memory at once): safetensors' layout is written by hand, each tensor generated in row slices."""
    folder.mkdir(parents=True, exist_ok=True)
    H, I, V, heads = 8192, 22528, 256000, 64
    config = {"vocab_size": V, "hidden_size": H, "intermediate_size": I, "num_hidden_layers": 1,
              "num_attention_heads": heads, "num_key_value_heads": heads, "hidden_act": "silu",
              "max_position_embeddings": 8192, "initializer_range": 0.02, "layer_norm_eps": 1e-5,
              "logit_scale": 0.0625, "pad_token_id": 0, "bos_token_id": 5, "eos_token_id": 255001,
              "tie_word_embeddings": True, "rope_theta": 8000000.0, "use_qk_norm": False,
              "attention_bias": False, "model_type": "cohere", "dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    p = "model.layers.0."
    shapes = {"model.embed_tokens.weight": (V, H), p + "input_layernorm.weight": (H,),
              p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (H, H),
              p + "self_attn.v_proj.weight": (H, H), p + "self_attn.o_proj.weight": (H, H),
              p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
              p + "mlp.down_proj.weight": (H, I), "model.norm.weight": (H,)}
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    g = torch.Generator().manual_seed(0)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for name, shape in shapes.items():
            if len(shape) == 1:
                f.write(torch.ones(shape, dtype=torch.bfloat16).view(torch.int16).numpy().tobytes())
                continue
            for i in range(0, shape[0], 4096):
                rows = torch.randn(min(4096, shape[0] - i), shape[1], generator=g).mul_(0.02).to(torch.bfloat16)
                f.write(rows.view(torch.int16).numpy().tobytes())
    return folder


# ---------------------------------------------------------------------------------------------------
# Decode speed
# ---------------------------------------------------------------------------------------------------


def decode_tps(gen, prompt, n):
    t0 = time.perf_counter()
    out = gen(prompt, n)
    dt = time.perf_counter() - t0
    return n / dt, out


def speed(path, out, threads, rounds, new_tokens):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    prompt = torch.randint(10, 4000, (1, 16))
    cache = os.environ.get("BENCH_QUANT_CACHE", "dynamic" if not has_one_decode_path() else "static")

    def mc_gen(model):
        return lambda x, n: minicohere.generate(model, x, max_new_tokens=n, eos_token_id=None, cache=cache)

    def hf_gen(model):
        model.generation_config.eos_token_id = None
        return lambda x, n: model.generate(x, max_new_tokens=n, do_sample=False, min_new_tokens=0,
                                           pad_token_id=0)

    runs = {}
    runs["minicohere fp32"] = mc_gen(minicohere.from_pretrained(path, progress=False))
    runs["minicohere bf16"] = mc_gen(minicohere.from_pretrained(path, progress=False, dtype="bfloat16"))
    for scheme, kw in [("int8", {}), ("int4", {"group_size": 64}), ("int4", {"group_size": 128}), ("nf4", {})]:
        runs[f"minicohere {label(scheme, kw)}"] = mc_gen(
            minicohere.from_pretrained(path, progress=False, quantize=scheme, **kw))
    runs["minicohere int4 g64, head int4"] = mc_gen(
        minicohere.from_pretrained(path, progress=False, quantize="int4", group_size=64, quantize_head=True))
    runs["minicohere int8, head fp32"] = mc_gen(
        minicohere.from_pretrained(path, progress=False, quantize="int8", quantize_head=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs["transformers fp32"] = hf_gen(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval())
        runs["transformers bf16"] = hf_gen(AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval())
        notes = []
        for name, build in transformers_quantized(path).items():
            try:
                runs[f"transformers + {name}"] = hf_gen(build())
            except Exception as e:  # not installed, or no CPU path: say which and why
                notes.append(f"transformers + {name}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    with torch.no_grad():  # not inference_mode: optimum-quanto's tensors refuse it
        for name, gen in list(runs.items()):
            try:
                gen(prompt, 4)  # warm up, and find the backends that load but cannot run here
            except Exception as e:
                notes.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
                del runs[name]
    times = {k: [] for k in runs}
    with torch.no_grad():
        for _ in range(rounds):
            for name, gen in runs.items():  # alternate, so drift in the machine's load hits every row
                tps, _ = decode_tps(gen, prompt, new_tokens)
                times[name].append(tps)
    print(f"\n### Decode speed: {Path(path).name}, batch 1, greedy, {new_tokens} new tokens after a 16-token "
          f"prompt, {threads} thread(s), minicohere cache={cache!r}, median of {rounds} alternating rounds\n",
          file=out)
    print("| model | tok/s | vs minicohere fp32 |", file=out)
    print("|---|---|---|", file=out)
    base = statistics.median(times["minicohere fp32"])
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.1f} | {statistics.median(ts) / base:.2f}x |", file=out)
    for note in notes:
        print(f"\n{note}", file=out)


def transformers_quantized(path) -> dict:
    """transformers' own quantized CPU paths, each built lazily (any may fail to import or to run here)."""
    from transformers import AutoModelForCausalLM

    def quanto(weights):
        def build():
            from optimum.quanto import freeze, qint4, qint8, quantize as quanto_quantize
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            quanto_quantize(model, weights={"int8": qint8, "int4": qint4}[weights])
            freeze(model)
            return model
        return build

    def torchao_int8():
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
        quantize_(model, Int8WeightOnlyConfig())
        return model

    def torchao_int4():
        from torchao.quantization import Int4WeightOnlyConfig, quantize_
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
        quantize_(model, Int4WeightOnlyConfig(group_size=64))
        return model

    def bitsandbytes_nf4():
        from transformers import BitsAndBytesConfig
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        return AutoModelForCausalLM.from_pretrained(path, device_map="cpu", quantization_config=config).eval()

    def bitsandbytes_int8():
        from transformers import BitsAndBytesConfig
        return AutoModelForCausalLM.from_pretrained(path, device_map="cpu",
                                                    quantization_config=BitsAndBytesConfig(load_in_8bit=True)).eval()

    return {"optimum-quanto int8": quanto("int8"), "optimum-quanto int4": quanto("int4"),
            "torchao int8 (bf16 model)": torchao_int8, "torchao int4 g64 (bf16 model)": torchao_int4,
            "bitsandbytes nf4 (bf16 compute)": bitsandbytes_nf4, "bitsandbytes int8": bitsandbytes_int8}


def has_one_decode_path() -> bool:
    """False for a model.py with a separate static fast path (`fast_decode_step`, as at commit dda2e9e),
    which reads `.weight` directly and cannot run quantized layers; the growing cache runs the modules."""
    import inspect

    return "fast_decode_step" not in inspect.getsource(minicohere.model)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(minicohere.bundled_path("tiny-command-r")))
    ap.add_argument("--parts", default="quality,memory,speed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--true-width-dir", default="/tmp/command-r-v01-one-layer")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    out = sys.stdout
    print(f"`python benchmarks/bench_quant.py --model {args.model} --parts {args.parts}`", file=out)
    if "quality" in parts:
        quality(args.model, out)
    if "memory" in parts:
        memory(args.model, out, Path(args.model).name, "fp32")
    if "true-width" in parts:
        folder = Path(args.true_width_dir)
        try:
            write_true_width(folder)
            # No fp32 row: 2.9 billion weights in fp32 are 11.7 GB, more than this shared machine spares.
            memory(folder, out, "one-layer c4ai-command-r-v01 at true width", "bf16",
                   [("bf16", {}), ("int8", {}), ("int4", {"group_size": 64}), ("int4", {"group_size": 128}),
                    ("nf4", {})])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if "speed" in parts:
        speed(args.model, out, args.threads, args.rounds, args.new_tokens)


if __name__ == "__main__":
    main()
