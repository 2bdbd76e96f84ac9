"""Plausible wrong answers to chapter 13's exercises (see tests/test_wrong_answers.py)."""

_SWAP = ("ids = torch.randint(4, 96, (1, T), generator=torch.Generator().manual_seed(9))\n"
         "swapped = ids.clone()\n")

WRONG = {
    "ex-13-1": [
        # a window of W reaches W tokens back, not W - 1
        "if 'full_attention' in layer_types:\n"
        "    return context - 1\n"
        "return min(len(layer_types) * window, context - 1)\n",
        # the global layer forgotten: only the windows add up
        "return min(len(layer_types) * (window - 1), context - 1)\n",
        # only the sliding layers counted, as if a global layer added nothing
        "return min(sum(kind == 'sliding_attention' for kind in layer_types) * (window - 1), context - 1)\n",
    ],
    "ex-13-2": [
        # every position's logits compared: position 0 sees the swap in any model, at n = 1
        _SWAP + "swapped[0, [0, 1]] = ids[0, [1, 0]]\n"
        "for n in range(1, 5):\n"
        "    model = make_model(n)\n"
        "    if course.relative_error(model(swapped).logits, model(ids).logits) > 1e-5:\n"
        "        return n\n"
        "return None\n",
        # the last two tokens swapped: the last token itself changes, so every stack 'sees' it at n = 1
        _SWAP + "swapped[0, [-2, -1]] = ids[0, [-1, -2]]\n"
        "for n in range(1, 5):\n"
        "    model = make_model(n)\n"
        "    if course.relative_error(model(swapped).logits[0, -1], model(ids).logits[0, -1]) > 1e-5:\n"
        "        return n\n"
        "return None\n",
        # the first two tokens replaced by others instead of swapped: that changes the set, not the order
        _SWAP + "swapped[0, :2] = 4 + (ids[0, :2] - 3) % 92\n"
        "for n in range(1, 5):\n"
        "    model = make_model(n)\n"
        "    if course.relative_error(model(swapped).logits[0, -1], model(ids).logits[0, -1]) > 1e-5:\n"
        "        return n\n"
        "return None\n",
    ],
    "ex-13-3": [
        # empty slots (position -1) not hidden
        "key_pos = torch.cat([slot_positions, new_positions])[None, :]\n"
        "query_pos = new_positions[:, None]\n"
        "return (key_pos <= query_pos) & (query_pos - key_pos < window)\n",
        # off by one at the window's far edge: W + 1 keys in reach
        "key_pos = torch.cat([slot_positions, new_positions])[None, :]\n"
        "query_pos = new_positions[:, None]\n"
        "return (key_pos >= 0) & (key_pos <= query_pos) & (query_pos - key_pos <= window)\n",
        # the chunk's own keys all visible to each other (no causal order inside the chunk)
        "key_pos = torch.cat([slot_positions, new_positions])[None, :]\n"
        "query_pos = new_positions[:, None]\n"
        "seen = (key_pos >= 0) & (key_pos <= query_pos) & (query_pos - key_pos < window)\n"
        "seen[:, slot_positions.numel():] = True\n"
        "return seen\n",
    ],
    "ex-13-4": [
        # one prompt of exactly two windows: decoding past a full ring is tested, a ragged prompt is not
        "W = config.sliding_window\n"
        "tokens = torch.randint(4, config.vocab_size, (1, 4 * W), generator=torch.Generator().manual_seed(7))\n"
        "truth = my_model(tokens).logits\n"
        "ring = cache_class(layer_types=config.layer_types, window=W)\n"
        "parts = [my_model(tokens[:, :2 * W], cache=ring).logits]\n"
        "parts += [my_model(tokens[:, t:t + 1], cache=ring).logits for t in range(2 * W, 4 * W)]\n"
        "return torch.allclose(torch.cat(parts, dim=1), truth, atol=1e-5)\n",
        # only the prompt compared: no token is ever decoded through the ring
        "W = config.sliding_window\n"
        "tokens = torch.randint(4, config.vocab_size, (1, 4 * W), generator=torch.Generator().manual_seed(7))\n"
        "for prompt_len in [1, W - 1, W, W + 1, 2 * W + 3]:\n"
        "    ring = cache_class(layer_types=config.layer_types, window=W)\n"
        "    got = my_model(tokens[:, :prompt_len], cache=ring).logits\n"
        "    if not torch.allclose(got, my_model(tokens[:, :prompt_len]).logits, atol=1e-5):\n"
        "        return False\n"
        "return True\n",
        # exact equality: float sums in another order fail the right cache too
        "W = config.sliding_window\n"
        "tokens = torch.randint(4, config.vocab_size, (1, 4 * W), generator=torch.Generator().manual_seed(7))\n"
        "truth = my_model(tokens).logits\n"
        "for prompt_len in [1, W - 1, W, W + 1, 2 * W + 3]:\n"
        "    ring = cache_class(layer_types=config.layer_types, window=W)\n"
        "    parts = [my_model(tokens[:, :prompt_len], cache=ring).logits]\n"
        "    parts += [my_model(tokens[:, t:t + 1], cache=ring).logits for t in range(prompt_len, 4 * W)]\n"
        "    if not torch.equal(torch.cat(parts, dim=1), truth):\n"
        "        return False\n"
        "return True\n",
    ],
}
