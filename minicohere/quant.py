"""Weight-only quantization: Command-R's linear layers in 8 and 4 bits (notebook 12).

A decode step reads every weight once and does little arithmetic with each, so its speed is set by how
many bytes the weights take. Weight-only quantization stores each weight in fewer bits plus a few float
scales, and turns it back into a float just before (or inside) the matrix multiply. The activations stay
floats. Three schemes:

    int8   one scale per output channel (row), symmetric:      w ~ q * scale,                 q in [-127, 127]
    int4   one scale per group of `group_size` inputs in a row: w ~ (q - 8) * scale + offset, q in [0, 15]
           (symmetric: offset = 0; asymmetric: offset puts the group's minimum on q = 0), two q per byte
    nf4    QLoRA's "normal float": 16 levels placed at quantiles of the normal distribution, times the
           absolute maximum of each block of 64 weights:       w ~ NF4_LEVELS[q] * absmax,    q in [0, 15]

Groups run along the input dimension, so every output row is quantized on its own: a row can be
quantized without looking at any other row, which lets `from_pretrained` quantize a 256000-row embedding
a slice at a time. An input dimension that is not a multiple of the group size is padded with zero
weights (the bundled model's MLP has 704 inputs; 704 is not a multiple of 128).

The tied embedding / LM head is quantized by default (`head=True`): it is the largest single matrix and,
in decode, the largest read per token (256000 x 8192 in c4ai-command-r-v01, 6% of the model; a quarter
of the bundled model). One quantized copy serves both uses: the head multiplies by it, the embedding
dequantizes only the rows of the tokens it looks up. `head=False` keeps it in its float dtype, and
`head="int8"` gives it a scheme of its own (int4 blocks with an int8 head: the head's rounding moves every
logit, so a few more bits there buy back most of int4's loss); benchmarks/bench_quant.py measures all three.

On the CPU the matrix multiply runs in PyTorch's own kernels for packed weights with bf16 activations
(`torch._weight_int8pack_mm`, `aten._weight_int4pack_mm_for_cpu`); with fp32 activations those kernels are
slower than fp32 `F.linear`, with bf16 ones they beat it (README, issue 11). That is why int4 packs its
bytes in the order the CPU kernel reads (`pack_int4`). NF4 has no kernel: it dequantizes to bf16 and
calls `F.linear`. On other devices every scheme dequantizes to the activations' dtype and calls `F.linear`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

SCHEMES = ("int8", "int4", "nf4")
MIN_GROUP, MAX_GROUP = 32, 128
NF4_BLOCK = 64  # QLoRA's block size for NF4's absmax
KERNEL_DTYPE = torch.bfloat16  # the CPU kernels take bf16 activations and bf16 scales
CHUNK_ELEMENTS = 2 ** 18  # weights quantized at once: bounds the fp32 scratch memory for a huge matrix


def check_scheme(scheme: str, group_size: int) -> None:
    """A clear ValueError for an unknown scheme or a group size the kernels cannot use."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}: use one of {', '.join(map(repr, SCHEMES))}")
    if scheme == "int4":
        if (not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < MIN_GROUP
                or group_size > MAX_GROUP or group_size & (group_size - 1)):
            raise ValueError(f"group_size={group_size!r}: int4 needs a power of two from {MIN_GROUP} to "
                             f"{MAX_GROUP} (32, 64 or 128)")


