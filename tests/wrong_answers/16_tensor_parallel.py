"""Plausible wrong answers to chapter 16's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-16-1": [
        # the parallel block's count: the second all-reduce of a sequential layer is forgotten
        'return (c["layers"] + 1) * c["hidden"] * dtype_bytes',
        # two per layer, but the embedding's all-reduce is forgotten
        'return 2 * c["layers"] * c["hidden"] * dtype_bytes',
        # bf16 hard-coded: the bytes per number are ignored
        'return (2 * c["layers"] + 1) * c["hidden"] * 2',
    ],
    "ex-16-2": [
        # round robin: kv heads dealt out like cards, not by the query heads a rank computes
        "return rank % kv_heads",
        # the query head's index wrapped around the kv heads instead of divided by the group size
        "return (rank * (heads // world)) % kv_heads",
    ],
    "ex-16-3": [
        # every rank adds the bias: the all-reduce adds it world times
        "return heads_out @ cols_of(attn.o_proj.weight, rank, world).T + attn.o_proj.bias",
        # rows of o_proj instead of its columns (the shapes still fit for a square o_proj)
        "part = heads_out @ rows_of(attn.o_proj.weight, rank, world)\n"
        "return part + attn.o_proj.bias if rank == 0 else part",
    ],
}
