"""How much memory the real Command-R family needs per quantization scheme, and which GPUs it fits.

    python benchmarks/memory_table.py [--overhead-gb 1.5] [--group-size 64]

Arithmetic from the configs, nothing loaded. The configs are those listed in ../shared/command-r/CONFIGS.md
(c4ai-command-r-v01, -08-2024, -plus, aya-23 from the checkpoints' config.json; the cohere2 models,
Command R7B, Command A and Tiny Aya, from public third-party tables, as CONFIGS.md says: treat those rows
as expectations until checked against a real config.json).

weights   every linear layer (the tied embedding / LM head included, quantized once as minicohere does by
          default) at the scheme's bits per weight, scales included (minicohere.quant.bits_per_weight); the
          LayerNorm weights in bf16.
KV cache  bf16 keys and values for one sequence: 2 x layers x kv_heads x head_dim x tokens x 2 bytes. A
          cohere2 sliding-window layer keeps only its last `window` tokens (3 of every 4 layers).
fits      weights + KV cache + `--overhead-gb` (CUDA context, activations, allocator slack: an allowance,
          not a measurement) at most the GPU's memory, taken as the marketed GB (10^9 bytes).

The second table is Command A+ (`cohere2_moe`, a mixture of experts). Its config.json cannot be read
here: its figures (about 218B parameters in total, about 25B active per token; 128 experts, 8 routed per
token plus 1 shared) come from third-party summaries, and the table says so. A mixture of experts must
hold every expert (memory follows the total) but reads only the chosen ones per token (a decode step's
bytes follow the active parameters). Its KV cache needs the attention shape, which those summaries do
not give: `kv_bytes_for_config` computes it from any minicohere config once a config.json is at hand.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from minicohere.quant import bits_per_weight


@dataclass
class Family:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int = 256000
    head_dim: int | None = None
    qk_norm: bool = False
    window: int | None = None  # cohere2: sliding-window layers (3 of every 4) cache at most this many tokens

    @property
    def dim(self) -> int:
        return self.head_dim or self.hidden // self.heads


# ../shared/command-r/CONFIGS.md
FAMILY = [
    Family("c4ai-command-r-v01 (35B)", 8192, 40, 64, 64, 22528),
    Family("c4ai-command-r-08-2024 (32B)", 8192, 40, 64, 8, 24576),
    Family("c4ai-command-r-plus (104B)", 12288, 64, 96, 8, 33792, qk_norm=True),
    Family("aya-23-8B", 4096, 32, 32, 8, 14336),
    Family("aya-23-35B", 8192, 40, 64, 64, 22528),
    Family("c4ai-command-r7b-12-2024 (cohere2)", 4096, 32, 32, 8, 14336, head_dim=128, window=4096),
    Family("command-a-03-2025 (cohere2)", 12288, 64, 96, 8, 36864, head_dim=128, window=4096),
    Family("tiny-aya (cohere2)", 2048, 36, 16, 4, 11008, vocab=262144, head_dim=128, window=4096),
]
SCHEMES = ["bf16", "int8", "int4", "nf4"]
GPUS = [16, 24, 48, 80]


def linear_weights(f: Family) -> int:
    """Weights in linear layers: per layer q, k, v, o and the MLP's three; plus the tied embedding/head."""
    attn = f.hidden * f.heads * f.dim * 2 + f.hidden * f.kv_heads * f.dim * 2
    mlp = 3 * f.hidden * f.intermediate
    return f.layers * (attn + mlp) + f.vocab * f.hidden


def norm_weights(f: Family) -> int:
    per_layer = f.hidden + ((f.heads + f.kv_heads) * f.dim if f.qk_norm else 0)
    return f.layers * per_layer + f.hidden


def weight_bytes(f: Family, scheme: str, group_size: int = 64) -> float:
    return linear_weights(f) * bits_per_weight(scheme, group_size) / 8 + norm_weights(f) * 2


def kv_bytes(f: Family, tokens: int) -> int:
    per_token_per_layer = 2 * f.kv_heads * f.dim * 2  # keys and values, bf16
    if f.window is None:
        return f.layers * per_token_per_layer * tokens
    full = f.layers // 4
    return per_token_per_layer * (full * tokens + (f.layers - full) * min(tokens, f.window))


