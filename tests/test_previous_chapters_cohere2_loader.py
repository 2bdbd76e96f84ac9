"""notebooks/previous_chapters.py, chapter 13's loader: `load_cohere2_model` builds the course's cohere2 model
from a checkpoint folder written by transformers, in the newer config spelling and in c4ai's older one."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from conftest import REPO, rel_err, scramble

sys.path.insert(0, str(REPO / "notebooks"))
import previous_chapters as pc  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from transformers import Cohere2Config, Cohere2ForCausalLM

    config = Cohere2Config(vocab_size=96, hidden_size=64, intermediate_size=160, num_hidden_layers=8,
                           num_attention_heads=8, num_key_value_heads=2, sliding_window=6, logit_scale=0.25,
                           rope_parameters={"rope_type": "default", "rope_theta": 50000.0})
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    reference = scramble(Cohere2ForCausalLM(config), 0).eval()
    folder = tmp_path_factory.mktemp("tiny-cohere2")
    reference.save_pretrained(folder)
    return folder, reference


def test_load_cohere2_model_gives_transformers_logits(saved):
    folder, reference = saved
    model = pc.load_cohere2_model(folder)
    assert isinstance(model, pc.MyCohere2ForCausalLM)
    assert model.config.layer_types == reference.config.layer_types
    ids = torch.randint(4, 96, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rel_err(model(ids).logits, reference(ids).logits) < 1e-5


def test_older_config_spelling_gives_the_same_layer_pattern(saved, tmp_path):
    folder, reference = saved
    raw = json.loads((folder / "config.json").read_text())
    old = {k: v for k, v in raw.items() if k not in ("layer_types", "rope_parameters")}
    old.update(sliding_window_pattern=4, rope_theta=50000.0)
    (tmp_path / "config.json").write_text(json.dumps(old))
    (tmp_path / "model.safetensors").symlink_to(folder / "model.safetensors")
    config = pc.read_cohere2_config(tmp_path)
    assert config.layer_types == reference.config.layer_types and pc.rope_theta(config) == 50000.0


def test_cohere2_loader_refuses_a_cohere_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "cohere", "hidden_size": 8}))
    with pytest.raises(ValueError, match="model_type 'cohere'; this loader reads 'cohere2'"):
        pc.load_cohere2_model(tmp_path)
