"""Plausible wrong answers to chapter 08's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-08-1": [
        # off by one in the cache offset: each cached step counted as if its query saw the final length
        "if new_tokens == 0:\n"
        "    return 0\n"
        "P, n = prompt_len, new_tokens\n"
        "prefill = P * (P + 1) // 2\n"
        "if cached:\n"
        "    return prefill + (n - 1) * (P + n)\n"
        "return sum(L * (L + 1) // 2 for L in range(P, P + n))\n",
        # without a cache, as if every step re-ran only the prompt (the sequence does not grow)
        "if new_tokens == 0:\n"
        "    return 0\n"
        "P, n = prompt_len, new_tokens\n"
        "prefill = P * (P + 1) // 2\n"
        "if cached:\n"
        "    return prefill + sum(range(P + 1, P + n))\n"
        "return n * prefill\n",
        # the prefill counted as a full square (no causal mask)
        "P, n = prompt_len, new_tokens\n"
        "if cached:\n"
        "    return P * P + sum(range(P + 1, P + n))\n"
        "return sum(L * L for L in range(P, P + n))\n",
    ],
    "ex-08-2": [
        # the static cache's slots cleared, but its length never moved back
        "if not 0 <= n <= cache.seq_len:\n"
        "    raise ValueError(f'cannot rewind n={n}')\n"
        "keep = cache.seq_len - n\n"
        "if isinstance(cache, StaticCache):\n"
        "    for k, v in zip(cache.keys, cache.values):\n"
        "        k[:, :, keep:] = 0\n"
        "        v[:, :, keep:] = 0\n"
        "else:\n"
        "    cache.keys = [k[:, :, :keep] for k in cache.keys]\n"
        "    cache.values = [v[:, :, :keep] for v in cache.values]\n",
        # keeps n positions instead of dropping n
        "if not 0 <= n <= cache.seq_len:\n"
        "    raise ValueError(f'cannot rewind n={n}')\n"
        "if isinstance(cache, StaticCache):\n"
        "    cache.seq_len = n\n"
        "else:\n"
        "    cache.keys = [k[:, :, :n] for k in cache.keys]\n"
        "    cache.values = [v[:, :, :n] for v in cache.values]\n",
        # only the keys rewound: the values keep the discarded positions
        "if not 0 <= n <= cache.seq_len:\n"
        "    raise ValueError(f'cannot rewind n={n}')\n"
        "keep = cache.seq_len - n\n"
        "if isinstance(cache, StaticCache):\n"
        "    cache.seq_len = keep\n"
        "else:\n"
        "    cache.keys = [k[:, :, :keep] for k in cache.keys]\n",
    ],
    "ex-08-3": [
        # a private copy of the prefix per fork: right logits, but every fork pays for the whole prefix
        "self.prefix_len = parent.seq_len\n"
        "self.prefix_keys = [k[:, :, :self.prefix_len].clone() for k in parent.keys]\n"
        "self.prefix_values = [v[:, :, :self.prefix_len].clone() for v in parent.values]\n"
        "self.own = GrowingCache()\n",
        # the parent's whole buffers, empty slots included, instead of its filled prefix
        "self.prefix_len = parent.seq_len\n"
        "self.prefix_keys = list(parent.keys)\n"
        "self.prefix_values = list(parent.values)\n"
        "self.own = GrowingCache()\n",
        # the fork's own positions written into the parent (a shallow copy in spirit)
        "self.prefix_len = parent.seq_len\n"
        "self.prefix_keys = [k[:, :, :0] for k in parent.keys]\n"
        "self.prefix_values = [v[:, :, :0] for v in parent.values]\n"
        "self.own = parent\n",
    ],
}
