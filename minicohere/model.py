"""minicohere: Cohere's Command-R in one file, read top to bottom in the order the course teaches it.

    1. CohereConfig             the numbers that describe a checkpoint, cohere or cohere2  (notebooks 00, 10, 13)
    2. token embedding          nn.Embedding, shared with the LM head           (notebook 02)
    3. CohereLayerNorm          mean-centred, weight only, computed in fp32     (notebook 03)
    4. rotary embedding         interleaved pairs, plus the scaled variants     (notebook 04)
    5. CohereAttention          MHA / GQA / MQA, optional q/k norm, sliding windows  (notebooks 05, 13)
    6. CohereMLP, the block     SiLU-gated MLP and the parallel residual block  (notebook 06)
       CohereSparseMoeBlock     cohere2_moe's mixture of experts: router, experts, shared expert  (notebook 17)
    7. CohereForCausalLM        final norm, tied head times logit_scale, loss   (notebook 07)
    8. KV caches                growing, preallocated, ring buffers for windows  (notebooks 08, 13)
    9. sampling and generate    warpers as pure functions, greedy, streaming    (notebook 09)

The newer family (Hugging Face `model_type: "cohere2"`: Command R7B, Command A, Tiny Aya) is the same
network configured differently, not a second model. `config.model_type` says which family a checkpoint
is; `config.layer_types` gives each layer "sliding_attention" or "full_attention" (older files spell it
`sliding_window_pattern`: layer i slides unless (i + 1) % pattern == 0). A sliding layer rotates its
queries and keys (RoPE) and attends over its last `config.sliding_window` tokens only
(`sliding_window_mask`); a full layer attends over everything and, in cohere2, uses no positional
encoding at all (NoPE, `config.uses_rope`). `StaticKVCache` keeps only `sliding_window` keys and values
for a sliding layer, in a ring buffer (`StaticKVCache.ring`, `ring_slot_positions`); the global layers
keep them all.

Command A+ (`model_type: "cohere2_moe"`) is cohere2 with a mixture of experts in place of the MLP in
its "sparse" layers (`config.mlp_layer_types`; "dense" layers keep a plain MLP of their own width), an
explicit `head_dim`, and RMSNorm where the config gives `rms_norm_eps`. Its dense prefix layers may
have a sliding pattern of their own, and rotate even when global if that pattern is 1
(`config.layer_uses_rope`).

Generation has one decode path: the prompt goes through `CohereForCausalLM.forward`, every later token
through `CohereForCausalLM.decode_step`, which runs the same modules (so any module that replaces an
nn.Linear, such as a quantized one, runs too) with the per-step work (rotations, masks, checks) done
once per `generate` call instead of once per token.

Loading and saving real checkpoints (notebook 10) lives in `checkpoint.py`. Parameter names follow the
Hugging Face checkpoints (`q_proj`, `input_layernorm`, `rope_theta`) so weights load by name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------
# 1. Configuration
# ---------------------------------------------------------------------------------------------------

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")
MODEL_TYPES = ("cohere", "cohere2", "cohere2_moe")
SLIDING_TYPES = ("cohere2", "cohere2_moe")  # the families whose layers may attend over a sliding window
LAYER_TYPES = ("sliding_attention", "full_attention")
MLP_LAYER_TYPES = ("dense", "sparse")  # cohere2_moe: a plain MLP, or the mixture of experts (section 6)
# cohere2_moe's fields: written to (and read from) its config.json only.
MOE_FIELDS = ("num_experts", "num_experts_per_tok", "expert_selection_fn", "norm_topk_prob", "num_shared_experts",
              "shared_expert_combination_strategy", "mlp_layer_types", "prefix_dense_intermediate_size",
              "prefix_dense_sliding_window_pattern", "rms_norm_eps")

# Keys that Hugging Face writes into config.json for its own bookkeeping; they say nothing about the
# network, so reading a checkpoint ignores them.
_HF_BOOKKEEPING_KEYS = {
    "architectures", "transformers_version", "_name_or_path", "auto_map",
    "output_hidden_states", "output_attentions", "return_dict", "chunk_size_feed_forward",
    "is_encoder_decoder", "id2label", "label2id", "problem_type", "torchscript", "pretraining_tp",
    "_attn_implementation_autoset", "tie_encoder_decoder", "use_return_dict",
}


@dataclass
class CohereConfig:
    """Every field of transformers' `CohereConfig`, with the same defaults (those of c4ai-command-r-v01).

    `rope_parameters` holds the rotary settings: `rope_type` (one of ROPE_TYPES), `rope_theta`, and for
    the scaled types their own keys (`factor`, ...). Older config files spell the base `rope_theta` at
    the top level and the scaling `rope_scaling`; `from_dict` accepts both spellings.
    """

    vocab_size: int = 256000
    hidden_size: int = 8192
    intermediate_size: int = 22528
    logit_scale: float = 0.0625
    num_hidden_layers: int = 40
    num_attention_heads: int = 64
    num_key_value_heads: int | None = None  # None means MHA: as many kv heads as query heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 5
    eos_token_id: int | list[int] | None = 255001
    tie_word_embeddings: bool = True
    # transformers >= 5 falls back to a base of 500000 when a config names none; real checkpoints always do.
    rope_parameters: dict = field(default_factory=lambda: {"rope_type": "default", "rope_theta": 500000.0})
    attention_bias: bool = False
    attention_dropout: float = 0.0
    use_qk_norm: bool = False
    dtype: str | None = None  # the checkpoint's storage dtype ("float16", "bfloat16", ...), if it says
    # The newer family (cohere2: Command R7B, Command A, Tiny Aya) is the same network configured
    # differently: each layer attends over a sliding window (with RoPE) or globally (no positions at all).
    model_type: str = "cohere"  # "cohere" (Command-R, R+, Aya 23), "cohere2" or "cohere2_moe" (Command A+)
    layer_types: list[str] | None = None  # per layer, "sliding_attention" or "full_attention"
    sliding_window: int | None = None  # keys a sliding layer sees, its own token included
    # Width of one attention head. cohere and cohere2 derive it (hidden_size // num_attention_heads, set
    # here whatever is passed); cohere2_moe states it (transformers' default: 128).
    head_dim: int | None = None
    # cohere2_moe (Command A+): a mixture of experts in place of the MLP in most layers (section 6).
    num_experts: int = 8  # routed experts per MoE layer
    num_experts_per_tok: int = 2  # how many of them each token goes through (top-k)
    expert_selection_fn: str = "softmax"  # the top-k logits' weights: "softmax" over the k, or "sigmoid"
    norm_topk_prob: bool = True  # sigmoid only: divide the k weights by their sum
    num_shared_experts: int = 0  # an MLP every token goes through, intermediate_size * this wide
    shared_expert_combination_strategy: str = "average"  # routed and shared outputs: "average" or "sum"
    mlp_layer_types: list[str] | None = None  # per layer, "dense" (a plain MLP) or "sparse" (the experts)
    prefix_dense_intermediate_size: int | None = None  # the dense layers' width (None: intermediate_size)
    prefix_dense_sliding_window_pattern: int = 1  # the dense prefix's own pattern; 1 also gives it RoPE
    rms_norm_eps: float | None = None  # set: the norms are RMSNorm, not Cohere's LayerNorm
    # The older spelling of layer_types: layer i slides unless (i + 1) % pattern == 0. Read, never stored.
    sliding_window_pattern: dataclasses.InitVar[int | None] = None
    # cohere2_moe's older spelling of mlp_layer_types: the first k layers dense. Read, never stored.
    first_k_dense_replace: dataclasses.InitVar[int | None] = None

    def __post_init__(self, sliding_window_pattern=None, first_k_dense_replace=None):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type={self.model_type!r} is not supported; minicohere runs {MODEL_TYPES}")
        if self.model_type == "cohere2_moe":
            self.head_dim = 128 if self.head_dim is None else self.head_dim  # Cohere2MoeConfig's default
        else:  # derived, so a copy with another width or head count (dataclasses.replace) stays consistent
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.model_type in SLIDING_TYPES:
            if self.sliding_window is None:
                self.sliding_window = 4096  # transformers' Cohere2Config and Cohere2MoeConfig default
            dense = (first_k_dense_replace or 0) if self.model_type == "cohere2_moe" else 0
            if self.layer_types is None:
                # cohere2_moe's dense prefix counts its own pattern; the MoE layers after it restart at 0
                pattern = sliding_window_pattern or 4
                prefix = self.prefix_dense_sliding_window_pattern
                self.layer_types = ([_layer_kind(i, prefix) for i in range(dense)]
                                    + [_layer_kind(i, pattern) for i in range(self.num_hidden_layers - dense)])
            if self.model_type == "cohere2_moe" and self.mlp_layer_types is None:
                self.mlp_layer_types = ["dense" if i < dense else "sparse" for i in range(self.num_hidden_layers)]
        elif self.layer_types is None or set(self.layer_types) == {"full_attention"}:
            # Command-R's layers are all global, so the list follows the depth (also when a copy of a
            # config changes num_hidden_layers, as dataclasses.replace does in the course).
            self.layer_types = ["full_attention"] * self.num_hidden_layers
        self.layer_types = list(self.layer_types)
        self.rope_parameters = dict(self.rope_parameters or {})
        rp = self.rope_parameters
        rp["rope_type"] = rp.pop("type", None) or rp.get("rope_type", "default")
        rp.setdefault("rope_theta", 500000.0)
        self.validate()

    def uses_rope(self, layer_type: str) -> bool:
        """Whether layers of this type rotate queries and keys. Command-R: every layer. cohere2: only the
        sliding ones; its global layers use no positional encoding at all (NoPE) and see position only
        through causality and what the sliding layers below them wrote into the residual stream."""
        return self.model_type == "cohere" or layer_type == "sliding_attention"

    def layer_uses_rope(self, layer_idx: int) -> bool:
        """uses_rope for one layer: cohere2_moe's dense prefix rotates even its global layers when the
        prefix's own pattern is 1 (all global), as transformers' Cohere2MoeAttention does."""
        forced = (self.model_type == "cohere2_moe" and self.mlp_layer_types[layer_idx] == "dense"
                  and self.prefix_dense_sliding_window_pattern == 1)
        return forced or self.uses_rope(self.layer_types[layer_idx])

    def mlp_width(self, layer_idx: int) -> int:
        """The intermediate size of layer `layer_idx`'s plain MLP (cohere2_moe's dense layers may differ)."""
        if self.model_type == "cohere2_moe" and self.mlp_layer_types[layer_idx] == "dense":
            return self.prefix_dense_intermediate_size or self.intermediate_size
        return self.intermediate_size

    @property
    def rope_theta(self) -> float:
        return self.rope_parameters["rope_theta"]

    def validate(self) -> None:
        """Reject, with the field and value at fault, what this model cannot run."""
        if self.model_type != "cohere2_moe" and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} is not divisible by "
                             f"num_key_value_heads={self.num_key_value_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; known: {sorted(ACTIVATIONS)}")
        rope_type = self.rope_parameters["rope_type"]
        if rope_type not in ROPE_TYPES:
            raise ValueError(f"rope_parameters.rope_type={rope_type!r} is not supported; known: {ROPE_TYPES}")
        needs = {"linear": ["factor"], "dynamic": ["factor"], "yarn": ["factor"],
                 "llama3": ["factor", "low_freq_factor", "high_freq_factor"]}.get(rope_type, [])
        for key in needs:
            if self.rope_parameters.get(key) is None:
                raise ValueError(f"rope_parameters of rope_type={rope_type!r} needs {key!r}")
        if rope_type in ("yarn", "llama3"):
            self.rope_parameters.setdefault("original_max_position_embeddings", self.max_position_embeddings)
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for num_hidden_layers="
                             f"{self.num_hidden_layers}")
        allowed = LAYER_TYPES if self.model_type in SLIDING_TYPES else ("full_attention",)
        for kind in self.layer_types:
            if kind not in allowed:
                raise ValueError(f"layer_types holds {kind!r}; model_type={self.model_type!r} knows {allowed}")
        if "sliding_attention" in self.layer_types and not (isinstance(self.sliding_window, int)
                                                            and self.sliding_window > 0):
            raise ValueError(f"sliding_window={self.sliding_window!r} must be a positive number of tokens")
        if self.model_type in SLIDING_TYPES and self.use_qk_norm:
            raise ValueError(f"use_qk_norm=True: {self.model_type} models have no q/k norm")
        if self.model_type == "cohere2_moe":
            self.validate_moe()

    def validate_moe(self) -> None:
        """cohere2_moe's own fields, each named with its value when this model cannot run it."""
        if not (isinstance(self.head_dim, int) and self.head_dim > 0 and self.head_dim % 2 == 0):
            raise ValueError(f"head_dim={self.head_dim!r} must be a positive even number (RoPE turns pairs)")
        if len(self.mlp_layer_types) != self.num_hidden_layers:
            raise ValueError(f"mlp_layer_types has {len(self.mlp_layer_types)} entries for num_hidden_layers="
                             f"{self.num_hidden_layers}")
        for kind in self.mlp_layer_types:
            if kind not in MLP_LAYER_TYPES:
                raise ValueError(f"mlp_layer_types holds {kind!r}; cohere2_moe knows {MLP_LAYER_TYPES}")
        if not 1 <= self.num_experts_per_tok <= self.num_experts:
            raise ValueError(f"num_experts_per_tok={self.num_experts_per_tok} must be between 1 and "
                             f"num_experts={self.num_experts}")
        if self.expert_selection_fn not in ("softmax", "sigmoid"):
            raise ValueError(f"expert_selection_fn={self.expert_selection_fn!r}: use 'softmax' or 'sigmoid'")
        if self.shared_expert_combination_strategy not in ("average", "sum"):
            raise ValueError(f"shared_expert_combination_strategy={self.shared_expert_combination_strategy!r}: "
                             "use 'average' or 'sum'")
        if self.num_shared_experts < 0:
            raise ValueError(f"num_shared_experts={self.num_shared_experts} must be >= 0")
        if self.prefix_dense_sliding_window_pattern < 1:
            raise ValueError(f"prefix_dense_sliding_window_pattern={self.prefix_dense_sliding_window_pattern} "
                             "must be >= 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CohereConfig":
        """Build a config from a config.json dict in either spelling found in the wild."""
        d = dict(d)
        d.setdefault("model_type", "cohere")
        if d["model_type"] not in SLIDING_TYPES:  # cohere2 keys in a cohere file would mean nothing there
            for key in ("layer_types", "sliding_window", "sliding_window_pattern"):
                if d.get(key) is not None:
                    raise ValueError(f"{key}={d[key]!r} given for model_type={d['model_type']!r}; only "
                                     "'cohere2' has sliding-window layers")
        rope = dict(d.pop("rope_parameters", None) or d.pop("rope_scaling", None) or {})
        d.pop("rope_scaling", None)
        if "rope_theta" in d:  # c4ai files: the base sits at the top level
            rope.setdefault("rope_theta", d.pop("rope_theta"))
        if rope:
            d["rope_parameters"] = rope
        dtype = d.pop("dtype", None) or d.pop("torch_dtype", None)
        d.pop("torch_dtype", None)
        d["dtype"] = str(dtype).replace("torch.", "") if dtype is not None else None
        names = {f.name for f in dataclasses.fields(cls)}
        head_dim = d.get("head_dim")
        if d["model_type"] != "cohere2_moe" and head_dim is not None and head_dim != d.get("hidden_size", cls.hidden_size) // d.get(
                "num_attention_heads", cls.num_attention_heads):
            raise ValueError(f"head_dim={head_dim} differs from hidden_size // num_attention_heads, "
                             "which is how Cohere models set it")
        if d["model_type"] != "cohere2_moe":  # mixture-of-experts keys would mean nothing here
            for key in MOE_FIELDS + ("first_k_dense_replace",):
                d.pop(key, None)
        kwargs = {k: v for k, v in d.items() if k in names | {"sliding_window_pattern", "first_k_dense_replace"}}
        if kwargs.get("layer_types") is not None:
            kwargs.pop("sliding_window_pattern", None)  # both written: layer_types is the newer, and wins
        if kwargs.get("mlp_layer_types") is not None:
            kwargs.pop("first_k_dense_replace", None)
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "CohereConfig":
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(d)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """The newer config.json spelling (`rope_parameters`, `dtype`), which transformers reads."""
        d = dataclasses.asdict(self)
        d["architectures"] = [{"cohere": "CohereForCausalLM", "cohere2": "Cohere2ForCausalLM",
                               "cohere2_moe": "Cohere2MoeForCausalLM"}[self.model_type]]
        if self.model_type != "cohere2_moe":
            for key in MOE_FIELDS:
                d.pop(key)
        if self.model_type in SLIDING_TYPES:  # head_dim: Cohere2Config writes it; readers of the file expect it
            d.pop("use_qk_norm")
        else:  # Command-R's files have no such keys
            d.pop("layer_types")
            d.pop("sliding_window")
            d.pop("head_dim")
        if d["dtype"] is None:
            d.pop("dtype")
        return d


