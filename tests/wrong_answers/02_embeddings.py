"""Plausible wrong answers to chapter 02's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-02-1": [
        # cosine similarity instead of the raw dot product: a longer row no longer wins
        "def own_token_share(table):\n"
        "    unit = table / table.norm(dim=-1, keepdim=True)\n"
        "    best = (unit @ unit.T).argmax(dim=-1)\n"
        "    return (best == torch.arange(table.shape[0])).float().mean().item()\n"
        "bare_head_predicts = 'itself'",
        # the count instead of the fraction, over the other axis
        "def own_token_share(table):\n"
        "    best = (table @ table.T).argmax(dim=0)\n"
        "    return (best == torch.arange(table.shape[0])).float().sum().item()\n"
        "bare_head_predicts = 'itself'",
        # the measurement right, the reading wrong: the tied head is taken to predict what follows
        "def own_token_share(table):\n"
        "    best = (table @ table.T).argmax(dim=-1)\n"
        "    return (best == torch.arange(table.shape[0])).float().mean().item()\n"
        "bare_head_predicts = 'next'",
        # the measurement right, the reading wrong: the random table is taken to mean "no preference"
        "def own_token_share(table):\n"
        "    best = (table @ table.T).argmax(dim=-1)\n"
        "    return (best == torch.arange(table.shape[0])).float().mean().item()\n"
        "bare_head_predicts = 'uniform'",
    ],
    "ex-02-2": [
        # assignment instead of accumulation: a repeated token keeps only its last row
        "grad = torch.zeros(vocab_size, upstream.shape[-1], dtype=upstream.dtype)\n"
        "grad[ids.reshape(-1)] = upstream.reshape(-1, upstream.shape[-1])\n"
        "return grad",
        # the mean of a token's rows instead of their sum
        "flat = ids.reshape(-1)\n"
        "rows = upstream.reshape(-1, upstream.shape[-1])\n"
        "grad = torch.zeros(vocab_size, upstream.shape[-1], dtype=upstream.dtype)\n"
        "grad.index_add_(0, flat, rows)\n"
        "counts = torch.bincount(flat, minlength=vocab_size).clamp(min=1)\n"
        "return grad / counts[:, None]",
    ],
    "ex-02-3": [
        # only the head's share: the lookup path of the tied table is forgotten
        "inputs = table[ids]\n"
        "probs = torch.softmax(scale * inputs @ table.T, dim=-1)\n"
        "d_logits = (probs - F.one_hot(targets, table.shape[0]).to(probs.dtype)) / len(ids)\n"
        "return scale * d_logits.T @ inputs",
        # both paths, but the logit scale applied once too few times on the lookup path
        "inputs = table[ids]\n"
        "probs = torch.softmax(scale * inputs @ table.T, dim=-1)\n"
        "d_logits = (probs - F.one_hot(targets, table.shape[0]).to(probs.dtype)) / len(ids)\n"
        "return scale * d_logits.T @ inputs + embedding_grad(ids[None], (d_logits @ table)[None], table.shape[0])",
    ],
}
