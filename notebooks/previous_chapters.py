"""The course's own version of every piece a chapter has you write, in the order the chapters teach them.

A chapter that needs earlier chapters' pieces imports them from here (`from previous_chapters import
layer_norm, MyCohereForCausalLM`), so that each notebook runs on its own. The names are the notebooks'
names: to run the course on *your* pieces, replace a function or class below with the one you wrote.

The model these pieces add up to, `MyCohereForCausalLM`, uses the checkpoint's parameter names
(`model.layers.0.self_attn.q_proj.weight`, ...), so it loads the state dict of transformers'
`CohereForCausalLM` or of minicohere's, and the tiny model the course ships.

Plain PyTorch only: nothing here imports minicohere (which is what every piece is compared with).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------------
# Chapter 01: tokenization
# ---------------------------------------------------------------------------------------------------

def load_tokenizer(folder):
    """The tokenizer.json of a model folder, as a `tokenizers.Tokenizer` (chapter 01 shows that your own
    byte-level BPE gives the same ids; the library is only faster)."""
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tokenizer.json in the model folder {folder}")
    return Tokenizer.from_file(str(path))


# ---------------------------------------------------------------------------------------------------
# Chapter 02: embeddings and the tied head
# ---------------------------------------------------------------------------------------------------

def tied_head(h, table):
    """Scores of every vocabulary entry: the hidden state against each row of the embedding table."""
    return h @ table.T


# ---------------------------------------------------------------------------------------------------
# Chapter 03: LayerNorm
# ---------------------------------------------------------------------------------------------------

def layer_norm(x, weight, eps=1e-5):
    """Cohere's LayerNorm: subtract the mean, divide by the standard deviation, scale; no bias; in fp32."""
    dtype = x.dtype
    x = x.float()
    centred = x - x.mean(-1, keepdim=True)
    var = centred.pow(2).mean(-1, keepdim=True)
    return (weight.float() * centred * torch.rsqrt(var + eps)).to(dtype)


class LayerNorm(nn.Module):
    """`layer_norm` with its weight as a parameter. `shape` (heads, head_dim) is the per-head q/k norm of
    Command R+: it normalises over head_dim and keeps one weight vector per head."""

    def __init__(self, shape, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        self.eps = eps

    def forward(self, x):
        return layer_norm(x, self.weight, self.eps)


# ---------------------------------------------------------------------------------------------------
# Chapter 04: rotary position embeddings, adjacent pairs
# ---------------------------------------------------------------------------------------------------

def inv_freq(theta, head_dim):
    """Radians per position of each of the head_dim/2 pairs."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)


def cos_sin(positions, inv_freq):
    """cos and sin of each position's angles, [T, head_dim], each angle twice: (a0, a0, a1, a1, ...)."""
    angles = positions[:, None].float() * inv_freq[None, :]
    angles = angles.repeat_interleave(2, dim=-1)
    return angles.cos(), angles.sin()


def rotate_pairs(x):
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): each adjacent pair turned by 90 degrees."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((-odd, even), dim=-1).flatten(-2)


def apply_rope(x, cos, sin):
    return x * cos + rotate_pairs(x) * sin


def rope_theta(config):
    """The config's rope base (minicohere's config has `rope_theta`; transformers' keeps it in
    `rope_parameters`). Every Command-R checkpoint uses the default rope type."""
    params = getattr(config, "rope_parameters", None) or {}
    kind = params.get("rope_type", "default")
    if kind != "default":
        raise ValueError(f"rope_type {kind!r}: these chapters' pieces implement the default rope only")
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


# ---------------------------------------------------------------------------------------------------
# Chapter 05: attention
# ---------------------------------------------------------------------------------------------------

def repeat_kv(x, n_rep):
    """[B, kv_heads, T, D] -> [B, kv_heads * n_rep, T, D]: kv head g serves query heads g*n_rep ... ."""
    return x.repeat_interleave(n_rep, dim=1)


def causal_mask(T):
    """[T, T] booleans, True where query i may look at key j (j <= i)."""
    return torch.ones(T, T, dtype=torch.bool).tril()


