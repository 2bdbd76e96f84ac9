"""Tensor parallelism (notebook 16): one model split across several processes ("ranks"), each holding
a slice of every weight matrix, on torch.distributed (gloo on CPUs, NCCL on GPUs).

Megatron-LM's split, applied to Command-R:

    q/k/v_proj, gate/up_proj   split by output rows  ("column parallel"): rank r computes its own heads
                               and its own slice of the MLP's features, with no communication;
    o_proj, down_proj          split by input columns ("row parallel"): each rank's product is a partial
                               sum of the full output;
    embed_tokens (= the head)  split by vocabulary rows: a token's row lives on one rank, and the logits
                               of every rank's rows are gathered.

Command-R's parallel block is what makes this cheap: attention and the MLP read the same normed input
and their outputs are added before the residual, so their partial sums are added on each rank first and
ONE all-reduce per layer finishes both (`TensorParallelDecoderLayer`). A sequential (Llama) block needs
two: the MLP's input depends on the finished attention output.

Mixture-of-experts layers (cohere2_moe, Command A+) are split by *experts* instead ("expert parallel"):
rank r holds num_experts / world whole experts; the router is replicated (it is tiny, and every rank must
agree on where each token goes). Each rank takes its own 1/world of the layer's tokens, routes them, and
an all-to-all sends each (token, expert) pair to the rank holding that expert; a second all-to-all brings
the expert outputs back (`ExpertParallelMoeBlock`). The shared expert, which every token goes through, is
split like a dense MLP: its partial sums join the layer's one all-reduce, which also gathers the ranks'
token slices (each rank's rows are zero on the others), so a MoE layer costs one all-reduce, as a dense
one does, plus three all-to-alls (the counts, the tokens out, the outputs back).

Each collective is a small autograd.Function with a name: `all_reduce` (sum over ranks), `copy_to_ranks`
(identity forward, all-reduce of the gradient backward), `gather_last_dim` (all-gather along the last
axis) and `all_to_all` (rows to the ranks that asked for them, and the gradient back the same way). They
are the only places where ranks talk.

    torch.distributed.init_process_group("gloo")     # or torchrun's env, "nccl" on GPUs
    model = minicohere.from_pretrained(folder)        # or from_pretrained(folder, tensor_parallel=True)
    parallel.shard(model)                             # in place: this rank's slices
    tokens = minicohere.generate(model, ids)          # every rank gets the full logits and the same tokens
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .model import CohereDecoderLayer, CohereExperts, CohereForCausalLM, CohereMLP, CohereSparseMoeBlock

# ---------------------------------------------------------------------------------------------------
# The collectives, one named function each
# ---------------------------------------------------------------------------------------------------


class _AllReduce(torch.autograd.Function):
    """Forward: sum the partial results of every rank. Backward: the gradient is already whole."""

    @staticmethod
    def forward(ctx, x, group):
        x = x.contiguous().clone()  # all_reduce works in place; the caller's tensor stays as it was
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _CopyToRanks(torch.autograd.Function):
    """Forward: nothing (every rank already holds the input). Backward: each rank's gradient is a part
    of the input's gradient (its heads, its features), so the parts are summed."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


