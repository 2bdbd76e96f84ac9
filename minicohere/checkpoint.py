"""Loading and saving Hugging Face checkpoints of Command-R (notebook 10).

A checkpoint is a folder: `config.json`, then the weights as safetensors, either one `model.safetensors`
or shards `model-0000N-of-0000M.safetensors` listed by `model.safetensors.index.json`. A safetensors
file is simple enough to read by hand:

    [8 bytes: header length n, little-endian][n bytes: JSON header][raw tensor bytes]

The header maps each tensor name to its dtype, shape and byte range. Reading it ourselves lets the loader
check every file before it loads anything, and memory-map the bytes so that a tensor that already has the
wanted dtype on the CPU is used in place, never copied: loading never needs twice the checkpoint's size.
Only safetensors are read, never pickles (`.bin` files can run code when unpickled).
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .model import CohereConfig, CohereExperts, CohereForCausalLM
from .hub import download
from .quant import QuantizedEmbedding, check_quantize_args, head_scheme, linear_names, quantize_weight, replace_module

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PROGRESS_MIN_BYTES = 2**30  # from_pretrained shows a progress bar from this checkpoint size up


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is; the message names the file and the tensor."""


# ---------------------------------------------------------------------------------------------------
# Reading safetensors by hand
# ---------------------------------------------------------------------------------------------------


@dataclass
class TensorEntry:
    """Where one tensor's bytes sit in a safetensors file."""

    file: Path
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # from the start of the file
    nbytes: int


def read_safetensors_header(path: str | os.PathLike) -> dict[str, TensorEntry]:
    """Parse and check a safetensors header without touching the tensor bytes.

    Raises CheckpointError for a truncated or corrupt file: every tensor's bytes must lie inside the file
    and match its dtype and shape.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: truncated or not a safetensors file ({size} bytes, no header)")
        n = int.from_bytes(prefix, "little")
        if n > size - 8:
            raise CheckpointError(f"{path}: truncated or not a safetensors file (header of {n} bytes "
                                  f"announced, {size - 8} bytes present)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_start = 8 + n
    entries = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[meta["dtype"]]
            shape = tuple(int(s) for s in meta["shape"])
            begin, end = (int(o) for o in meta["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: corrupt header entry for tensor {name!r} ({e!r})") from None
        want = math.prod(shape) * dtype.itemsize
        if end - begin != want:
            raise CheckpointError(f"{path}: tensor {name!r} has {end - begin} bytes, but {meta['dtype']} "
                                  f"{list(shape)} needs {want}: corrupt file")
        if data_start + end > size:
            raise CheckpointError(f"{path}: truncated: tensor {name!r} needs bytes up to {data_start + end}, "
                                  f"the file ends at {size}")
        entries[name] = TensorEntry(path, name, dtype, shape, data_start + begin, want)
    return entries


def map_tensor(entry: TensorEntry, mapped: mmap.mmap) -> torch.Tensor:
    """A CPU tensor whose memory is the file's own bytes (copy-on-write): nothing is read until used."""
    if entry.nbytes == 0:
        return torch.empty(entry.shape, dtype=entry.dtype)
    flat = torch.frombuffer(mapped, dtype=entry.dtype, count=entry.nbytes // entry.dtype.itemsize,
                            offset=entry.offset)
    return flat.view(entry.shape)


def open_mapped(path: Path) -> mmap.mmap:
    with open(path, "rb") as f:
        # ACCESS_COPY: private pages, so a tensor may be written in place without touching the file.
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)