def kv_bytes_for_config(config, tokens: int, batch: int = 1, bytes_per_number: int = 2) -> int:
    """The KV cache of `batch` sequences of `tokens` for a minicohere CohereConfig of any family (cohere,
    cohere2, cohere2_moe): each layer by its own type (`config.layer_types`), a sliding layer keeping at
    most `config.sliding_window` tokens, as minicohere's StaticKVCache allocates it."""
    per_token = 2 * config.num_key_value_heads * config.head_dim * bytes_per_number  # keys and values
    slots = sum(min(tokens, config.sliding_window) if kind == "sliding_attention" else tokens
                for kind in config.layer_types)
    return batch * per_token * slots


@dataclass
class MoeFamily:
    """A mixture of experts known only by its parameter counts (no config.json to read)."""

    name: str
    total: float  # parameters held
    active: float  # parameters used per token
    experts: int
    routed_per_token: int
    shared: int
    source: str


COMMAND_A_PLUS = MoeFamily("command-a-plus-05-2026 (cohere2_moe)", 218e9, 25e9, experts=128, routed_per_token=8,
                           shared=1, source="third-party summaries (not its config.json, which cannot be read here)")
MOE_GPUS = [80, 141]  # A100/H100 80 GB, H200 141 GB


def gpus_needed(weight_bytes_: float, gpu_gb: int, overhead_gb: float) -> int:
    """GPUs of `gpu_gb` that hold the weights when each also keeps `overhead_gb` free (KV cache excluded)."""
    usable = (gpu_gb - overhead_gb) * 1e9
    return max(1, -int(-weight_bytes_ // usable))


def moe_table(family: MoeFamily = COMMAND_A_PLUS, overhead_gb: float = 1.5, group_size: int = 64) -> str:
    """Total versus active bytes per scheme, and how many 80 GB / 141 GB GPUs hold the weights."""
    lines = [f"{family.name}: {family.total / 1e9:.0f}B parameters in total, {family.active / 1e9:.0f}B active per "
             f"token ({family.experts} experts, {family.routed_per_token} routed per token + {family.shared} shared); "
             f"figures from {family.source}.", "",
             "| scheme | weights held (total) | weights read per token (active) | "
             + " | ".join(f"{g} GB GPUs" for g in MOE_GPUS) + " |",
             "|---|---|---|" + "---|" * len(MOE_GPUS)]
    for scheme in ("bf16", "int8", "int4"):
        bits = bits_per_weight(scheme, group_size)
        total, active = family.total * bits / 8, family.active * bits / 8
        label = f"{scheme} g{group_size}" if scheme == "int4" else scheme
        lines.append(f"| {label} | {total / 1e9:.0f} GB | {active / 1e9:.1f} GB | "
                     + " | ".join(str(gpus_needed(total, g, overhead_gb)) for g in MOE_GPUS) + " |")
    return "\n".join(lines)


def fits(total_bytes: float) -> str:
    ok = [f"{g}" for g in GPUS if total_bytes <= g * 1e9]
    return ", ".join(ok) if ok else "none (multi-GPU)"


def table(overhead_gb: float = 1.5, group_size: int = 64) -> str:
    lines = [f"| model | params | KV 8k | KV 128k | " + " | ".join(
        f"{s}{f' g{group_size}' if s == 'int4' else ''}: weights / fits 8k / fits 128k" for s in SCHEMES) + " |",
        "|---|---|---|---|" + "---|" * len(SCHEMES)]
    for f in FAMILY:
        params = linear_weights(f) + norm_weights(f)
        kv8, kv128 = kv_bytes(f, 8192), kv_bytes(f, 131072)
        cells = []
        for s in SCHEMES:
            w = weight_bytes(f, s, group_size)
            extra = overhead_gb * 1e9
            cells.append(f"{w / 1e9:.1f} GB / {fits(w + kv8 + extra)} / {fits(w + kv128 + extra)}")
        lines.append(f"| {f.name} | {params / 1e9:.2f} B | {kv8 / 1e9:.2f} GB | {kv128 / 1e9:.1f} GB | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--overhead-gb", type=float, default=1.5)
    ap.add_argument("--group-size", type=int, default=64)
    args = ap.parse_args()
    print(f"`python benchmarks/memory_table.py --overhead-gb {args.overhead_gb} --group-size {args.group_size}`"
          f" (GPU sizes in GB that hold weights + the KV cache of one sequence + {args.overhead_gb} GB)\n")
    print(table(args.overhead_gb, args.group_size))
    print(f"\nMixture of experts: GPUs that hold the weights, each keeping {args.overhead_gb} GB free (KV cache "
          "excluded: the attention shape is not public)\n")
    print(moe_table(COMMAND_A_PLUS, args.overhead_gb, args.group_size))


if __name__ == "__main__":
    main()
