"""Plausible wrong answers to chapter 04's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-04-1": [
        # the angle at position `context` instead of the last position, context - 1
        "last_angle = context * inv_freq(theta, head_dim)\n"
        "return int((last_angle < 2 * math.pi).sum())",
        # half a turn taken for a full one
        "last_angle = (context - 1) * inv_freq(theta, head_dim)\n"
        "return int((last_angle < math.pi).sum())",
        # the pairs that did finish a turn counted, not those left short
        "last_angle = (context - 1) * inv_freq(theta, head_dim)\n"
        "return int((last_angle >= 2 * math.pi).sum())",
    ],
    "ex-04-2": [
        # the exponent of the slowest pair taken as -1 (the last pair of head_dim/2 is i = head_dim/2 - 1)
        "return float((context - 1) / math.pi)",
        # a full turn instead of half a turn
        "return ((context - 1) / (2 * math.pi)) ** (head_dim / (head_dim - 2))",
    ],
    "ex-04-3": [
        # the pairs split across heads: the permutation taken over the whole matrix, not within each head
        "pairs = w.view(-1, 2, w.shape[-1])\n"
        "return pairs.transpose(0, 1).reshape(w.shape)",
        # the members of each pair swapped instead of separated
        "pairs = w.view(n_heads, -1, 2, w.shape[-1])\n"
        "return pairs.flip(2).reshape(w.shape)",
    ],
}
