"""Plausible wrong answers to chapter 05's exercises (see tests/test_wrong_answers.py)."""

_BLOCKWISE_HEAD = (
    "T = q.shape[-2]\n"
    "query_pos = torch.arange(T)[:, None]\n"
    "best = torch.full(q.shape[:-1] + (1,), float('-inf'))\n"
    "total = torch.zeros(q.shape[:-1] + (1,))\n"
    "acc = torch.zeros_like(q)\n"
    "for start in range(0, T, block):\n"
    "    kb, vb = k[..., start:start + block, :], v[..., start:start + block, :]\n"
    "    s = q @ kb.transpose(-1, -2) / math.sqrt(q.shape[-1])\n"
    "    s = s.masked_fill(torch.arange(start, start + kb.shape[-2])[None, :] > query_pos, float('-inf'))\n"
)

WRONG = {
    "ex-05-1": [
        # the prefix's *queries* see everything, instead of everyone seeing the prefix's keys
        "query, key = torch.arange(T)[:, None], torch.arange(T)[None, :]\n"
        "return (key <= query) | (query < prefix)",
        # off by one: the first token after the prefix becomes visible to the prefix
        "query, key = torch.arange(T)[:, None], torch.arange(T)[None, :]\n"
        "return (key <= query) | (key <= prefix)",
    ],
    "ex-05-2": [
        # heads grouped with a stride (0 and 2), not consecutively (0 and 1)
        "grouped = w.view(n_heads // n_kv, n_kv, -1, w.shape[-1])\n"
        "return grouped.mean(dim=0).reshape(-1, w.shape[-1])",
        # the sum of each group instead of its mean
        "grouped = w.view(n_kv, n_heads // n_kv, -1, w.shape[-1])\n"
        "return grouped.sum(dim=1).reshape(-1, w.shape[-1])",
    ],
    "ex-05-3": [
        # the running maximum is kept, but what was accumulated is never rescaled
        _BLOCKWISE_HEAD +
        "    new_best = torch.maximum(best, s.amax(-1, keepdim=True))\n"
        "    p = torch.exp(s - new_best)\n"
        "    total = total + p.sum(-1, keepdim=True)\n"
        "    acc = acc + p @ vb\n"
        "    best = new_best\n"
        "return acc / total",
        # no maximum at all: exact on small scores, overflows on large ones
        _BLOCKWISE_HEAD +
        "    p = torch.exp(s)\n"
        "    total = total + p.sum(-1, keepdim=True)\n"
        "    acc = acc + p @ vb\n"
        "return acc / total",
    ],
}
