"""LoRA: train a low-rank correction beside frozen linear layers (chapter 14), and read/write peft adapters.

    from minicohere.lora import add_lora, merge_lora, save_adapter, load_adapter
    model = add_lora(model, r=8, alpha=16)       # only the LoRA matrices train now
    ...train...
    save_adapter(model, "my-adapter")             # a folder `peft.PeftModel.from_pretrained` loads
    model = merge_lora(model)                     # plain linear layers again, the correction folded in

A LoRA layer computes base(x) + (alpha / r) * B(A(dropout(x))) with A [r, in] and B [out, r]. B starts at
zero, so a model just given LoRA computes exactly what it did before. The base may be a float nn.Linear or
one of minicohere.quant's quantized layers (QLoRA: the 4-bit base stays frozen, A and B train in float).
"""

from __future__ import annotations

import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from .quant import QuantizedLinear, replace_module

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
# peft wraps the model twice (PeftModelForCausalLM.base_model is a LoraModel whose .model is ours), and
# its saved keys keep that path but drop the adapter's name: prefix + module name + ".lora_A.weight".
PEFT_PREFIX = "base_model.model."


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update: base(x) + scaling * B(A(dropout(x)))."""

    def __init__(self, base_layer: nn.Module, r: int = 8, alpha: float = 16, dropout: float = 0.0,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if not isinstance(base_layer, (nn.Linear, QuantizedLinear)):
            raise TypeError(f"LoRALinear wraps an nn.Linear or a minicohere.quant quantized linear, "
                            f"not {type(base_layer).__name__}")
        if not (isinstance(r, int) and r > 0):
            raise ValueError(f"r={r!r}: the rank must be a positive integer (8 or 16 are usual)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r}: use a probability in [0, 1)")
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        weight = getattr(base_layer, "weight", None)
        # A quantized base has no float weight to copy a dtype from: its LoRA trains in fp32.
        dtype = dtype or (weight.dtype if weight is not None else torch.float32)
        device = next(iter(base_layer.buffers()), weight).device
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=dtype, device=device))
        # peft's default start: A uniform as nn.Linear initialises its weight (Kaiming, a = sqrt(5)), B zero.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta_weight(self) -> torch.Tensor:
        """scaling * B @ A, [out, in]: what merging adds to the base weight."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        update = F.linear(F.linear(self.dropout(x.to(self.lora_A.dtype)), self.lora_A), self.lora_B)
        return out + (update * self.scaling).to(out.dtype)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}"


# ---------------------------------------------------------------------------------------------------
# Adding, freezing and merging
# ---------------------------------------------------------------------------------------------------


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def target_names(model: nn.Module, target_modules) -> list[str]:
    """The linear layers whose name ends with a target ("q_proj" matches every layer's q_proj)."""
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    targets = list(target_modules)
    found, used = [], set()
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Linear, QuantizedLinear)) or ".base_layer" in f".{name}":
            continue
        hits = [t for t in targets if name == t or name.endswith("." + t)]
        if hits:
            found.append(name)
            used.update(hits)
    unknown = [t for t in targets if t not in used]
    if unknown:
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                          if isinstance(m, (nn.Linear, QuantizedLinear))})
        raise ValueError(f"target_modules: no linear layer is named {', '.join(map(repr, unknown))}; "
                         f"this model's are {', '.join(linears)}")
    return found


def mark_only_lora_trainable(model: nn.Module) -> nn.Module:
    """Freeze every parameter except the LoRA matrices."""
    for name, p in model.named_parameters():
        p.requires_grad = name.endswith(".lora_A") or name.endswith(".lora_B")
    return model


def add_lora(model: nn.Module, r: int = 8, alpha: float = 16, target_modules=DEFAULT_TARGETS,
             dropout: float = 0.0) -> nn.Module:
    """Wrap the targeted linear layers in LoRALinear, in place, and freeze everything else; returns the model."""
    if lora_layers(model):
        raise ValueError("the model already has LoRA layers: merge_lora(model) first, or train the ones it has")
    for name in target_names(model, target_modules):
        replace_module(model, name, LoRALinear(model.get_submodule(name), r, alpha, dropout))
    return mark_only_lora_trainable(model)


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold scaling * B @ A into each base weight and put plain nn.Linear layers back; returns the model.

    A quantized base (QLoRA) is dequantized first, so its merged layer is a float nn.Linear in the LoRA
    matrices' dtype: the sum cannot be stored in the 4-bit codes without rounding the update away.
    Quantize the merged model again (minicohere.quantize) if it should be small.
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to merge (add_lora or load_adapter gives it some)")
    for name, layer in layers.items():
        base = layer.base_layer
        if isinstance(base, QuantizedLinear):
            weight = base.dequantize(layer.lora_A.dtype)
            bias = base.bias
        else:
            weight, bias = base.weight, base.bias
        merged = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None,
                           device=weight.device, dtype=weight.dtype)
        merged.weight.copy_(weight.float() + layer.delta_weight().float())
        if bias is not None:
            merged.bias.copy_(bias)
        merged.requires_grad_(False)  # frozen, as the base was
        replace_module(model, name, merged)
    return model


# ---------------------------------------------------------------------------------------------------
# peft's adapter format
# ---------------------------------------------------------------------------------------------------


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA matrices under the key names peft saves (base_model.model.<layer>.lora_A.weight, ...)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers (add_lora first)")
    out = {}
    for name, layer in layers.items():
        out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.lora_A.detach()
        out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.lora_B.detach()
    return out


def adapter_config(model: nn.Module) -> dict:
    layers = list(lora_layers(model).values())
    settings = {(m.r, m.alpha, m.dropout.p if isinstance(m.dropout, nn.Dropout) else 0.0) for m in layers}
    if len(settings) != 1:
        raise ValueError(f"the LoRA layers differ in (r, alpha, dropout): {sorted(settings)}; peft's "
                         f"adapter_config.json holds one of each")
    (r, alpha, dropout), = settings
    targets = sorted({name.rsplit(".", 1)[-1] for name in lora_layers(model)})
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
            "lora_dropout": dropout, "target_modules": targets, "bias": "none", "fan_in_fan_out": False,
            "init_lora_weights": True, "use_rslora": False, "use_dora": False, "modules_to_save": None,
            "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {},
            "base_model_name_or_path": None, "revision": None, "inference_mode": True}


def save_adapter(model: nn.Module, folder: str | os.PathLike) -> None:
    """Write folder/adapter_config.json and folder/adapter_model.safetensors, as peft's save_pretrained does."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous().cpu() for k, v in lora_state_dict(model).items()}
    config = adapter_config(model)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, CONFIG_NAME), "w") as f:
        json.dump(config, f, indent=2)
    save_file(tensors, os.path.join(folder, WEIGHTS_NAME), metadata={"format": "pt"})


def read_adapter_config(path: str) -> dict:
    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no adapter config; a peft adapter folder holds {CONFIG_NAME} "
                                f"and {WEIGHTS_NAME}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path}: peft_type={config['peft_type']!r}; only LORA adapters load here")
    for key, plain in (("use_rslora", False), ("use_dora", False), ("fan_in_fan_out", False),
                       ("bias", "none"), ("modules_to_save", None), ("rank_pattern", {}),
                       ("alpha_pattern", {}), ("layers_to_transform", None)):
        if config.get(key, plain) not in (plain, None, {}, [], False):
            raise ValueError(f"{path}: {key}={config[key]!r} is not supported here (only plain LoRA: "
                             f"{key}={plain!r})")
    targets = config.get("target_modules")
    if isinstance(targets, str):
        if not targets.isidentifier():
            raise ValueError(f"{path}: target_modules={targets!r} is a regular expression; list the "
                             f"module names instead")
        targets = [targets]
    if not targets:
        raise ValueError(f"{path}: target_modules is missing or empty")
    config["target_modules"] = targets
    return config


@torch.no_grad()
def load_adapter(model: nn.Module, folder: str | os.PathLike) -> nn.Module:
    """Read a peft LoRA adapter folder and apply it: adds the LoRA layers it names (unless the model has
    them already) and copies its A and B in. Returns the model, only the LoRA matrices trainable."""
    from safetensors.torch import load_file

    folder = os.fspath(folder)
    config = read_adapter_config(os.path.join(folder, CONFIG_NAME))
    weights_path = os.path.join(folder, WEIGHTS_NAME)
    if not os.path.exists(weights_path):
        raise FileNotFoundError(f"{weights_path}: missing (the adapter's weights; a .bin adapter must be "
                                f"converted to safetensors)")
    tensors = load_file(weights_path)
    if not lora_layers(model):
        add_lora(model, config["r"], config["lora_alpha"], config["target_modules"], config.get("lora_dropout", 0.0))
    expected = lora_state_dict(model)
    unexpected = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    if unexpected:
        raise KeyError(f"{weights_path}: tensor {unexpected[0]!r} matches no LoRA layer of this model "
                       f"({len(unexpected)} such; expected keys look like {next(iter(expected))!r})")
    if missing:
        raise KeyError(f"{weights_path}: no tensor {missing[0]!r} ({len(missing)} missing): the adapter was "
                       f"made for other target modules or another depth")
    layers = lora_layers(model)
    for key, t in tensors.items():
        name, which = key[len(PEFT_PREFIX):].rsplit(".", 2)[:2]
        param = getattr(layers[name], which)
        if t.shape != param.shape:
            raise ValueError(f"{weights_path}: {key} has shape {list(t.shape)}, the model's is "
                             f"{list(param.shape)} (r={config['r']} in {CONFIG_NAME})")
        param.copy_(t)
    for layer in layers.values():  # the scaling follows the adapter's alpha and r
        layer.r, layer.alpha = config["r"], config["lora_alpha"]
        layer.scaling = layer.alpha / layer.r
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["LoRALinear", "add_lora", "merge_lora", "lora_state_dict", "save_adapter", "load_adapter",
           "mark_only_lora_trainable", "trainable_parameters", "DEFAULT_TARGETS"]
