"""Tensor-parallel Command-R on NCCL and GPUs: the same code as on gloo, for a lent multi-GPU machine.
NOT RUN in this repository's history (no GPUs here); the CPU equivalent is bench_parallel.py.

    torchrun --nproc-per-node 2 benchmarks/gpu_tensor_parallel.py [--model FOLDER_OR_HUB_ID]
             [--dtype bfloat16 --new-tokens 64]

The same script on this CPU (gloo, a small random model), to check that it runs before a GPU machine is
lent:

    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 benchmarks/gpu_tensor_parallel.py --device cpu --small

Each rank loads only its slices (`from_pretrained(..., tensor_parallel=True)`) onto its own GPU, checks
that every rank generates the same tokens, and prints decode tok/s, parameter bytes and peak GPU memory
per rank, and the bytes all-reduced per token next to the formula. Without --model it builds a random
Command-R-shaped model (hidden 4096, 8 layers, 32 heads / 8 kv heads) on rank 0 and saves it to a
temporary folder first. With one GPU per rank a speed-up is expected once the model is large enough that
reading its weights, not the all-reduces, sets the time per token.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import torch
import torch.distributed as dist

import minicohere
from minicohere import parallel


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cuda: one GPU per rank, NCCL; cpu: gloo, to try the script without GPUs")
    ap.add_argument("--small", action="store_true",
                    help="the random model 1024 wide with 2 layers and a 32000 vocabulary (a quick check)")
    args = ap.parse_args()
    if "LOCAL_RANK" not in os.environ:
        raise SystemExit("start with torchrun --nproc-per-node N benchmarks/gpu_tensor_parallel.py")
    local_rank = int(os.environ["LOCAL_RANK"])
    gpu = args.device == "cuda"
    if gpu:
        if torch.cuda.device_count() <= local_rank:
            raise SystemExit(f"rank {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible): start "
                             "at most one rank per GPU, or pass --device cpu")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    folder = args.model
    tmp = None
    if folder is None:
        tmp = tempfile.mkdtemp(prefix="tp-bench-") if rank == 0 else None
        box = [tmp]
        dist.broadcast_object_list(box, src=0)
        folder = box[0]
        if rank == 0:
            shape = (dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=2)
                     if args.small else
                     dict(vocab_size=256000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=8))
            config = minicohere.CohereConfig(**shape, num_attention_heads=32, num_key_value_heads=8,
                                             max_position_embeddings=4096, dtype=args.dtype)
            torch.manual_seed(0)
            with torch.device(args.device):
                minicohere.CohereForCausalLM(config).to(minicohere.checkpoint.parse_dtype(args.dtype)).save_pretrained(folder)
        dist.barrier()
    device = f"cuda:{local_rank}" if gpu else "cpu"
    model = minicohere.from_pretrained(folder, dtype=args.dtype, device=device, progress=False, tensor_parallel=True)
    ids = torch.randint(10, model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0)).to(device)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    minicohere.generate(model, ids, max_new_tokens=4, eos_token_id=None)  # warm-up
    sync()
    dist.barrier()
    start = time.perf_counter()
    tokens = minicohere.generate(model, ids, max_new_tokens=args.new_tokens, eos_token_id=None)
    sync()
    seconds = time.perf_counter() - start
    gathered = [torch.empty_like(tokens) for _ in range(world)]
    dist.all_gather(gathered, tokens)
    formula = parallel.all_reduce_bytes_per_token(model.config, dtype_bytes=model.dtype.itemsize)
    param_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    peak = f"{torch.cuda.max_memory_allocated() / 1e9:.2f} GB" if gpu else "(GPU only)"
    print(f"rank {rank}/{world} on {args.device}: {args.new_tokens / seconds:.1f} tok/s, params {param_gb:.2f} GB, "
          f"peak {peak}, all-reduce {formula['all_reduce_bytes']} B/token "
          f"(formula), same tokens on every rank: {all(torch.equal(g, tokens) for g in gathered)}", flush=True)
    dist.barrier()
    if tmp is not None and rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
