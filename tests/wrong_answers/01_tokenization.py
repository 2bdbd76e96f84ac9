"""Plausible wrong answers to chapter 01's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-01-1": [
        # every message trimmed, the system message too: the template leaves a system message as written
        "n = 1\n"
        "for m in messages:\n"
        "    n += 3 + len(tokenizer.encode(m['content'].strip(), add_special_tokens=False))\n"
        "return n + (2 if add_generation_prompt else 0)",
        # the content counted as written: the template trims user and chatbot turns
        "n = 1\n"
        "for m in messages:\n"
        "    n += 3 + len(tokenizer.encode(m['content'], add_special_tokens=False))\n"
        "return n + (2 if add_generation_prompt else 0)",
        # the system message left out, as if it were a setting and not a turn of the prompt
        "n = 1\n"
        "for m in messages:\n"
        "    if m['role'] != 'system':\n"
        "        n += 3 + len(tokenizer.encode(m['content'].strip(), add_special_tokens=False))\n"
        "return n + (2 if add_generation_prompt else 0)",
        # the content encoded with the default flag: a BOS counted in every turn
        "n = 1\n"
        "for k, m in enumerate(messages):\n"
        "    content = m['content'] if (k == 0 and m['role'] == 'system') else m['content'].strip()\n"
        "    n += 3 + len(tokenizer.encode(content, add_special_tokens=True))\n"
        "return n + (2 if add_generation_prompt else 0)",
    ],
    "ex-01-2": [
        # the highest rank fused first: the tree of a different (wrong) history
        "nodes = [(ch, ch) for ch in word]\n"
        "while len(nodes) > 1:\n"
        "    found = [(ranks[(a[0], b[0])], k) for k, (a, b) in enumerate(zip(nodes, nodes[1:])) if (a[0], b[0]) in ranks]\n"
        "    if not found:\n"
        "        break\n"
        "    _, k = max(found)\n"
        "    nodes[k:k + 2] = [(nodes[k][0] + nodes[k + 1][0], (nodes[k][1], nodes[k + 1][1]))]\n"
        "trees = [t for _, t in nodes]\n"
        "return trees[0] if len(trees) == 1 else trees",
        # a token taken to grow one character at a time, left to right, whatever the merge table says
        "tree = word[0]\n"
        "for ch in word[1:]:\n"
        "    tree = (tree, ch)\n"
        "return tree",
        # right fusions, but only the first symbol's tree returned when the word stays in pieces
        "nodes = [(ch, ch) for ch in word]\n"
        "while len(nodes) > 1:\n"
        "    found = [(ranks[(a[0], b[0])], k) for k, (a, b) in enumerate(zip(nodes, nodes[1:])) if (a[0], b[0]) in ranks]\n"
        "    if not found:\n"
        "        break\n"
        "    _, k = min(found)\n"
        "    nodes[k:k + 2] = [(nodes[k][0] + nodes[k + 1][0], (nodes[k][1], nodes[k + 1][1]))]\n"
        "return nodes[0][1]",
    ],
    "ex-01-3": [
        # each word counted once, whatever its count
        "from collections import Counter\n"
        "words = [list(w) for w in word_counts]\n"
        "learned = []\n"
        "while len(learned) < n:\n"
        "    pairs = Counter(p for parts in words for p in zip(parts, parts[1:]))\n"
        "    if not pairs:\n"
        "        break\n"
        "    top = max(pairs.values())\n"
        "    chosen = min(p for p, c in pairs.items() if c == top)\n"
        "    learned.append(chosen)\n"
        "    words = [fuse(parts, chosen) for parts in words]\n"
        "return learned",
        # a pair counted once per word it occurs in, not once per occurrence
        "from collections import Counter\n"
        "spelled = {tuple(w): c for w, c in word_counts.items()}\n"
        "learned = []\n"
        "while len(learned) < n:\n"
        "    pairs = Counter()\n"
        "    for parts, c in spelled.items():\n"
        "        for p in set(zip(parts, parts[1:])):\n"
        "            pairs[p] += c\n"
        "    if not pairs:\n"
        "        break\n"
        "    top = max(pairs.values())\n"
        "    chosen = min(p for p, c in pairs.items() if c == top)\n"
        "    learned.append(chosen)\n"
        "    spelled = {tuple(fuse(list(parts), chosen)): c for parts, c in spelled.items()}\n"
        "return learned",
        # a tie broken by whichever pair was counted first
        "from collections import Counter\n"
        "spelled = {tuple(w): c for w, c in word_counts.items()}\n"
        "learned = []\n"
        "while len(learned) < n:\n"
        "    pairs = Counter()\n"
        "    for parts, c in spelled.items():\n"
        "        for p in zip(parts, parts[1:]):\n"
        "            pairs[p] += c\n"
        "    if not pairs:\n"
        "        break\n"
        "    chosen = pairs.most_common(1)[0][0]\n"
        "    learned.append(chosen)\n"
        "    respelled = Counter()\n"
        "    for parts, c in spelled.items():\n"
        "        respelled[tuple(fuse(list(parts), chosen))] += c\n"
        "    spelled = respelled\n"
        "return learned",
    ],
}
