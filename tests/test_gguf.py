"""GGUF export (minicohere/gguf.py): the file read back with the gguf package, and run by llama.cpp.

The llama.cpp tests need llama-cpp-python (scripts/install_llama_cpp.sh builds it) and are skipped
without it; the rest need only the PyPI `gguf` package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, scramble

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install gguf)")

import minicohere  # noqa: E402
from minicohere.checkpoint import map_tensor, open_mapped, weight_entries  # noqa: E402
from minicohere.gguf import GGUFExportError, export_gguf, gguf_tensor_name  # noqa: E402

BUNDLED = minicohere.bundled_path("tiny-command-r")
PROMPTS = ["The cat sat on the", "Once upon a time", "In 1984 the river", "She opened the door and"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The bundled model written once per dtype."""
    out = tmp_path_factory.mktemp("gguf")
    return {dtype: export_gguf(BUNDLED, out / f"tiny-{dtype}.gguf", dtype=dtype, progress=False)
            for dtype in ("f32", "f16", "q8_0")}


def field(reader, key):
    return reader.fields[key].contents()


def stored_tensors():
    entries = weight_entries(BUNDLED)
    mapped = open_mapped(next(iter(entries.values())).file)
    return {name: map_tensor(entry, mapped).clone() for name, entry in entries.items()}


# ---------------------------------------------------------------------------------------------------
# The file, read back
# ---------------------------------------------------------------------------------------------------


def test_metadata_holds_the_config_under_the_command_r_architecture(exported):
    config = json.loads((BUNDLED / "config.json").read_text())
    reader = gguf.GGUFReader(exported["f32"])
    assert field(reader, "general.architecture") == "command-r"
    want = {"block_count": config["num_hidden_layers"], "context_length": config["max_position_embeddings"],
            "embedding_length": config["hidden_size"], "feed_forward_length": config["intermediate_size"],
            "attention.head_count": config["num_attention_heads"],
            "attention.head_count_kv": config["num_key_value_heads"]}
    for key, value in want.items():
        assert field(reader, f"command-r.{key}") == value, key
    # floats are stored as float32
    assert field(reader, "command-r.rope.freq_base") == np.float32(config["rope_parameters"]["rope_theta"])
    assert field(reader, "command-r.attention.layer_norm_epsilon") == np.float32(config["layer_norm_eps"])
    assert field(reader, "command-r.logit_scale") == np.float32(config["logit_scale"])
    assert field(reader, "command-r.rope.scaling.type") == "none"
    assert field(reader, "general.file_type") == gguf.LlamaFileType.ALL_F32


def test_tokenizer_matches_minicohere_tokenizer(exported):
    tokenizer = minicohere.Tokenizer.from_pretrained(BUNDLED)
    config = json.loads((BUNDLED / "config.json").read_text())
    reader = gguf.GGUFReader(exported["f32"])
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "command-r"
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == config["vocab_size"]
    assert tokens == [tokenizer.id_to_token(i) for i in range(len(tokens))]
    merges = json.loads((BUNDLED / "tokenizer.json").read_text())["model"]["merges"]
    assert field(reader, "tokenizer.ggml.merges") == [" ".join(m) for m in merges]
    types = field(reader, "tokenizer.ggml.token_type")
    bos, eos = config["bos_token_id"], config["eos_token_id"]
    assert types[bos] == types[eos] == gguf.TokenType.CONTROL
    assert types[tokenizer.encode("the", add_special_tokens=False)[0]] == gguf.TokenType.NORMAL
    assert field(reader, "tokenizer.ggml.bos_token_id") == bos
    assert field(reader, "tokenizer.ggml.eos_token_id") == eos
    assert field(reader, "tokenizer.ggml.padding_token_id") == config["pad_token_id"]
    assert field(reader, "tokenizer.ggml.add_bos_token") is True


def test_f32_tensors_equal_the_checkpoint_under_gguf_names(exported):
    stored = stored_tensors()
    reader = gguf.GGUFReader(exported["f32"])
    by_name = {t.name: t for t in reader.tensors}
    # Tied: the embedding is the head, so no `output.weight`; every stored tensor appears exactly once.
    assert "output.weight" not in by_name
    assert sorted(by_name) == sorted(gguf_tensor_name(n) for n in stored)
    for name, tensor in stored.items():
        t = by_name[gguf_tensor_name(name)]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(t.shape) == list(reversed(tensor.shape)), name  # GGUF lists the innermost dimension first
        assert np.array_equal(np.asarray(t.data).reshape(tensor.shape), tensor.numpy()), name


