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
        # symmetric: as many levels below zero as above
        "n = 2 ** (bits - 1)\n"
        "probs = torch.linspace(0.5, 0.9677083, n + 1, dtype=torch.float64)[1:]\n"
        "ups = torch.special.ndtri(probs) / torch.special.ndtri(probs[-1])\n"
        "return torch.cat([-ups.flip(0)[:-1], torch.zeros(1, dtype=torch.float64), ups]).float()\n",
        # both sides from the same probabilities, the negative side one level short at its far end
        "n_pos = 2 ** (bits - 1)\n"
        "probs = torch.linspace(0.5, 0.9677083, n_pos + 1, dtype=torch.float64)[1:]\n"
        "ups = torch.special.ndtri(probs) / torch.special.ndtri(probs[-1])\n"
        "downs = -ups[:-1]\n"
        "return torch.cat([downs.flip(0), torch.zeros(1, dtype=torch.float64), ups]).float()\n",
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