class _GatherLastDim(torch.autograd.Function):
    """Forward: concatenate every rank's slice along the last axis. Backward: keep this rank's slice."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.rank, ctx.width = dist.get_rank(group), x.shape[-1]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x, group=group)
        return torch.cat(parts, dim=-1)

    @staticmethod
    def backward(ctx, grad):
        return grad[..., ctx.rank * ctx.width:(ctx.rank + 1) * ctx.width], None


class _AllToAll(torch.autograd.Function):
    """Forward: send rows [sum(send_sizes), ...] to the ranks in order (send_sizes[j] rows to rank j) and
    receive recv_sizes[j] rows from rank j. Backward: the gradients go back the opposite way."""

    @staticmethod
    def forward(ctx, x, send_sizes, recv_sizes, group):
        ctx.sizes, ctx.group = (send_sizes, recv_sizes), group
        out = x.new_empty((sum(recv_sizes), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), recv_sizes, send_sizes, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        send_sizes, recv_sizes = ctx.sizes
        return _AllToAll.apply(grad, recv_sizes, send_sizes, ctx.group), None, None, None


def all_to_all(x: torch.Tensor, send_sizes: list[int], recv_sizes: list[int], group=None) -> torch.Tensor:
    return _AllToAll.apply(x, list(send_sizes), list(recv_sizes), group)


def all_reduce(x: torch.Tensor, group=None) -> torch.Tensor:
    return _AllReduce.apply(x, group)


def copy_to_ranks(x: torch.Tensor, group=None) -> torch.Tensor:
    return _CopyToRanks.apply(x, group)


def gather_last_dim(x: torch.Tensor, group=None) -> torch.Tensor:
    return _GatherLastDim.apply(x, group)


# ---------------------------------------------------------------------------------------------------
# Which slice of each weight a rank keeps
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardPlan:
    """Rank `rank` of `world`: its query heads, its key/value heads, its MLP features, its vocabulary rows."""

    rank: int
    world: int
    heads: int  # query heads per rank
    kv_heads: int  # key/value heads per rank (1 when there are fewer kv heads than ranks: replicated)
    kv_start: int  # this rank's first kv head
    head_dim: int
    features: int  # MLP features per rank
    vocab_rows: int  # vocabulary rows per rank (the last rank's tail is padding when V % world != 0)
    vocab_size: int
    experts: int = 0  # routed experts per rank (cohere2_moe; 0 for a dense model)

    @property
    def vocab_start(self) -> int:
        return self.rank * self.vocab_rows

    @property
    def expert_start(self) -> int:  # this rank holds experts expert_start .. expert_start + experts - 1
        return self.rank * self.experts


def plan_for(config, rank: int, world: int) -> ShardPlan:
    """How `config`'s model splits over `world` ranks; refuses, naming the field, what does not divide."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank={rank} of world_size={world}: need 0 <= rank < world_size")
    H, K = config.num_attention_heads, config.num_key_value_heads
    if H % world:
        raise ValueError(f"num_attention_heads={H} is not divisible by the world size {world}: every rank "
                         f"needs the same number of heads; use a world size that divides {H}")
    if K >= world and K % world:
        raise ValueError(f"num_key_value_heads={K} is not divisible by the world size {world}; use a world "
                         f"size that divides {K}, or one that {K} divides (the kv heads are then replicated)")
    if K < world and world % K:
        raise ValueError(f"num_key_value_heads={K} < world size {world} needs the world size to be a multiple "
                         f"of {K} (each kv head is replicated on world_size / {K} ranks)")
    for what, width in split_widths(config).items():
        if width % world:
            raise ValueError(f"{what}={width} is not divisible by the world size {world}: each rank keeps an "
                             f"equal slice of that MLP's features; use a world size that divides {width}")
    experts = 0
    if config.model_type == "cohere2_moe" and "sparse" in config.mlp_layer_types:
        if config.num_experts % world:
            raise ValueError(f"num_experts={config.num_experts} is not divisible by the world size {world}: "
                             f"each rank holds the same number of whole experts; use a world size that "
                             f"divides {config.num_experts}")
        experts = config.num_experts // world
    if K >= world:
        kv_heads, kv_start = K // world, rank * (K // world)
    else:  # fewer kv heads than ranks: each rank keeps the one kv head its query heads read
        kv_heads, kv_start = 1, rank // (world // K)
    return ShardPlan(rank, world, H // world, kv_heads, kv_start, config.head_dim,
                     config.intermediate_size // world, math.ceil(config.vocab_size / world), config.vocab_size,
                     experts)


def split_widths(config) -> dict[str, int]:
    """The MLP widths that tensor parallelism splits by features, named by the config field they come
    from: every MLP of a dense model; in cohere2_moe the dense layers and the shared expert (the routed
    experts are not split: each rank holds whole ones)."""
    if config.model_type != "cohere2_moe":
        return {"intermediate_size": config.intermediate_size}
    widths = {}
    for i, kind in enumerate(config.mlp_layer_types):
        if kind == "dense":
            field = "prefix_dense_intermediate_size" if config.prefix_dense_intermediate_size else "intermediate_size"
            widths[field] = config.mlp_width(i)
        elif config.num_shared_experts:
            widths["intermediate_size * num_shared_experts"] = config.intermediate_size * config.num_shared_experts
    return widths


def expert_index(name: str) -> int | None:
    """The routed expert a parameter belongs to (`...mlp.experts.5.up_proj.weight` -> 5), else None."""
    found = re.search(r"(?:^|\.)experts\.(\d+)\.", name)
    return int(found.group(1)) if found else None