def attend(q, k, v, mask):
    """softmax(q k^T / sqrt(D), where the mask allows) v, the softmax in fp32. `mask` broadcasts to
    [B, heads, T_q, T_k]; a row with nothing allowed spreads evenly instead of turning into NaN."""
    scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, torch.finfo(torch.float32).min)
    return scores.softmax(-1).to(q.dtype) @ v


def padding_mask(mask, attention_mask):
    """The causal mask, and keys that are padding (attention_mask [B, T_k] == 0) hidden too."""
    if attention_mask is None:
        return mask
    return mask & attention_mask[:, None, None, :].bool()


class MyAttention(nn.Module):
    """Multi-head attention with shared key/value heads (MHA, GQA, MQA) and, for Command R+, the q/k norm."""

    def __init__(self, config, layer_idx=0):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, hidden, bias=False)
        self.use_qk_norm = bool(getattr(config, "use_qk_norm", False))
        if self.use_qk_norm:  # per head, over head_dim, before the rotation
            self.q_norm = LayerNorm((self.n_heads, self.head_dim), config.layer_norm_eps)
            self.k_norm = LayerNorm((self.n_kv, self.head_dim), config.layer_norm_eps)

    def heads(self, x, proj, n):
        B, T, _ = x.shape
        return proj(x).view(B, T, n, self.head_dim)

    def remember(self, k, v, cache):
        """The keys and values to attend over: this call's, and with a cache (chapter 08) all the earlier ones."""
        if cache is None:
            return k, v
        return cache.update(self.layer_idx, k, v)

    def forward(self, x, cos, sin, mask, cache=None):
        B, T, _ = x.shape
        q, k = self.heads(x, self.q_proj, self.n_heads), self.heads(x, self.k_proj, self.n_kv)
        v = self.heads(x, self.v_proj, self.n_kv)
        if self.use_qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)   # [B, heads, T, head_dim]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = self.remember(k, v, cache)
        group = self.n_heads // self.n_kv
        out = attend(q, repeat_kv(k, group), repeat_kv(v, group), mask)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


# ---------------------------------------------------------------------------------------------------
# Chapter 06: the gated MLP, the parallel block, the whole model
# ---------------------------------------------------------------------------------------------------

def gated_mlp(h, gate_w, up_w, down_w):
    gate = h @ gate_w.T
    return (F.silu(gate) * (h @ up_w.T)) @ down_w.T


class MyMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, h):
        return gated_mlp(h, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight)


def parallel_residual(x, norm, attention, mlp):
    """Command-R's block: one norm, read by attention and the MLP side by side."""
    h = norm(x)
    return x + attention(h) + mlp(h)


class MyDecoderLayer(nn.Module):
    def __init__(self, config, layer_idx=0):
        super().__init__()
        self.input_layernorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.self_attn = MyAttention(config, layer_idx)
        self.mlp = MyMLP(config)

    def forward(self, x, cos, sin, mask, cache=None):
        return parallel_residual(x, self.input_layernorm, lambda h: self.self_attn(h, cos, sin, mask, cache),
                                 self.mlp)


