"""Plausible wrong answers to chapter 17's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-17-1": [
        # the experts only: the router's matrix forgotten
        "return k * 6 * hidden * width + 6 * hidden * shared_width",
        # multiply-adds counted once instead of twice
        "return hidden * num_experts + k * 3 * hidden * width + 3 * hidden * shared_width",
        # every expert counted, as if the token went through all of them
        "return 2 * hidden * num_experts + num_experts * 6 * hidden * width + 6 * hidden * shared_width",
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