def release_pages(mapped: mmap.mmap, entry: TensorEntry) -> None:
    """Let the OS drop a tensor's file pages once it has been read: they would otherwise count in the
    process's memory until the whole shard is done. Only whole pages inside the tensor are released;
    reading them again would fetch them from the file again (they were never written)."""
    if not hasattr(mapped, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = -(-entry.offset // mmap.PAGESIZE) * mmap.PAGESIZE
    stop = (entry.offset + entry.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if stop > start:
        mapped.madvise(mmap.MADV_DONTNEED, start, stop - start)


# ---------------------------------------------------------------------------------------------------
# Finding a checkpoint: a local folder or a hub id
# ---------------------------------------------------------------------------------------------------

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint(path_or_repo_id: str | os.PathLike, revision=None, token=None) -> Path:
    """A local folder as it is; a hub id ("org/name") downloaded (json and safetensors only) to the cache."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; from_pretrained wants a checkpoint folder or a hub id")
    name = str(path_or_repo_id)
    if not _REPO_ID.match(name):
        raise FileNotFoundError(f"no checkpoint folder at {name!r} (and it is not a hub id of the form org/name)")
    return download(name, ["*.json", "*.safetensors"], "the checkpoint", "a local checkpoint folder",
                    error=CheckpointError, revision=revision, token=token)


def weight_entries(folder: Path) -> dict[str, TensorEntry]:
    """Every tensor of the checkpoint in `folder`, read from the headers of its safetensors files."""
    index_path, single_path = folder / INDEX_NAME, folder / SINGLE_NAME
    if index_path.exists():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index_path}: not a valid safetensors index ({e!r})") from None
        entries: dict[str, TensorEntry] = {}
        headers: dict[str, dict[str, TensorEntry]] = {}
        for name, shard in weight_map.items():
            if shard not in headers:
                shard_path = folder / shard
                if not shard_path.exists():
                    raise CheckpointError(f"missing shard: {index_path.name} puts tensor {name!r} in {shard}, "
                                          f"which is not in {folder}")
                headers[shard] = read_safetensors_header(shard_path)
            if name not in headers[shard]:
                raise CheckpointError(f"missing tensor: {index_path.name} puts {name!r} in {shard}, "
                                      f"but {shard} does not hold it")
            entries[name] = headers[shard][name]
        # A shard in the folder that the index never mentions holds tensors the index forgot.
        for shard_path in sorted(folder.glob("model-*-of-*.safetensors")):
            if shard_path.name not in headers:
                headers[shard_path.name] = read_safetensors_header(shard_path)
        for shard, header in headers.items():
            for name in header:
                if name not in weight_map:
                    raise CheckpointError(f"missing index entry: {shard} holds {name!r}, "
                                          f"which {index_path.name} does not list")
        return entries
    if single_path.exists():
        return read_safetensors_header(single_path)
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    if pickles:
        raise CheckpointError(f"{folder} holds only pickle weights ({', '.join(pickles[:3])}); minicohere reads "
                              f"safetensors only, since unpickling can run code. Convert them first.")
    raise FileNotFoundError(f"{folder}: no {SINGLE_NAME} and no {INDEX_NAME}")


# ---------------------------------------------------------------------------------------------------
# from_pretrained
# ---------------------------------------------------------------------------------------------------

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).replace("torch.", "")
    if key not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of 'auto', {sorted(set(_DTYPES))} or a torch.dtype")
    return _DTYPES[key]


def expected_tensors(model: CohereForCausalLM) -> dict[str, torch.Size]:
    """The names and shapes a checkpoint must provide for this model (the tied head is not stored)."""
    shapes = {name: p.shape for name, p in model.named_parameters(remove_duplicate=False)}
    if model.config.tie_word_embeddings:
        shapes.pop("lm_head.weight")
    return shapes


def check_entries(entries: dict[str, TensorEntry], expected: dict[str, torch.Size], tied: bool) -> None:
    """Every expected tensor present with its shape, nothing unknown: checked before anything is loaded."""
    for name, want in expected.items():
        if name not in entries:
            raise CheckpointError(f"missing tensor: the checkpoint has no {name!r} (config asks for shape "
                                  f"{list(want)}); does config.json match the weights?")
        got = entries[name]
        if got.shape != tuple(want):
            raise CheckpointError(f"shape mismatch: {got.file.name} holds {name!r} as {list(got.shape)}, the "
                                  f"config asks for {list(want)}")
    for name, entry in entries.items():
        ignorable = (tied and name == "lm_head.weight") or name.endswith("rotary_emb.inv_freq")
        if name not in expected and not ignorable:
            raise CheckpointError(f"unexpected tensor: {entry.file.name} holds {name!r}, which this model "
                                  f"has no place for; does config.json match the weights?")


def from_pretrained(path_or_repo_id, dtype="auto", device="cpu", revision=None, token=None,
                    progress: bool = True, quantize: str | None = None, group_size: int = 64,
                    symmetric: bool = False, quantize_head: bool | str = "auto", tensor_parallel: bool = False,
                    group=None) -> CohereForCausalLM:
    """Load a Command-R checkpoint: a local folder or a hub id (json and safetensors only).

    dtype="auto" keeps the checkpoint's dtype. The model is built on the `meta` device (no memory), every
    file is checked first, then each tensor goes straight from the memory-mapped file to `device`/`dtype`.
    quantize="int8" | "int4" | "nf4" quantizes each linear weight as it is read (quant.py), so memory
    holds the quantized model plus one tensor in its stored dtype, never the full-precision model.
    quantize_head: the LM head's (and a tied embedding's) scheme. "auto" (the default): int8 under a 4-bit
    body (int4, nf4), the body's scheme under int8; True: the body's scheme in every case (a 4-bit head
    under int4: smaller, less accurate); a scheme name ("int8"): that one; False: kept in float.
    tensor_parallel=True (after torch.distributed.init_process_group) loads this rank's shard only
    (parallel.py): the model is sharded while still on `meta`, and each tensor's slice is copied out of
    the memory-mapped file, so a rank's memory holds about 1/world_size of the weights (cohere2_moe: only
    this rank's experts are read).
    """
    from tqdm import tqdm

    folder = resolve_checkpoint(path_or_repo_id, revision, token)
    config_path = folder / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path}: no config.json in the checkpoint folder")
    config = CohereConfig.from_json_file(config_path)
    entries = weight_entries(folder)

    with torch.device("meta"):
        model = CohereForCausalLM(config)
    expected = expected_tensors(model)
    check_entries(entries, expected, config.tie_word_embeddings)

    plan = None
    if tensor_parallel:
        from .parallel import local_piece, shard
        if quantize is not None:
            raise ValueError("quantize with tensor_parallel=True is not supported; load one or the other")
        plan = shard(model, group).tensor_parallel.plan

    if dtype == "auto":
        dtype = config.dtype or next(e.dtype for e in entries.values() if e.dtype.is_floating_point)
    dtype = parse_dtype(dtype)

    # Which stored tensor becomes which quantized layer: each block's projections, and the head, which a
    # tied checkpoint stores as the embedding.
    quantized: dict[str, str] = {}
    if quantize is not None:
        check_quantize_args(model, quantize, group_size, quantize_head)
        quantize_head = head_scheme(quantize, quantize_head)
        quantized = {f"{name}.weight": name for name in linear_names(model, quantize_head is not None)}
        if quantize_head and config.tie_word_embeddings:
            quantized["model.embed_tokens.weight"] = quantized.pop("lm_head.weight")

    by_file: dict[Path, list[TensorEntry]] = {}
    for name in expected:
        by_file.setdefault(entries[name].file, []).append(entries[name])
    # A per-shard bar only where there is something to watch: several shards and a gigabyte or more.
    quiet = not progress or len(by_file) < 2 or sum(p.stat().st_size for p in by_file) < PROGRESS_MIN_BYTES
    for path in tqdm(sorted(by_file), desc="loading shards", unit="shard", disable=quiet):
        mapped = open_mapped(path)
        for entry in by_file[path]:
            module_name, _, leaf = entry.name.rpartition(".")
            if entry.name in quantized:
                # Read in the stored dtype on the target device, quantize there, keep only the result.
                weight = map_tensor(entry, mapped).to(device=device)
                layer_name = quantized[entry.name]
                old = model.get_submodule(layer_name)
                bias = old.bias if getattr(old, "bias", None) is not None and not old.bias.is_meta else None
                kind = quantize_head if layer_name == "lm_head" else quantize
                replace_module(model, layer_name, quantize_weight(weight, bias, kind, group_size, symmetric))
                del weight
                release_pages(mapped, entry)
                continue
            if plan is not None:  # this rank's slice only, copied out of the file
                tensor = local_piece(entry.name, map_tensor(entry, mapped), plan)
                if tensor is None:  # a routed expert another rank holds: never read
                    continue
                tensor = tensor.to(device=device, dtype=dtype, copy=True)
                release_pages(mapped, entry)
            else:
                tensor = map_tensor(entry, mapped).to(device=device, dtype=dtype)
            setattr(model.get_submodule(module_name), leaf, nn.Parameter(tensor))
        del mapped  # the quantized layers hold copies; the file's pages can go
    if quantize is not None and quantize_head and config.tie_word_embeddings:
        model.model.embed_tokens = QuantizedEmbedding(model.lm_head, dtype, config.pad_token_id)
    elif config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb.reset(device)
    with torch.no_grad():  # cohere2_moe: each layer's experts into one stacked tensor, once (CohereExperts)
        for module in model.modules():
            if isinstance(module, CohereExperts) and quantize is None:
                module.stacked()
    return model.eval()


# ---------------------------------------------------------------------------------------------------
# save_pretrained
# ---------------------------------------------------------------------------------------------------


def parse_size(size: int | str) -> int:
    """'5GB' -> 5 * 10**9 and '5GiB' -> 5 * 2**30, as the Hugging Face tools count."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B\s*", str(size), re.IGNORECASE)
    if not m:
        raise ValueError(f"max_shard_size={size!r}: give bytes as an int or a string like '5GB' or '500MiB'")
    number, prefix, binary = float(m.group(1)), m.group(2).upper(), m.group(3)
    power = " KMGT".index(prefix or " ")
    return int(number * (1024 if binary else 1000) ** power)


def own_memory(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor holding only its own bytes: safetensors refuses views that share memory, such as the
    experts' weights, which are slices of one stacked tensor (model.py, CohereExperts.stacked)."""
    t = t.detach().to("cpu").contiguous()
    return t.clone() if t.untyped_storage().nbytes() != t.numel() * t.element_size() else t


def save_pretrained(model: CohereForCausalLM, directory, max_shard_size: int | str = "5GB") -> Path:
    """Write config.json and the weights in the Hugging Face layout that transformers loads.

    Files are written under temporary names and renamed into place, so a model that was loaded
    (memory-mapped) from the same folder keeps reading the old bytes safely.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    limit = parse_size(max_shard_size)
    tied = model.config.tie_word_embeddings
    tensors = {name: t for name, t in model.state_dict().items() if not (tied and name == "lm_head.weight")}

    shards: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and used + nbytes > limit:
            shards.append({})
            used = 0
        shards[-1][name] = t
        used += nbytes

    for old in list(directory.glob("model*.safetensors")) + [directory / INDEX_NAME]:
        if old.exists():
            old.unlink()  # a previous save with another shard count would leave stale files behind
    names = ([SINGLE_NAME] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    for shard, fname in zip(shards, names):
        tmp = directory / (fname + ".tmp")
        save_file({k: own_memory(v) for k, v in shard.items()}, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, directory / fname)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                 "weight_map": {name: fname for shard, fname in zip(shards, names) for name in shard}}
        (directory / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")

    config = model.config.to_dict()
    config["dtype"] = str(model.dtype).replace("torch.", "")
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory
