"""LoRA (minicohere/lora.py): identity at init, merge, freezing, and equality with the peft library."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

import minicohere
from minicohere.lora import LoRALinear, add_lora, load_adapter, lora_state_dict, merge_lora, save_adapter

from conftest import rel_err


@pytest.fixture(autouse=True)
def gradients_on():
    # test_model.py and test_checkpoint.py switch autograd off for the whole process when they are
    # imported; these tests train, so they switch it back on for themselves.
    with torch.enable_grad():
        yield

IDS = torch.tensor([[5, 17, 42, 8, 63, 11, 90, 2], [1, 33, 7, 7, 50, 21, 4, 64]])


def randomize_lora(model, seed=1):
    """Give every B a nonzero value (it starts at zero, which would hide any error in the update path)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_A.copy_(torch.randn(m.lora_A.shape, generator=g) * 0.3)
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.3)
    return model


@pytest.fixture
def pair(saved_reference):
    """transformers' reference model and minicohere's model loaded from its checkpoint."""
    hf, folder = saved_reference(embed_std=0.3)
    return hf, minicohere.from_pretrained(folder, progress=False)


def peft_model(hf, r=4, alpha=8, targets=("q_proj", "v_proj", "o_proj", "down_proj")):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0,
                             task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(copy.deepcopy(hf), config)


def test_a_model_just_given_lora_computes_exactly_what_the_base_did(pair):
    _, model = pair
    before = model(IDS).logits
    add_lora(model, r=4, alpha=8)
    assert torch.equal(model(IDS).logits, before)


def test_only_the_lora_matrices_train_and_their_count_is_r_times_in_plus_out(pair):
    _, model = pair
    add_lora(model, r=4, alpha=8, target_modules=("q_proj", "down_proj"))
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    c = model.config
    q = 4 * (c.hidden_size + c.num_attention_heads * c.head_dim)
    down = 4 * (c.intermediate_size + c.hidden_size)
    assert all(n.endswith((".lora_A", ".lora_B")) for n in trainable)
    assert sum(trainable.values()) == c.num_hidden_layers * (q + down)


def test_merging_gives_the_logits_of_the_unmerged_model_and_plain_linears(pair):
    _, model = pair
    randomize_lora(add_lora(model, r=4, alpha=8))
    unmerged = model(IDS).logits
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert isinstance(model.model.layers[0].self_attn.q_proj, torch.nn.Linear)
    assert rel_err(model(IDS).logits, unmerged) < 1e-5


def test_an_unknown_target_is_a_value_error_naming_it_and_the_real_names(pair):
    _, model = pair
    with pytest.raises(ValueError, match=r"'qkv_proj'.*q_proj"):
        add_lora(model, target_modules=("q_proj", "qkv_proj"))


def copy_peft_weights_into(model, peft):
    sd = {k.replace(".default", ""): v for k, v in peft.state_dict().items() if "lora_" in k}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, LoRALinear):
                m.lora_A.copy_(sd[f"base_model.model.{name}.lora_A.weight"])
                m.lora_B.copy_(sd[f"base_model.model.{name}.lora_B.weight"])


def test_forward_and_gradients_equal_peft_lora_on_the_same_weights(pair):
    hf, model = pair
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    peft = peft_model(hf, r=4, alpha=8, targets=targets)
    with torch.no_grad():  # peft's B is zero at init too: give both the same nonzero B
        g = torch.Generator().manual_seed(3)
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    add_lora(model, r=4, alpha=8, target_modules=targets)
    copy_peft_weights_into(model, peft)

    ours, theirs = model(IDS, labels=IDS), peft(input_ids=IDS, labels=IDS)
    assert (ours.logits - theirs.logits).abs().max() < 1e-6
    ours.loss.backward()
    theirs.loss.backward()
    grads = {k.replace(".default", ""): p.grad for k, p in peft.named_parameters() if p.requires_grad}
    checked = 0
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            for which in ("lora_A", "lora_B"):
                ref = grads[f"base_model.model.{name}.{which}.weight"]
                # 1e-6 absolute; relative 1e-5, since the two bases' fp32 backward passes round apart
                assert (getattr(m, which).grad - ref).abs().max() < 1e-6, (name, which)
                assert rel_err(getattr(m, which).grad, ref) < 1e-5, (name, which)
                checked += 1
    assert checked == 2 * len(targets) * model.config.num_hidden_layers


