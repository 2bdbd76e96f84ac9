"""Plausible wrong answers to chapter 06's exercises (see tests/test_wrong_answers.py)."""

_PER_QUERY_HEAD = (
    "def gqa_to_mha(config, weights):\n"
    "    n_kv, group = config.num_key_value_heads, config.num_attention_heads // config.num_key_value_heads\n"
    "    def per_query_head(w):\n"
    "        return w.reshape(n_kv, -1, w.shape[-1]).repeat_interleave(group, dim=0).reshape(-1, w.shape[-1])\n"
)

_EXTRA = (
    "plus = course.REAL_CONFIGS['c4ai-command-r-plus']\n"
    "widened = plus.num_hidden_layers * (plus.num_attention_heads - plus.num_key_value_heads) * plus.head_dim\n"
)

WRONG = {
    "ex-06-1": [
        # the kv heads tiled (0, 1, 0, 1, ...) instead of each repeated next to itself (0, 0, 1, 1, ...)
        "def gqa_to_mha(config, weights):\n"
        "    group = config.num_attention_heads // config.num_key_value_heads\n"
        "    widened = {n: w.repeat(group, 1) for n, w in weights.items()\n"
        "               if n.endswith(('k_proj.weight', 'v_proj.weight', 'k_norm.weight'))}\n"
        "    return dataclasses.replace(config, num_key_value_heads=config.num_attention_heads), {**weights, **widened}\n"
        + _EXTRA + "plus_extra_gib = widened * (2 * plus.hidden_size + 1) * 2 / 2**30",
        # plus's k_norm (one weight per kv head) forgotten
        _PER_QUERY_HEAD +
        "    widened = {n: per_query_head(w) for n, w in weights.items() if n.endswith(('k_proj.weight', 'v_proj.weight'))}\n"
        "    return dataclasses.replace(config, num_key_value_heads=config.num_attention_heads), {**weights, **widened}\n"
        + _EXTRA + "plus_extra_gib = widened * (2 * plus.hidden_size + 1) * 2 / 2**30",
        # the conversion right, the bytes counted for k_proj only: v_proj grows as much
        _PER_QUERY_HEAD +
        "    kv_named = ('k_proj.weight', 'v_proj.weight', 'k_norm.weight')\n"
        "    widened = {n: per_query_head(w) for n, w in weights.items() if n.endswith(kv_named)}\n"
        "    return dataclasses.replace(config, num_key_value_heads=config.num_attention_heads), {**weights, **widened}\n"
        + _EXTRA + "plus_extra_gib = widened * (plus.hidden_size + 1) * 2 / 2**30",
        # the conversion right, the size in decimal gigabytes instead of GiB (7% off)
        _PER_QUERY_HEAD +
        "    kv_named = ('k_proj.weight', 'v_proj.weight', 'k_norm.weight')\n"
        "    widened = {n: per_query_head(w) for n, w in weights.items() if n.endswith(kv_named)}\n"
        "    return dataclasses.replace(config, num_key_value_heads=config.num_attention_heads), {**weights, **widened}\n"
        + _EXTRA + "plus_extra_gib = widened * (2 * plus.hidden_size + 1) * 2 / 1e9",
    ],
    "ex-06-2": [
        # only attention's three input matrices take the weight: the MLP's gate and up are forgotten
        "changed = {}\n"
        "for key in [n for n in weights if n.endswith('input_layernorm.weight')]:\n"
        "    layer, g = key[: -len('input_layernorm.weight')], weights[key]\n"
        "    for reader in ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj']:\n"
        "        changed[layer + reader + '.weight'] = weights[layer + reader + '.weight'] * g\n"
        "    changed[key] = torch.ones_like(g)\n"
        "return {**weights, **changed}",
        # divided instead of multiplied
        "changed = {}\n"
        "for key in [n for n in weights if n.endswith('input_layernorm.weight')]:\n"
        "    layer, g = key[: -len('input_layernorm.weight')], weights[key]\n"
        "    for reader in ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'mlp.gate_proj', 'mlp.up_proj']:\n"
        "        changed[layer + reader + '.weight'] = weights[layer + reader + '.weight'] / g\n"
        "    changed[key] = torch.ones_like(g)\n"
        "return {**weights, **changed}",
    ],
    "ex-06-3": [
        # the final norm skipped: the head reads the raw stream
        "T = ids.shape[1]\n"
        "cos, sin = cos_sin(model.positions(T), model.inv_freq)\n"
        "stream = [model.model.embed_tokens(ids)]\n"
        "for layer in model.model.layers:\n"
        "    stream.append(layer(stream[-1], cos, sin, model.mask(T)))\n"
        "return [minicohere.causal_lm_loss(model.lm_head(s) * model.config.logit_scale, ids).item() for s in stream]",
        # the stream read after each layer only: the reading before the first layer is missing
        "T = ids.shape[1]\n"
        "cos, sin = cos_sin(model.positions(T), model.inv_freq)\n"
        "x, losses = model.model.embed_tokens(ids), []\n"
        "for layer in model.model.layers:\n"
        "    x = layer(x, cos, sin, model.mask(T))\n"
        "    losses.append(minicohere.causal_lm_loss(model.lm_head(model.model.norm(x)) * model.config.logit_scale, ids).item())\n"
        "return losses",
    ],
}

WRONG["ex-06-2b"] = [
    # the q/k norm taken for a second reader of the normed vector, so for an obstacle to the fold
    "qk_norm_in_the_way = True\nfinal_norm_reader = 'lm_head.weight'\nfinal_norm_foldable = False",
    # the final norm taken for one more input norm: the head, like q_proj, would absorb its weight
    "qk_norm_in_the_way = False\nfinal_norm_reader = 'lm_head.weight'\nfinal_norm_foldable = True",
    # the norm's own weight named as the tensor that reads its output
    "qk_norm_in_the_way = False\nfinal_norm_reader = 'model.norm.weight'\nfinal_norm_foldable = False",
]
