"""Plausible wrong answers to chapter 00's exercises (see tests/test_wrong_answers.py)."""

_SHARES = (
    "def parameter_shares(model):\n"
    "    sizes = dict.fromkeys(['embedding', 'attention', 'mlp', 'norms'], 0)\n"
    "    for path, p in model.named_parameters():\n"
    "        parts = path.split('.')\n"
    "        if any(part.endswith('norm') for part in parts):\n"
    "            group = 'norms'\n"
    "        elif 'embed_tokens' in parts:\n"
    "            group = 'embedding'\n"
    "        else:\n"
    "            group = 'mlp' if 'mlp' in parts else 'attention'\n"
    "        sizes[group] += p.numel()\n"
    "    total = sum(sizes.values())\n"
    "    return {group: n / total for group, n in sizes.items()}\n"
    "with torch.device('meta'):\n"
    "    v01_model = minicohere.CohereForCausalLM(course.REAL_CONFIGS['c4ai-command-r-v01'])\n"
)

_RIGHT_SAVING = (
    "kv = sum(p.numel() for n, p in v01_model.named_parameters() if n.endswith(('k_proj.weight', 'v_proj.weight')))\n"
    "gqa_saving = kv / v01_model.num_parameters() * (1 - 8 / v01_model.config.num_key_value_heads)"
)

WRONG = {
    "ex-00-1": [
        # the q/k norms of R+ counted as attention (they sit under self_attn)
        "def parameter_shares(model):\n"
        "    sizes = dict.fromkeys(['embedding', 'attention', 'mlp', 'norms'], 0)\n"
        "    for path, p in model.named_parameters():\n"
        "        if 'self_attn' in path:\n"
        "            group = 'attention'\n"
        "        elif 'mlp' in path:\n"
        "            group = 'mlp'\n"
        "        elif 'embed_tokens' in path:\n"
        "            group = 'embedding'\n"
        "        else:\n"
        "            group = 'norms'\n"
        "        sizes[group] += p.numel()\n"
        "    total = sum(sizes.values())\n"
        "    return {group: n / total for group, n in sizes.items()}\n"
        "gqa_saving = 0.1343",
        # the saving of the key projections only: the values shrink too
        _SHARES +
        "k_share = sum(p.numel() for n, p in v01_model.named_parameters() if n.endswith('k_proj.weight'))\n"
        "gqa_saving = k_share / v01_model.num_parameters() * (1 - 8 / v01_model.config.num_key_value_heads)",
        # the whole of k and v counted as saved, not the 7 parts in 8 that go
        _SHARES +
        "kv = sum(p.numel() for n, p in v01_model.named_parameters() if n.endswith(('k_proj.weight', 'v_proj.weight')))\n"
        "gqa_saving = kv / v01_model.num_parameters()",
        # the norms found by the word 'layernorm': the final model.norm and R+'s q/k norms go to attention
        _SHARES.replace("any(part.endswith('norm') for part in parts)", "'layernorm' in path") + _RIGHT_SAVING,
        # the state dict walked instead of the parameters: the tied lm_head.weight is counted a second time
        _SHARES.replace("model.named_parameters()", "model.state_dict().items()") + _RIGHT_SAVING,
    ],
    "ex-00-2": [
        # the tied head counted a second time
        "d, hd = config.hidden_size, config.head_dim\n"
        "q_out, kv_out = config.num_attention_heads * hd, config.num_key_value_heads * hd\n"
        "per_layer = 2 * d * q_out + 2 * d * kv_out + 3 * d * config.intermediate_size + d\n"
        "if config.use_qk_norm:\n"
        "    per_layer += q_out + kv_out\n"
        "return 2 * config.vocab_size * d + config.num_hidden_layers * per_layer + d",
        # k and v sized like q: the GQA saving forgotten
        "d, hd = config.hidden_size, config.head_dim\n"
        "q_out = config.num_attention_heads * hd\n"
        "per_layer = 4 * d * q_out + 3 * d * config.intermediate_size + d\n"
        "if config.use_qk_norm:\n"
        "    per_layer += 2 * q_out\n"
        "return config.vocab_size * d + config.num_hidden_layers * per_layer + d",
    ],
    "ex-00-3": [
        # the attention products counted for the kv heads instead of the query heads
        "d, hd = config.hidden_size, config.head_dim\n"
        "heads, kv_heads = config.num_attention_heads, config.num_key_value_heads\n"
        "weights = d * heads * hd + 2 * d * kv_heads * hd + heads * hd * d + 3 * d * config.intermediate_size\n"
        "per_layer = 2 * tokens * weights + 2 * (2 * kv_heads * tokens * tokens * hd)\n"
        "return config.num_hidden_layers * per_layer + 2 * tokens * d * config.vocab_size",
        # one multiply-add counted as one operation
        "d, hd = config.hidden_size, config.head_dim\n"
        "heads, kv_heads = config.num_attention_heads, config.num_key_value_heads\n"
        "weights = d * heads * hd + 2 * d * kv_heads * hd + heads * hd * d + 3 * d * config.intermediate_size\n"
        "per_layer = tokens * weights + 2 * heads * tokens * tokens * hd\n"
        "return config.num_hidden_layers * per_layer + tokens * d * config.vocab_size",
    ],
}