def test_an_adapter_saved_here_loads_in_peft_with_equal_logits(pair, tmp_path):
    peft_lib = pytest.importorskip("peft")
    hf, model = pair
    randomize_lora(add_lora(model, r=4, alpha=16, target_modules=("q_proj", "up_proj")))
    save_adapter(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["target_modules"]) == (4, 16, ["q_proj", "up_proj"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = peft_lib.PeftModel.from_pretrained(copy.deepcopy(hf), tmp_path / "adapter")
    theirs = loaded(input_ids=IDS).logits
    assert rel_err(model(IDS).logits, theirs) < 1e-6
    assert rel_err(hf(input_ids=IDS).logits, theirs) > 1e-3  # the adapter did change the model


def test_an_adapter_saved_by_peft_loads_here_with_equal_logits(pair, tmp_path):
    hf, model = pair
    peft = peft_model(hf, r=2, alpha=4, targets=("k_proj", "gate_proj"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    peft.save_pretrained(tmp_path / "peft-adapter")
    load_adapter(model, tmp_path / "peft-adapter")
    assert rel_err(model(IDS).logits, peft(input_ids=IDS).logits) < 1e-6
    layer = model.model.layers[1].mlp.gate_proj
    assert isinstance(layer, LoRALinear) and (layer.r, layer.scaling) == (2, 2.0)


@pytest.mark.parametrize("r,target,error,message", [
    (2, "v_proj", KeyError, r"adapter_model\.safetensors.*q_proj\.lora_A"),
    (8, "q_proj", ValueError, r"q_proj\.lora_A\.weight has shape \[2, 64\].*\[8, 64\]"),
], ids=["other-layers", "other-rank"])
def test_loading_a_mismatched_adapter_names_the_file_and_the_tensor(pair, tmp_path, r, target, error, message):
    _, model = pair
    other = copy.deepcopy(model)
    add_lora(other, r=2, alpha=4, target_modules=("q_proj",))
    save_adapter(other, tmp_path / "a")
    add_lora(model, r=r, alpha=4, target_modules=(target,))
    with pytest.raises(error, match=message):
        load_adapter(model, tmp_path / "a")


def test_a_folder_without_an_adapter_config_is_named_in_the_error(pair, tmp_path):
    _, model = pair
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(model, tmp_path)


@pytest.mark.parametrize("scheme", ["nf4", "int4"])
def test_qlora_over_a_4bit_base_starts_equal_trains_only_lora_and_merges_to_float(pair, scheme):
    _, model = pair
    minicohere.quantize(model, scheme, group_size=32)
    before = model(IDS).logits
    add_lora(model, r=4, alpha=8)
    assert torch.equal(model(IDS).logits, before)
    randomize_lora(model)
    out = model(IDS, labels=IDS)
    out.loss.backward()
    grads = [n for n, p in model.named_parameters() if p.grad is not None]
    assert grads and all(n.endswith((".lora_A", ".lora_B")) for n in grads)
    merge_lora(model)
    q = model.model.layers[0].self_attn.q_proj
    assert type(q) is torch.nn.Linear and q.weight.dtype == torch.float32
    # The unmerged base multiplies in bf16 on the CPU kernels; the merged one in fp32.
    assert rel_err(model(IDS).logits, out.logits.detach()) < 2e-2


def test_lora_state_dict_uses_peft_key_names(pair):
    _, model = pair
    add_lora(model, r=2, target_modules=("o_proj",))
    keys = sorted(lora_state_dict(model))
    assert keys[0] == "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight"
    assert len(keys) == 2 * model.config.num_hidden_layers


@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4"])
def test_a_quantized_layer_passes_the_gradient_of_its_dequantized_weight_to_its_input(scheme):
    from minicohere.quant import quantize_weight

    g = torch.Generator().manual_seed(0)
    layer = quantize_weight(torch.randn(128, 64, generator=g) / 8, None, scheme, group_size=32)
    x = torch.randn(3, 64, generator=g, requires_grad=True)
    grad_out = torch.randn(3, 128, generator=g)
    layer(x).backward(grad_out)
    assert rel_err(x.grad, grad_out @ layer.dequantize()) < 1e-6


def test_the_shipped_adapter_teaches_the_bundled_model_who_has_the_thing():
    from minicohere.bundled import bundled_path

    path = bundled_path("tiny-command-r")
    tokenizer = minicohere.Tokenizer.from_pretrained(path)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Omar has a pink drum. Who has the drum?"}],
                                           add_generation_prompt=True)

    def reply(model):
        out = minicohere.generate(model, torch.tensor([prompt]), max_new_tokens=10)
        return tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True).strip()

    model = minicohere.from_pretrained(path, progress=False)
    assert reply(model) != "Omar has the drum."
    assert reply(load_adapter(model, bundled_path("adapters/who-has"))) == "Omar has the drum."
