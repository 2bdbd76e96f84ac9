"""Plausible wrong answers to chapter 17's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-17-1": [
        # weight gradients only: the gradients of the inputs forgotten, so backward = forward
        "return 2 * hidden * num_experts + 6 * hidden * (k * width + shared_width)",
        # the input's gradient always made, as if the block's input always needed one: backward = 2 x forward
        "forward = 2 * hidden * num_experts + 6 * hidden * (k * width + shared_width)\n"
        "return 2 * forward",
        # with no gradient for the input, no input gradients at all: down_proj's input is the block's own features
        "forward = 2 * hidden * num_experts + 6 * hidden * (k * width + shared_width)\n"
        "return 2 * forward if input_needs_grad else forward",
        # every expert's weights counted in the backward pass, not only the k the token went through
        "forward = 2 * hidden * num_experts + 6 * hidden * (num_experts * width + shared_width)\n"
        "down = 2 * hidden * (num_experts * width + shared_width)\n"
        "return forward + (forward if input_needs_grad else down)",
    ],
    "ex-17-2": [
        # the fraction divided by k as well: a fraction of the choices, so an even split gives 1, not k
        "p = logits.softmax(dim=-1)\n"
        "picked = p.topk(k, dim=-1).indices\n"
        "share = F.one_hot(picked, logits.shape[-1]).float().sum(dim=1).mean(dim=0) / k\n"
        "return logits.shape[-1] * (share * p.mean(dim=0)).sum()",
        # the probabilities of the chosen experts only, renormalised over the k, instead of all E
        "top, picked = logits.topk(k, dim=-1)\n"
        "p = torch.zeros_like(logits).scatter(1, picked, top.softmax(dim=-1))\n"
        "share = F.one_hot(picked, logits.shape[-1]).float().sum(dim=1).mean(dim=0)\n"
        "return logits.shape[-1] * (share * p.mean(dim=0)).sum()",
        # the factor E left out
        "p = logits.softmax(dim=-1)\n"
        "picked = p.topk(k, dim=-1).indices\n"
        "share = F.one_hot(picked, logits.shape[-1]).float().sum(dim=1).mean(dim=0)\n"
        "return (share * p.mean(dim=0)).sum()",
    ],
    "ex-17-3": [
        # no overlap at all: every token's experts assumed new
        "return min(num_experts, n * k)",
        # the n * k picks drawn with replacement, as if one token could pick an expert twice
        "return num_experts * (1 - (1 - 1 / num_experts) ** (n * k))",
        # one token's chance of missing an expert taken as 1 / E instead of (E - k) / E
        "return num_experts * (1 - (1 / num_experts) ** n)",
    ],
}


def _partial(experts: str, weighted: bool = True, before: str = "", result: str = "partial") -> str:
    """An answer to 17.4 that loops over `experts`, with its own mistake before the loop or in the result."""
    add = "share[takers] * moe.experts[e](x[takers])" if weighted else "moe.experts[e](x[takers])"
    return ("weights, chosen = route(x, moe.gate.weight, moe.k)\n"
            "per_rank = len(moe.experts) // world\n" + before +
            "partial = x.new_zeros(x.shape)\n"
            f"for e in {experts}:\n"
            "    picked = chosen == e\n"
            "    takers = picked.any(dim=-1)\n"
            "    if takers.any():\n"
            "        share = (weights * picked).sum(dim=-1, keepdim=True)\n"
            f"        partial[takers] += {add}\n"
            f"return {result}")


BLOCK = "range(rank * per_rank, (rank + 1) * per_rank)"
WRONG["ex-17-4"] = [
    # experts dealt out round-robin (expert e on rank e % world), not in contiguous blocks
    _partial("range(rank, len(moe.experts), world)"),
    # the router's weights left out: each chosen expert's output added whole
    _partial(BLOCK, weighted=False),
    # the weights renormalised over this rank's chosen experts, as if the rank ran the block alone
    _partial(BLOCK, before="local = chosen // per_rank == rank\n"
                           "weights = weights * local / (weights * local).sum(dim=-1, keepdim=True).clamp_min(1e-9)\n"),
    # the partial divided by the world size, as if the all-reduce averaged
    _partial(BLOCK, result="partial / world"),
    # the whole layer on rank 0 and zeros elsewhere: the sum is right, but rank 0 reads every expert
    "return moe(x) if rank == 0 else x.new_zeros(x.shape)",
]
