"""Tensor parallelism (minicohere/parallel.py): the sharded model equals the whole one, ranks agree, and
Command-R's parallel block needs one all-reduce per layer where a sequential block needs two.

Ranks are real processes on gloo (CPU), spawned once per world size; each worker runs every check for
that world size and hands back numbers, which the tests below assert on."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import minicohere
from minicohere import parallel
from minicohere.model import CohereConfig, CohereForCausalLM
from conftest import compare_sharded_load, ranks_once, scramble, tiny_kwargs

# Shapes of the family (tests/conftest.py): MHA, GQA with 8 kv heads, q/k norm, and cohere2.
CASES = {
    2: {"v01-mha": tiny_kwargs("v01-mha"),
        "plus-qknorm": tiny_kwargs("plus-qknorm", vocab_size=95)},  # 95 rows: the last rank pads one
    4: {"08-2024-gqa8": tiny_kwargs("08-2024-gqa", hidden_size=128, num_attention_heads=16, num_key_value_heads=8),
        "r7b-cohere2": tiny_kwargs("v01-mha", model_type="cohere2", num_hidden_layers=4, num_attention_heads=8,
                                   num_key_value_heads=4, sliding_window=4)},
    8: {"r7b-cohere2": tiny_kwargs("v01-mha", model_type="cohere2", num_hidden_layers=4, num_attention_heads=8,
                                   num_key_value_heads=4, sliding_window=4)},  # 4 kv heads on 8 ranks: replicated
}
CACHES = ("static", "dynamic", None)


def whole_model(kw: dict) -> CohereForCausalLM:
    torch.manual_seed(0)
    return scramble(CohereForCausalLM(CohereConfig(**kw)).eval(), seed=0, embed_std=0.3)


class CountCollectives:
    """Counts the calls (and payload bytes) of torch.distributed's all_reduce and all_gather."""

    def __init__(self):
        self.calls = {"all_reduce": 0, "all_gather": 0}
        self.bytes = {"all_reduce": 0, "all_gather": 0}

    def __enter__(self):
        self.saved = dist.all_reduce, dist.all_gather

        def reduce(t, *a, **k):
            self.calls["all_reduce"] += 1
            self.bytes["all_reduce"] += t.numel() * t.element_size()
            return self.saved[0](t, *a, **k)

        def gather(parts, t, *a, **k):
            self.calls["all_gather"] += 1
            self.bytes["all_gather"] += t.numel() * t.element_size()
            return self.saved[1](parts, t, *a, **k)

        dist.all_reduce, dist.all_gather = reduce, gather
        return self

    def __exit__(self, *exc):
        dist.all_reduce, dist.all_gather = self.saved


class SequentialParallelLayer(parallel.TensorParallelDecoderLayer):
    """A Llama-style block sharded the same way: the MLP reads the finished attention output, so the
    attention's partial sums must be reduced before the MLP can start."""

    def forward(self, x, cos=None, sin=None, mask=None, is_causal=False, cache=None, eager=False):
        attn_partial, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, is_causal, cache, eager)
        x = x + parallel.all_reduce(attn_partial, self.group)
        return x + parallel.all_reduce(self.mlp(self.input_layernorm(x)), self.group), weights


def checks_on_rank(rank: int, world: int, cases: dict, folder: str | None) -> dict:
    """Everything one rank measures for its world size."""
    out = {}
    ids = torch.randint(1, 90, (2, 7), generator=torch.Generator().manual_seed(1))
    for name, kw in cases.items():
        model = whole_model(kw)
        with torch.no_grad():
            want = model(ids).logits
        want_tokens = {c: minicohere.generate(model, ids, max_new_tokens=8, eos_token_id=None, cache=c)
                       for c in CACHES}
        parallel.shard(model)
        with torch.no_grad():
            got = model(ids).logits
        tokens = {c: minicohere.generate(model, ids, max_new_tokens=8, eos_token_id=None, cache=c) for c in CACHES}
        layer0 = model.model.layers[0].self_attn
        out[name] = {"max_err": (got - want).abs().max().item(), "shape_ok": got.shape == want.shape,
                     "tokens": tokens, "same_tokens": all(torch.equal(tokens[c], want_tokens[c]) for c in CACHES),
                     "varied": len(set(want_tokens["static"][:, 7:].flatten().tolist())) > 1,
                     "local_heads": (layer0.n_heads, layer0.n_kv_heads),
                     "q_rows": layer0.q_proj.weight.shape[0]}
        with CountCollectives() as count, torch.no_grad():
            model(ids[:, :1])
        out[name]["calls"], out[name]["bytes"] = dict(count.calls), dict(count.bytes)
        try:
            parallel.shard(model)
        except ValueError as e:
            out[name]["again"] = str(e)
        for layer in model.model.layers:
            layer.__class__ = SequentialParallelLayer
        with CountCollectives() as count, torch.no_grad():
            model(ids[:, :1])
        out[name]["sequential_calls"] = dict(count.calls)
    if folder is not None:  # loading only this rank's slices equals sharding the whole model
        out["loaded"] = compare_sharded_load(folder, ids)
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """{world size: [each rank's results]}, each world size spawned once, on first use."""
    return ranks_once(tmp_path_factory, checks_on_rank, CASES, lambda: whole_model(tiny_kwargs("08-2024-gqa")), "20KB")


