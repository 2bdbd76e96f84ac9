"""Loading and saving Hugging Face checkpoints: round trips with transformers, and every bad checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import minicohere
from minicohere import CheckpointError, checkpoint
from conftest import rel_err

torch.set_grad_enabled(False)
IDS = torch.tensor([[5, 17, 33, 2, 90, 41, 8]])


def logits_of(model):
    return model(IDS).logits


def test_sharded_checkpoint_from_transformers_loads_with_equal_logits(saved_reference):
    hf, folder = saved_reference(max_shard_size="30KB")
    assert (folder / "model.safetensors.index.json").exists()
    assert len(list(folder.glob("model-*.safetensors"))) > 3
    assert rel_err(logits_of(minicohere.from_pretrained(folder, progress=False)), logits_of(hf)) < 1e-6


def test_single_file_checkpoint_loads(saved_reference):
    hf, folder = saved_reference(max_shard_size="1GB")
    assert (folder / "model.safetensors").exists()
    ours = minicohere.CohereForCausalLM.from_pretrained(folder)
    assert rel_err(logits_of(ours), logits_of(hf)) < 1e-6


@pytest.mark.parametrize("shard", ["30KB", "1GB"])
def test_minicohere_save_loads_in_transformers_with_equal_logits(saved_reference, tmp_path, shard):
    from transformers import AutoModelForCausalLM

    _, folder = saved_reference()
    ours = minicohere.from_pretrained(folder, progress=False)
    out = ours.save_pretrained(tmp_path / "saved", max_shard_size=shard)
    theirs = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(theirs).__name__ == "CohereForCausalLM"
    assert rel_err(logits_of(theirs), logits_of(ours)) < 1e-6
    assert (out / "model.safetensors.index.json").exists() == (shard == "30KB")


def test_legacy_c4ai_config_spelling_loads(saved_reference):
    hf, folder = saved_reference(rope_parameters={"rope_type": "default", "rope_theta": 8e6})
    cfg = json.loads((folder / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope["rope_theta"]
    cfg["torch_dtype"] = cfg.pop("dtype", "float32")
    (folder / "config.json").write_text(json.dumps(cfg))
    ours = minicohere.from_pretrained(folder, progress=False)
    assert ours.config.rope_theta == 8e6
    assert rel_err(logits_of(ours), logits_of(hf)) < 1e-6


def test_dtype_auto_keeps_the_checkpoint_dtype_and_explicit_dtype_converts(saved_reference, tmp_path):
    _, folder = saved_reference()
    half = minicohere.from_pretrained(folder, dtype="float16", progress=False)
    assert half.dtype == torch.float16
    half.save_pretrained(tmp_path / "half")
    assert json.loads((tmp_path / "half" / "config.json").read_text())["dtype"] == "float16"
    assert minicohere.from_pretrained(tmp_path / "half", progress=False).dtype == torch.float16
    assert minicohere.from_pretrained(tmp_path / "half", dtype=torch.bfloat16, progress=False).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype='float8'"):
        minicohere.from_pretrained(folder, dtype="float8", progress=False)


def test_saving_into_the_folder_it_was_loaded_from_is_safe(saved_reference):
    hf, folder = saved_reference(max_shard_size="1GB")
    ours = minicohere.from_pretrained(folder, progress=False)  # memory-mapped from folder
    ours.save_pretrained(folder, max_shard_size="30KB")
    assert not (folder / "model.safetensors").exists()  # the stale single file was removed
    assert rel_err(logits_of(ours), logits_of(hf)) < 1e-6
    assert rel_err(logits_of(minicohere.from_pretrained(folder, progress=False)), logits_of(hf)) < 1e-6


def test_max_shard_size_parses_like_the_hub():
    assert checkpoint.parse_size("5GB") == 5 * 10**9
    assert checkpoint.parse_size("500MiB") == 500 * 2**20
    assert checkpoint.parse_size(1234) == 1234
    with pytest.raises(ValueError, match="max_shard_size='lots'"):
        checkpoint.parse_size("lots")


# --- bad checkpoints: each error names the file and the tensor, and nothing is loaded first --------


def index_of(folder):
    return json.loads((folder / "model.safetensors.index.json").read_text())


def write_index(folder, index):
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def break_missing_shard(folder):
    shard = index_of(folder)["weight_map"]["model.norm.weight"]
    (folder / shard).unlink()
    return rf"missing shard: model.safetensors.index.json puts tensor '.*' in {shard}, which is not in"


def break_missing_index_entry(folder):
    index = index_of(folder)
    shard = index["weight_map"].pop("model.layers.1.mlp.up_proj.weight")
    write_index(folder, index)
    return rf"missing index entry: {shard} holds 'model.layers.1.mlp.up_proj.weight'"


def break_index_points_to_wrong_shard(folder):
    index = index_of(folder)
    shards = sorted(set(index["weight_map"].values()))
    name = "model.layers.0.self_attn.q_proj.weight"
    index["weight_map"][name] = next(s for s in shards if s != index["weight_map"][name])
    write_index(folder, index)
    return rf"missing tensor: .*'{name}' in model-.*does not hold it"


def break_unexpected_tensor(folder):
    from safetensors.torch import save_file

    index = index_of(folder)
    save_file({"model.layers.9.mlp.extra.weight": torch.zeros(2)}, str(folder / "extra.safetensors"))
    index["weight_map"]["model.layers.9.mlp.extra.weight"] = "extra.safetensors"
    write_index(folder, index)
    return r"unexpected tensor: extra.safetensors holds 'model.layers.9.mlp.extra.weight'"


def break_shape(folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (folder / "config.json").write_text(json.dumps(cfg))
    return r"shape mismatch: model-.*'model.layers.0.mlp.gate_proj.weight' as \[160, 64\].*\[128, 64\]"


def break_missing_tensor(folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(cfg))
    return r"missing tensor: the checkpoint has no 'model.layers.2.input_layernorm.weight'"


def break_truncated(folder):
    shard = folder / index_of(folder)["weight_map"]["model.embed_tokens.weight"]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    return rf"{shard.name}: truncated: tensor 'model.embed_tokens.weight'"


def break_corrupt_header(folder):
    shard = folder / index_of(folder)["weight_map"]["model.norm.weight"]
    data = bytearray(shard.read_bytes())
    data[8:12] = b"\xff\xfe{{"
    shard.write_bytes(bytes(data))
    return rf"{shard.name}: corrupt safetensors header"


def break_not_safetensors(folder):
    shard = folder / index_of(folder)["weight_map"]["model.norm.weight"]
    shard.write_bytes(b"\x00" * 5)
    return rf"{shard.name}: truncated or not a safetensors file"


def break_config(folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(cfg))
    return r"config.json: model_type='llama' is not supported"


def break_pickles_only(folder):
    for f in list(folder.glob("*.safetensors")) + [folder / "model.safetensors.index.json"]:
        f.unlink()
    torch.save({"x": torch.zeros(1)}, folder / "pytorch_model.bin")
    return r"only pickle weights \(pytorch_model.bin\).*safetensors only"


BREAKS = [break_missing_shard, break_missing_index_entry, break_index_points_to_wrong_shard,
          break_unexpected_tensor, break_shape, break_missing_tensor, break_truncated, break_corrupt_header,
          break_not_safetensors, break_config, break_pickles_only]


@pytest.mark.parametrize("breaker", BREAKS, ids=lambda f: f.__name__[6:])
def test_bad_checkpoint_gets_a_clear_error_before_anything_loads(saved_reference, monkeypatch, breaker):
    _, folder = saved_reference(max_shard_size="30KB")
    message = breaker(folder)
    mapped = []
    monkeypatch.setattr(checkpoint, "map_tensor", lambda *a: mapped.append(a) or pytest.fail("loaded a tensor"))
    with pytest.raises((CheckpointError, ValueError), match=message):
        minicohere.from_pretrained(folder, progress=False)
    assert mapped == []


def test_missing_folder_config_and_weights_are_named(tmp_path, saved_reference):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder at"):
        minicohere.from_pretrained(tmp_path / "nowhere", progress=False)
    _, folder = saved_reference()
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json: no config.json"):
        minicohere.from_pretrained(folder, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no model.safetensors and no model.safetensors.index.json"):
        minicohere.from_pretrained(empty, progress=False)


# --- the hub path, without a network: huggingface_hub's own cache, offline -------------------------


def test_hub_id_resolves_through_the_local_hub_cache_offline(saved_reference, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    hf, folder = saved_reference()
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--TinyOrg--tiny-command-r"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    ours = minicohere.from_pretrained("TinyOrg/tiny-command-r", progress=False)
    assert rel_err(logits_of(ours), logits_of(hf)) < 1e-6


def test_unreachable_hub_id_gets_one_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="NoSuchOrg/none: the hub cannot be reached"):
        minicohere.from_pretrained("NoSuchOrg/none", progress=False)