class MyCohereModel(nn.Module):
    """Embeddings, the blocks, the final norm (the checkpoint's `model.` prefix)."""

    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(MyDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = LayerNorm(config.hidden_size, config.layer_norm_eps)


@dataclass
class CausalLMOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class MyCohereForCausalLM(nn.Module):
    """Command-R from the pieces above, with the checkpoint's parameter names and the tied head.

    `forward(input_ids, attention_mask=None, cache=None, labels=None, position_ids=None)` is minicohere's
    call; `position_ids` [B, T] give a left-padded batch each row's own positions (chapter 05). Otherwise the
    positions and the mask come from two small methods, so that the KV cache (chapter 08) only has to
    change those and pass the cache through.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = MyCohereModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.lm_head.weight = self.model.embed_tokens.weight       # tied: one table, read both ways
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.register_buffer("inv_freq", inv_freq(rope_theta(config), head_dim), persistent=False)

    def check_cache(self, cache):
        if cache is not None:
            raise ValueError("this model has no KV cache yet: pass cache=None (chapter 08 adds the cache)")

    def positions(self, T, cache=None):
        """Positions of the T new tokens."""
        return torch.arange(T, device=self.inv_freq.device)

    def mask(self, T, cache=None, attention_mask=None):
        """Which keys each of the T new tokens may look at: earlier ones, not padding."""
        return padding_mask(causal_mask(T).to(self.inv_freq.device), attention_mask)

    def forward(self, input_ids, attention_mask=None, cache=None, labels=None, position_ids=None):
        self.check_cache(cache)
        T = input_ids.shape[1]
        positions = self.positions(T, cache) if position_ids is None else position_ids   # [T] or [B, T]
        if positions.shape[-1] != T:
            raise ValueError(f"position_ids has {positions.shape[-1]} positions per row; input_ids has {T} tokens")
        # one row of angles per sequence, and an axis for the heads to broadcast over
        cos, sin = (t.view(*positions.shape[:-1], 1, T, -1) for t in cos_sin(positions.reshape(-1), self.inv_freq))
        mask = self.mask(T, cache, attention_mask)
        x = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask, cache)
        h = self.model.norm(x)
        logits = self.lm_head(h) * self.config.logit_scale     # chapter 07: never drop the scale
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutput(logits=logits, loss=loss)


# ---------------------------------------------------------------------------------------------------
# Chapter 07: logit scaling and the loss
# ---------------------------------------------------------------------------------------------------

def causal_lm_loss(logits, labels):
    """Mean next-token cross-entropy in fp32: position t is scored on labels[t + 1]; -100 is skipped."""
    targets = labels[:, 1:]
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=-100)


# ---- chapters 08 and later add below this line ----

# ---------------------------------------------------------------------------------------------------
# Chapter 08: the KV cache and the greedy decode loop
# ---------------------------------------------------------------------------------------------------

class GrowingCache:
    """Each layer's keys and values, [B, kv_heads, T, head_dim] after RoPE, grown by concatenation."""

    def __init__(self):
        self.keys, self.values = [], []

    @property
    def seq_len(self):
        return self.keys[0].shape[2] if self.keys else 0

    def update(self, layer_idx, k, v):
        if layer_idx < len(self.keys):               # later steps: append along the token axis
            k = torch.cat([self.keys[layer_idx], k], dim=2)
            v = torch.cat([self.values[layer_idx], v], dim=2)
            self.keys[layer_idx], self.values[layer_idx] = k, v
        else:                                        # the first call for this layer
            self.keys.append(k)
            self.values.append(v)
        return k, v


class StaticCache:
    """Room for max_len positions, allocated once; each step writes into the next free slots."""

    def __init__(self, config, batch_size, max_len, dtype=torch.float32, device=None):
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (batch_size, config.num_key_value_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.max_len, self.seq_len = max_len, 0

    def update(self, layer_idx, k, v):
        start, end = self.seq_len, self.seq_len + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"this cache holds {self.max_len} positions; the step needs {end}")
        self.keys[layer_idx][:, :, start:end] = k
        self.values[layer_idx][:, :, start:end] = v
        if layer_idx == len(self.keys) - 1:          # the last layer has written: the step is done
            self.seq_len = end
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]


class MyCachedCohereForCausalLM(MyCohereForCausalLM):
    """Chapter 06's model with a KV cache: new tokens sit after the cached ones, and see them."""

    def check_cache(self, cache):
        if cache is not None and not (hasattr(cache, "seq_len") and hasattr(cache, "update")):
            raise TypeError(f"cache must have seq_len and update(layer_idx, k, v); got {type(cache).__name__}")

    def positions(self, T, cache=None):
        past = cache.seq_len if cache is not None else 0            # positions already in the cache
        return torch.arange(past, past + T, device=self.inv_freq.device)

    def mask(self, T, cache=None, attention_mask=None):
        past = cache.seq_len if cache is not None else 0
        query = torch.arange(past, past + T, device=self.inv_freq.device)[:, None]
        key = torch.arange(past + T, device=self.inv_freq.device)[None, :]
        return padding_mask(key <= query, attention_mask)             # [T, past + T]

    def forward(self, input_ids, attention_mask=None, cache=None, labels=None):
        """Chapter 06's forward, with RoPE's cos and sin cast to the weights' dtype, as transformers does, so
        that the model also runs in bfloat16 and float16 (chapter 10)."""
        self.check_cache(cache)
        T = input_ids.shape[1]
        x = self.model.embed_tokens(input_ids)
        cos, sin = (t.to(x.dtype) for t in cos_sin(self.positions(T, cache), self.inv_freq))
        mask = self.mask(T, cache, attention_mask)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask, cache)
        logits = self.lm_head(self.model.norm(x)) * self.config.logit_scale
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutput(logits=logits, loss=loss)


@torch.no_grad()
def greedy_decode(model, prompt, max_new_tokens, cache=None):
    """Prompt [1, T] -> prompt + new tokens, and the number of positions fed at each step."""
    tokens, step_input, fed = prompt, prompt, []
    for _ in range(max_new_tokens):
        fed.append(step_input.shape[1])
        new = model(step_input, cache=cache).logits[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, new], dim=1)
        step_input = new if cache is not None else tokens
    return tokens, fed


# ---------------------------------------------------------------------------------------------------
# Chapter 09: sampling
# ---------------------------------------------------------------------------------------------------

def apply_temperature(logits, temperature):
    return logits / temperature


def top_k(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1])).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p(logits, p):
    ascending, order = torch.sort(logits, descending=False)
    dropped = ascending.softmax(-1).cumsum(-1) <= (1 - p)
    dropped[..., -1:] = False
    return logits.masked_fill(dropped.scatter(-1, order, dropped), float("-inf"))


def min_p(logits, threshold):
    probs = logits.softmax(-1)
    drop = probs < threshold * probs.amax(-1, keepdim=True)
    drop.scatter_(-1, probs.argmax(-1, keepdim=True), False)
    return logits.masked_fill(drop, float("-inf"))


def warp(logits, temperature=1.0, top_k_=None, top_p_=None, min_p_=None):
    """The filters in transformers' order: temperature, top-k, top-p, min-p."""
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    if top_k_:
        logits = top_k(logits, top_k_)
    if top_p_ is not None and top_p_ < 1.0:
        logits = top_p(logits, top_p_)
    if min_p_ is not None:
        logits = min_p(logits, min_p_)
    return logits


@torch.no_grad()
def generate(model, input_ids, max_new_tokens, do_sample=False, temperature=1.0, top_k=None, top_p=None,
             min_p=None, generator=None, eos_token_id=None, cache="static"):
    """Prompt [1, T] -> prompt + up to max_new_tokens tokens, with the model's KV cache ("static",
    "growing" or None); greedy, or one draw per step from the warped distribution. Stops after eos."""
    if cache not in ("static", "growing", None):
        raise ValueError(f"cache={cache!r}: use 'static', 'growing' or None")
    T = input_ids.shape[1]
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())   # the activations' dtype
    kv = {"static": lambda: StaticCache(model.config, input_ids.shape[0], T + max_new_tokens, dtype,
                                        input_ids.device),
          "growing": GrowingCache, None: lambda: None}[cache]()
    tokens, step_input = input_ids, input_ids
    for _ in range(max_new_tokens):
        logits = model(step_input, cache=kv).logits[:, -1].float()
        if do_sample:
            probs = warp(logits, temperature, top_k, top_p, min_p).softmax(-1)
            new = torch.multinomial(probs, num_samples=1, generator=generator)
        else:
            new = logits.argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, new], dim=1)
        step_input = new if kv is not None else tokens
        if eos_token_id is not None and bool((new == eos_token_id).all()):
            break
    return tokens