def by_row_slices(w: torch.Tensor, quantize_rows, rows_multiple: int = 1) -> list[torch.Tensor]:
    """quantize_rows(w) computed a slice of rows at a time (rows are quantized independently), its outputs
    written into tensors allocated once: the fp32 scratch stays near CHUNK_ELEMENTS weights even for a
    256000-row embedding, instead of several full-size temporaries."""
    step = max(1, CHUNK_ELEMENTS // max(1, w.shape[1]) // rows_multiple) * rows_multiple
    results = None
    for start in range(0, w.shape[0], step):
        parts = quantize_rows(w[start:start + step])
        if results is None:
            results = [torch.empty((w.shape[0], *p.shape[1:]), dtype=p.dtype, device=p.device) for p in parts]
        for result, part in zip(results, parts):
            result[start:start + step] = part
    return results


def pad_columns(w: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero columns on the right so the input dimension is a multiple of `multiple` (zero weights add 0)."""
    extra = -w.shape[-1] % multiple
    return F.pad(w, (0, extra)) if extra else w


def pad_rows(w: torch.Tensor, multiple: int) -> torch.Tensor:
    extra = -w.shape[0] % multiple
    return F.pad(w, (0, 0, 0, extra)) if extra else w


# ---------------------------------------------------------------------------------------------------
# int8: one scale per output channel
# ---------------------------------------------------------------------------------------------------


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> q int8 [N, K] and scale [N] (bf16): row n is q[n] * scale[n].

    The scale maps each row's largest |w| to 127. It is rounded to bf16 (the kernel's dtype) before q is
    computed, so q * scale is exactly what the kernel multiplies by; the error per weight stays within
    half a step, scale / 2.
    """
    w = w.float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).to(KERNEL_DTYPE)
    q = (w / scale.float()[:, None]).round().clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return (q.to(dtype) * scale.to(dtype)[:, None])


# ---------------------------------------------------------------------------------------------------
# int4: groups along the input dimension, two values per byte
# ---------------------------------------------------------------------------------------------------

PACK_BLOCK = 64  # rows are padded to a multiple of this, the largest block any CPU kernel layout uses


def pack_int4(q: torch.Tensor, block: int = PACK_BLOCK) -> torch.Tensor:
    """[N, K] values 0..15 (N a multiple of `block`, K even) -> [N, K // 2] uint8, two values per byte.

    The byte order is the one `aten._weight_int4pack_mm_for_cpu` reads, so the same bytes serve the kernel
    and `unpack_int4`: the rows come in blocks of `block`, and within a block, byte (k, j) holds row j's
    k-th value in its low four bits and row j + block / 2's in its high four bits. The kernel's block is
    its vector width: 64 rows with AVX-512, 32 with AVX2 (`cpu_kernel_block` asks it). (The notebook packs
    neighbouring values of one row instead; any fixed pairing stores the same information.)
    """
    N, K = q.shape
    blocks = q.to(torch.uint8).view(N // block, 2, block // 2, K)  # [block, low/high half, j, k]
    low, high = blocks[:, 0], blocks[:, 1]
    packed = (low | (high << 4)).transpose(1, 2)  # [block, k, j]: the kernel walks k, then j
    return packed.reshape(N, K // 2).contiguous()


def unpack_int4(packed: torch.Tensor, block: int = PACK_BLOCK) -> torch.Tensor:
    """The inverse of pack_int4: [N, K // 2] uint8 -> [N, K] uint8 values 0..15."""
    return unpack_int4_rows(packed, None, block)


def unpack_int4_rows(packed: torch.Tensor, rows: torch.Tensor | None, block: int = PACK_BLOCK) -> torch.Tensor:
    """Rows of the unpacked matrix (all of them for rows=None), without unpacking the others: an embedding
    lookup reads a few rows of a 256000-row matrix."""
    N, half_K = packed.shape
    rows = torch.arange(N, device=packed.device) if rows is None else rows
    by_k = packed.view(N // block, 2 * half_K, block // 2)  # [block, k, j]
    which, within = rows // block, rows % block
    high, j = within // (block // 2), within % (block // 2)
    bytes_ = by_k[which, :, j]  # [len(rows), K]
    return torch.where(high[:, None] == 0, bytes_ & 0xF, bytes_ >> 4)


@functools.cache
def cpu_kernel_block() -> int | None:
    """The row block of the CPU int4 kernel's byte order on this machine, found by asking the kernel to
    pack a probe; None where its layout is none of ours (then Int4Linear dequantizes instead)."""
    probe = torch.randint(0, 16, (128, 64), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    try:
        theirs = torch.ops.aten._convert_weight_to_int4pack_for_cpu(probe, 1)
    except (RuntimeError, AttributeError):
        return None
    return next((b for b in (64, 32, 16) if torch.equal(pack_int4(probe, b), theirs)), None)


def quantize_int4(w: torch.Tensor, group_size: int, symmetric: bool = False):
    """[N, K] float -> (q uint8 [N, K'] in 0..15, scale [N, G], offset [N, G]), K' = G * group_size.

    Each group of `group_size` inputs in a row gets its own scale and offset, w ~ (q - 8) * scale + offset:
      symmetric:  scale = absmax / 7 and offset = 0, so q - 8 runs over -7..7 around zero;
      asymmetric: scale = (max - min) / 15 and offset = min + 8 * scale, so q = 0 lands on the minimum and
                  q = 15 on the maximum: all 16 levels used, which halves the error for one-sided groups.
    Scale and offset are rounded to bf16 before q is computed, for the same reason as in int8.
    """
    w = pad_columns(w.float(), group_size)
    N, K = w.shape
    groups = w.view(N, K // group_size, group_size)
    if symmetric:
        scale = (groups.abs().amax(dim=-1) / 7).clamp(min=1e-12).to(KERNEL_DTYPE)
        offset = torch.zeros_like(scale)
    else:
        lo, hi = groups.amin(dim=-1), groups.amax(dim=-1)
        scale = ((hi - lo) / 15).clamp(min=1e-12).to(KERNEL_DTYPE)
        offset = (lo + 8 * scale.float()).to(KERNEL_DTYPE)
    levels = ((groups - offset.float()[..., None]) / scale.float()[..., None]).round() + 8
    return levels.clamp(0, 15).to(torch.uint8).view(N, K), scale, offset


def dequantize_int4(q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, dtype=torch.float32):
    """(q - 8) * scale + offset, each group's scale and offset repeated over its inputs: [N, K']."""
    group_size = q.shape[1] // scale.shape[1]
    s = scale.to(dtype).repeat_interleave(group_size, dim=1)
    o = offset.to(dtype).repeat_interleave(group_size, dim=1)
    return (q.to(dtype) - 8) * s + o


# ---------------------------------------------------------------------------------------------------
# NF4: sixteen levels from the normal distribution
# ---------------------------------------------------------------------------------------------------

# The published table (QLoRA, Dettmers et al. 2023, appendix E). `normal_float_levels()` derives it.
NF4_LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0])


def normal_float_levels(tail: float = 0.9677083) -> torch.Tensor:
    """NF4's levels: quantiles of N(0, 1), scaled so the largest is 1.

    Trained weights are roughly normal, so levels spaced like the normal's quantiles give each level
    about the same share of the weights. Exact zero must be a level (padding and zero weights stay exact),
    which an even count of symmetric levels cannot give; so the positive side gets 8 levels and the
    negative side 7, each side from evenly spaced probabilities between 1/2 and `tail` (not 1, whose
    quantile is infinite), and zero is the 16th.
    """
    ndtri = torch.special.ndtri
    positive = ndtri(torch.linspace(tail, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -ndtri(torch.linspace(tail, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).sort().values
    return (levels / levels.abs().max()).float()


def quantize_nf4(w: torch.Tensor, block_size: int = NF4_BLOCK):
    """[N, K] float -> (q uint8 [N, K'] in 0..15, absmax [N, G]): w ~ NF4_LEVELS[q] * absmax of its block.

    Each weight, divided by its block's absmax (so it lies in [-1, 1]), goes to the nearest level.
    """
    w = pad_columns(w.float(), block_size)
    N, K = w.shape
    blocks = w.view(N, K // block_size, block_size)
    absmax = blocks.abs().amax(dim=-1).clamp(min=1e-12)
    levels = NF4_LEVELS.to(w.device)
    midpoints = (levels[1:] + levels[:-1]) / 2  # nearest level = how many midpoints lie below
    q = torch.bucketize(blocks / absmax[..., None], midpoints).to(torch.uint8)
    return q.view(N, K), absmax


def dequantize_nf4(q: torch.Tensor, absmax: torch.Tensor, dtype=torch.float32):
    block_size = q.shape[1] // absmax.shape[1]
    return NF4_LEVELS.to(q.device, dtype)[q.long()] * absmax.to(dtype).repeat_interleave(block_size, dim=1)


# ---------------------------------------------------------------------------------------------------
# The modules: drop-in replacements for nn.Linear (weight only; the bias stays a float)
# ---------------------------------------------------------------------------------------------------


class FrozenQuantizedLinear(torch.autograd.Function):
    """A quantized layer's forward, with a backward to its input only: grad_x = grad_out @ W.

    For QLoRA, where gradients pass through the frozen 4-bit layers to the LoRA matrices beneath. The CPU
    int4/int8 kernels have no derivative, and dequantize-then-F.linear would keep a float copy of W alive
    until the backward pass; here W is dequantized again in the backward, one layer at a time.
    """

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return layer(x)  # autograd is off inside, so the layer takes its plain path

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out @ ctx.layer.dequantize(grad_out.dtype), None


def wants_input_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


class QuantizedLinear(nn.Module):
    """What the three schemes share: shapes, the bias, and forward = dequantize, then F.linear.

    A subclass stores its weight in buffers and provides `dequantize_rows(rows)` (some output rows back
    as floats, [len(rows), in_features]); it may override `forward` with a faster kernel.
    """

    scheme = "none"

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def dequantize(self, dtype=torch.float32) -> torch.Tensor:
        """The whole weight back as floats, [out_features, in_features]: what the layer multiplies by."""
        return self.dequantize_rows(None, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantize(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Linear(QuantizedLinear):
    """int8 weights, one bf16 scale per output channel."""

    scheme = "int8"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__(weight.shape[1], weight.shape[0], bias)
        q, scale = by_row_slices(weight, quantize_int8)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)

    def dequantize_rows(self, rows, dtype=torch.float32):
        q, s = (self.qweight, self.scale) if rows is None else (self.qweight[rows], self.scale[rows])
        return dequantize_int8(q, s, dtype)

    def forward(self, x):
        if wants_input_grad(x):  # training through the frozen layer (QLoRA)
            return FrozenQuantizedLinear.apply(x, self)
        if x.device.type != "cpu":
            return super().forward(x)
        h = x.reshape(-1, self.in_features).to(KERNEL_DTYPE).contiguous()
        out = torch._weight_int8pack_mm(h, self.qweight, self.scale)
        out = out.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias.to(x.dtype)


class Int4Linear(QuantizedLinear):
    """int4 weights in groups of `group_size` inputs, packed two per byte in the CPU kernel's order."""

    scheme = "int4"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, group_size: int = 64,
                 symmetric: bool = False):
        super().__init__(weight.shape[1], weight.shape[0], bias)
        check_scheme("int4", group_size)
        self.group_size, self.symmetric = group_size, symmetric
        # Pad the rows to whole blocks of 64 for the packing; the extra (zero) rows are cut off after the
        # multiply. Every Command-R matrix is already a multiple of 64 tall.
        def quantize_and_pack(rows):
            q, scale, offset = quantize_int4(rows, group_size, symmetric)
            return pack_int4(q, self.pack_block), scale, offset

        # The CPU kernel's byte order where it has one we know; otherwise any (it then dequantizes).
        self.use_kernel = cpu_kernel_block() is not None
        self.pack_block = cpu_kernel_block() or PACK_BLOCK
        packed, scale, offset = by_row_slices(pad_rows(weight, PACK_BLOCK), quantize_and_pack, PACK_BLOCK)
        self.register_buffer("qweight", packed)  # [N', K' / 2] uint8
        # The kernel wants scale and offset side by side, group-major: [G, N', 2].
        self.register_buffer("scale_and_offset", torch.stack([scale, offset], dim=-1).transpose(0, 1).contiguous())

    def dequantize_rows(self, rows, dtype=torch.float32):
        q = unpack_int4_rows(self.qweight, rows, self.pack_block)[:self.out_features]
        scale, offset = self.scale_and_offset[..., 0].T, self.scale_and_offset[..., 1].T
        rows_ = slice(self.out_features) if rows is None else rows
        scale, offset = scale[rows_], offset[rows_]
        return dequantize_int4(q, scale, offset, dtype)[:, :self.in_features]

    def forward(self, x):
        if wants_input_grad(x):  # training through the frozen layer (QLoRA)
            return FrozenQuantizedLinear.apply(x, self)
        if x.device.type != "cpu" or not self.use_kernel:
            return super().forward(x)
        h = pad_columns(x.reshape(-1, self.in_features).to(KERNEL_DTYPE), self.group_size).contiguous()
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(h, self.qweight, self.group_size, self.scale_and_offset)
        out = out[:, :self.out_features].to(x.dtype).view(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group_size={self.group_size}, symmetric={self.symmetric}"


class NF4Linear(QuantizedLinear):
    """NF4 codes, two per byte, one fp32 absmax per block of 64 inputs.

    No CPU kernel reads NF4, so the bytes are packed plainly (inputs 2i and 2i + 1 of a row share byte i,
    the first in the low four bits) and decoded a byte at a time: a 256-entry table maps each byte
    straight to its two levels, one lookup per byte instead of unpacking and then looking up.
    """

    scheme = "nf4"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, block_size: int = NF4_BLOCK):
        super().__init__(weight.shape[1], weight.shape[0], bias)
        self.block_size = block_size

        def quantize_and_pack(rows):
            q, absmax = quantize_nf4(rows, block_size)
            return q[:, 0::2] | (q[:, 1::2] << 4), absmax

        packed, absmax = by_row_slices(weight, quantize_and_pack)
        self.register_buffer("qweight", packed)  # [N, K' / 2] uint8
        self.register_buffer("absmax", absmax)  # [N, K' / block_size]
        byte = torch.arange(256)
        self.register_buffer("byte_levels", torch.stack([NF4_LEVELS[byte % 16], NF4_LEVELS[byte // 16]], dim=1)
                             .to(weight.device), persistent=False)  # [256, 2]: byte -> (first, second) level

    def dequantize_rows(self, rows, dtype=torch.float32):
        packed = self.qweight if rows is None else self.qweight[rows]
        absmax = self.absmax if rows is None else self.absmax[rows]
        # index_select with int32 indices: converting the bytes to int64 for ordinary indexing costs more
        # than the lookup itself.
        levels = torch.index_select(self.byte_levels.to(dtype), 0, packed.reshape(-1).int())  # [n * K' / 2, 2]
        w = levels.view(len(packed), absmax.shape[1], self.block_size) * absmax.to(dtype)[..., None]
        return w.view(len(packed), -1)[:, :self.in_features]

    def forward(self, x):
        if wants_input_grad(x):  # training through the frozen layer (QLoRA)
            return FrozenQuantizedLinear.apply(x, self)
        # Dequantize to bf16 on the CPU (half the bytes of fp32 to write and read back, and bf16 F.linear
        # is the faster one here), to the activations' dtype elsewhere.
        dtype = KERNEL_DTYPE if x.device.type == "cpu" else x.dtype
        out = F.linear(x.to(dtype), self.dequantize(dtype)).to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)


class QuantizedEmbedding(nn.Module):
    """The embedding of a tied model whose head is quantized: looks rows up in the head's quantized weight.

    It holds no weight of its own (the head owns the bytes); `weight` is an empty [0, hidden] tensor with
    the activations' dtype and device, so `model.dtype` and `model.device` still answer.
    """

    def __init__(self, head: QuantizedLinear, dtype: torch.dtype, padding_idx: int | None = None):
        super().__init__()
        self.head = [head]  # a list, so the head is not registered twice as a submodule
        self.padding_idx = padding_idx
        self.register_buffer("weight", torch.empty(0, head.in_features, dtype=dtype,
                                                   device=next(iter(head.buffers())).device), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = self.head[0].dequantize_rows(input_ids.reshape(-1), self.weight.dtype)
        return rows.view(*input_ids.shape, -1)


def quantize_weight(weight: torch.Tensor, bias: torch.Tensor | None, scheme: str, group_size: int = 64,
                    symmetric: bool = False) -> QuantizedLinear:
    """One float weight [out, in] -> the scheme's module, on the weight's device."""
    check_scheme(scheme, group_size)
    if scheme == "int8":
        return Int8Linear(weight, bias)
    if scheme == "int4":
        return Int4Linear(weight, bias, group_size, symmetric)
    return NF4Linear(weight, bias)


# ---------------------------------------------------------------------------------------------------
# Quantizing a model
# ---------------------------------------------------------------------------------------------------


def linear_names(model: nn.Module, head: bool = True) -> list[str]:
    """The linear layers that quantization replaces: every projection in the blocks, and the head."""
    names = [name for name, m in model.model.layers.named_modules() if isinstance(m, nn.Linear)]
    names = [f"model.layers.{name}" for name in names]
    return names + (["lm_head"] if head else [])


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, QuantizedLinear) for m in model.modules())


def head_scheme(scheme: str, head: bool | str) -> str | None:
    """The LM head's scheme: the body's (head=True), none (False: kept in float), or one named."""
    if head is True:
        return scheme
    if head is False or head is None:
        return None
    if head not in SCHEMES:
        raise ValueError(f"head={head!r}: use True (the body's scheme), False (kept in float) or one of "
                         f"{', '.join(map(repr, SCHEMES))}")
    return head


def check_quantize_args(model: nn.Module, scheme: str, group_size: int, head: bool | str = True) -> None:
    check_scheme(scheme, group_size)
    if head_scheme(scheme, head) is not None:
        check_scheme(head_scheme(scheme, head), group_size)
    if is_quantized(model):
        kinds = sorted({m.scheme for m in model.modules() if isinstance(m, QuantizedLinear)})
        raise ValueError(f"the model is already quantized ({', '.join(kinds)}); quantizing twice would "
                         f"compound the rounding errors: quantize the float model once")


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


@torch.no_grad()
def quantize(model: nn.Module, scheme: str, group_size: int = 64, symmetric: bool = False,
             head: bool | str = True) -> nn.Module:
    """Replace the model's linear layers, in place, by `scheme`'s quantized ones; returns the model.

    scheme: "int8" (per output channel), "int4" (groups of `group_size` inputs, asymmetric unless
    `symmetric`) or "nf4" (blocks of 64). head=True quantizes the LM head with the same scheme, a scheme
    name ("int8") with that one, False keeps it; for a tied model the embedding then reads its rows from
    the quantized head.
    """
    check_quantize_args(model, scheme, group_size, head)
    head = head_scheme(scheme, head)
    activations = model.dtype
    for name in linear_names(model, head is not None):
        linear = model.get_submodule(name)
        kind = head if name == "lm_head" else scheme
        replace_module(model, name, quantize_weight(linear.weight, linear.bias, kind, group_size, symmetric))
        del linear
    if head and model.config.tie_word_embeddings:
        embed = model.model.embed_tokens
        model.model.embed_tokens = QuantizedEmbedding(model.lm_head, activations, embed.padding_idx)
    return model


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer, a shared (tied) tensor counted once; the rotary tables excluded."""
    seen, total = set(), 0
    for name, t in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers()):
        if "rotary_emb" in name or t.data_ptr() in seen or t.numel() == 0:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def bits_per_weight(scheme: str, group_size: int = 64) -> float:
    """Stored bits per weight, scales included (ignoring padding): what the memory table multiplies by."""
    if scheme in ("fp32", "float32"):
        return 32.0
    if scheme in ("bf16", "fp16", "bfloat16", "float16"):
        return 16.0
    if scheme == "int8":
        return 8.0  # plus one 2-byte scale per row: negligible for rows of thousands of inputs
    if scheme == "int4":
        return 4.0 + 2 * 16 / group_size  # a bf16 scale and a bf16 offset per group
    if scheme == "nf4":
        return 4.0 + 32 / NF4_BLOCK  # one fp32 absmax per block of 64
    raise ValueError(f"scheme={scheme!r}: use fp32, bf16 or one of {', '.join(SCHEMES)}")


__all__ = ["SCHEMES", "NF4_LEVELS", "Int8Linear", "Int4Linear", "NF4Linear", "QuantizedLinear",
           "QuantizedEmbedding", "quantize", "quantize_weight", "head_scheme", "parameter_bytes", "bits_per_weight",
           "normal_float_levels", "pack_int4", "unpack_int4"]
