"""minicohere: Cohere's Command-R in one file, read top to bottom in the order the course teaches it.

    1. CohereConfig             the numbers that describe a checkpoint          (notebooks 00, 10)
    2. token embedding          nn.Embedding, shared with the LM head           (notebook 02)
    3. CohereLayerNorm          mean-centred, weight only, computed in fp32     (notebook 03)
    4. rotary embedding         interleaved pairs, plus the scaled variants     (notebook 04)
    5. CohereAttention          MHA / GQA / MQA, optional q/k norm              (notebook 05)
    6. CohereMLP, the block     SiLU-gated MLP and the parallel residual block  (notebook 06)
    7. CohereForCausalLM        final norm, tied head times logit_scale, loss   (notebook 07)
    8. KV caches                growing and preallocated                        (notebook 08)
    9. sampling and generate    warpers as pure functions, greedy, streaming    (notebook 09)

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

# Keys that Hugging Face writes into config.json for its own bookkeeping; they say nothing about the
# network, so reading a checkpoint ignores them.
_HF_BOOKKEEPING_KEYS = {
    "architectures", "transformers_version", "_name_or_path", "model_type", "auto_map",
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

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self.rope_parameters = dict(self.rope_parameters or {})
        rp = self.rope_parameters
        rp["rope_type"] = rp.pop("type", None) or rp.get("rope_type", "default")
        rp.setdefault("rope_theta", 500000.0)
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rope_theta(self) -> float:
        return self.rope_parameters["rope_theta"]

    def validate(self) -> None:
        """Reject, with the field and value at fault, what this model cannot run."""
        if self.hidden_size % self.num_attention_heads:
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CohereConfig":
        """Build a config from a config.json dict in either spelling found in the wild."""
        d = dict(d)
        model_type = d.get("model_type", "cohere")
        if model_type != "cohere":
            hint = " (Command R7B: sliding-window layers, a different architecture)" if model_type == "cohere2" else ""
            raise ValueError(f"model_type={model_type!r} is not supported; minicohere runs 'cohere'{hint}")
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
        if head_dim is not None and head_dim != d.get("hidden_size", cls.hidden_size) // d.get(
                "num_attention_heads", cls.num_attention_heads):
            raise ValueError(f"head_dim={head_dim} differs from hidden_size // num_attention_heads, "
                             "which is how Cohere models set it")
        kwargs = {k: v for k, v in d.items() if k in names}
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
        d["model_type"] = "cohere"
        d["architectures"] = ["CohereForCausalLM"]
        if d["dtype"] is None:
            d.pop("dtype")
        return d


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
        dtype = x.dtype
        x = x.float()
        centred = x - x.mean(-1, keepdim=True)
        variance = centred.pow(2).mean(-1, keepdim=True)
        x = centred * torch.rsqrt(variance + self.eps)
        return (self.weight.float() * x).to(dtype)


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


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate queries and keys [B, heads, T, head_dim] by their positions' angles, in fp32."""
    dtype = q.dtype
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
    q, k = q.float(), k.float()
    q = q * cos + rotate_pairs(q) * sin
    k = k * cos + rotate_pairs(k) * sin
    return q.to(dtype), k.to(dtype)


# ---------------------------------------------------------------------------------------------------
# 5. Attention
# ---------------------------------------------------------------------------------------------------


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, kv_heads, T, D] -> [B, kv_heads * n_rep, T, D]: each kv head serves n_rep query heads (GQA)."""
    if n_rep == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def causal_mask(attention_mask: torch.Tensor | None, q_len: int, past: int, device) -> torch.Tensor:
    """Boolean [B or 1, 1, q_len, past + q_len]: True where query i may look at key j.

    Key j is visible if it is not later than the query and not padding (attention_mask == 0).
    A query with nothing to look at (a left-padding position) is allowed to see everything instead:
    its output is never used, and an all-masked row would turn into NaN and spread through the values.
    """
    kv_len = past + q_len
    q_pos = torch.arange(past, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    allowed = (k_pos <= q_pos)[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :].bool()
        allowed = allowed | ~allowed.any(-1, keepdim=True)
    return allowed


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

    def forward(self, x, cos, sin, mask=None, is_causal=False, cache=None, eager=False):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        if self.use_qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, head_dim]
        q, k = apply_rotary(q, k, cos, sin)
        if cache is not None:  # append this step's keys/values, attend over everything so far
            k, v = cache.update(self.layer_idx, k, v)
        dropout = self.dropout if self.training else 0.0
        if eager:
            if mask is None and is_causal:
                mask = causal_mask(None, T, 0, x.device)
            out, weights = eager_attention(q, k, v, mask, self.scale, dropout)
        else:
            out, weights = sdpa_attention(q, k, v, mask, self.scale, dropout, is_causal)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.o_proj(out), weights


# ---------------------------------------------------------------------------------------------------
# 6. The MLP and the parallel block
# ---------------------------------------------------------------------------------------------------

ACTIVATIONS = {"silu": F.silu}


class CohereMLP(nn.Module):
    """down(silu(gate(x)) * up(x)): the gate decides, per feature, how much of `up` passes."""

    def __init__(self, config: CohereConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class CohereDecoderLayer(nn.Module):
    """Command-R's parallel block: one LayerNorm feeds attention and the MLP side by side,

        x = x + attention(norm(x)) + mlp(norm(x))

    where Llama runs them one after the other, each with its own norm.
    """

    def __init__(self, config: CohereConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = CohereLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = CohereAttention(config, layer_idx)
        self.mlp = CohereMLP(config)

    def forward(self, x, cos, sin, mask=None, is_causal=False, cache=None, eager=False):
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
        self.norm = CohereLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
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
        # The cheapest mask that is right: none for one new token, the kernel's own causal flag for a
        # fresh unpadded prompt, an explicit boolean mask otherwise.
        mask, is_causal = None, False
        if attention_mask is not None or (past > 0 and T > 1) or (eager and T > 1):
            mask = causal_mask(attention_mask, T, past, inputs_embeds.device)
        elif T > 1:
            is_causal = True

        cos, sin = self.rotary_emb(inputs_embeds, position_ids)
        x = inputs_embeds
        hidden_states, attentions = [], []
        for layer in self.layers:
            if output_hidden_states:
                hidden_states.append(x)
            x, weights = layer(x, cos, sin, mask, is_causal, cache, eager)
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

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied matrix is counted once

    # Loading and saving: the code is in checkpoint.py (notebook 10); these are the familiar entry points.
    @classmethod
    def from_pretrained(cls, path_or_repo_id, dtype="auto", device="cpu", revision=None, token=None):
        from .checkpoint import from_pretrained
        return from_pretrained(path_or_repo_id, dtype=dtype, device=device, revision=revision, token=token)

    def save_pretrained(self, directory, max_shard_size="5GB"):
        from .checkpoint import save_pretrained
        return save_pretrained(self, directory, max_shard_size=max_shard_size)