# ---------------------------------------------------------------------------------------------------
# Chapter 10: loading a checkpoint into your model
# ---------------------------------------------------------------------------------------------------

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}


def read_header(path):
    """(where the tensor bytes start, {name: {dtype, shape, data_offsets}}) of a safetensors file."""
    import json
    import struct

    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def open_safetensors(path):
    """{name: tensor} for every tensor of the file, each a view of one private mapping of the file."""
    start, header = read_header(path)
    raw = torch.from_file(str(path), shared=False, size=Path(path).stat().st_size, dtype=torch.uint8)
    return {name: raw[start + meta["data_offsets"][0]:start + meta["data_offsets"][1]]
            .view(SAFETENSORS_DTYPES[meta["dtype"]]).reshape(meta["shape"]) for name, meta in header.items()}


def read_config(folder, model_type="cohere"):
    """config.json as an object with the attributes the model reads, in either spelling of rope_theta.
    `model_type` is the one the caller's model implements (chapter 13 reads "cohere2" files with it)."""
    import json
    from types import SimpleNamespace

    raw = json.loads((Path(folder) / "config.json").read_text())
    if raw.get("model_type") != model_type:
        raise ValueError(f"{folder}/config.json: model_type {raw.get('model_type')!r}; this loader reads {model_type!r}")
    config = SimpleNamespace(**{"layer_norm_eps": 1e-5, "use_qk_norm": False, "logit_scale": 0.0625,
                                "head_dim": None, **raw})
    config.num_key_value_heads = raw.get("num_key_value_heads") or raw["num_attention_heads"]
    config.head_dim = raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"]
    if "rope_parameters" not in raw:          # the older spelling: rope_theta at the top level
        config.rope_parameters = {"rope_type": "default", "rope_theta": raw.get("rope_theta", 10000.0)}
    return config


def load_model(folder, dtype=torch.float32, config=None, model_class=None):
    """Your cached model holding a checkpoint folder's weights (one model.safetensors or an index and its
    shards), built on the meta device and given the mapped tensors, so the weights are never held twice.
    `config` and `model_class` (default: `read_config(folder)`, `MyCachedCohereForCausalLM`) let a later
    chapter load another model type with the same code (chapter 13: cohere2)."""
    import json

    folder = Path(folder)
    config = read_config(folder) if config is None else config
    model_class = MyCachedCohereForCausalLM if model_class is None else model_class
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    state = {}
    for name in files:
        state.update(open_safetensors(folder / name))
    state = {name: t.to(dtype) for name, t in state.items()}
    with torch.device("meta"):
        model = model_class(config)
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = set(result.missing_keys) - {"lm_head.weight"}
    if missing or result.unexpected_keys:
        raise ValueError(f"{folder}: missing {sorted(missing)}, unexpected {sorted(result.unexpected_keys)}")
    model.lm_head.weight = model.model.embed_tokens.weight                # tied: stored once
    head_dim = config.head_dim or config.hidden_size // config.num_attention_heads
    model.inv_freq = inv_freq(rope_theta(config), head_dim)             # computed, not stored: off meta
    return model.eval()


# ---------------------------------------------------------------------------------------------------
# Chapters 12-13: the quantized layer and cohere2 (add below)
# ---------------------------------------------------------------------------------------------------

# Chapter 12: quantized linear layers (swap them into your model with `swap_linears`)