@pytest.mark.parametrize("dtype, matrix_type, bound", [("f16", "F16", 1e-3), ("q8_0", "Q8_0", 1 / 127)])
def test_smaller_types_keep_norms_in_f32_and_matrices_close(exported, dtype, matrix_type, bound):
    stored = stored_tensors()
    reader = gguf.GGUFReader(exported[dtype])
    for t in reader.tensors:
        name = next(n for n in stored if gguf_tensor_name(n) == t.name)
        want = stored[name].numpy()
        kind = "F32" if "norm" in t.name else matrix_type
        assert t.tensor_type.name == kind, t.name
        got = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(want.shape)
        # relative to each row's largest weight: f16 rounds to 11 bits, q8_0 to 1/127 of its block's max
        err = np.abs(got - want).max(axis=-1) / np.abs(want).max(axis=-1)
        assert err.max() <= bound, (t.name, err.max())
    # 16 or 8.5 bits a weight instead of 32, plus the same tokenizer metadata in every file
    assert exported[dtype].stat().st_size < exported["f32"].stat().st_size * (0.55 if dtype == "f16" else 0.3)


@pytest.fixture(scope="module")
def plus_folder(tmp_path_factory):
    """A Command R+-shaped model (q/k norms, 64 layers: the depth llama.cpp needs to read them), tiny and
    random, saved in several shards with the bundled tokenizer."""
    folder = tmp_path_factory.mktemp("plus")
    config = minicohere.CohereConfig(vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=64,
                                     num_attention_heads=8, num_key_value_heads=2, use_qk_norm=True,
                                     logit_scale=0.8333333333333334, max_position_embeddings=256,
                                     bos_token_id=5, eos_token_id=9, pad_token_id=0,
                                     rope_parameters={"rope_type": "default", "rope_theta": 75000000.0})
    torch.manual_seed(0)
    model = scramble(minicohere.CohereForCausalLM(config), seed=1, embed_std=0.3).eval()
    minicohere.save_pretrained(model, folder, max_shard_size="4MB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(BUNDLED / name, folder / name)
    return folder


def test_plus_q_k_norms_are_written_per_head_from_several_shards(plus_folder, tmp_path):
    assert len(list(plus_folder.glob("model-*.safetensors"))) > 1
    reader = gguf.GGUFReader(export_gguf(plus_folder, tmp_path / "plus.gguf", progress=False))
    shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}
    # HF stores q_norm as [heads, head_dim]; GGUF lists it innermost first, as llama.cpp's loader asks
    assert shapes["blk.63.attn_q_norm.weight"] == [16, 8]
    assert shapes["blk.63.attn_k_norm.weight"] == [16, 2]
    assert len(shapes) == 2 + 64 * 10
    assert field(reader, "command-r.logit_scale") == np.float32(0.8333333333333334)


# ---------------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------------


