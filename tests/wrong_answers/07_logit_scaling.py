"""Plausible wrong answers to chapter 07's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-07-1": [
        # the attention mask is passed, but the padding is scored as text
        "return math.exp(model(ids, attention_mask=attention_mask, labels=ids).loss.item())",
        # the pads' own labels are hidden, but the prediction made *from* the last pad still counts
        "labels = ids.masked_fill(attention_mask == 0, -100)\n"
        "return math.exp(model(ids, attention_mask=attention_mask, labels=labels).loss.item())",
        # the right predictions, but the real tokens may attend to the pads
        "real = attention_mask.bool()\n"
        "labels = ids.masked_fill(~real, -100)\n"
        "labels[:, 1:] = labels[:, 1:].masked_fill(~real[:, :-1], -100)\n"
        "return math.exp(model(ids, labels=labels).loss.item())",
    ],
    "ex-07-2": [
        # no shift: the label of a position is taken as what it predicts
        "log_z = logits.float().logsumexp(-1)\n"
        "return weight * log_z[labels != -100].pow(2).mean()",
        # the shift, but the last position (which predicts nothing) is kept
        "log_z = logits.float().logsumexp(-1)\n"
        "keep = torch.ones_like(labels, dtype=torch.bool)\n"
        "keep[:, :-1] = labels[:, 1:] != -100\n"
        "return weight * log_z[keep].pow(2).mean()",
        # right positions, computed in the logits' own dtype
        "log_z = logits[:, :-1].logsumexp(-1)\n"
        "return weight * log_z[labels[:, 1:] != -100].pow(2).mean()",
    ],
    "ex-07-3": [
        # the chain rule's factor forgotten
        "p = torch.softmax(raw * scale, dim=-1)\n"
        "p[torch.arange(raw.shape[0]), targets] -= 1.0\n"
        "return p / raw.shape[0]",
        # the sum over positions instead of the mean
        "p = torch.softmax(raw * scale, dim=-1)\n"
        "p[torch.arange(raw.shape[0]), targets] -= 1.0\n"
        "return scale * p",
    ],
    "ex-07-4": [
        # a coarse grid only: the best point is off by up to 6%
        "grid = torch.logspace(math.log10(low), math.log10(high), 41).tolist()\n"
        "return min(grid, key=lambda s: minicohere.causal_lm_loss(raw * s, labels).item())",
        # the search is right, but each position is scored on its own token instead of the next one
        "def loss_at(s):\n"
        "    return F.cross_entropy((raw * s).reshape(-1, raw.shape[-1]).float(), labels.reshape(-1)).item()\n"
        "grid = torch.logspace(math.log10(low), math.log10(high), 41).tolist()\n"
        "for _ in range(4):\n"
        "    i = min(range(len(grid)), key=lambda j: loss_at(grid[j]))\n"
        "    grid = torch.linspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], 21).tolist()\n"
        "return min(grid, key=loss_at)",
    ],
    "ex-07-4b": [
        # the reading backwards: a smaller best scale taken for a model that is not confident enough
        "ratio = best_scale(t_raw, val_ids) / trained.config.logit_scale\n"
        "confidence = 'right' if abs(ratio - 1) < 0.05 else 'under' if ratio < 1 else 'over'",
        # the ratio taken the other way up: trained over best
        "ratio = trained.config.logit_scale / best_scale(t_raw, val_ids)\n"
        "confidence = 'right' if abs(ratio - 1) < 0.05 else 'over' if ratio < 1 else 'under'",
    ],
}
