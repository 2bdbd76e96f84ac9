"""Plausible wrong answers to chapter 09's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-09-1": [
        # the bisection turned the wrong way: a higher top probability needs a lower temperature
        "lo, hi = -10.0, 10.0\n"
        "for _ in range(100):\n"
        "    mid = (lo + hi) / 2\n"
        "    if (logits.double() / 10 ** mid).softmax(-1).max() > target:\n"
        "        hi = mid\n"
        "    else:\n"
        "        lo = mid\n"
        "return 10 ** ((lo + hi) / 2)\n",
        # as if only the two best tokens mattered: solve the two-token softmax in closed form
        "import math\n"
        "best2 = logits.double().topk(2).values\n"
        "return ((best2[0] - best2[1]) / math.log(target / (1 - target))).item()\n",
        # a grid search: close, but not within 1e-4
        "grid = torch.linspace(0.05, 20, 400, dtype=torch.float64)\n"
        "tops = torch.stack([(logits.double() / t).softmax(-1).max() for t in grid])\n"
        "return grid[(tops - target).abs().argmin()].item()\n",
    ],
    "ex-09-2": [
        # every seen logit divided by the penalty: a negative logit goes up instead of down
        "seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, ids, True)\n"
        "return torch.where(seen, logits / penalty, logits)\n",
        # penalised once per occurrence
        "count = torch.zeros_like(logits).scatter_add_(1, ids, torch.ones_like(ids, dtype=logits.dtype))\n"
        "factor = penalty ** count\n"
        "return torch.where(logits > 0, logits / factor, logits * factor)\n",
    ],
    "ex-09-3": [
        # the prefix one token too long (the last n tokens instead of the last n - 1)
        "out = logits.clone()\n"
        "T = ids.shape[1]\n"
        "for b, row in enumerate(ids.tolist()):\n"
        "    prefix = row[T - n:]\n"
        "    for start in range(T - n + 1):\n"
        "        if row[start:start + n - 1] == prefix[:n - 1]:\n"
        "            out[b, row[start + n - 1]] = float('-inf')\n"
        "return out\n",
        # the bans of the first sequence applied to every row of the batch
        "out = logits.clone()\n"
        "T = ids.shape[1]\n"
        "row = ids[0].tolist()\n"
        "prefix = row[T - n + 1:] if n > 1 else []\n"
        "for start in range(T - n + 1):\n"
        "    if row[start:start + n - 1] == prefix:\n"
        "        out[:, row[start + n - 1]] = float('-inf')\n"
        "return out\n",
    ],
}
