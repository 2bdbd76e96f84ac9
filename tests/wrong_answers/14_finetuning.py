"""Plausible wrong answers to chapter 14's exercises (see tests/test_wrong_answers.py)."""

_SHAPES_GQA_IGNORED = '''
h, inter = config.hidden_size, config.intermediate_size
shapes = {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "o_proj": (h, h),
          "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
'''

WRONG = {
    "ex-14-1": [
        # every projection taken as hidden x hidden: the fewer key-value heads of GQA/MQA forgotten
        _SHAPES_GQA_IGNORED
        + "return config.num_hidden_layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)",
        # only A counted (r x in): B's out x r forgotten
        "h, inter = config.hidden_size, config.intermediate_size\n"
        "q_out = config.num_attention_heads * config.head_dim\n"
        "kv_out = config.num_key_value_heads * config.head_dim\n"
        "inputs = {'q_proj': h, 'k_proj': h, 'v_proj': h, 'o_proj': q_out, 'gate_proj': h, 'up_proj': h,\n"
        "          'down_proj': inter}\n"
        "return config.num_hidden_layers * sum(r * inputs[t] for t in targets)",
        # one layer's count: the blocks are not multiplied in
        "h, inter = config.hidden_size, config.intermediate_size\n"
        "q_out = config.num_attention_heads * config.head_dim\n"
        "kv_out = config.num_key_value_heads * config.head_dim\n"
        "shapes = {'q_proj': (h, q_out), 'k_proj': (h, kv_out), 'v_proj': (h, kv_out), 'o_proj': (q_out, h),\n"
        "          'gate_proj': (h, inter), 'up_proj': (h, inter), 'down_proj': (inter, h)}\n"
        "return sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)",
    ],
    "ex-14-2": [
        # the upstream gradient forgotten: d y / d s summed, not d L / d s
        "return ((x @ A.T) @ B.T).sum()",
        # averaged over the elements instead of summed
        "return (grad_out * ((x @ A.T) @ B.T)).mean()",
        # divided by the number of rows, as if the loss were a mean over the batch
        "return torch.einsum('no,or,ri,ni->', grad_out, B, A, x) / grad_out.shape[0]",
    ],
    "ex-14-3": [
        # the nominal rank r, not the rank the update uses
        "return layer.lora_A.shape[0]\n",
        # columns of B that are not zero, as if nonzero meant independent
        "return int((layer.lora_B.detach().abs().sum(0) > 0).sum())\n",
        # an absolute tolerance: a small update counts as no update
        "sizes = torch.linalg.svdvals((layer.lora_B @ layer.lora_A).detach().double())\n"
        "return int((sizes > rel_tol).sum())\n",
    ],
}