def local_piece(name: str, full: torch.Tensor, plan: ShardPlan) -> torch.Tensor:
    """This rank's slice of the whole tensor `name` (a view where it can be: the loader slices a
    memory-mapped file with it and copies only the slice). A routed expert's weights come whole when this
    rank holds that expert, and as None when another rank does."""
    leaf = name.rsplit(".", 2)
    kind = ".".join(leaf[-2:])
    expert = expert_index(name)
    if expert is not None:
        return full if plan.expert_start <= expert < plan.expert_start + plan.experts else None
    q_rows = (plan.rank * plan.heads * plan.head_dim, plan.heads * plan.head_dim)
    kv_rows = (plan.kv_start * plan.head_dim, plan.kv_heads * plan.head_dim)
    # an MLP's features: this rank's 1/world of its width (cohere2_moe's dense and shared MLPs differ in width)
    width = full.shape[1 if kind == "down_proj.weight" else 0] // plan.world
    f_rows = (plan.rank * width, width)
    rows = {"q_proj.weight": q_rows, "q_proj.bias": q_rows, "k_proj.weight": kv_rows, "k_proj.bias": kv_rows,
            "v_proj.weight": kv_rows, "v_proj.bias": kv_rows, "gate_proj.weight": f_rows, "up_proj.weight": f_rows,
            "q_norm.weight": (plan.rank * plan.heads, plan.heads),  # [heads, head_dim]: one row per head
            "k_norm.weight": (plan.kv_start, plan.kv_heads)}
    if kind in rows:
        return full.narrow(0, *rows[kind])
    if kind == "o_proj.weight":
        return full.narrow(1, *q_rows)
    if kind == "down_proj.weight":
        return full.narrow(1, *f_rows)
    if kind == "o_proj.bias":  # added once, after the sum: rank 0 keeps it, the others add zeros
        return full if plan.rank == 0 else torch.zeros_like(full)
    if name.endswith("embed_tokens.weight") or name == "lm_head.weight":
        start = plan.vocab_start
        take = max(0, min(plan.vocab_rows, plan.vocab_size - start))
        piece = full.narrow(0, start, take)
        if take < plan.vocab_rows:  # the last rank's padding rows: never looked up, their logits dropped
            piece = torch.cat([piece, piece.new_zeros(plan.vocab_rows - take, *full.shape[1:])])
        return piece
    return full  # norms (and anything without heads or features) are replicated


# ---------------------------------------------------------------------------------------------------
# The sharded modules
# ---------------------------------------------------------------------------------------------------


class VocabParallelEmbedding(nn.Module):
    """This rank's rows of the embedding; a token another rank holds gives zeros here, and the
    all-reduce adds the one rank's row that is not zero."""

    def __init__(self, weight: torch.Tensor, plan: ShardPlan, group):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=weight.requires_grad)
        self.start, self.group = plan.vocab_start, group

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        local = input_ids - self.start
        mine = (local >= 0) & (local < self.weight.shape[0])
        rows = F.embedding(local.clamp(0, self.weight.shape[0] - 1), self.weight)
        return all_reduce(rows.masked_fill(~mine[..., None], 0), self.group)


class VocabParallelHead(nn.Module):
    """The tied head: each rank scores its own vocabulary rows, then the slices are gathered."""

    def __init__(self, weight: torch.Tensor, vocab_size: int, group):
        super().__init__()
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
        self.vocab_size, self.group = vocab_size, group

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = gather_last_dim(F.linear(h, self.weight), self.group)
        return logits[..., :self.vocab_size]  # the last rank's padding rows, if any, go


class TensorParallelDecoderLayer(CohereDecoderLayer):
    """Command-R's parallel block on one rank: attention and MLP partial sums added here, then the one
    all-reduce of the layer, then the residual."""

    group = None

    def forward(self, x, cos=None, sin=None, mask=None, is_causal=False, cache=None, eager=False):
        h = copy_to_ranks(self.input_layernorm(x), self.group)
        attn_partial, weights = self.self_attn(h, cos, sin, mask, is_causal, cache, eager)
        return x + all_reduce(attn_partial + self.mlp(h), self.group), weights


class ExpertShard(CohereExperts):
    """This rank's routed experts, under their checkpoint numbers (rank 1 of 2 with 8 experts holds
    `experts.4` .. `experts.7`), so state dicts and the loader name them as the file does. Run by local
    position: `self[0]` is this rank's first expert."""

    def __getitem__(self, idx):
        if isinstance(idx, int):
            return list(self._modules.values())[idx]
        return super().__getitem__(idx)


