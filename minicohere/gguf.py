"""Exporting a checkpoint to GGUF, the one-file format that llama.cpp (and Ollama on top of it) runs.

A GGUF file is a header, then typed key/value pairs (the config and the tokenizer), then a table of
tensor names, shapes and types, then the tensor bytes, each aligned to 32 bytes. The PyPI `gguf` package
writes the format; what this module supplies is the Cohere-specific part, the facts llama.cpp's own
converter (`convert_hf_to_gguf.py`, class for `CohereForCausalLM`) writes and its `command-r` loader reads:

- architecture `command-r`; every model key is prefixed with it (`command-r.block_count`, ...);
- the usual sizes, `layer_norm_epsilon` (Command-R's norm is a LayerNorm without bias, not an RMSNorm),
  `logit_scale` (llama.cpp multiplies the logits by it) and rope scaling `none`;
- tensor names `token_embd`, `blk.N.attn_q` ... `output_norm`. There is no `output` tensor: llama.cpp
  always reuses the embedding as the LM head, so only tied checkpoints can be exported;
- a GPT-2-style byte-level BPE tokenizer whose pre-tokenizer is named `command-r` (digits split one by
  one, then GPT-2's regex): llama.cpp picks its splitting rules by that name.

Command-R's RoPE rotates adjacent pairs (x0, x1), (x2, x3), ...: llama.cpp's "normal" rope does the
same, so q_proj and k_proj are written as they are (the Llama converter has to permute its rows).

    python -m minicohere export-gguf assets/tiny-command-r tiny.gguf --dtype q8_0
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, check_entries, expected_tensors, map_tensor, open_mapped, weight_entries
from .model import CohereConfig, CohereForCausalLM

ARCH = "command-r"
DTYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32  # q8_0 stores each run of 32 weights as one fp16 scale and 32 int8 values

# HF name inside a layer -> GGUF name inside `blk.N`.
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",  # Command R+ only (use_qk_norm)
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
# llama.cpp's command-r loader creates the q/k norm tensors only for models this deep (Command R+ has 64
# layers); a shallower model with q/k norms would load with the norms silently missing, or not at all.
QK_NORM_MIN_LAYERS = 64


class GGUFExportError(ValueError):
    """A checkpoint or an argument that cannot become a GGUF file llama.cpp runs; the message says why."""


def gguf_tensor_name(hf_name: str) -> str:
    """`model.layers.3.mlp.up_proj.weight` -> `blk.3.ffn_up.weight`, and the two outside the layers."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    prefix, _, rest = hf_name.partition("model.layers.")
    index, _, inner = rest.partition(".")
    if prefix or not index.isdigit() or inner not in LAYER_TENSORS:
        raise GGUFExportError(f"tensor {hf_name!r} has no GGUF name in llama.cpp's command-r architecture")
    return f"blk.{index}.{LAYER_TENSORS[inner]}"


# ---------------------------------------------------------------------------------------------------
# What llama.cpp can run
# ---------------------------------------------------------------------------------------------------