@pytest.mark.parametrize("world,name", [(w, n) for w in CASES for n in CASES[w]])
def test_sharded_logits_equal_the_whole_model_in_fp32(ranks, world, name):
    for rank, res in enumerate(ranks(world)):
        assert res[name]["shape_ok"]
        assert res[name]["max_err"] < 1e-5, (rank, res[name]["max_err"])


@pytest.mark.parametrize("world,name", [(w, n) for w in CASES for n in CASES[w]])
def test_sharded_greedy_tokens_equal_the_whole_model_with_every_cache(ranks, world, name):
    per_rank = ranks(world)
    assert per_rank[0][name]["varied"]  # the continuation is not one repeated token
    for res in per_rank:
        assert res[name]["same_tokens"]
        for cache in CACHES:  # and every rank produced the same tokens
            assert torch.equal(res[name]["tokens"][cache], per_rank[0][name]["tokens"][cache])


def test_heads_are_divided_and_kv_heads_replicated_when_fewer_than_ranks(ranks):
    assert ranks(2)[0]["v01-mha"]["local_heads"] == (2, 2)
    assert ranks(4)[0]["08-2024-gqa8"]["local_heads"] == (4, 2)
    assert ranks(4)[0]["r7b-cohere2"]["local_heads"] == (2, 1)
    assert ranks(8)[0]["r7b-cohere2"]["local_heads"] == (1, 1)  # 4 kv heads, 8 ranks: two ranks share each
    assert ranks(2)[1]["plus-qknorm"]["q_rows"] == 4 * 8


@pytest.mark.parametrize("world,name", [(2, "v01-mha"), (4, "r7b-cohere2"), (8, "r7b-cohere2")])
def test_parallel_block_needs_one_all_reduce_per_layer_and_sequential_two(ranks, world, name):
    layers = CASES[world][name]["num_hidden_layers"]
    res = ranks(world)[0][name]
    # one per decoder layer, plus one for the vocabulary-split embedding; one gather of the logits
    assert res["calls"] == {"all_reduce": layers + 1, "all_gather": 1}
    assert res["sequential_calls"] == {"all_reduce": 2 * layers + 1, "all_gather": 1}


def test_bytes_all_reduced_per_token_match_the_formula(ranks):
    res = ranks(2)[0]["v01-mha"]
    config = CohereConfig(**CASES[2]["v01-mha"])
    want = parallel.all_reduce_bytes_per_token(config, dtype_bytes=4)
    batch = 2  # the counted forward ran 2 rows of one token
    assert res["bytes"]["all_reduce"] == batch * want["all_reduce_bytes"]
    assert res["bytes"]["all_gather"] == batch * want["all_gather_bytes"] // 2  # each rank sends half the rows


def test_from_pretrained_tensor_parallel_reads_only_this_ranks_slices(ranks):
    for res in ranks(2):
        loaded = res["loaded"]
        assert loaded["same_names"] and loaded["same_params"] and loaded["same_logits"]
        # q/k/v/o, the MLP and the vocabulary are halved; only the norms are whole on each rank
        assert loaded["rank_bytes"] < 0.52 * loaded["whole_bytes"]


def test_sharding_twice_is_refused(ranks):
    assert "already sharded" in ranks(2)[0]["v01-mha"]["again"]


def test_shard_without_a_process_group_says_to_initialise_one():
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    model = whole_model(tiny_kwargs("v01-mha"))
    with pytest.raises(RuntimeError, match="init_process_group"):
        parallel.shard(model)


def test_heads_that_do_not_divide_by_the_world_size_are_refused():
    config = CohereConfig(**tiny_kwargs("v01-mha"))  # 4 heads
    with pytest.raises(ValueError, match="num_attention_heads=4 is not divisible by the world size 3"):
        parallel.plan_for(config, 0, 3)
    gqa = CohereConfig(**tiny_kwargs("08-2024-gqa", num_attention_heads=12, num_key_value_heads=4, hidden_size=96))
    with pytest.raises(ValueError, match="num_key_value_heads=4 < world size 6"):
        parallel.plan_for(gqa, 0, 6)
