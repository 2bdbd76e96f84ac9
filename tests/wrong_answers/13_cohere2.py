"""Plausible wrong answers to chapter 13's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-13-1": [
        # a window of W reaches W tokens back, not W - 1
        "return num_layers * window\n",
        # the layers' reaches taken as not adding up
        "return window - 1\n",
    ],
    "ex-13-2": [
        # RoPE left off everywhere (the mistake mirrored)
        "n = ids.shape[-1]\n"
        "cos, sin = rope_cos_sin(torch.arange(n), cfg.head_dim, cfg.rope_parameters['rope_theta'])\n"
        "x = F.embedding(ids, state['model.embed_tokens.weight'])\n"
        "for i in range(cfg.num_hidden_layers):\n"
        "    reach = cfg.sliding_window if cfg.layer_types[i] == 'sliding_attention' else n\n"
        "    x = block(layer_params(state, i), x, cos, sin, sliding_mask(n, reach), False, cfg.head_dim)\n"
        "final = layer_norm(x, state['model.norm.weight'])\n"
        "return cfg.logit_scale * F.linear(final, state['model.embed_tokens.weight'])\n",
        # RoPE everywhere, but every layer given the sliding window
        "n = ids.shape[-1]\n"
        "cos, sin = rope_cos_sin(torch.arange(n), cfg.head_dim, cfg.rope_parameters['rope_theta'])\n"
        "x = F.embedding(ids, state['model.embed_tokens.weight'])\n"
        "for i in range(cfg.num_hidden_layers):\n"
        "    x = block(layer_params(state, i), x, cos, sin, sliding_mask(n, cfg.sliding_window), True, cfg.head_dim)\n"
        "final = layer_norm(x, state['model.norm.weight'])\n"
        "return cfg.logit_scale * F.linear(final, state['model.embed_tokens.weight'])\n",
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
        "truth = cohere2_logits(state, config, tokens)\n"
        "ring = cache_class(layer_types=config.layer_types, window=W)\n"
        "parts = [cohere2_logits(state, config, tokens[:, :2 * W], ring)]\n"
        "parts += [cohere2_logits(state, config, tokens[:, t:t + 1], ring) for t in range(2 * W, 4 * W)]\n"
        "return torch.allclose(torch.cat(parts, dim=1), truth, atol=1e-5)\n",
        # only the prompt compared: no token is ever decoded through the ring
        "W = config.sliding_window\n"
        "tokens = torch.randint(4, config.vocab_size, (1, 4 * W), generator=torch.Generator().manual_seed(7))\n"
        "for prompt_len in [1, W - 1, W, W + 1, 2 * W + 3]:\n"
        "    ring = cache_class(layer_types=config.layer_types, window=W)\n"
        "    got = cohere2_logits(state, config, tokens[:, :prompt_len], ring)\n"
        "    if not torch.allclose(got, cohere2_logits(state, config, tokens[:, :prompt_len]), atol=1e-5):\n"
        "        return False\n"
        "return True\n",
        # exact equality: float sums in another order fail the right cache too
        "W = config.sliding_window\n"
        "tokens = torch.randint(4, config.vocab_size, (1, 4 * W), generator=torch.Generator().manual_seed(7))\n"
        "truth = cohere2_logits(state, config, tokens)\n"
        "for prompt_len in [1, W - 1, W, W + 1, 2 * W + 3]:\n"
        "    ring = cache_class(layer_types=config.layer_types, window=W)\n"
        "    parts = [cohere2_logits(state, config, tokens[:, :prompt_len], ring)]\n"
        "    parts += [cohere2_logits(state, config, tokens[:, t:t + 1], ring) for t in range(prompt_len, 4 * W)]\n"
        "    if not torch.equal(torch.cat(parts, dim=1), truth):\n"
        "        return False\n"
        "return True\n",
    ],
}