def _layer_kind(i: int, pattern: int) -> str:
    """The older spelling's rule: layer i slides unless (i + 1) % pattern == 0."""
    return "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"


# ---------------------------------------------------------------------------------------------------
# 2. Token embedding: an nn.Embedding of [vocab_size, hidden_size]. Command-R has no separate output
#    matrix: the LM head (section 7) reuses these rows. Nothing to write here beyond nn.Embedding.
# ---------------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------------
# 3. LayerNorm, Cohere's flavour
# ---------------------------------------------------------------------------------------------------


class CohereLayerNorm(nn.Module):
    """LayerNorm without a bias: subtract the mean, divide by the standard deviation, scale.

    Not RMSNorm: the mean is removed. The arithmetic runs in fp32 whatever the input dtype, so fp16
    activations with large values do not overflow in the variance. `shape` may be a tuple
    (heads, head_dim): the q/k norms of Command R+ keep one weight vector per head, normalising over
    the last dimension only.
    """

    def __init__(self, shape: int | tuple[int, ...], eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.layer_norm is the formula weight * (x - mean) / sqrt(var + eps) in one fused kernel, much
        # cheaper than six small ops at decode time; notebook 03 writes it out step by step.
        if self.weight.dim() == 1:  # the weight goes into the kernel too
            return F.layer_norm(x.float(), x.shape[-1:], self.weight.float(), eps=self.eps).to(x.dtype)
        # per-head weights [heads, head_dim] (q/k norm): normalise over head_dim, then scale each head
        return (self.weight.float() * F.layer_norm(x.float(), x.shape[-1:], eps=self.eps)).to(x.dtype)


class CohereRMSNorm(nn.Module):
    """cohere2_moe's norm when its config sets `rms_norm_eps`: divide by the root mean square, scale.

    No mean is removed. Normalised in fp32, then (as transformers does) cast back to the input dtype
    before the weight multiplies, so a bf16 model rounds where the reference rounds.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def make_norm(config: CohereConfig) -> nn.Module:
    """The block and final norm: RMSNorm where the config gives rms_norm_eps (cohere2_moe), else LayerNorm."""
    if config.rms_norm_eps is not None and config.model_type == "cohere2_moe":
        return CohereRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
    return CohereLayerNorm(config.hidden_size, eps=config.layer_norm_eps)


# ---------------------------------------------------------------------------------------------------
# 4. Rotary position embedding (RoPE)
# ---------------------------------------------------------------------------------------------------


def rope_inv_freq(config: CohereConfig, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """The rotation speed of each pair of dimensions, and a factor for cos/sin (only yarn uses it).

    Pair i of a head turns by position * inv_freq[i] radians. Plain RoPE uses theta^(-2i/d); the scaled
    variants slow the low frequencies down so the model reaches past its training length.
    """
    rp = config.rope_parameters
    rope_type, base, dim = rp["rope_type"], rp["rope_theta"], config.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    attention_scaling = 1.0

    if rope_type == "dynamic":
        # NTK-aware: grow the base with the sequence length, once past the trained length.
        factor, trained = rp["factor"], config.max_position_embeddings
        seq_len = max(seq_len or trained, trained)
        base = base * ((factor * seq_len / trained) - (factor - 1)) ** (dim / (dim - 2))

    inv_freq = 1.0 / (base ** exponents)

    if rope_type == "linear":
        inv_freq = inv_freq / rp["factor"]  # the same as dividing every position by factor
    elif rope_type == "llama3":
        factor, low, high = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
        trained = rp["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        # Long wavelengths (slow pairs) are divided by factor, short ones kept, those between blended.
        scaled = torch.where(wavelen > trained / low, inv_freq / factor, inv_freq)
        smooth = (trained / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        between = (wavelen >= trained / high) & (wavelen <= trained / low)
        inv_freq = torch.where(between, blended, scaled)
    elif rope_type == "yarn":
        inv_freq, attention_scaling = _yarn_inv_freq(rp, base, dim, config.max_position_embeddings)
    return inv_freq, attention_scaling


def _yarn_inv_freq(rp: dict, base: float, dim: int, max_positions: int) -> tuple[torch.Tensor, float]:
    """YaRN: interpolate the slow pairs, keep the fast ones, ramp linearly between, rescale attention."""
    factor = rp.get("factor") or max_positions / rp["original_max_position_embeddings"]
    trained = rp["original_max_position_embeddings"]

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_scaling = rp.get("attention_factor")
    if attention_scaling is None:
        m, m_all = rp.get("mscale"), rp.get("mscale_all_dim")
        attention_scaling = float(mscale(factor, m) / mscale(factor, m_all)) if m and m_all else mscale(factor)
    beta_fast, beta_slow = rp.get("beta_fast") or 32, rp.get("beta_slow") or 1

    def pair_index_for(rotations: float) -> float:  # which pair turns `rotations` times over `trained`
        return dim * math.log(trained / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = pair_index_for(beta_fast), pair_index_for(beta_slow)
    if rp.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    keep = 1 - ramp  # 1: extrapolate (keep the original speed), 0: interpolate (divide by factor)
    inv_freq = (1.0 / (factor * freqs)) * (1 - keep) + (1.0 / freqs) * keep
    return inv_freq, attention_scaling


class CohereRotaryEmbedding(nn.Module):
    """Turns position ids into the cos and sin tables, one angle per pair, repeated for both members.

    The dynamic type recomputes its frequencies when a sequence grows past the longest one seen so far
    (and returns to the trained ones for short sequences), as the reference does.
    """

    def __init__(self, config: CohereConfig):
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        self.trained_len = config.max_position_embeddings
        self.reset()

    def reset(self, device: torch.device | str = "cpu") -> None:
        """(Re)compute the frequency table; the loader calls this after building the model on `meta`."""
        with torch.device("cpu"):  # real numbers even while the model is being built on `meta`
            inv_freq, self.attention_scaling = rope_inv_freq(self.config)
        self.register_buffer("inv_freq", inv_freq.to(device), persistent=False)
        self.cached_len = self.trained_len

    def _update_dynamic(self, position_ids: torch.Tensor) -> None:
        seq_len = int(position_ids.max()) + 1
        if seq_len > self.cached_len:
            with torch.device("cpu"):
                inv_freq, self.attention_scaling = rope_inv_freq(self.config, seq_len)
            self.inv_freq = inv_freq.to(self.inv_freq.device)
            self.cached_len = seq_len
        elif seq_len < self.trained_len < self.cached_len:
            self.reset(self.inv_freq.device)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rope_type == "dynamic":
            self._update_dynamic(position_ids)
        angles = position_ids[..., None].float() * self.inv_freq.float()  # [B, T, head_dim/2]
        angles = angles.repeat_interleave(2, dim=-1)  # pair (2i, 2i+1) shares angle i: [B, T, head_dim]
        cos = angles.cos() * self.attention_scaling
        sin = angles.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): a 90-degree turn of each adjacent pair.

    This is where Cohere differs from Llama, which pairs dimension i with i + head_dim/2.
    """
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((-odd, even), dim=-1).flatten(-2)


def rotary_turn(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """cos a + i sin a, one complex number per pair (the cos/sin tables repeat each angle twice)."""
    return torch.complex(cos[..., 0::2].float(), sin[..., 0::2].float())


def rotate_by(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """Turn each adjacent pair (x0, x1) of x, read as the complex number x0 + i x1, by multiplying."""
    # (view, not unflatten: at decode time this runs twice per layer per token, and view is the cheaper call)
    pairs = torch.view_as_complex(x.float().view(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * turn).flatten(-2).to(x.dtype)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate queries and keys [B, heads, T, head_dim] by their positions' angles, in fp32.

    The definition is x * cos + rotate_pairs(x) * sin. Computed here the cheap way: an adjacent pair
    (x0, x1) is the complex number x0 + i x1, and turning it by angle a is multiplying by cos a + i sin a.
    """
    turn = rotary_turn(cos, sin).unsqueeze(1)  # broadcast over heads
    return rotate_by(q, turn), rotate_by(k, turn)


# ---------------------------------------------------------------------------------------------------
# 5. Attention
# ---------------------------------------------------------------------------------------------------


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, kv_heads, T, D] -> [B, kv_heads * n_rep, T, D]: each kv head serves n_rep query heads (GQA)."""
    if n_rep == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def causal_mask(attention_mask: torch.Tensor | None, q_len: int, past: int, device,
                window: int | None = None) -> torch.Tensor:
    """Boolean [B or 1, 1, q_len, past + q_len]: True where query i may look at key j.

    Key j is visible if it is not later than the query and not padding (attention_mask == 0), and, with
    a `window`, if it is one of the query's last `window` tokens (j > i - window; see sliding_window_mask).
    A query with nothing to look at (a left-padding position) is allowed to see everything instead:
    its output is never used, and an all-masked row would turn into NaN and spread through the values.
    """
    kv_len = past + q_len
    q_pos = torch.arange(past, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed = allowed & (k_pos > q_pos - window)
    allowed = allowed[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :].bool()
        allowed = allowed | ~allowed.any(-1, keepdim=True)
    return allowed


def sliding_window_mask(attention_mask: torch.Tensor | None, q_len: int, past: int, window: int,
                        device) -> torch.Tensor:
    """The causal mask of a sliding-window layer (cohere2): query i sees keys i - window + 1 .. i.

    Positions here count slots of the sequence, padding included, as transformers counts them: a
    left-padded row's window holds fewer real tokens while its padding is still inside it.
    """
    return causal_mask(attention_mask, q_len, past, device, window=window)


def eager_attention(q, k, v, mask, scale, dropout=0.0):
    """softmax(q k^T * scale + mask) v, written out; also returns the attention weights."""
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scores = torch.matmul(q, k.transpose(2, 3)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    weights = F.dropout(weights, p=dropout, training=dropout > 0)
    return torch.matmul(weights, v), weights


def sdpa_attention(q, k, v, mask, scale, dropout=0.0, is_causal=False):
    """The same through PyTorch's fused kernel (flash attention on a GPU); no weights come back."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal,
                                         scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    return out, None


class CohereAttention(nn.Module):
    """Multi-head attention with `num_key_value_heads` shared key/value heads (MHA, GQA or MQA)."""

    def __init__(self, config: CohereConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim)
        self.scale = self.head_dim ** -0.5
        self.dropout = config.attention_dropout
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=bias)
        self.use_qk_norm = config.use_qk_norm
        if self.use_qk_norm:  # Command R+: LayerNorm each head's query and key over head_dim
            self.q_norm = CohereLayerNorm((self.n_heads, self.head_dim), eps=config.layer_norm_eps)
            self.k_norm = CohereLayerNorm((self.n_kv_heads, self.head_dim), eps=config.layer_norm_eps)

    def forward(self, x, cos=None, sin=None, mask=None, is_causal=False, cache=None, eager=False):
        """Attention over x [B, T, hidden]; returns (output, weights or None).

        The rotation comes as the cos/sin tables, or, with sin None, as `cos` already made complex
        (cos + i sin, [B, 1, T, head_dim/2]: what the model passes, computed once per forward rather
        than once per layer). cos None: no rotation at all (the NoPE layers of cohere2).
        """
        # [B, hidden] is a batch of single tokens (how `decode_step` runs: with no sequence axis the linear
        # layers have nothing to fold away); [B, T, hidden] a batch of sequences.
        B, T = (x.shape[0], 1) if x.dim() == 2 else x.shape[:2]
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        if self.use_qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, head_dim]
        if cos is not None:
            turn = cos if sin is None else rotary_turn(cos, sin).unsqueeze(1)
            q, k = rotate_by(q, turn), rotate_by(k, turn)
        if cache is not None:  # append this step's keys/values, attend over everything the cache holds
            k, v = cache.update(self.layer_idx, k, v)
        dropout = self.dropout if self.training else 0.0
        if eager:
            if mask is None and is_causal:
                mask = causal_mask(None, T, 0, x.device)
            out, weights = eager_attention(q, k, v, mask, self.scale, dropout)
        else:
            out, weights = sdpa_attention(q, k, v, mask, self.scale, dropout, is_causal)
        out = out.transpose(1, 2).reshape(*x.shape[:-1], self.n_heads * self.head_dim)
        return self.o_proj(out), weights


# ---------------------------------------------------------------------------------------------------
# 6. The MLP and the parallel block
# ---------------------------------------------------------------------------------------------------

ACTIVATIONS = {"silu": F.silu}


class CohereMLP(nn.Module):
    """down(silu(gate(x)) * up(x)): the gate decides, per feature, how much of `up` passes."""

    def __init__(self, config: CohereConfig, intermediate_size: int | None = None):
        super().__init__()
        width = intermediate_size or config.intermediate_size
        self.gate_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.down_proj = nn.Linear(width, config.hidden_size, bias=False)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


# The mixture of experts (cohere2_moe, Command A+): in a "sparse" layer the MLP becomes many MLPs, the
# experts, and a router sends each token through only `num_experts_per_tok` of them. Parameters grow
# with the number of experts; the work per token grows only with the k it uses. In the course's order:
# the router, the experts, then the shared expert that every token also goes through.


class CohereRouter(nn.Module):
    """Scores every expert for each token and keeps the top k: weight [num_experts, hidden] (`mlp.gate`).

    The k kept logits become the experts' weights by a softmax over those k (so they sum to 1), or by
    a sigmoid each, divided by their sum when `norm_topk_prob`. Not an nn.Linear, so quantization,
    which replaces linear layers, leaves it alone: a rounded router would pick other experts.
    """

    def __init__(self, config: CohereConfig):
        super().__init__()
        self.top_k, self.selection = config.num_experts_per_tok, config.expert_selection_fn
        self.norm_topk_prob = config.norm_topk_prob
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))

    def forward(self, x: torch.Tensor):
        """x [N, hidden] -> (logits [N, experts], weights [N, k], experts [N, k])."""
        logits = F.linear(x, self.weight)
        top, experts = torch.topk(logits, self.top_k, dim=-1)
        if self.selection == "softmax":
            weights = top.softmax(dim=-1, dtype=torch.float32)
        else:  # sigmoid, in the activations' dtype as the reference computes it
            weights = top.sigmoid()
            if self.norm_topk_prob:
                weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, weights.to(x.dtype), experts


class CohereExperts(nn.ModuleList):
    """`num_experts` SiLU-gated MLPs, stored one by one as checkpoints store them (`experts.{e}.gate_proj`).

    Two ways to run them, equal up to rounding (tests/test_cohere2_moe.py):
      "loop"     the teaching version: for each expert, pick out its tokens and run them through it.
                 Asking which tokens an expert has waits for the answer (a host sync on a GPU).
      "grouped"  sort the (token, expert) pairs by expert and run every expert's group in one grouped
                 matrix multiply (torch._grouped_mm) over the experts' weights stacked [E, in, out].
                 No Python loop and nothing read back to the host: decode steps stay asynchronous.
    The stacked weights are the experts' own memory: `stacked()` copies them once into [E, ...] tensors
    and makes each expert's weights views into those, so nothing is held twice. The checkpoint layout
    is unchanged (the state dict still names each expert). Quantized experts run the loop, each in its
    own quantized kernel.
    """

    def __init__(self, config: CohereConfig):
        super().__init__(CohereMLP(config) for _ in range(config.num_experts))
        self.implementation = "grouped"
        self._stack: tuple | None = None  # (gate and up [E, 2I, H], down [E, H, I], the weights' addresses)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """x [N, hidden], each row's k experts [N, k] and their weights [N, k] -> the weighted sum [N, hidden]."""
        if not all(type(p) is nn.Linear for m in self for p in m.children()):  # quantized experts
            self._stack = None  # the float copy must not outlive the float weights
            return self.forward_loop(x, weights, experts)
        # torch._grouped_mm takes these three dtypes
        if self.implementation == "loop" or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            return self.forward_loop(x, weights, experts)
        return self.forward_grouped(x, weights, experts)

    def forward_loop(self, x, weights, experts):
        out = torch.zeros_like(x)
        for e, expert in enumerate(self):
            token, slot = torch.where(experts == e)  # the rows that chose expert e, and in which of k places
            if token.numel() == 0:
                continue
            out.index_add_(0, token, expert(x[token]) * weights[token, slot, None])
        return out

    def forward_grouped(self, x, weights, experts):
        gate_up, down = self.stacked()
        k = experts.shape[1]
        pair_expert = experts.flatten()  # pair p = (token p // k, expert pair_expert[p])
        order = pair_expert.argsort(stable=True)  # the pairs grouped by expert
        # Where each expert's group ends: a search in the sorted ids (bincount would read its size back).
        ends = torch.searchsorted(pair_expert[order], torch.arange(1, len(self) + 1, device=x.device),
                                  out_int32=True)
        h = torch._grouped_mm(x[order // k], gate_up, offs=ends)  # [N * k, 2I]: group g times gate_up[g]
        gate, up = h.chunk(2, dim=-1)
        h = torch._grouped_mm(self[0].act(gate) * up, down, offs=ends)  # [N * k, hidden]
        h = h * weights.reshape(-1)[order, None]
        return torch.zeros_like(x).index_add_(0, order // k, h)

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The experts' weights as (gate and up [E, H, 2I], down [E, I, H]): inputs first, the layout in
        which torch._grouped_mm reads each expert's matrix without copying it.

        Built once, and again whenever a weight has moved (`.to()`, a loader assigning new tensors):
        the experts' parameters become (transposed) views into the stack. With gradients on, a
        differentiable copy instead.
        """
        linears = [(m.gate_proj, m.up_proj, m.down_proj) for m in self]
        if torch.is_grad_enabled() and any(p.weight.requires_grad for trio in linears for p in trio):
            return (torch.stack([torch.cat([g.weight, u.weight]).T for g, u, _ in linears]),
                    torch.stack([d.weight.T for _, _, d in linears]))
        addresses = tuple(p.weight.data_ptr() for trio in linears for p in trio)
        if self._stack is None or self._stack[2] != addresses:
            with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, even inside generate()
                gate_up = torch.stack([torch.cat([g.weight, u.weight]).T for g, u, _ in linears]).contiguous()
                down = torch.stack([d.weight.T for _, _, d in linears]).contiguous()
                width = linears[0][0].out_features
                for e, (g, u, d) in enumerate(linears):
                    g.weight = nn.Parameter(gate_up[e, :, :width].T, requires_grad=g.weight.requires_grad)
                    u.weight = nn.Parameter(gate_up[e, :, width:].T, requires_grad=u.weight.requires_grad)
                    d.weight = nn.Parameter(down[e].T, requires_grad=d.weight.requires_grad)
            addresses = tuple(p.weight.data_ptr() for trio in linears for p in trio)
            self._stack = (gate_up, down, addresses)
        return self._stack[0], self._stack[1]


class CohereSparseMoeBlock(nn.Module):
    """A MoE layer's MLP: the router picks k experts per token, their outputs are summed with the router's
    weights, and the shared expert (if any) joins by "average" ((routed + shared) / 2) or "sum"."""

    def __init__(self, config: CohereConfig):
        super().__init__()
        self.gate = CohereRouter(config)
        self.experts = CohereExperts(config)
        self.combine = config.shared_expert_combination_strategy
        if config.num_shared_experts > 0:
            self.shared_experts = CohereMLP(config, config.intermediate_size * config.num_shared_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(0, -2)  # [tokens, hidden]: routing is per token, wherever it sits
        _, weights, experts = self.gate(tokens)
        out = self.experts(tokens, weights, experts)
        if hasattr(self, "shared_experts"):
            shared = self.shared_experts(tokens)
            out = out + shared if self.combine == "sum" else (out + shared) / 2
        return out.view(x.shape)


class CohereDecoderLayer(nn.Module):
    """Command-R's parallel block: one LayerNorm feeds attention and the MLP side by side,

        x = x + attention(norm(x)) + mlp(norm(x))

    where Llama runs them one after the other, each with its own norm.
    """

    def __init__(self, config: CohereConfig, layer_idx: int):
        super().__init__()
        self.attention_type = config.layer_types[layer_idx]  # "sliding_attention" or "full_attention"
        self.input_layernorm = make_norm(config)
        self.self_attn = CohereAttention(config, layer_idx)
        sparse = config.model_type == "cohere2_moe" and config.mlp_layer_types[layer_idx] == "sparse"
        self.mlp = CohereSparseMoeBlock(config) if sparse else CohereMLP(config, config.mlp_width(layer_idx))

    def forward(self, x, cos=None, sin=None, mask=None, is_causal=False, cache=None, eager=False):
        h = self.input_layernorm(x)
        attn_out, weights = self.self_attn(h, cos, sin, mask, is_causal, cache, eager)
        return x + attn_out + self.mlp(h), weights


# ---------------------------------------------------------------------------------------------------
# 7. The whole model: embeddings, blocks, final norm, tied head times logit_scale, and the loss
# ---------------------------------------------------------------------------------------------------


@dataclass
class ModelOutput:
    """What a forward pass returns. Fields that were not asked for stay None."""

    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cache: Any = None


class CohereModel(nn.Module):
    """The transformer without its head: token ids in, final normed hidden states out."""

    def __init__(self, config: CohereConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(CohereDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = make_norm(config)
        self.rotary_emb = CohereRotaryEmbedding(config)
        self.attn_implementation = "sdpa"  # or "eager": the explicit path, which can return weights

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, cache=None,
                output_hidden_states=False, output_attentions=False) -> ModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            check_token_ids(input_ids, self.config.vocab_size)
            inputs_embeds = self.embed_tokens(input_ids)
        B, T, _ = inputs_embeds.shape
        past = cache.seq_len if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=inputs_embeds.device)[None]
        if attention_mask is not None:
            if attention_mask.shape != (B, past + T):
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected "
                                 f"{(B, past + T)} (batch, cached + new tokens)")
            if bool(attention_mask.all()):
                attention_mask = None  # nothing padded: take the fast unmasked path
        eager = output_attentions or self.attn_implementation == "eager"
        masks = self.attention_masks(attention_mask, T, past, inputs_embeds.device, eager, cache)
        turns = self.rotations(position_ids)
        return self.run_layers(inputs_embeds, turns, masks, cache, eager, output_hidden_states, output_attentions)

    def attention_masks(self, attention_mask, T: int, past: int, device, eager: bool = False, cache=None) -> dict:
        """{layer type: (mask, is_causal)}: what each kind of layer attends over for T new tokens after
        `past` cached ones (`attention_mask` [B, past + T] or None). The cheapest form that is right: no
        mask for one new token, the kernel's own causal flag for a fresh unpadded prompt, an explicit
        boolean mask otherwise."""
        mask, is_causal = None, False
        if attention_mask is not None or (past > 0 and T > 1) or (eager and T > 1):
            mask = causal_mask(attention_mask, T, past, device)
        elif T > 1:
            is_causal = True
        masks = {"full_attention": (mask, is_causal)}
        if "sliding_attention" in self.config.layer_types:
            masks["sliding_attention"] = self.sliding_masks(attention_mask, T, past, device, masks, cache)
        return masks

    def sliding_masks(self, attention_mask, T, past, device, masks, cache) -> tuple:
        """The sliding layers' (mask, is_causal). Their keys are what the cache hands back: every token so
        far (no cache, the growing cache, a static cache that has not wrapped), or, once a ring buffer
        has wrapped (StaticKVCache.ring), its `window` slots in ring order."""
        window = self.config.sliding_window
        ring = getattr(cache, "ring", None)
        if ring is None or past + T <= ring:  # keys at slots 0 .. past + T - 1
            if past + T <= window:
                return masks["full_attention"]  # the window reaches back to the start: plain causal
            return sliding_window_mask(attention_mask, T, past, window, device), False
        if T == 1:  # a wrapped ring holds exactly this token's window: hide only padding
            if attention_mask is None:
                return None, False
            return attention_mask.bool()[:, ring_slot_positions(past, ring, device)][:, None, None], False
        if past == 0:  # a prompt longer than the ring attends over itself; the ring keeps its tail
            return sliding_window_mask(attention_mask, T, 0, window, device), False
        raise ValueError(f"a sliding layer's ring buffer of {ring} slots takes a whole prompt or one token at a "
                         f"time once full; got {T} tokens after {past}")

    def rotations(self, position_ids: torch.Tensor) -> dict:
        """{layer type: turn or None}: the rotary angles of these positions as complex numbers
        [B, 1, T, head_dim/2], computed once per forward and shared by every layer that rotates."""
        cos, sin = self.rotary_emb(self.embed_tokens.weight, position_ids)
        return self.turns_by_type(rotary_turn(cos, sin).unsqueeze(1))

    def turns_by_type(self, turn: torch.Tensor) -> dict:
        """{layer type: turn}, None for the layer types that use no positional encoding (cohere2's global layers);
        "rope" and "none" too, for the layers whose own choice overrides their type's (cohere2_moe's prefix)."""
        return {**{kind: turn if self.config.uses_rope(kind) else None for kind in LAYER_TYPES},
                "rope": turn, "none": None}

    def rotary_table(self, max_len: int) -> torch.Tensor:
        """The turns of positions 0..max_len-1, [max_len, head_dim/2] complex: `generate` computes them once
        and looks each step's up by position (not for the dynamic type, whose angles depend on the length)."""
        positions = torch.arange(max_len, device=self.embed_tokens.weight.device)[None]
        cos, sin = self.rotary_emb(self.embed_tokens.weight, positions)
        return rotary_turn(cos, sin)[0]

    def run_layers(self, x, turns: dict, masks: dict, cache=None, eager=False, output_hidden_states=False,
                   output_attentions=False) -> ModelOutput:
        """The blocks and the final norm over embeddings x [B, T, hidden], given each layer type's rotation
        and mask. `forward` builds those from ids and padding; `generate` builds them once and reuses them."""
        hidden_states, attentions = [], []
        # kind: which mask; rotary: which rotation. Both come from the config, not from the layer objects, so a
        # wrapped layer (chapter 10's SequentialLayer) runs as the layer it wraps.
        rotaries = ["rope" if self.config.layer_uses_rope(i) else "none" for i in range(len(self.layers))]
        for layer, kind, rotary in zip(self.layers, self.config.layer_types, rotaries):
            if output_hidden_states:
                hidden_states.append(x)
            mask, is_causal = masks[kind]
            x, weights = layer(x, turns[rotary], None, mask, is_causal, cache, eager)  # complex turn as `cos`
            if output_attentions:
                attentions.append(weights)
        x = self.norm(x)
        if output_hidden_states:
            hidden_states.append(x)  # as the reference does: the last entry is after the final norm
        return ModelOutput(last_hidden_state=x, cache=cache,
                           hidden_states=tuple(hidden_states) if output_hidden_states else None,
                           attentions=tuple(attentions) if output_attentions else None)


def check_token_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """An id outside the vocabulary would index past the embedding table: say so plainly."""
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        bad = input_ids[(input_ids < 0) | (input_ids >= vocab_size)][0].item()
        raise ValueError(f"input_ids holds token id {bad}, outside the vocabulary [0, {vocab_size})")


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in fp32: position t predicts labels[t + 1]; label -100 is ignored."""
    targets = F.pad(labels, (0, 1), value=-100)[:, 1:]  # shift left, nothing to predict after the end
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


class CohereForCausalLM(nn.Module):
    """The language model: CohereModel, then logits = (h @ embed_tokens^T) * logit_scale."""

    def __init__(self, config: CohereConfig):
        super().__init__()
        self.config = config
        self.model = CohereModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.logit_scale = config.logit_scale
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """Small normal weights, zero biases, unit norms, a zero padding row (the reference's init)."""
        if module is self.lm_head and self.config.tie_word_embeddings:
            return  # its weight is the embedding, initialised (padding row and all) as the embedding
        if isinstance(module, CohereRouter) and module.weight.device.type != "meta":
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, (nn.Linear, nn.Embedding)) and module.weight.device.type != "meta":
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                logits_to_keep: int | torch.Tensor = 0, output_hidden_states=False, output_attentions=False,
                cache=None) -> ModelOutput:
        out = self.model(input_ids, attention_mask, position_ids, inputs_embeds, cache,
                         output_hidden_states, output_attentions)
        h = out.last_hidden_state
        if isinstance(logits_to_keep, int):
            h = h[:, -logits_to_keep:] if logits_to_keep > 0 else h  # 0 keeps every position
        else:
            h = h[:, logits_to_keep]
        # The scale is multiplied in, never dropped: without it the logits are 16x too confident.
        out.logits = self.lm_head(h) * self.logit_scale
        if labels is not None:
            out.loss = causal_lm_loss(out.logits, labels)
        return out

    def decode_step(self, input_ids: torch.Tensor, turns: dict, masks: dict, cache) -> torch.Tensor:
        """Logits [B, V] for one new token per row (`input_ids` [B, 1]), appended to `cache`: the forward
        pass through the same modules, minus the work `generate` has done once for the whole call
        (checking ids, building masks and rotations, keeping the hidden states of every position)."""
        x = self.model.embed_tokens(input_ids.view(-1))  # [B, hidden]: one token per row, no sequence axis
        return self.lm_head(self.model.run_layers(x, turns, masks, cache).last_hidden_state) * self.logit_scale

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied matrix is counted once

    # Loading and saving: the code is in checkpoint.py (notebook 10); these are the familiar entry points.
    @classmethod
    def from_pretrained(cls, path_or_repo_id, **options):
        """`minicohere.from_pretrained`: dtype, device, revision, token, quantize, group_size, ..."""
        from .checkpoint import from_pretrained
        return from_pretrained(path_or_repo_id, **options)

    def save_pretrained(self, directory, max_shard_size="5GB"):
        from .checkpoint import save_pretrained
        return save_pretrained(self, directory, max_shard_size=max_shard_size)

    def generate(self, input_ids, attention_mask=None, **options) -> torch.Tensor:
        """Prompt + new tokens, [B, T + n]. See `generate` in section 9 for the options."""
        return generate(self, input_ids, attention_mask, **options)


# ---------------------------------------------------------------------------------------------------
# 8. KV caches: keep each layer's keys and values so a new token needs only its own row of work
# ---------------------------------------------------------------------------------------------------


class KVCache:
    """The simple cache: every layer's keys and values, grown by concatenation at each step.

    Easy to read, but each step copies everything cached so far (torch.cat), so a long generation
    spends more and more time copying. `StaticKVCache` fixes that. It also keeps every token for every
    layer, sliding-window layers included (their mask hides what has left the window); StaticKVCache
    is the cache whose sliding layers hold only the window.
    """

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    @property
    def seq_len(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor):
        if layer_idx == len(self.keys):  # the first step creates the layer's entry
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], k], dim=2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], v], dim=2)
        return self.keys[layer_idx], self.values[layer_idx]


class StaticKVCache:
    """Buffers allocated once for `max_len` tokens; each step writes its keys and values in place.

    Attention reads a view of the filled part, so nothing is copied and memory never grows.
    Size: 2 (k and v) x layers x batch x kv_heads x max_len x head_dim x bytes per number.

    A sliding-window layer (cohere2) never looks further back than `sliding_window` tokens, so its
    buffers hold only that many slots (`ring`) and are used as a ring buffer: the token at sequence
    slot p lives in ring slot p % ring, overwriting the one that just left the window. Only the
    global layers pay for the whole length. (`ring` is None when no layer slides or max_len fits the
    window anyway.)
    """

    def __init__(self, config: CohereConfig, batch_size: int, max_len: int, dtype=torch.float32, device="cpu"):
        window = config.sliding_window if "sliding_attention" in config.layer_types else None
        self.ring = window if window is not None and window < max_len else None
        self.keys, self.values = [], []
        for kind in config.layer_types:
            slots = self.ring if kind == "sliding_attention" and self.ring else max_len
            shape = (batch_size, config.num_key_value_heads, slots, config.head_dim)
            self.keys.append(torch.zeros(shape, dtype=dtype, device=device))
            self.values.append(torch.zeros(shape, dtype=dtype, device=device))
        self.max_len = max_len
        self.seq_len = 0  # tokens written so far, the same for every layer once a forward pass ends

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor):
        start, end = self.seq_len, self.seq_len + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"StaticKVCache holds {self.max_len} tokens; this step would need {end}")
        if layer_idx == len(self.keys) - 1:  # the last layer writes: the step is complete
            self.seq_len = end
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        slots = keys.shape[2]
        if end <= slots:  # in order, slot = position
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            return keys[:, :, :end], values[:, :, :end]
        if k.shape[2] == 1:  # a ring: the new token replaces the one that has left the window
            keys[:, :, start % slots] = k[:, :, 0]
            values[:, :, start % slots] = v[:, :, 0]
            return keys, values
        if start == 0:  # a prompt longer than the ring: attend over all of it, keep its last `slots`
            shift = (end - slots) % slots  # the tail's first token, position end - slots, goes there
            keys.copy_(k[:, :, -slots:].roll(shift, dims=2))
            values.copy_(v[:, :, -slots:].roll(shift, dims=2))
            return k, v
        raise ValueError(f"StaticKVCache: layer {layer_idx}'s ring of {slots} slots takes a whole prompt or "
                         f"one token at a time once full; got {k.shape[2]} tokens after {start}")

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def ring_slot_positions(last: int, ring: int, device) -> torch.Tensor:
    """The sequence slot held by each of a full ring's slots, once the token at slot `last` is written:
    ring slot s holds the latest p <= last with p % ring == s."""
    return last - (last - torch.arange(ring, device=device)) % ring


# ---------------------------------------------------------------------------------------------------
# 9. Sampling and generation
# ---------------------------------------------------------------------------------------------------
# Each warper is a pure function of the logits [B, V] and returns new logits, with the tokens it rules
# out set to -inf. They run in transformers' order: temperature, top-k, top-p, min-p.


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Below 1 sharpens the distribution, above 1 flattens it."""
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits (and any tied with the k-th), rule out the rest."""
    k = min(k, logits.shape[-1])
    kth_best = torch.topk(logits, k).values[..., -1:]
    return logits.masked_fill(logits < kth_best, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling: keep the most likely tokens whose probabilities add up to at least p.

    Sort ascending and drop from the unlikely end while the dropped mass stays within 1 - p; the single
    most likely token is always kept.
    """
    ascending, order = torch.sort(logits, descending=False)
    dropped_mass = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = dropped_mass <= (1 - p)
    drop_sorted[..., -1:] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens at least min_p times as likely as the most likely one (and always the best)."""
    probs = logits.softmax(dim=-1)
    drop = probs < min_p * probs.amax(dim=-1, keepdim=True)
    drop.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(drop, float("-inf"))


def warp_logits(logits, temperature=1.0, top_k=None, top_p=None, min_p=None) -> torch.Tensor:
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    if top_k:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    if min_p is not None:
        logits = min_p_filter(logits, min_p)
    return logits


def next_token(logits: torch.Tensor, do_sample=False, temperature=1.0, top_k=None, top_p=None, min_p=None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of each row: the argmax (greedy), or a draw from the warped distribution."""
    if not do_sample:
        # max(dim).indices is argmax (the first of tied maxima too), about 3x faster on a CPU.
        return logits.max(dim=-1).indices
    probs = warp_logits(logits.float(), temperature, top_k, top_p, min_p).softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def check_generate_args(model, input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p,
                        min_p) -> None:
    """Every bad argument is named before any work is done."""
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty [batch, tokens] tensor; got shape {tuple(input_ids.shape)}")
    check_token_ids(input_ids, model.config.vocab_size)
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(input_ids.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    limit = model.config.max_position_embeddings
    if input_ids.shape[1] + max_new_tokens > limit:
        raise ValueError(f"prompt of {input_ids.shape[1]} tokens + max_new_tokens={max_new_tokens} exceeds the "
                         f"model's max_position_embeddings={limit}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0 when sampling (use do_sample=False for greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1 (None turns it off)")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p} must be in (0, 1]")
    if min_p is not None and not 0 <= min_p <= 1:
        raise ValueError(f"min_p={min_p} must be in [0, 1]")


_FROM_CONFIG = object()  # "use the config's eos", distinct from None ("never stop")


@torch.inference_mode()
def generate(model: CohereForCausalLM, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             max_new_tokens: int = 20, do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, min_p: float | None = None, eos_token_id=_FROM_CONFIG,
             pad_token_id: int | None = None, generator: torch.Generator | None = None, streamer=None,
             cache: str | None = "static", progress: bool = False) -> torch.Tensor:
    """Continue each prompt by up to max_new_tokens tokens; returns prompt + new tokens, [B, T + n].

    Left-padded batches (attention_mask 0 on the left) give, row for row, what each prompt gives alone.
    A row that emits an eos token is finished: later positions get pad_token_id. `cache` is "static"
    (preallocated buffers), "dynamic" (the growing KVCache) or None (recompute everything each step).
    `streamer` is any object with put(token_ids) and end(), such as TextStreamer.

    One decode path: the prompt runs through the model's forward; with a cache, each later step feeds
    only the newest token through the same modules (`CohereForCausalLM.decode_step`), with the
    rotations and masks of every step worked out once here instead of once per step.
    """
    check_generate_args(model, input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p,
                        min_p)
    if cache not in ("static", "dynamic", None):
        raise ValueError(f"cache={cache!r}: use 'static', 'dynamic' or None")
    config = model.config
    eos = config.eos_token_id if eos_token_id is _FROM_CONFIG else eos_token_id
    eos = torch.tensor([] if eos is None else [eos] if isinstance(eos, int) else list(eos), device=input_ids.device)
    pad = pad_token_id if pad_token_id is not None else (config.pad_token_id or 0)
    B, T = input_ids.shape
    device = input_ids.device
    total = T + max_new_tokens
    if streamer is not None:
        streamer.put(input_ids.cpu())

    # Positions count real tokens only, so a left-padded row sees the positions it would see alone.
    padded = attention_mask is not None and not bool(attention_mask.all())
    mask = attention_mask.long() if padded else None
    positions = (mask.cumsum(-1) - 1).clamp(min=0) if padded else torch.arange(T, device=device)[None].expand(B, T)
    kv = {"static": lambda: StaticKVCache(config, B, total, model.dtype, device),
          "dynamic": KVCache, None: lambda: None}[cache]()
    if kv is not None:
        # Row r's step-s token sits at position positions[r, -1] + s. The dynamic rope type's angles
        # depend on how long the sequence has grown, so it asks the rotary module each step instead.
        step_positions = positions[:, -1:] + torch.arange(1, max_new_tokens + 1, device=device)  # [B, n]
        dynamic_rope = model.model.rotary_emb.rope_type == "dynamic"
        if not dynamic_rope:
            step_turns = model.model.rotary_table(total)[step_positions][:, :, None, None]  # [B, n, 1, 1, d/2]
        # The padding of every slot this call can fill, built once; step s reads its first T + s columns.
        seen = None
        if padded:
            seen = torch.ones(B, total, dtype=mask.dtype, device=device)
            seen[:, :T] = mask

    # Filled in place; tokens[:, :end] is everything so far.
    tokens = input_ids.new_full((B, total), pad)
    tokens[:, :T] = input_ids
    end = T
    stops = eos.numel() > 0
    unfinished = torch.ones(B, dtype=torch.bool, device=device)
    from tqdm import tqdm

    for step in tqdm(range(max_new_tokens), desc="generating", unit="tok", disable=not progress):
        if step == 0 or kv is None:  # the prompt (or, with no cache, everything so far)
            logits = model(tokens[:, :end], attention_mask=mask, position_ids=positions, cache=kv,
                           logits_to_keep=1).logits[:, -1]
        else:  # only the newest token; the cache holds the rest
            turns = (model.model.rotations(step_positions[:, step - 1:step]) if dynamic_rope
                     else model.model.turns_by_type(step_turns[:, step - 1]))
            # Unpadded Command-R: no mask at all. Padding or sliding windows: a [B, 1, 1, keys] mask.
            masks = model.model.attention_masks(None if seen is None else seen[:, :end], 1, end - 1, device,
                                                cache=kv)
            logits = model.decode_step(tokens[:, end - 1:end], turns, masks, kv)
        new = next_token(logits, do_sample, temperature, top_k, top_p, min_p, generator)
        if stops:
            new = torch.where(unfinished, new, pad)
        tokens[:, end] = new
        end += 1
        if streamer is not None:
            streamer.put(new.cpu())
        if stops:
            unfinished &= ~torch.isin(new, eos)
            if not bool(unfinished.any()):
                break
        if kv is None:  # every position is fed again next step
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
    if streamer is not None:
        streamer.end()
    return tokens[:, :end].contiguous()


class TextStreamer:
    """Turns generated token ids into text as they arrive, and hands each new piece to `on_text`.

    Byte-level tokens can split a character (a Korean syllable, an emoji) across several tokens; until
    its last byte arrives the decoded text ends in U+FFFD, so that tail is held back. Batch size 1 only.
    """

    def __init__(self, tokenizer, on_text=None, skip_prompt: bool = True, skip_special_tokens: bool = True):
        self.tokenizer, self.skip_prompt, self.skip_special_tokens = tokenizer, skip_prompt, skip_special_tokens
        self.on_text = on_text or (lambda text: print(text, end="", flush=True))
        self.ids: list[int] = []
        self.shown = 0  # characters already handed out
        self.prompt_seen = False

    def put(self, token_ids: torch.Tensor) -> None:
        if token_ids.dim() > 1 and token_ids.shape[0] > 1:
            raise ValueError("TextStreamer streams a batch of one")
        if not self.prompt_seen:
            self.prompt_seen = True
            if self.skip_prompt:
                return
        self.ids.extend(token_ids.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens)
        if text.endswith("\ufffd"):
            return  # wait for the rest of the character
        self._emit(text)

    def _emit(self, text: str) -> None:
        if len(text) > self.shown:
            self.on_text(text[self.shown:])
            self.shown = len(text)

    def end(self) -> None:
        self._emit(self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens))


def stream(model: CohereForCausalLM, tokenizer, input_ids: torch.Tensor, **options):
    """Yield text pieces while `generate` runs in a background thread: `for piece in stream(...)`."""
    import queue
    import threading

    pieces: queue.Queue = queue.Queue()
    done = object()
    streamer = TextStreamer(tokenizer, on_text=pieces.put)
    failure = []

    def work():
        try:
            generate(model, input_ids, streamer=streamer, **options)
        except BaseException as e:  # handed to the caller below
            failure.append(e)
        finally:
            pieces.put(done)

    threading.Thread(target=work, daemon=True).start()
    while (piece := pieces.get()) is not done:
        yield piece
    if failure:
        raise failure[0]