def pack_pairs(q):
    """[N, K] levels 0..15, K even -> [N, K // 2] bytes: inputs 2i and 2i + 1 share byte i, 2i in the low bits."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_pairs(packed):
    """The inverse of `pack_pairs`."""
    return torch.stack([packed & 15, packed >> 4], dim=-1).flatten(-2)


class MyInt8Linear(nn.Module):
    """int8 weights, one bf16 scale per output row (absmax / 127), dequantized before the multiply."""

    def __init__(self, weight):
        super().__init__()
        scale = (weight.abs().amax(dim=1) / 127).to(torch.bfloat16)
        self.register_buffer("q", (weight / scale.float()[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)

    @property
    def weight(self):                       # rebuilt from the integers: chapter 06's MLP reads .weight
        return self.q.float() * self.scale.float()[:, None]

    def forward(self, x):
        return F.linear(x, self.weight.to(x.dtype))


class MyInt4Linear(nn.Module):
    """Asymmetric int4 in groups of `group_size` inputs (a bf16 scale and offset each), two levels a byte."""

    def __init__(self, weight, group_size=64):
        super().__init__()
        N, K = weight.shape
        g = F.pad(weight.float(), (0, -K % group_size)).view(N, -1, group_size)   # zeros fill the last group
        lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
        scale = ((hi - lo) / 15).clamp(min=1e-12).to(torch.bfloat16)
        offset = (lo + 8 * scale.float()).to(torch.bfloat16)
        q = ((g - offset.float()) / scale.float()).round().add(8).clamp(0, 15)
        self.register_buffer("packed", pack_pairs(q.view(N, -1)))
        self.register_buffer("scale", scale)
        self.register_buffer("offset", offset)
        self.in_features, self.out_features = K, N

    @property
    def weight(self):
        q = unpack_pairs(self.packed).float().view(*self.scale.shape[:2], -1)
        return ((q - 8) * self.scale.float() + self.offset.float()).flatten(1)[:, :self.in_features]

    def forward(self, x):
        return F.linear(x, self.weight.to(x.dtype))


def nf4_levels(tail=0.9677083):
    """QLoRA's 16 NF4 levels: normal quantiles, 8 above zero, 7 below, zero itself, scaled to [-1, 1]."""
    ndtri = torch.special.ndtri
    pos = ndtri(torch.linspace(tail, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -ndtri(torch.linspace(tail, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return (levels / levels.abs().max()).float()


class MyNF4Linear(nn.Module):
    """NF4: each weight / absmax of its block of 64 inputs to the nearest level, two codes a byte, fp32 absmax.
    The weight is rebuilt at every call; gradients flow to the input, never to the frozen codes (QLoRA)."""

    def __init__(self, weight, block=64):
        super().__init__()
        N, K = weight.shape
        if K % block:
            raise ValueError(f"a weight of {K} inputs is not a whole number of NF4 blocks of {block}")
        self.register_buffer("levels", nf4_levels(), persistent=False)
        blocks = weight.detach().float().view(N, K // block, block)
        absmax = blocks.abs().amax(-1, keepdim=True).clamp(min=1e-12)
        codes = ((blocks / absmax)[..., None] - self.levels).abs().argmin(-1)
        self.register_buffer("packed", pack_pairs(codes.view(N, K)))
        self.register_buffer("absmax", absmax)
        self.in_features, self.out_features = K, N

    @property
    def weight(self):
        levels = self.levels[unpack_pairs(self.packed).long()]
        return (levels.view(*self.absmax.shape[:2], -1) * self.absmax).flatten(1)

    def forward(self, x):
        return F.linear(x, self.weight.to(x.dtype))


def swap_linears(module, make):
    """Replace, in place, every nn.Linear below `module` by make(its weight); returns `module`."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, make(child.weight.detach()))
        else:
            swap_linears(child, make)
    return module


def held_bytes(module):
    """Bytes of every parameter and buffer (a tied tensor once): what the model keeps in memory."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


# Chapter 13: cohere2 (sliding-window layers with RoPE, global NoPE layers, the ring cache)

def sliding_mask(T, window):
    """[T, T] booleans, True where query i may look at key j: causal and at most window - 1 tokens back."""
    positions = torch.arange(T)
    back = positions.view(-1, 1) - positions.view(1, -1)       # how far key j lies behind query i
    return (back >= 0) & (back < window)


def layer_masks(model, T, cache=None):
    """{layer type: mask} for T new tokens: chapter 08's offset causal mask for full layers, the band for
    sliding ones. With a WindowedCache one new token sees every key the ring hands back (one True that
    broadcasts); a prompt goes into an empty cache."""
    full = model.mask(T, cache)
    past = cache.seq_len if cache is not None else 0
    if T == 1:
        return {"full_attention": full, "sliding_attention": torch.ones(1, 1, dtype=torch.bool, device=full.device)}
    if past:
        raise ValueError(f"a prompt goes into an empty cache, then one token per call; got {T} tokens after {past}")
    window = sliding_mask(T, model.config.sliding_window).to(full.device)
    return {"full_attention": full, "sliding_attention": window}


class MyCohere2ForCausalLM(MyCachedCohereForCausalLM):
    """Chapter 08's cached model with cohere2's layer pattern (`config.layer_types`): a sliding layer turns q
    and k by RoPE and sees the last `sliding_window` keys; a full layer turns them by the angle zero (NoPE:
    cos 1, sin 0) and sees every key. Caches: None, or a WindowedCache."""

    def forward(self, input_ids, cache=None, labels=None):
        self.check_cache(cache)
        T = input_ids.shape[1]
        x = self.model.embed_tokens(input_ids)
        cos, sin = (t.to(x.dtype) for t in cos_sin(self.positions(T, cache), self.inv_freq))
        turns = {"sliding_attention": (cos, sin), "full_attention": (torch.ones_like(cos), torch.zeros_like(sin))}
        masks = layer_masks(self, T, cache)
        for layer, kind in zip(self.model.layers, self.config.layer_types):
            x = layer(x, *turns[kind], masks[kind], cache)
        logits = self.lm_head(self.model.norm(x)) * self.config.logit_scale
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutput(logits=logits, loss=loss)


class WindowedCache:
    """Per layer: a ring of `window` slots for sliding layers (token p in slot p mod window), a growing cache
    for full layers. `seq_len` counts the positions stored; it advances when the last layer has written."""

    def __init__(self, layer_types, window):
        self.layer_types, self.window = list(layer_types), window
        self.keys, self.values = [None] * len(layer_types), [None] * len(layer_types)
        self.seq_len = 0

    def update(self, layer, k, v):
        start, n = self.seq_len, k.shape[2]
        if layer == len(self.layer_types) - 1:
            self.seq_len += n
        if self.layer_types[layer] == "full_attention":
            if self.keys[layer] is not None:
                k = torch.cat((self.keys[layer], k), 2)
                v = torch.cat((self.values[layer], v), 2)
            self.keys[layer], self.values[layer] = k, v
            return k, v
        if self.keys[layer] is None:
            self.keys[layer] = k.new_zeros(*k.shape[:2], self.window, k.shape[3])
            self.values[layer] = v.new_zeros(*v.shape[:2], self.window, v.shape[3])
        keep = min(n, self.window)                    # of a long prompt, only its last `window` tokens stay
        slots = torch.arange(start + n - keep, start + n, device=k.device) % self.window
        self.keys[layer][:, :, slots], self.values[layer][:, :, slots] = k[:, :, n - keep:], v[:, :, n - keep:]
        if n > 1:                                     # a prompt attends to itself, under the band mask
            return k, v
        filled = min(start + 1, self.window)
        return self.keys[layer][:, :, :filled], self.values[layer][:, :, :filled]


def read_cohere2_config(folder):
    """A cohere2 checkpoint's config.json, read by chapter 10's reader, with `layer_types` built from the older
    `sliding_window_pattern` (every pattern-th layer global, 4 by default) when the file has none."""
    config = read_config(folder, model_type="cohere2")
    if getattr(config, "layer_types", None) is None:
        every = getattr(config, "sliding_window_pattern", 4)
        config.layer_types = ["full_attention" if (i + 1) % every == 0 else "sliding_attention"
                              for i in range(config.num_hidden_layers)]
    return config


def load_cohere2_model(folder, dtype=torch.float32):
    """Your cohere2 model (`MyCohere2ForCausalLM`) holding a cohere2 checkpoint folder's weights: chapter 10's
    loader, handed the cohere2 config and model class."""
    return load_model(folder, dtype, config=read_cohere2_config(folder), model_class=MyCohere2ForCausalLM)
