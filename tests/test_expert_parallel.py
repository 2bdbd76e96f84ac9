"""Expert parallelism (minicohere/parallel.py on cohere2_moe): each rank holds num_experts / world experts,
an all-to-all sends tokens to them and back, and the sharded model equals the whole one.

Ranks are real processes on gloo (CPU), spawned once per world size; each worker runs every check for
that world size and hands back numbers, which the tests below assert on. The configs are minicohere's
own (no transformers needed): tests/test_cohere2_moe.py checks the whole model against transformers."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import minicohere
from minicohere import parallel
from minicohere.model import CohereConfig, CohereForCausalLM
from conftest import compare_sharded_load, ranks_once, scramble

WINDOW = 8
BASE = dict(model_type="cohere2_moe", vocab_size=98, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, num_hidden_layers=4, max_position_embeddings=128, sliding_window=WINDOW,
            pad_token_id=0, bos_token_id=1, eos_token_id=3, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
VARIANTS = {
    # a dense prefix layer of its own width, softmax routing, one shared expert averaged in
    "softmax-shared-prefix": dict(intermediate_size=32, num_experts=8, num_experts_per_tok=2, num_shared_experts=1,
                                  shared_expert_combination_strategy="average", first_k_dense_replace=1,
                                  prefix_dense_intermediate_size=48, sliding_window_pattern=2, logit_scale=0.5),
    # sigmoid routing left unnormalised, no shared expert, no dense layer, RMSNorm
    "sigmoid-no-shared": dict(intermediate_size=24, num_experts=8, num_experts_per_tok=3, expert_selection_fn="sigmoid",
                              norm_topk_prob=False, mlp_layer_types=["sparse"] * 4, sliding_window_pattern=4,
                              rms_norm_eps=1e-6, logit_scale=1.0),
    # sigmoid renormalised, two shared experts summed, a dense layer in the middle
    "sigmoid-sum-shared2": dict(intermediate_size=16, num_experts=4, num_experts_per_tok=1, expert_selection_fn="sigmoid",
                                num_shared_experts=2, shared_expert_combination_strategy="sum",
                                mlp_layer_types=["sparse", "dense", "sparse", "sparse"], logit_scale=0.25),
}
CACHES = ("static", "dynamic", None)
PROMPT_LEN, NEW_TOKENS = 11, 10  # past the window of 8


def config_for(variant: str) -> CohereConfig:
    return CohereConfig.from_dict({**BASE, **VARIANTS[variant]})


def whole_model(variant: str) -> CohereForCausalLM:
    torch.manual_seed(0)
    return scramble(CohereForCausalLM(config_for(variant)).eval(), seed=0, embed_std=0.3)


class CountAllToAll:
    """Counts torch.distributed's all_to_all_single, all_reduce and all_gather calls, and the bytes each
    all-to-all sent: rows (floating point) apart from the integer counts."""

    def __init__(self):
        self.calls = {"all_to_all": 0, "all_reduce": 0, "all_gather": 0}
        self.row_bytes = self.count_bytes = 0
        self.received_rows = 0

    def __enter__(self):
        self.saved = dist.all_to_all_single, dist.all_reduce, dist.all_gather

        def a2a(out, inp, *a, **k):
            self.calls["all_to_all"] += 1
            if inp.is_floating_point():
                self.row_bytes += inp.numel() * inp.element_size()
                self.received_rows += out.shape[0]
            else:
                self.count_bytes += inp.numel() * inp.element_size()
            return self.saved[0](out, inp, *a, **k)

        def counted(kind, fn):
            def call(*a, **k):
                self.calls[kind] += 1
                return fn(*a, **k)
            return call

        dist.all_to_all_single = a2a
        dist.all_reduce, dist.all_gather = counted("all_reduce", self.saved[1]), counted("all_gather", self.saved[2])
        return self

    def __exit__(self, *exc):
        dist.all_to_all_single, dist.all_reduce, dist.all_gather = self.saved


def checks_on_rank(rank: int, world: int, variants: list[str], folder: str | None) -> dict:
    out = {}
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, BASE["vocab_size"], (2, PROMPT_LEN), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # a left-padded row
    for variant in variants:
        model = whole_model(variant)
        with torch.no_grad():
            want = model(ids, attention_mask=mask).logits
        want_tokens = {c: minicohere.generate(model, ids, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                                              eos_token_id=None, cache=c) for c in CACHES}
        parallel.shard(model)
        with torch.no_grad(), CountAllToAll() as count:
            got = model(ids, attention_mask=mask).logits
        tokens = {c: minicohere.generate(model, ids, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                                         eos_token_id=None, cache=c) for c in CACHES}
        moe = [layer.mlp for layer in model.model.layers if isinstance(layer.mlp, parallel.ExpertParallelMoeBlock)]
        with torch.no_grad(), CountAllToAll() as one_token:  # one decode-sized step: 2 rows of 1 token
            model(ids[:, :1])
        out[variant] = {
            "max_err": (got - want).abs().max().item(), "shape_ok": got.shape == want.shape,
            "tokens": tokens, "same_tokens": all(torch.equal(tokens[c], want_tokens[c]) for c in CACHES),
            "varied": len(set(want_tokens["static"][:, PROMPT_LEN:].flatten().tolist())) > 2,
            "experts_held": [sorted(int(k) for k in m.experts._modules) for m in moe],
            "calls": dict(count.calls), "row_bytes": count.row_bytes, "count_bytes": count.count_bytes,
            "received_rows": count.received_rows, "decode_calls": dict(one_token.calls),
            "shared_rows": [m.shared_experts.up_proj.weight.shape[0] for m in moe if hasattr(m, "shared_experts")],
            "router_rows": [m.gate.weight.shape[0] for m in moe],
        }
    if folder is not None:  # loading only this rank's experts equals sharding the whole model
        out["loaded"] = compare_sharded_load(folder, ids)
    return out


WORLDS = (2, 4)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """{world size: [each rank's results]}, each world size spawned once, on first use."""
    cases = {world: list(VARIANTS) for world in WORLDS}
    return ranks_once(tmp_path_factory, checks_on_rank, cases, lambda: whole_model("softmax-shared-prefix"), "30KB")


CASES = [(w, v) for w in WORLDS for v in VARIANTS]


@pytest.mark.parametrize("world,variant", CASES)
def test_expert_parallel_logits_equal_the_whole_model_in_fp32(ranks, world, variant):
    for rank, res in enumerate(ranks(world)):
        assert res[variant]["shape_ok"]
        assert res[variant]["max_err"] < 1e-5, (rank, res[variant]["max_err"])


@pytest.mark.parametrize("world,variant", CASES)
def test_expert_parallel_greedy_tokens_equal_the_whole_model_with_every_cache(ranks, world, variant):
    per_rank = ranks(world)
    assert per_rank[0][variant]["varied"]  # the continuation is not one repeated token
    for res in per_rank:
        assert res[variant]["same_tokens"]
        for cache in CACHES:
            assert torch.equal(res[variant]["tokens"][cache], per_rank[0][variant]["tokens"][cache])


@pytest.mark.parametrize("world", WORLDS)
def test_each_rank_holds_its_own_experts_and_the_whole_router(ranks, world):
    config = config_for("softmax-shared-prefix")
    per = config.num_experts // world
    for rank, res in enumerate(ranks(world)):
        held = res["softmax-shared-prefix"]["experts_held"]
        assert held == [list(range(rank * per, (rank + 1) * per))] * 3  # layers 1-3 are MoE
        assert res["softmax-shared-prefix"]["router_rows"] == [config.num_experts] * 3
        # the shared expert is split by features, like a dense MLP
        assert res["softmax-shared-prefix"]["shared_rows"] == [config.intermediate_size // world] * 3
        assert res["sigmoid-sum-shared2"]["shared_rows"] == [2 * 16 // world] * 3


@pytest.mark.parametrize("world,variant", CASES)
def test_a_moe_layer_costs_one_all_reduce_and_three_all_to_alls(ranks, world, variant):
    config = config_for(variant)
    moe = config.mlp_layer_types.count("sparse")
    for res in ranks(world):
        for calls in (res[variant]["calls"], res[variant]["decode_calls"]):
            # one all-reduce per layer (attention + MLP or MoE partial sums), one for the embedding,
            # one gather of the logits, and per MoE layer: counts, rows out, rows back
            assert calls == {"all_reduce": config.num_hidden_layers + 1, "all_gather": 1, "all_to_all": 3 * moe}


@pytest.mark.parametrize("world,variant", CASES)
def test_bytes_all_to_alld_per_token_match_the_formula(ranks, world, variant):
    config = config_for(variant)
    want = parallel.all_to_all_bytes_per_token(config, dtype_bytes=4)
    per_rank = ranks(world)
    tokens = 2 * PROMPT_LEN  # the counted forward: 2 rows of 11 tokens, split among the ranks
    assert sum(res[variant]["row_bytes"] for res in per_rank) == tokens * want["all_to_all_bytes"]
    for res in per_rank:
        assert res[variant]["count_bytes"] == want["count_bytes_per_rank"]
    # every (token, expert) pair was received by exactly one rank, on the way out and on the way back
    k = config.num_experts_per_tok
    assert sum(res[variant]["received_rows"] for res in per_rank) == 2 * tokens * k * want["moe_layers"]


def test_from_pretrained_tensor_parallel_reads_only_this_ranks_experts(ranks):
    for res in ranks(2):
        loaded = res["loaded"]
        assert loaded["same_names"] and loaded["same_params"] and loaded["same_logits"]
        # attention, dense and shared MLPs halved, each rank half the experts; the router and norms whole
        assert loaded["rank_bytes"] < 0.53 * loaded["whole_bytes"]


def test_token_slices_cover_every_row_once():
    for n in (0, 1, 2, 5, 22):
        for world in (1, 2, 4):
            slices = [parallel.token_slice(n, r, world) for r in range(world)]
            assert slices[0][0] == 0 and slices[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
            assert max(b - a for a, b in slices) - min(b - a for a, b in slices) <= 1


def test_experts_that_do_not_divide_by_the_world_size_are_refused():
    config = CohereConfig.from_dict({**BASE, **VARIANTS["sigmoid-no-shared"], "num_experts": 6})
    with pytest.raises(ValueError, match="num_experts=6 is not divisible by the world size 4"):
        parallel.plan_for(config, 0, 4)
    parallel.plan_for(config, 0, 2)  # 3 experts each


def test_a_shared_expert_or_dense_width_that_does_not_divide_is_refused():
    shared = CohereConfig.from_dict({**BASE, **VARIANTS["softmax-shared-prefix"], "intermediate_size": 30})
    with pytest.raises(ValueError, match=r"intermediate_size \* num_shared_experts=30 is not divisible by the world size 4"):
        parallel.plan_for(shared, 0, 4)
    dense = CohereConfig.from_dict({**BASE, **VARIANTS["softmax-shared-prefix"], "prefix_dense_intermediate_size": 50})
    with pytest.raises(ValueError, match="prefix_dense_intermediate_size=50 is not divisible by the world size 4"):
        parallel.plan_for(dense, 0, 4)
    # routed experts are held whole: their width need not divide
    routed = CohereConfig.from_dict({**BASE, **VARIANTS["sigmoid-no-shared"], "intermediate_size": 30})
    assert parallel.plan_for(routed, 1, 4).experts == 2


def all_to_all_gradient_on_rank(rank: int, world: int) -> dict:
    """Rank r sends r + 1 rows to each rank; the gradient of a weighted sum must come back to the rows sent."""
    g = torch.Generator().manual_seed(rank)
    x = torch.randn((rank + 1) * world, 3, generator=g, requires_grad=True)
    recv = [src + 1 for src in range(world)]
    y = parallel.all_to_all(x, [rank + 1] * world, recv)
    w = torch.arange(y.numel(), dtype=torch.float32).view(y.shape) + 100 * rank  # what this rank's loss weighs
    (y * w).sum().backward()
    return {"x": x.detach(), "y": y.detach(), "w": w, "grad": x.grad}


def test_all_to_all_sends_rows_to_their_ranks_and_gradients_back():
    per_rank = parallel.run_on_ranks(all_to_all_gradient_on_rank, 2)
    for dst, res in enumerate(per_rank):
        # rank dst received, in source order, the rows each source cut out for it
        want = torch.cat([src_res["x"][dst * (src + 1):(dst + 1) * (src + 1)] for src, src_res in enumerate(per_rank)])
        assert torch.equal(res["y"], want)
    for src, res in enumerate(per_rank):
        # the gradient of each row sent is the weight its receiver gave it
        want = torch.cat([dst_res["w"][sum(range(1, src + 1)):sum(range(1, src + 2))] for dst_res in per_rank])
        assert torch.equal(res["grad"], want)
