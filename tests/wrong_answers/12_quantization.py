"""Plausible wrong answers to chapter 12's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-12-1": [
        # one level per byte: right values, five bits of every byte wasted
        "return q.to(torch.uint8)\n",
        # two 4-bit levels per byte, as the lesson packed them: one bit of every level wasted
        "return (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8)\n",
        # 4-bit slots in a 24-bit word: the last two levels fall off the top
        "N, K = q.shape\n"
        "groups = q.to(torch.int32).view(N, K // 8, 8)\n"
        "word = (groups << (4 * torch.arange(8))).sum(-1)\n"
        "return torch.stack([(word >> s) & 255 for s in (0, 8, 16)], dim=-1).view(N, -1).to(torch.uint8)\n",
    ],
    "ex-12-2": [
        # absmax is "safest": never clip
        "return 1.0\n",
        # the worst-case error minimized instead of the mean squared error
        "ratios = torch.linspace(0.2, 1.0, 801)\n"
        "errors = torch.stack([(int4_rows(w, float(r)) - w).abs().max() for r in ratios])\n"
        "return float(ratios[errors.argmin()])\n",
        # a coarse search
        "ratios = torch.linspace(0.2, 1.0, 5)\n"
        "errors = torch.stack([(int4_rows(w, float(r)) - w).pow(2).mean() for r in ratios])\n"
        "return float(ratios[errors.argmin()])\n",
    ],
    "ex-12-3": [
        # NF4's table kept: "the normal quantiles are already the best levels"
        "return nf4.clone()\n",
        # NF4's recipe on the weights themselves: each level takes an equal share, at the weights' own quantiles
        "return torch.quantile(normed, torch.linspace(0, 1, 16))\n",
        # Lloyd's iterations stopped too early: still far from a minimum
        "x = normed.double()\n"
        "levels = torch.linspace(-1, 1, 16, dtype=torch.float64)\n"
        "for _ in range(5):\n"
        "    cell = torch.bucketize(x, (levels[1:] + levels[:-1]) / 2)\n"
        "    members = torch.bincount(cell, minlength=16).clamp(min=1)\n"
        "    levels = torch.zeros(16, dtype=torch.float64).index_add_(0, cell, x) / members\n"
        "return levels.float()\n",
        # each level moved to its weights' median, not their mean: the middle weight, not the least squares
        "x = normed.double()\n"
        "levels = torch.linspace(-1, 1, 16, dtype=torch.float64)\n"
        "for _ in range(100):\n"
        "    cell = torch.bucketize(x, (levels[1:] + levels[:-1]) / 2)\n"
        "    levels = torch.stack([x[cell == i].median() if (cell == i).any() else levels[i] for i in range(16)])\n"
        "return levels.float()\n",
        # the cells cut at the levels themselves instead of halfway between them
        "x = normed.double()\n"
        "levels = torch.linspace(-1, 1, 16, dtype=torch.float64)\n"
        "for _ in range(100):\n"
        "    cell = torch.bucketize(x, levels[1:])\n"
        "    members = torch.bincount(cell, minlength=16).clamp(min=1)\n"
        "    levels = torch.zeros(16, dtype=torch.float64).index_add_(0, cell, x) / members\n"
        "return levels.float()\n",
    ],
    "ex-12-4": [
        # half a step: the largest error, not the typical one
        "N, K = w.shape\n"
        "groups = F.pad(w, (0, -K % group_size)).view(N, -1, group_size)\n"
        "step = (groups.amax(-1) - groups.amin(-1)) / 15\n"
        "return float((step / 2).pow(2).mean().sqrt())\n",
        # 16 levels taken as 16 steps
        "N, K = w.shape\n"
        "groups = F.pad(w, (0, -K % group_size)).view(N, -1, group_size)\n"
        "step = (groups.amax(-1) - groups.amin(-1)) / 16\n"
        "return float((step.pow(2) / 12).mean().sqrt())\n",
        # the quantizer called anyway: a measurement, not a prediction
        "return (int4_groups(w, group_size) - w).pow(2).mean().sqrt().item()\n",
    ],
}