def copy_with_config(tmp_path, **changes):
    folder = tmp_path / "ckpt"
    shutil.copytree(BUNDLED, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("changes, fragment", [
    (dict(model_type="cohere2"), "'cohere2' (Command R7B / Command A) is not supported"),
    (dict(model_type="llama"), "model_type 'llama' is not a Cohere checkpoint"),
    (dict(tie_word_embeddings=False), "tie_word_embeddings is false"),
    (dict(use_qk_norm=True), "use_qk_norm with 5 layers"),
])
def test_checkpoints_llama_cpp_cannot_run_are_refused_by_name(tmp_path, changes, fragment):
    with pytest.raises(GGUFExportError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        export_gguf(copy_with_config(tmp_path, **changes), tmp_path / "out.gguf", progress=False)
    assert not (tmp_path / "out.gguf").exists()


def test_bad_arguments_are_refused_before_writing(tmp_path):
    with pytest.raises(GGUFExportError, match="dtype='q4_0' is not one of"):
        export_gguf(BUNDLED, tmp_path / "out.gguf", dtype="q4_0")
    with pytest.raises(GGUFExportError, match="no config.json"):
        export_gguf(tmp_path, tmp_path / "out.gguf")
    with pytest.raises(GGUFExportError, match="is a directory"):
        export_gguf(BUNDLED, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_tensor_missing_from_the_weights_is_named(tmp_path):
    from safetensors.torch import save_file

    folder = copy_with_config(tmp_path)
    tensors = stored_tensors()
    del tensors["model.layers.2.mlp.up_proj.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(GGUFExportError, match="model.layers.2.mlp.up_proj.weight"):
        export_gguf(folder, tmp_path / "out.gguf", progress=False)


def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "minicohere", "export-gguf", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_cli_writes_the_file_and_says_so_in_one_line(tmp_path):
    out = run_cli(BUNDLED, tmp_path / "tiny.gguf", "--dtype", "q8_0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"wrote {tmp_path / 'tiny.gguf'} "
                                       f"({(tmp_path / 'tiny.gguf').stat().st_size / 2**20:.1f} MiB, q8_0)"]
    assert "Traceback" not in out.stderr
    reader = gguf.GGUFReader(tmp_path / "tiny.gguf")
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0


@pytest.mark.parametrize("args, fragment", [
    (("{bundled}", "{tmp}/x.gguf", "--dtype", "int4"), "dtype='int4' is not one of"),
    (("{tmp}", "{tmp}/x.gguf"), "no config.json"),
    (("{tmp}/missing", "{tmp}/x.gguf"), "no such directory"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, fragment):
    out = run_cli(*(a.format(bundled=BUNDLED, tmp=tmp_path) for a in args))
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and fragment in lines[0], out.stderr


# ---------------------------------------------------------------------------------------------------
# llama.cpp runs the file
# ---------------------------------------------------------------------------------------------------

try:
    import llama_cpp
except ImportError:
    llama_cpp = None
needs_llama_cpp = pytest.mark.skipif(llama_cpp is None, reason="llama-cpp-python is not installed "
                                                               "(scripts/install_llama_cpp.sh builds it)")


def load_llama(path, **kwargs):
    # The keys and values cached in f32: llama.cpp's default f16 cache alone moves logits by ~1e-4.
    f32 = llama_cpp.GGML_TYPE_F32
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=1, n_batch=256, verbose=False, seed=0,
                           type_k=f32, type_v=f32, **kwargs)


@pytest.fixture(scope="module")
def model():
    return minicohere.from_pretrained(BUNDLED, dtype="float32")


@pytest.fixture(scope="module")
def tokenizer():
    return minicohere.Tokenizer.from_pretrained(BUNDLED)


def greedy_llama(llm, ids, n):
    """n greedy tokens from llama.cpp, fed the same prompt ids (its own sampler at temperature 0)."""
    out = []
    for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        out.append(token)
        if len(out) == n:
            break
    return out


@needs_llama_cpp
def test_llama_cpp_tokenizes_like_minicohere(exported, tokenizer):
    llm = load_llama(exported["f32"], vocab_only=True)
    texts = PROMPTS + ["Numbers 12345 and 3.14, spaces   and\ttabs.", "café naïve — “quotes”"]
    for text in texts:
        assert llm.tokenize(text.encode(), add_bos=True) == tokenizer.encode(text), text


@needs_llama_cpp
def test_llama_cpp_greedy_tokens_equal_minicohere_f32(exported, model, tokenizer):
    llm = load_llama(exported["f32"])
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        ours = minicohere.generate(model, torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                                    eos_token_id=None)[0, len(ids):]
        assert greedy_llama(llm, ids, 24) == ours.tolist(), prompt


@needs_llama_cpp
def test_llama_cpp_logits_within_1e_4_relative_f32(exported, model, tokenizer):
    llm = load_llama(exported["f32"], logits_all=True)
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        llm.reset()
        llm.eval(ids)
        theirs = torch.tensor(np.array(llm.scores[: len(ids)]), dtype=torch.float32)
        with torch.no_grad():
            ours = model(torch.tensor([ids])).logits[0]
        # relative to the largest logit of each position: fp32 sums in another order differ in the ~1e-6s
        rel = ((theirs - ours).abs().amax(-1) / ours.abs().amax(-1)).max().item()
        assert rel < 1e-4, (prompt, rel)


@needs_llama_cpp
def test_llama_cpp_logits_within_1e_4_relative_plus_with_q_k_norms(plus_folder, tmp_path, tokenizer):
    model = minicohere.from_pretrained(plus_folder, dtype="float32", progress=False)
    llm = load_llama(export_gguf(plus_folder, tmp_path / "plus.gguf", progress=False), logits_all=True)
    ids = tokenizer.encode(PROMPTS[1])
    llm.eval(ids)
    theirs = torch.tensor(np.array(llm.scores[: len(ids)]), dtype=torch.float32)
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0]
    rel = ((theirs - ours).abs().amax(-1) / ours.abs().amax(-1)).max().item()
    assert rel < 1e-4, rel


@needs_llama_cpp
def test_llama_cpp_runs_the_q8_0_file(exported, model, tokenizer):
    llm = load_llama(exported["q8_0"])
    ids = tokenizer.encode(PROMPTS[0])
    tokens = greedy_llama(llm, ids, 16)
    assert len(tokens) == 16 and all(0 <= t < model.config.vocab_size for t in tokens)
    # 8-bit weights: the first greedy token still agrees with the fp32 model's
    first = model(torch.tensor([ids])).logits[0, -1].argmax().item()
    assert tokens[0] == first
