"""Plausible wrong answers to chapter 03's exercises (see tests/test_wrong_answers.py)."""

_RMS = (
    "class RMSNormWithWeight(torch.nn.Module):\n"
    "    def __init__(self, weight, eps):\n"
    "        super().__init__()\n"
    "        self.weight, self.eps = weight, eps\n"
    "    def forward(self, x):\n"
    "        wide = x.float()\n"
    "        return (self.weight.float() * wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)\n"
)

WRONG = {
    "ex-03-1": [
        # eps forgotten: LayerNorm always gives unit scale
        "return torch.ones_like(std)",
        # eps added to the standard deviation instead of the variance
        "return std / (std + eps)",
        # the square root forgotten
        "return std ** 2 / (std ** 2 + eps)",
    ],
    "ex-03-2": [
        # only the blocks' norms are swapped: the final norm keeps subtracting the mean
        _RMS +
        "swapped = copy.deepcopy(model)\n"
        "for layer in swapped.model.layers:\n"
        "    layer.input_layernorm = RMSNormWithWeight(layer.input_layernorm.weight, layer.input_layernorm.eps)\n"
        "return swapped",
        # the norms swapped in place: the given model changes too
        _RMS +
        "for parent in list(model.modules()):\n"
        "    for name, child in list(parent.named_children()):\n"
        "        if isinstance(child, minicohere.CohereLayerNorm):\n"
        "            setattr(parent, name, RMSNormWithWeight(child.weight, child.eps))\n"
        "return model",
    ],
    "ex-03-3": [
        # the mean's dependence kept, the variance's forgotten
        "inv_std = (x.var(dim=-1, unbiased=False, keepdim=True) + eps).rsqrt()\n"
        "xhat = (x - x.mean(dim=-1, keepdim=True)) * inv_std\n"
        "g = weight * upstream\n"
        "return inv_std * (g - g.mean(dim=-1, keepdim=True)), (upstream * xhat).sum(dim=0)",
        # grad_weight from the upstream gradient times the raw x instead of the normalised x
        "inv_std = (x.var(dim=-1, unbiased=False, keepdim=True) + eps).rsqrt()\n"
        "xhat = (x - x.mean(dim=-1, keepdim=True)) * inv_std\n"
        "g = weight * upstream\n"
        "grad_x = inv_std * (g - g.mean(dim=-1, keepdim=True) - xhat * (g * xhat).mean(dim=-1, keepdim=True))\n"
        "return grad_x, (upstream * x).sum(dim=0)",
    ],
    "ex-03-2b": [
        # the first-order answer: the gap equals the ratio
        "return r.clone()",
        # only the mean's share counted; the centred part's shrink forgotten
        "return r / (1 + r ** 2) ** 0.5",
        # only the centred part's shrink counted; the mean's own share forgotten
        "return 1 - 1 / (1 + r ** 2) ** 0.5",
    ],
}