def token_slice(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows start:stop of n that `rank` routes: contiguous slices as even as n allows (a decode step of
    batch 1 on 4 ranks gives one rank the token and the others none)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class ExpertParallelMoeBlock(CohereSparseMoeBlock):
    """A MoE layer on one rank: the router (replicated), this rank's experts (`ExpertShard`), the shared
    expert split by features. Its forward returns this rank's *partial* output, which the decoder layer's
    one all-reduce completes: the routed output of this rank's token slice (zeros on the other ranks'
    rows) plus the shared expert's partial sums, combined as the whole block combines them (both are
    linear in what the all-reduce sums)."""

    group = None
    rank, world = 0, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(0, -2)
        start, stop = token_slice(tokens.shape[0], self.rank, self.world)
        mine = tokens[start:stop]
        _, weights, experts = self.gate(mine)
        routed = F.pad(self.dispatch(mine, weights, experts), (0, 0, start, tokens.shape[0] - stop))
        if hasattr(self, "shared_experts"):
            shared = self.shared_experts(tokens)
            routed = routed + shared if self.combine == "sum" else (routed + shared) / 2
        return routed.view(x.shape)

    def dispatch(self, mine: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """mine [n, hidden] with their k experts [n, k] and weights [n, k] -> the routed output [n, hidden],
        the experts having run on the ranks that hold them."""
        local, k = len(self.experts), experts.shape[1]
        pair_expert = experts.flatten()  # pair p = (row p // k, expert pair_expert[p])
        order = pair_expert.argsort(stable=True)  # grouped by expert, so by the rank holding it
        # 1. counts: how many pairs each of my experts gets from each rank ([world, local] after the swap)
        send_counts = torch.bincount(pair_expert, minlength=local * self.world)
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts, group=self.group)
        send_sizes = send_counts.view(self.world, local).sum(1).tolist()
        recv_counts = recv_counts.view(self.world, local)
        recv_sizes = recv_counts.sum(1).tolist()
        # 2. the rows out, grouped by source rank and, within one, by my expert
        inbox = all_to_all(mine[order // k], send_sizes, recv_sizes, self.group)
        which = torch.arange(local, device=mine.device).repeat(self.world).repeat_interleave(recv_counts.flatten())
        if inbox.shape[0]:
            done = self.experts(inbox, inbox.new_ones(inbox.shape[0], 1), which[:, None])
        else:  # no token chose my experts: nothing to run, but the return trip still takes part
            done = inbox
        # 3. the outputs back, in the order they left; weighted and summed per token here
        back = all_to_all(done, recv_sizes, send_sizes, self.group) * weights.reshape(-1)[order, None]
        return torch.zeros_like(mine).index_add_(0, order // k, back)


@dataclass(frozen=True)
class TensorParallelInfo:
    rank: int
    world_size: int
    group: object
    plan: ShardPlan


def _check_ready(model, group) -> tuple[int, int]:
    if not isinstance(model, CohereForCausalLM):
        raise TypeError(f"shard() takes a minicohere CohereForCausalLM; got {type(model).__name__}")
    if getattr(model, "tensor_parallel", None) is not None:
        tp = model.tensor_parallel
        raise ValueError(f"the model is already sharded (rank {tp.rank} of {tp.world_size}); shard a whole "
                         "model once")
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group "
                           "(backend 'gloo' on CPUs, 'nccl' on GPUs; torchrun sets the environment) before shard()")
    return dist.get_rank(group), dist.get_world_size(group)


def shard(model: CohereForCausalLM, group=None) -> CohereForCausalLM:
    """Turn `model`, in place, into this rank's tensor-parallel shard (see the module docstring) and
    return it. Every rank must call it on the same model. The forward of the shard returns the full
    logits on every rank; `generate` runs unchanged (sampling needs the same generator seed on every
    rank). `model.config` then describes this rank's key/value heads (the cache's shape). In cohere2_moe
    the routed experts are divided among the ranks instead (`ExpertParallelMoeBlock`)."""
    rank, world = _check_ready(model, group)
    config = model.config
    plan = plan_for(config, rank, world)
    for layer in model.model.layers:
        if type(layer) is not CohereDecoderLayer or type(layer.mlp) not in (CohereMLP, CohereSparseMoeBlock):
            raise TypeError(f"shard() splits CohereDecoderLayer with CohereMLP or CohereSparseMoeBlock; found "
                            f"{type(layer).__name__} with {type(layer.mlp).__name__}")
    for name, module in model.named_modules():
        if name and not list(module.children()) and type(module).__name__.endswith(("QuantizedLinear", "Int8Linear",
                                                                                     "Int4Linear", "NF4Linear")):
            raise TypeError(f"{name} is quantized ({type(module).__name__}); shard the model before quantizing it")
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    for layer in model.model.layers:  # MoE layers: keep this rank's experts, in memory of their own
        if isinstance(layer.mlp, CohereSparseMoeBlock):
            experts = layer.mlp.experts
            for key, expert in list(experts._modules.items()):
                if local_piece(f"experts.{key}.up_proj.weight", expert.up_proj.weight, plan) is None:
                    del experts._modules[key]
                    continue
                for linear in expert.children():  # a view into the stack of all experts would hold them all
                    linear.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=linear.weight.requires_grad)
            experts.__class__, experts._stack = ExpertShard, None
            layer.mlp.__class__ = ExpertParallelMoeBlock
            layer.mlp.group, layer.mlp.rank, layer.mlp.world = group, rank, world
    with torch.no_grad():
        for name, p in list(model.named_parameters(remove_duplicate=False)):
            if tied and name == "lm_head.weight":
                continue
            module_name, _, leaf = name.rpartition(".")
            whole = p.data
            piece = local_piece(name, whole, plan)
            if piece is not whole:
                setattr(model.get_submodule(module_name), leaf,
                        nn.Parameter(piece.clone(), requires_grad=p.requires_grad))
    for layer in model.model.layers:
        attn = layer.self_attn
        attn.n_heads, attn.n_kv_heads = plan.heads, plan.kv_heads
        layer.__class__ = TensorParallelDecoderLayer  # same parameters and names, the one all-reduce added
        layer.group = group
    model.model.embed_tokens = VocabParallelEmbedding(model.model.embed_tokens.weight, plan, group)
    head_weight = model.model.embed_tokens.weight if tied else model.lm_head.weight
    model.lm_head = VocabParallelHead(head_weight, config.vocab_size, group)
    # The caches size themselves from the config: this rank keeps plan.kv_heads key/value heads.
    local = dataclasses.replace(config, num_key_value_heads=plan.kv_heads)
    model.config = model.model.config = local
    model.tensor_parallel = TensorParallelInfo(rank, world, group, plan)
    return model


def all_reduce_bytes_per_token(config, dtype_bytes: int = 2) -> dict:
    """The payload each rank contributes per token: one [hidden] all-reduce per layer plus one for the
    vocabulary-split embedding, and the gathered logits (vocab_size values)."""
    return {"all_reduces": config.num_hidden_layers + 1,
            "all_reduce_bytes": (config.num_hidden_layers + 1) * config.hidden_size * dtype_bytes,
            "all_gathers": 1, "all_gather_bytes": config.vocab_size * dtype_bytes}


def all_to_all_bytes_per_token(config, dtype_bytes: int = 2) -> dict:
    """Expert parallelism's extra traffic per token, *summed over all ranks*: in each MoE layer a token's
    row goes out once per chosen expert (k rows of hidden_size) and each expert's output comes back (k rows
    again), whichever rank holds the expert (a row for a rank's own experts is copied, not sent, but
    all_to_all_single still takes it). Each token is routed by exactly one rank, so one rank's share is
    all_to_all_bytes / world on average (compare that, not the sum, with all_reduce_bytes_per_token,
    which counts what *each rank* contributes). Per layer and rank, three all-to-alls: the counts
    (num_experts int64 values, count_bytes_per_rank: per rank, not summed), the rows out and the rows back;
    the layer's one all-reduce is counted by all_reduce_bytes_per_token."""
    moe_layers = sum(kind == "sparse" for kind in config.mlp_layer_types or ())
    return {"moe_layers": moe_layers, "all_to_alls": 3 * moe_layers,
            "all_to_all_bytes": moe_layers * 2 * config.num_experts_per_tok * config.hidden_size * dtype_bytes,
            "count_bytes_per_rank": moe_layers * config.num_experts * 8}


# ---------------------------------------------------------------------------------------------------
# Starting ranks on one machine (tests, benchmarks, notebook 16): gloo, one process per rank
# ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, fn, args, results):
    import os
    import pickle

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    import datetime

    # A rank that fails leaves the others waiting in a collective: a timeout turns that into an error.
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        out = fn(rank, world, *args)
        # by value (plain pickle): torch's own queue pickling would share tensor memory through a
        # file descriptor that dies with this process
        results.put((rank, pickle.dumps(out), None))
    except BaseException as e:  # handed back to the parent, which raises it
        import traceback

        results.put((rank, None, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        dist.destroy_process_group()


def run_on_ranks(fn, world_size: int, *args, timeout: float = 300.0, start_method: str = "spawn") -> list:
    """Run `fn(rank, world_size, *args)` in `world_size` processes joined by a gloo process group on this
    machine, and return each rank's result (in rank order). A failure on any rank is raised here.
    start_method="spawn" starts fresh interpreters, so `fn` must be importable (defined in a module);
    "fork" (Linux, macOS) copies this process, so `fn` may be defined in a notebook cell."""
    import multiprocessing as mp
    import pickle
    import queue

    ctx = mp.get_context(start_method)
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world_size, port, fn, args, results), daemon=True)
             for r in range(world_size)]
    for proc in procs:
        proc.start()
    outs, errors = {}, []
    try:
        for _ in range(world_size):
            rank, out, err = results.get(timeout=timeout)
            outs[rank] = None if out is None else pickle.loads(out)
            if err:
                errors.append(f"rank {rank}: {err}")
    except queue.Empty:
        errors.append(f"no answer from ranks {sorted(set(range(world_size)) - set(outs))} within {timeout} s")
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    if errors:
        raise RuntimeError("tensor-parallel ranks failed:\n" + "\n".join(errors))
    return [outs[r] for r in range(world_size)]


def compare_on_rank(rank: int, world: int, folder: str, prompt: list[int]) -> dict:
    """What notebook 16 runs on each rank: load this rank's shard of the checkpoint in `folder`, and
    return its full logits for `prompt`, its parameter count and the collectives one forward made."""
    model = from_pretrained_shard(folder)
    calls = {"all_reduce": 0, "all_gather": 0}
    saved = dist.all_reduce, dist.all_gather

    def counted(kind, fn):
        def call(*a, **k):
            calls[kind] += 1
            return fn(*a, **k)
        return call

    dist.all_reduce, dist.all_gather = counted("all_reduce", saved[0]), counted("all_gather", saved[1])
    try:
        with torch.no_grad():
            logits = model(torch.tensor([prompt])).logits
    finally:
        dist.all_reduce, dist.all_gather = saved
    return {"logits": logits, "parameters": sum(p.numel() for p in model.parameters()), "calls": calls}


def moe_compare_on_rank(rank: int, world: int, folder: str, prompt: list[int]) -> dict:
    """What notebook 17 runs on each rank: load this rank's expert-parallel shard of the cohere2_moe
    checkpoint in `folder` and return its full logits for `prompt`, the experts it holds, and what one
    forward's all-to-alls moved: the rows this rank received for its experts (per MoE layer) and the
    bytes of rows it sent (out and back), apart from the integer counts."""
    model = from_pretrained_shard(folder)
    moved = {"all_to_all": 0, "rows_received": [], "row_bytes_sent": 0, "count_bytes_sent": 0}
    saved = dist.all_to_all_single

    def counted(out, inp, *a, **k):
        moved["all_to_all"] += 1
        if inp.is_floating_point():
            moved["row_bytes_sent"] += inp.numel() * inp.element_size()
            if moved["all_to_all"] % 3 == 2:  # the rows out (the third of each layer brings outputs back)
                moved["rows_received"].append(out.shape[0])
        else:
            moved["count_bytes_sent"] += inp.numel() * inp.element_size()
        return saved(out, inp, *a, **k)

    dist.all_to_all_single = counted
    try:
        with torch.no_grad():
            logits = model(torch.tensor([prompt])).logits
    finally:
        dist.all_to_all_single = saved
    held = [sorted(int(e) for e in layer.mlp.experts._modules) for layer in model.model.layers
            if isinstance(layer.mlp, ExpertParallelMoeBlock)]
    return {"logits": logits, "experts": held, **moved}


def from_pretrained_shard(folder: str, **options) -> CohereForCausalLM:
    from .checkpoint import from_pretrained

    return from_pretrained(folder, progress=False, tensor_parallel=True, **options)
