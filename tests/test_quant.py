"""Weight-only quantization (minicohere/quant.py, notebook 12): error bounds, packing, loading, generation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import minicohere
from minicohere import quant
from minicohere.quant import Int4Linear, Int8Linear, NF4Linear

from conftest import REPO, rel_err

# 96 x 160: neither dimension is a multiple of 64, so both the row padding (packing blocks of 64) and
# the column padding (groups) are exercised.
SHAPES = [(96, 160), (128, 256), (256, 704)]


def weight(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) / shape[1] ** 0.5
    w[:, 3] *= 20  # an outlier input channel, as trained transformers have
    return w


@pytest.mark.parametrize("shape", SHAPES)
def test_int8_round_trip_is_within_half_a_step_per_row(shape):
    w = weight(shape)
    layer = Int8Linear(w)
    step = layer.scale.float()[:, None]
    assert ((layer.dequantize() - w).abs() <= step / 2 + 1e-7).all()
    assert layer.qweight.dtype == torch.int8 and layer.qweight.abs().max() == 127  # each row uses its range


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [False, True])
def test_int4_round_trip_is_within_half_a_step_per_group(shape, group_size, symmetric):
    w = weight(shape)
    layer = Int4Linear(w, group_size=group_size, symmetric=symmetric)
    so = layer.scale_and_offset.float()[:, :shape[0]]  # [G, N, 2]
    scale = so[..., 0].T.repeat_interleave(group_size, dim=1)[:, :shape[1]]
    offset = so[..., 1].T.repeat_interleave(group_size, dim=1)[:, :shape[1]]
    # Half a step, plus the bf16 rounding of the offset (which shifts the whole grid of a group).
    bound = scale / 2 + offset.abs() * 2 ** -8 + 1e-7
    assert ((layer.dequantize() - w).abs() <= bound).all()
    if symmetric:
        assert (so[..., 1] == 0).all()


def test_asymmetric_int4_beats_symmetric_on_one_sided_groups():
    w = weight((128, 256)).abs()  # every group one-sided: symmetric wastes half its levels
    sym = (Int4Linear(w, symmetric=True).dequantize() - w).abs().mean()
    asym = (Int4Linear(w, symmetric=False).dequantize() - w).abs().mean()
    assert asym < 0.6 * sym


@pytest.mark.parametrize("shape", SHAPES)
def test_nf4_round_trip_is_within_half_the_widest_level_gap_times_absmax(shape):
    w = weight(shape)
    layer = NF4Linear(w)
    absmax = layer.absmax.repeat_interleave(64, dim=1)[:, :shape[1]]
    widest_gap = (quant.NF4_LEVELS[1:] - quant.NF4_LEVELS[:-1]).max()
    assert ((layer.dequantize() - w).abs() <= absmax * widest_gap / 2 + 1e-7).all()
    assert ((layer.dequantize() - w).abs() <= absmax * widest_gap / 2 * 0.5).float().mean() > 0.5


def test_nf4_levels_are_the_normal_quantiles_of_qlora():
    assert (quant.normal_float_levels() - quant.NF4_LEVELS).abs().max() < 1e-6
    assert quant.NF4_LEVELS[7] == 0 and quant.NF4_LEVELS[0] == -1 and quant.NF4_LEVELS[-1] == 1


@pytest.mark.parametrize("block", [64, 32])
@pytest.mark.parametrize("shape", [(64, 64), (128, 256), (704, 256), (256, 704)])
def test_int4_packing_is_exact(shape, block):
    q = torch.randint(0, 16, shape, generator=torch.Generator().manual_seed(1), dtype=torch.int32)
    packed = quant.pack_int4(q, block)
    assert packed.dtype == torch.uint8 and packed.shape == (shape[0], shape[1] // 2)
    assert torch.equal(quant.unpack_int4(packed, block), q.to(torch.uint8))
    rows = torch.tensor([0, 31, 32, 63, shape[0] - 1])
    assert torch.equal(quant.unpack_int4_rows(packed, rows, block), q[rows].to(torch.uint8))


def test_int4_packing_is_the_byte_order_of_this_cpus_kernel():
    block = quant.cpu_kernel_block()
    if block is None:
        pytest.skip("this CPU's int4 kernel uses a layout minicohere does not pack (Int4Linear dequantizes)")
    q = torch.randint(0, 16, (256, 128), generator=torch.Generator().manual_seed(2), dtype=torch.int32)
    assert torch.equal(quant.pack_int4(q, block), torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))


@pytest.mark.parametrize("make", [lambda w: Int8Linear(w), lambda w: Int4Linear(w, group_size=64),
                                  lambda w: Int4Linear(w, group_size=128, symmetric=True), lambda w: NF4Linear(w)],
                         ids=["int8", "int4-g64", "int4-g128-sym", "nf4"])
@pytest.mark.parametrize("shape", SHAPES)
def test_quantized_forward_is_f_linear_with_the_dequantized_weight(make, shape):
    w, bias = weight(shape), torch.randn(shape[0])
    layer = make(w)
    layer.bias = torch.nn.Parameter(bias, requires_grad=False)
    x = torch.randn(2, 5, shape[1])
    out = layer(x)
    assert out.shape == (2, 5, shape[0]) and out.dtype == torch.float32
    # The CPU kernels take bf16 activations: agreement to bf16's precision, not better.
    assert rel_err(out, F.linear(x, layer.dequantize(), bias)) < 1e-2
    rows = torch.tensor([[0, shape[0] - 1], [7, 7]])
    assert torch.equal(layer.dequantize_rows(rows.reshape(-1)), layer.dequantize()[rows.reshape(-1)])


def quantized_copy(model, scheme, **kw):
    import copy

    return minicohere.quantize(copy.deepcopy(model), scheme, **kw)


def loaded(saved_reference, family="08-2024-gqa", **overrides):
    _, folder = saved_reference(family, embed_std=0.3, **overrides)
    return minicohere.from_pretrained(folder, progress=False), folder


SCHEME_ARGS = [("int8", {}), ("int4", {"group_size": 32}), ("int4", {"group_size": 64, "symmetric": True}),
               ("nf4", {})]


@pytest.mark.parametrize("scheme,kw", SCHEME_ARGS, ids=["int8", "int4-g32", "int4-g64-sym", "nf4"])
def test_generate_on_a_quantized_model_is_the_same_in_every_cache_mode(scheme, kw):
    # The bundled trained model: its continuations vary, where random weights repeat one token.
    q = minicohere.from_pretrained(minicohere.bundled_path("tiny-command-r"), progress=False, quantize=scheme, **kw)
    prompt = torch.tensor([[5, 312, 1042, 87, 630, 51], [0, 0, 5, 733, 2048, 90]])
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    outs = {cache: q.generate(prompt, attention_mask=mask, max_new_tokens=10, eos_token_id=None, cache=cache)
            for cache in ("static", "dynamic", None)}
    assert torch.equal(outs["static"], outs["dynamic"]) and torch.equal(outs["dynamic"], outs[None])
    assert all(len(set(row[6:].tolist())) > 2 for row in outs[None])  # varied, not one token repeated


def test_quantized_head_serves_the_tied_embedding_and_head_false_keeps_it(saved_reference):
    model, _ = loaded(saved_reference)
    ids = torch.tensor([[1, 5, 95, 64]])  # 95: the last row, inside the padding block of the 96-row head
    q = quantized_copy(model, "int4", group_size=32)
    assert isinstance(q.model.embed_tokens, quant.QuantizedEmbedding)
    assert torch.equal(q.model.embed_tokens(ids)[0], q.lm_head.dequantize()[ids[0]])
    assert q.dtype == torch.float32 and q.device.type == "cpu"
    kept = quantized_copy(model, "int4", group_size=32, head=False)
    assert isinstance(kept.lm_head, torch.nn.Linear) and kept.lm_head.weight is kept.model.embed_tokens.weight
    assert quant.parameter_bytes(kept) > quant.parameter_bytes(q)


@pytest.mark.parametrize("scheme,kw", SCHEME_ARGS, ids=["int8", "int4-g32", "int4-g64-sym", "nf4"])
def test_from_pretrained_quantizes_a_sharded_bf16_checkpoint_as_quantize_does(saved_reference, tmp_path,
                                                                                scheme, kw):
    reference, _ = saved_reference(embed_std=0.3)
    folder = tmp_path / "bf16"
    reference.to(torch.bfloat16).save_pretrained(folder, max_shard_size="40KB")
    assert len(list(folder.glob("model-*-of-*.safetensors"))) > 2
    from_disk = minicohere.from_pretrained(folder, progress=False, quantize=scheme, **kw)
    in_memory = minicohere.quantize(minicohere.from_pretrained(folder, progress=False), scheme, **kw)
    ids = torch.tensor([[1, 17, 42, 8, 63, 5, 77]])
    a, b = from_disk(ids).logits, in_memory(ids).logits
    assert torch.equal(a, b)
    assert {type(m).__name__ for m in from_disk.modules()} >= {type(in_memory.lm_head).__name__, "QuantizedEmbedding"}
    assert quant.parameter_bytes(from_disk) == quant.parameter_bytes(in_memory)
    full = minicohere.from_pretrained(folder, progress=False)(ids).logits
    assert rel_err(a.float(), full.float()) < {"int8": 0.03}.get(scheme, 0.3)


def test_from_pretrained_with_quantize_keeps_attention_biases(saved_reference):
    model, folder = loaded(saved_reference, attention_bias=True)
    q = minicohere.from_pretrained(folder, progress=False, quantize="int8")
    proj = q.model.layers[0].self_attn.q_proj
    assert isinstance(proj, Int8Linear) and torch.equal(proj.bias, model.model.layers[0].self_attn.q_proj.bias)
    ids = torch.tensor([[1, 17, 42, 8]])
    assert rel_err(q(ids).logits, model(ids).logits) < 0.03


@pytest.mark.parametrize("scheme,group_size,message", [
    ("int3", 64, "scheme='int3'"), ("INT8", 64, "scheme='INT8'"), ("int4", 48, "group_size=48"),
    ("int4", 16, "group_size=16"), ("int4", 256, "group_size=256"), ("int4", "64", "group_size='64'"),
])
def test_bad_scheme_or_group_size_is_a_value_error_naming_it(saved_reference, scheme, group_size, message):
    model, folder = loaded(saved_reference)
    with pytest.raises(ValueError, match=message):
        minicohere.quantize(model, scheme, group_size=group_size)
    with pytest.raises(ValueError, match=message):
        minicohere.from_pretrained(folder, progress=False, quantize=scheme, group_size=group_size)
    assert isinstance(model.lm_head, torch.nn.Linear)  # nothing was replaced before the error


def test_quantizing_twice_is_a_value_error(saved_reference):
    model, folder = loaded(saved_reference)
    minicohere.quantize(model, "int8")
    with pytest.raises(ValueError, match="already quantized"):
        minicohere.quantize(model, "int4")
    with pytest.raises(ValueError, match="already quantized"):
        minicohere.quantize(minicohere.from_pretrained(folder, progress=False, quantize="nf4"), "nf4")


PEAK_SNIPPET = r"""
import json, sys, torch, minicohere
from minicohere.quant import parameter_bytes

def kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

minicohere.from_pretrained(sys.argv[1] + "/warm", progress=False, quantize="int4")  # imports, allocator warm-up
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM, the peak, to the current RSS
before = kib("VmRSS")
model = minicohere.from_pretrained(sys.argv[1] + "/big", progress=False, quantize="int4")
print(json.dumps({"rise": (kib("VmHWM") - before) * 1024, "bytes": parameter_bytes(model)}))
"""


def test_quantize_while_loading_peaks_near_the_quantized_size_not_the_checkpoint(tmp_path):
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    torch.manual_seed(0)
    config = minicohere.CohereConfig(vocab_size=4096, hidden_size=1024, intermediate_size=2816,
                                     num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                                     max_position_embeddings=64)
    with torch.device("meta"):
        shapes = {n: p.shape for n, p in minicohere.CohereForCausalLM(config).named_parameters()}
    model = minicohere.CohereForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "big", max_shard_size="60MB")
    small = minicohere.CohereConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    minicohere.CohereForCausalLM(small).save_pretrained(tmp_path / "warm")
    del model
    stored = sum(f.stat().st_size for f in (tmp_path / "big").glob("*.safetensors"))
    largest = max(s.numel() for s in shapes.values()) * 2
    res = subprocess.run([sys.executable, "-c", PEAK_SNIPPET, str(tmp_path)], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=REPO)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout.strip().splitlines()[-1])
    # The quantized model, one tensor as stored, the quantizer's fp32 scratch for a slice of rows, and
    # 16 MiB for the allocator's slack and the model's Python objects.
    scratch = 8 * quant.CHUNK_ELEMENTS * 4 + 16 * 2 ** 20
    assert r["rise"] < r["bytes"] + largest + scratch, (r, stored)
    assert r["rise"] < stored / 2, (r, stored)  # the bf16 checkpoint never sits in memory whole


def test_a_head_scheme_of_its_own_quantizes_the_head_alone_that_way(saved_reference, tmp_path):
    reference, _ = saved_reference(embed_std=0.3)
    folder = tmp_path / "bf16"
    reference.to(torch.bfloat16).save_pretrained(folder, max_shard_size="40KB")
    mixed = minicohere.from_pretrained(folder, progress=False, quantize="int4", group_size=32, quantize_head="int8")
    assert isinstance(mixed.lm_head, quant.Int8Linear)
    assert isinstance(mixed.model.layers[0].self_attn.q_proj, quant.Int4Linear)
    assert isinstance(mixed.model.embed_tokens, quant.QuantizedEmbedding)
    in_memory = minicohere.quantize(minicohere.from_pretrained(folder, progress=False), "int4", group_size=32,
                                    head="int8")
    ids = torch.tensor([[1, 17, 42, 8, 63, 5, 77]])
    assert torch.equal(mixed(ids).logits, in_memory(ids).logits)
    all_int4 = minicohere.from_pretrained(folder, progress=False, quantize="int4", group_size=32,
                                          quantize_head=True)
    assert isinstance(all_int4.lm_head, quant.Int4Linear)
    assert quant.parameter_bytes(all_int4) < quant.parameter_bytes(mixed)


@pytest.mark.parametrize("head", ["int2", "fp8", 8])
def test_an_unknown_head_scheme_is_refused_by_name(saved_reference, head):
    model, folder = loaded(saved_reference)
    with pytest.raises(ValueError, match="head="):
        minicohere.quantize(model, "int4", head=head)
    with pytest.raises(ValueError, match="head="):
        minicohere.from_pretrained(folder, progress=False, quantize="int4", quantize_head=head)


@pytest.mark.parametrize("scheme,head", [("int4", quant.Int8Linear), ("nf4", quant.Int8Linear),
                                         ("int8", quant.Int8Linear)])
def test_the_default_head_is_int8_under_a_4_bit_body_and_true_gives_the_body_scheme(saved_reference, scheme, head):
    model, folder = loaded(saved_reference)
    body = type(quantized_copy(model, scheme, head=True).lm_head)
    for q in (quantized_copy(model, scheme), minicohere.from_pretrained(folder, progress=False, quantize=scheme)):
        assert isinstance(q.lm_head, head), type(q.lm_head)
        assert type(q.model.layers[0].mlp.up_proj) is body  # the body keeps its own scheme
    assert quant.head_scheme(scheme, True) == scheme and quant.head_scheme(scheme, False) is None


@pytest.fixture(scope="module")
def bundled_val():
    """The bundled model, and the first 8 windows of 256 tokens of the validation text."""
    path = minicohere.bundled_path("tiny-command-r")
    tokenizer = minicohere.Tokenizer.from_file(path / "tokenizer.json")
    ids = tokenizer.encode(minicohere.bundled_path("corpus/val.txt").read_text(), add_special_tokens=False)
    return path, torch.tensor(ids[:8 * 256]).view(8, 256)


@torch.inference_mode()
def loss_and_kl(model, windows, reference=None):
    logp = F.log_softmax(model(windows).logits.float()[:, :-1], dim=-1)
    loss = F.nll_loss(logp.flatten(0, 1), windows[:, 1:].flatten()).item()
    if reference is None:
        return loss, 0.0, logp
    kl = F.kl_div(logp, reference, log_target=True, reduction="sum").item() / logp[..., 0].numel()
    return loss, kl, logp


@pytest.mark.parametrize("scheme", ["int4", "nf4"])
def test_a_4_bit_bundled_model_stays_within_1_percent_perplexity_of_fp32(bundled_val, scheme):
    import math

    path, windows = bundled_val
    base, _, reference = loss_and_kl(minicohere.from_pretrained(path, progress=False), windows)
    loss, kl, _ = loss_and_kl(minicohere.from_pretrained(path, progress=False, quantize=scheme), windows, reference)
    assert abs(math.exp(loss - base) - 1) < 0.01, (scheme, math.exp(loss - base) - 1)
    # the 4-bit head moves the next-token distributions more than the whole 4-bit body does
    _, kl_4bit_head, _ = loss_and_kl(minicohere.from_pretrained(path, progress=False, quantize=scheme,
                                                               quantize_head=True), windows, reference)
    assert kl < kl_4bit_head / 2, (kl, kl_4bit_head)
