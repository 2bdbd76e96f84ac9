"""Plausible wrong answers to chapter 11's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-11-1": [
        # the end-of-turn token left out: the model never learns to stop
        "chatbot = tokenizer.token_to_id('<|CHATBOT_TOKEN|>')\n"
        "labels, inside = [], False\n"
        "for token in ids:\n"
        "    if token == tokenizer.eos_token_id:\n"
        "        inside = False\n"
        "    labels.append(token if inside else -100)\n"
        "    if token == chatbot:\n"
        "        inside = True\n"
        "return torch.tensor(labels)\n",
        # the CHATBOT token itself scored: it is the template's, not the answer's
        "chatbot = tokenizer.token_to_id('<|CHATBOT_TOKEN|>')\n"
        "labels, inside = [], False\n"
        "for token in ids:\n"
        "    if token == chatbot:\n"
        "        inside = True\n"
        "    labels.append(token if inside else -100)\n"
        "    if token == tokenizer.eos_token_id:\n"
        "        inside = False\n"
        "return torch.tensor(labels)\n",
    ],
    "ex-11-2": [
        # every micro-batch weighed the same, whatever its size
        "for p in model.parameters():\n"
        "    p.grad = None\n"
        "loss_sum = 0.0\n"
        "for b in micro_batches:\n"
        "    share = model(b, labels=b).loss / len(micro_batches)\n"
        "    share.backward()\n"
        "    loss_sum += share.item()\n"
        "return loss_sum\n",
        # the micro-batches' mean losses added up, not averaged
        "for p in model.parameters():\n"
        "    p.grad = None\n"
        "loss_sum = 0.0\n"
        "for b in micro_batches:\n"
        "    loss = model(b, labels=b).loss\n"
        "    loss.backward()\n"
        "    loss_sum += loss.item()\n"
        "return loss_sum\n",
        # the gradients left from before are not cleared
        "total = sum(len(b) for b in micro_batches)\n"
        "loss_sum = 0.0\n"
        "for b in micro_batches:\n"
        "    share = model(b, labels=b).loss * (len(b) / total)\n"
        "    share.backward()\n"
        "    loss_sum += share.item()\n"
        "return loss_sum\n",
    ],
    "ex-11-3": [
        # the logits taken as all equal: only the uniform guess's loss
        "return math.log(vocab)\n",
        # the spread of one logit added as it is: its standard deviation, not what exp makes of it
        "return math.log(vocab) + hidden ** 0.5 * embed_std * logit_scale\n",
        # the length of h taken as hidden, not sqrt(hidden)
        "return math.log(vocab) + (hidden * embed_std * logit_scale) ** 2 / 2\n",
        # the variance added without the half that the mean of exp(z) brings
        "return math.log(vocab) + hidden * (embed_std * logit_scale) ** 2\n",
    ],
    "ex-11-4": [
        # the estimate from the fp32 peaks, not a measurement in fp16
        "peaks = peak_outputs(model, ids)\n"
        "return 65504 / peaks['lm_head'], 'lm_head'\n",
        # a linear search with steps of 10%: not within 1%
        "factor = 1.0\n"
        "while train_tiny.first_non_finite(peak_outputs(train_tiny.with_grown_hidden_state(model, factor, torch.float16), ids)) is None:\n"
        "    factor *= 1.1\n"
        "return factor, 'lm_head'\n",
        # the factor bisected right, the module assumed: it is always the head, isn't it?
        "def broken(factor):\n"
        "    grown = train_tiny.with_grown_hidden_state(model, factor, torch.float16)\n"
        "    return train_tiny.first_non_finite(peak_outputs(grown, ids))\n"
        "lo, hi = 1.0, 2.0\n"
        "while broken(hi) is None:\n"
        "    lo, hi = hi, hi * 2\n"
        "while hi / lo > 1.005:\n"
        "    mid = (lo * hi) ** 0.5\n"
        "    if broken(mid) is None:\n"
        "        lo = mid\n"
        "    else:\n"
        "        hi = mid\n"
        "return hi, 'lm_head'\n",
    ],
}
