"""Plausible wrong answers to chapter 15's exercises (see tests/test_wrong_answers.py)."""

WRONG = {
    "ex-15-1": [
        # only the outermost span of a nest is seen: document 0's "red" inside document 2's span is lost
        '''found = {}
for m in SPAN.finditer(grounded_answer):
    found.setdefault(int(m.group(1)), []).append(ANY_TAG.sub("", m.group(2)))
return found''',
        # the inner tags are left in the phrase
        '''found = {}
pending = [grounded_answer]
while pending:
    text = pending.pop(0)
    for m in SPAN.finditer(text):
        found.setdefault(int(m.group(1)), []).append(m.group(2))
        pending.append(m.group(2))
return found''',
        # any opening tag counts, partner or not
        '''found = {}
for m in re.finditer(r"<co: (\\d+)>([^<]*)", grounded_answer):
    found.setdefault(int(m.group(1)), []).append(m.group(2))
return found''',
    ],
    "ex-15-2": [
        # "literal_eval is the safe eval": it is safe, but it reads literals, not arithmetic with powers
        '''try:
    return ast.literal_eval(expression)
except (SyntaxError, TypeError) as e:
    raise ValueError(str(e)) from None''',
        # the unary minus forgotten: "-2 ** 2" is refused
        '''ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
       ast.Div: lambda a, b: a / b}
def walk(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = walk(node.left), walk(node.right)
        if abs(exponent) > 64:
            raise ValueError("exponent above 64")
        return base ** exponent
    if isinstance(node, ast.BinOp) and type(node.op) in ops:
        return ops[type(node.op)](walk(node.left), walk(node.right))
    raise ValueError("not arithmetic")
return walk(ast.parse(expression, mode="eval").body)''',
        # off by one: an exponent of exactly 64 is refused
        '''ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
       ast.Div: lambda a, b: a / b}
def walk(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -walk(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = walk(node.left), walk(node.right)
        if abs(exponent) >= 64:
            raise ValueError("exponent too large")
        return base ** exponent
    if isinstance(node, ast.BinOp) and type(node.op) in ops:
        return ops[type(node.op)](walk(node.left), walk(node.right))
    raise ValueError("not arithmetic")
return walk(ast.parse(expression, mode="eval").body)''',
    ],
    "ex-15-3": [
        # the gold document's index within its own question, not within the pool
        '''ranks = []
for i, q in enumerate(questions[:40]):
    ranking = top_k(q["question"], pool, len(pool))
    ranks.append(ranking.index(q["gold"]) + 1 if q["gold"] in ranking else len(pool))
ranks.sort()
return ranks[max(0, math.ceil(target * len(ranks)) - 1)]''',
        # off by one: the k at which the next question would be found
        '''ranks = []
for i, q in enumerate(questions[:40]):
    ranking = top_k(q["question"], pool, len(pool))
    ranks.append(ranking.index(3 * i + q["gold"]) + 1)
ranks.sort()
return ranks[min(len(ranks) - 1, math.ceil(target * len(ranks)))]''',
        # the top-1 hit rate read as if it were the answer: k grows by one per missing 5%
        '''hits = sum(3 * i + q["gold"] in top_k(q["question"], pool, 1) for i, q in enumerate(questions[:40])) / 40
return 1 if hits >= target else 1 + round((target - hits) / 0.05)''',
    ],
}
