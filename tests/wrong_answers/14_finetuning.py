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
        # the scaling alpha / r left out of both gradients
        "hidden = x @ A.T\n"
        "return (grad_out @ B).T @ x, grad_out.T @ hidden",
        # "B starts at zero, so A gets no gradient": true at step 0 only
        "grad_B = scaling * grad_out.T @ (x @ A.T)\n"
        "return torch.zeros_like(A), grad_B",
        # the gradient reaching A taken straight from the output, B skipped (shapes fixed up by slicing)
        "grad_B = scaling * grad_out.T @ (x @ A.T)\n"
        "grad_A = scaling * (grad_out.T @ x)[: A.shape[0]]\n"
        "return grad_A, grad_B",
    ],
    "ex-14-3": [
        # dropout on the layer's whole output: the frozen path is dropped out too
        "def __init__(self, base_layer, r, alpha, p):\n"
        "    super().__init__(base_layer, r, alpha)\n"
        "    self.dropout = nn.Dropout(p)\n"
        "\n"
        "def forward(self, x):\n"
        "    return self.dropout(self.base_layer(x) + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T))",
        # dropout on the rank-r hidden (after A) instead of on the input
        "def __init__(self, base_layer, r, alpha, p):\n"
        "    super().__init__(base_layer, r, alpha)\n"
        "    self.dropout = nn.Dropout(p)\n"
        "\n"
        "def forward(self, x):\n"
        "    return self.base_layer(x) + self.scaling * (self.dropout(x @ self.lora_A.T) @ self.lora_B.T)",
        # F.dropout always on: eval mode still drops
        "def __init__(self, base_layer, r, alpha, p):\n"
        "    super().__init__(base_layer, r, alpha)\n"
        "    self.p = p\n"
        "\n"
        "def forward(self, x):\n"
        "    dropped = F.dropout(x, self.p, training=True)\n"
        "    return self.base_layer(x) + self.scaling * ((dropped @ self.lora_A.T) @ self.lora_B.T)",
    ],
}
