"""Plausible wrong answers to chapter 16's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-16-1": [
        # the winning rank's index within its own slice, not the token id: the rank's offset is forgotten
        "best = max(range(len(tops)), key=lambda r: tops[r][0])\n"
        "return tops[best][1]",
        # ties go to the last rank holding the top score (>=), where argmax keeps the first
        "best = 0\n"
        "for r, (score, i) in enumerate(tops):\n"
        "    if score >= tops[best][0]:\n"
        "        best = r\n"
        "return best * rows + tops[best][1]",
        # the offset counted in ranks, not in vocabulary rows
        "best = max(range(len(tops)), key=lambda r: tops[r][0])\n"
        "return best * len(tops) + tops[best][1]",
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