def read_config(folder: Path) -> CohereConfig:
    """The checkpoint's config, after checking it is a Command-R that llama.cpp's command-r graph runs."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise GGUFExportError(f"{folder}: no config.json, so this is not a checkpoint folder")
    raw = json.loads(config_path.read_text())
    model_type = raw.get("model_type")
    if model_type == "cohere2":
        raise GGUFExportError(f"{config_path}: model_type 'cohere2' (Command R7B / Command A) is not supported "
                              "by export_gguf yet, only 'cohere' (Command-R, R+, Aya 23); llama.cpp's own "
                              "convert_hf_to_gguf.py converts cohere2 checkpoints")
    if model_type != "cohere":
        raise GGUFExportError(f"{config_path}: model_type {model_type!r} is not a Cohere checkpoint; "
                              "export_gguf writes model_type 'cohere' (Command-R)")
    config = CohereConfig.from_dict(raw)
    if not config.tie_word_embeddings:
        raise GGUFExportError(f"{config_path}: tie_word_embeddings is false, but llama.cpp's command-r model "
                              "always uses the embedding as the LM head, so a separate lm_head would be lost")
    if config.attention_bias:
        raise GGUFExportError(f"{config_path}: attention_bias is true; llama.cpp's command-r model has no "
                              "attention biases")
    if config.use_qk_norm and config.num_hidden_layers < QK_NORM_MIN_LAYERS:
        raise GGUFExportError(f"{config_path}: use_qk_norm with {config.num_hidden_layers} layers; llama.cpp "
                              f"reads q/k norms only in models of {QK_NORM_MIN_LAYERS}+ layers (Command R+)")
    if config.hidden_act != "silu":
        raise GGUFExportError(f"{config_path}: hidden_act {config.hidden_act!r}; llama.cpp's command-r "
                              "feed-forward is SwiGLU with silu")
    if config.rope_parameters["rope_type"] != "default":
        raise GGUFExportError(f"{config_path}: rope_type {config.rope_parameters['rope_type']!r}; llama.cpp's "
                              "command-r model runs unscaled RoPE only (the converter writes scaling 'none')")
    return config


# ---------------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------------

# GGUF token types (llama.cpp's llama_token_type): ordinary BPE tokens, control tokens that are never
# produced by splitting text, tokens a user added, and unused ids that only pad the vocabulary.
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 3, 4, 5
SPECIAL_KEYS = {"bos": "bos_token", "eos": "eos_token", "unk": "unk_token", "sep": "sep_token",
                "pad": "pad_token", "mask": "mask_token"}  # the ones GGUF has keys for


def _token_text(value) -> str | None:
    # tokenizer_config.json spells a special token as a string or as {"content": ...}
    return value.get("content") if isinstance(value, dict) else value


def check_pre_tokenizer(spec: dict, path: Path) -> None:
    """llama.cpp's `command-r` pre-tokenizer splits digits one by one, then applies GPT-2's regex with
    no added prefix space: the tokenizer.json must describe exactly that, or llama.cpp would split
    text differently from the tokenizer the model was trained with."""
    parts = spec.get("pretokenizers", []) if spec.get("type") == "Sequence" else [spec]
    kinds = [(p.get("type"), p.get("individual_digits"), p.get("add_prefix_space"), p.get("use_regex"))
             for p in parts]
    if kinds != [("Digits", True, None, None), ("ByteLevel", None, False, True)]:
        raise GGUFExportError(f"{path}: pre_tokenizer {json.dumps(spec)} is not Command-R's (single digits, "
                              "then byte-level with GPT-2's regex); llama.cpp's 'command-r' pre-tokenizer "
                              "would split text differently")


def read_tokenizer(folder: Path, vocab_size: int) -> dict:
    """Tokens, token types, merges and special ids, in the form llama.cpp's gpt2 tokenizer reads."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise GGUFExportError(f"{folder}: no tokenizer.json; a GGUF file carries its tokenizer, so the "
                              "checkpoint folder needs one")
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise GGUFExportError(f"{path}: model type {model.get('type')!r}; Command-R's tokenizer is a BPE")
    check_pre_tokenizer(data.get("pre_tokenizer") or {}, path)

    by_id: dict[int, str] = {i: text for text, i in model["vocab"].items()}
    types: dict[int, int] = {}
    for added in data.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        types[added["id"]] = TOKEN_CONTROL if added.get("special") else TOKEN_USER_DEFINED
    if max(by_id) >= vocab_size:
        raise GGUFExportError(f"{path}: token id {max(by_id)} does not fit config.json's vocab_size={vocab_size}")
    # The embedding may have more rows than the tokenizer has tokens: those ids get placeholder names.
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    token_types = [types.get(i, TOKEN_NORMAL if i in by_id else TOKEN_UNUSED) for i in range(vocab_size)]
    # GGUF stores a merge as one string "left right"; newer tokenizer.json files store pairs.
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    config_path = folder / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    ids = {text: i for i, text in by_id.items()}
    special = {}
    for kind, key in SPECIAL_KEYS.items():
        text = _token_text(tok_config.get(key))
        if text is not None and text in ids:
            special[kind] = ids[text]
    templates = tok_config.get("chat_template")
    if isinstance(templates, list):  # Cohere ships named templates: llama.cpp takes "default" as its own
        templates = {t["name"]: t["template"] for t in templates}.get("default")
    return {"tokens": tokens, "types": token_types, "merges": merges, "special": special,
            "add_bos": bool(tok_config.get("add_bos_token", True)),
            "add_eos": bool(tok_config.get("add_eos_token", False)), "chat_template": templates}


# ---------------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------------


