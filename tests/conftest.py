"""Shared helpers: tiny Command-R-family configs and reference models from transformers."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "command-r"

# Tiny configs, one per member of the family; the ratios (MHA, GQA, q/k norm) follow the real checkpoints.
TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            max_position_embeddings=64, eos_token_id=3, bos_token_id=1, pad_token_id=0,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
FAMILY = {
    "v01-mha": dict(num_attention_heads=4, num_key_value_heads=4),
    "08-2024-gqa": dict(num_attention_heads=8, num_key_value_heads=2),
    "plus-qknorm": dict(num_attention_heads=8, num_key_value_heads=2, use_qk_norm=True, logit_scale=0.8333333333333334),
    "mqa": dict(num_attention_heads=4, num_key_value_heads=1),
}


def tiny_kwargs(family: str = "08-2024-gqa", **overrides) -> dict:
    kw = {**TINY, **FAMILY[family]}
    kw.update(overrides)
    return kw


def scramble(model: torch.nn.Module, seed: int = 0, embed_std: float = 1.0) -> torch.nn.Module:
    """Redraw every weight so logits are O(1): the default init gives near-zero logits that hide bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(embed_std * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    return model


def scrambled_reference(config_cls, model_cls, kwargs: dict, seed: int = 0, embed_std: float = 1.0):
    """transformers' `model_cls` built from `config_cls(**kwargs)` (fp32, eval, eager attention), its
    weights scrambled: the one way every test makes a reference (Cohere, Cohere2, Cohere2Moe)."""
    cfg = config_cls(**kwargs)
    cfg._attn_implementation = "eager"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        model = model_cls(cfg).eval()
    return scramble(model, seed, embed_std)


def reference_model(family: str = "08-2024-gqa", seed: int = 0, embed_std: float = 1.0, **overrides):
    """transformers' CohereForCausalLM for a member of FAMILY, scrambled (scrambled_reference).

    With large embeddings the last hidden state is close to the input token's own embedding, so greedy
    decoding repeats the prompt's last token; a smaller `embed_std` gives varied continuations.
    """
    from transformers import CohereConfig, CohereForCausalLM

    return scrambled_reference(CohereConfig, CohereForCausalLM, tiny_kwargs(family, **overrides), seed, embed_std)


@pytest.fixture
def saved_reference(tmp_path):
    """Factory: a reference model saved sharded with transformers; returns (model, folder)."""

    def make(family="08-2024-gqa", seed=0, max_shard_size="40KB", **overrides):
        model = reference_model(family, seed, **overrides)
        folder = tmp_path / f"{family}-{seed}"
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        return model, folder

    return make


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ||a - b|| / ||b||, in fp64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


# --- tensor and expert parallelism (test_parallel.py, test_expert_parallel.py) ---------------------


def compare_sharded_load(folder: str, ids: torch.Tensor) -> dict:
    """Run on a rank: sharding the whole loaded checkpoint equals loading only this rank's slices."""
    import minicohere
    from minicohere import parallel

    whole = minicohere.from_pretrained(folder, progress=False)
    whole_bytes = sum(p.numel() * p.element_size() for p in whole.parameters())
    parallel.shard(whole)
    loaded = minicohere.from_pretrained(folder, progress=False, tensor_parallel=True)
    a, b = whole.state_dict(), loaded.state_dict()
    with torch.no_grad():
        return {"same_names": list(a) == list(b), "same_params": all(torch.equal(a[n], b[n]) for n in a),
                "whole_bytes": whole_bytes, "rank_bytes": sum(p.numel() * p.element_size() for p in loaded.parameters()),
                "same_logits": torch.equal(whole(ids).logits, loaded(ids).logits)}


def ranks_once(tmp_path_factory, checks, cases, saved_model, max_shard_size: str):
    """{world size: each rank's results}, each world size spawned once, on first use: checks(rank, world,
    cases[world], folder), where folder holds saved_model() on 2 ranks (for the loader's checks), else None."""
    from minicohere import parallel

    results = {}

    def get(world: int):
        if world not in results:
            folder = None
            if world == 2:
                folder = tmp_path_factory.mktemp("ranks") / "saved"
                saved_model().save_pretrained(folder, max_shard_size=max_shard_size)
                folder = str(folder)
            results[world] = parallel.run_on_ranks(checks, world, cases[world], folder)
        return results[world]

    return get
