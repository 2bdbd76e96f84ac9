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

Each collective is a small autograd.Function with a name: `all_reduce` (sum over ranks), `copy_to_ranks`
(identity forward, all-reduce of the gradient backward) and `gather_last_dim` (all-gather along the last
axis). They are the only places where ranks talk.

    torch.distributed.init_process_group("gloo")     # or torchrun's env, "nccl" on GPUs
    model = minicohere.from_pretrained(folder)        # or from_pretrained(folder, tensor_parallel=True)
    parallel.shard(model)                             # in place: this rank's slices
    tokens = minicohere.generate(model, ids)          # every rank gets the full logits and the same tokens
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .model import CohereDecoderLayer, CohereForCausalLM

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

    @property
    def vocab_start(self) -> int:
        return self.rank * self.vocab_rows


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
    if config.intermediate_size % world:
        raise ValueError(f"intermediate_size={config.intermediate_size} is not divisible by the world size {world}")
    if K >= world:
        kv_heads, kv_start = K // world, rank * (K // world)
    else:  # fewer kv heads than ranks: each rank keeps the one kv head its query heads read
        kv_heads, kv_start = 1, rank // (world // K)
    return ShardPlan(rank, world, H // world, kv_heads, kv_start, config.head_dim,
                     config.intermediate_size // world, math.ceil(config.vocab_size / world), config.vocab_size)


def local_piece(name: str, full: torch.Tensor, plan: ShardPlan) -> torch.Tensor:
    """This rank's slice of the whole tensor `name` (a view where it can be: the loader slices a
    memory-mapped file with it and copies only the slice)."""
    leaf = name.rsplit(".", 2)
    kind = ".".join(leaf[-2:])
    q_rows = (plan.rank * plan.heads * plan.head_dim, plan.heads * plan.head_dim)
    kv_rows = (plan.kv_start * plan.head_dim, plan.kv_heads * plan.head_dim)
    f_rows = (plan.rank * plan.features, plan.features)
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
    rank). `model.config` then describes this rank's key/value heads (the cache's shape)."""
    rank, world = _check_ready(model, group)
    config = model.config
    plan = plan_for(config, rank, world)
    for layer in model.model.layers:
        if type(layer) is not CohereDecoderLayer or type(layer.mlp).__name__ != "CohereMLP":
            raise TypeError(f"shard() splits CohereDecoderLayer with CohereMLP; found {type(layer).__name__} "
                            f"with {type(layer.mlp).__name__}")
    for name, module in model.named_modules():
        if name and not list(module.children()) and type(module).__name__.endswith(("QuantizedLinear", "Int8Linear",
                                                                                     "Int4Linear", "NF4Linear")):
            raise TypeError(f"{name} is quantized ({type(module).__name__}); shard the model before quantizing it")
    tied = model.lm_head.weight is model.model.embed_tokens.weight
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


def run_on_ranks(fn, world_size: int, *args, timeout: float = 300.0) -> list:
    """Run `fn(rank, world_size, *args)` in `world_size` fresh processes joined by a gloo process group
    on this machine, and return each rank's result (in rank order). `fn` must be importable (defined in
    a module, not in a notebook cell): the processes are spawned. A failure on any rank is raised here."""
    import multiprocessing as mp
    import pickle
    import queue

    ctx = mp.get_context("spawn")
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


def from_pretrained_shard(folder: str, **options) -> CohereForCausalLM:
    from .checkpoint import from_pretrained

    return from_pretrained(folder, progress=False, tensor_parallel=True, **options)