def storage_type(gguf_name: str, shape: tuple[int, ...], dtype: str):
    """The GGML type a tensor is written in: norms stay f32 (they are tiny and precision-sensitive, as in
    llama.cpp's converter); matrices take the asked type, q8_0 falling back to f16 for rows that are
    not a whole number of 32-weight blocks."""
    from gguf import GGMLQuantizationType as T

    if "norm" in gguf_name or len(shape) < 2 or dtype == "f32":
        return T.F32
    if dtype == "q8_0" and shape[-1] % Q8_BLOCK == 0:
        return T.Q8_0
    return T.F16


def encode(tensor: torch.Tensor, kind) -> np.ndarray:
    """The bytes of one tensor in GGML type `kind` (numpy; the row-major layout of the HF tensor, which
    GGUF reads with its dimensions listed innermost first)."""
    from gguf.quants import quantize

    data = tensor.detach().to(torch.float32).numpy()
    return quantize(data, kind)


# ---------------------------------------------------------------------------------------------------
# export_gguf
# ---------------------------------------------------------------------------------------------------


def export_gguf(folder, out_path, dtype: str = "f32", progress: bool = True) -> Path:
    """Write the Command-R checkpoint in `folder` (config.json, safetensors, tokenizer.json) to a GGUF
    file at `out_path` that llama.cpp loads as architecture `command-r`.

    dtype: "f32" (exact), "f16" or "q8_0" (8-bit blocks of 32 with one fp16 scale, llama.cpp's own int8)
    for the matrices; norms are always f32. Tensors are read from the memory-mapped checkpoint and
    written one at a time, so memory holds one tensor, not the model. Returns the path written.
    """
    import gguf
    from tqdm import tqdm

    if dtype not in DTYPES:
        raise GGUFExportError(f"dtype={dtype!r} is not one of {DTYPES}")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise GGUFExportError(f"{folder}: not a checkpoint folder (no such directory)")
    out_path = Path(out_path).expanduser()
    if out_path.is_dir():
        raise GGUFExportError(f"{out_path} is a directory; give the path of the .gguf file to write")
    if not out_path.parent.is_dir():
        raise GGUFExportError(f"{out_path.parent}: no such directory to write {out_path.name} in")
    config = read_config(folder)
    vocab = read_tokenizer(folder, config.vocab_size)
    try:
        entries = weight_entries(folder)
        with torch.device("meta"):
            expected = expected_tensors(CohereForCausalLM(config))
        check_entries(entries, expected, tied=True)
    except (CheckpointError, FileNotFoundError) as e:
        raise GGUFExportError(str(e)) from None

    writer = gguf.GGUFWriter(out_path, ARCH)  # adds general.architecture
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    writer.add_name(folder.resolve().name)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # The model: `command-r.<key>`.
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_eps(config.layer_norm_eps)
    writer.add_logit_scale(config.logit_scale)
    writer.add_rope_scaling_type(gguf.RopeScalingType.NONE)
    # The tokenizer: `tokenizer.ggml.<key>`.
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("command-r")
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    setters = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id, "unk": writer.add_unk_token_id,
               "sep": writer.add_sep_token_id, "pad": writer.add_pad_token_id, "mask": writer.add_mask_token_id}
    for kind, token_id in vocab["special"].items():
        setters[kind](token_id)
    writer.add_add_bos_token(vocab["add_bos"])
    writer.add_add_eos_token(vocab["add_eos"])
    if vocab["chat_template"]:
        writer.add_chat_template(vocab["chat_template"])

    # First the table of every tensor (name, shape, type, size), then the bytes, one tensor at a time.
    names = [name for name in expected if name != "lm_head.weight"]
    plan = []
    for name in names:
        entry = entries[name]
        gguf_name = gguf_tensor_name(name)
        kind = storage_type(gguf_name, entry.shape, dtype)
        # Described in bytes (uint8), the one spelling the writer accepts for every GGML type.
        byte_shape = gguf.quant_shape_to_byte_shape(entry.shape, kind)
        writer.add_tensor_info(gguf_name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=kind)
        plan.append((entry, kind))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        mapped = {}
        for entry, kind in tqdm(plan, desc=f"writing {out_path.name}", unit="tensor", disable=not progress):
            if entry.file not in mapped:
                mapped[entry.file] = open_mapped(entry.file)
            writer.write_tensor_data(encode(map_tensor(entry, mapped[entry.file]), kind))
    except BaseException:
        writer.close()
        out_path.unlink(missing_ok=True)  # never leave a half-written file that looks like a model
        raise
    writer.close()
    return out_path
