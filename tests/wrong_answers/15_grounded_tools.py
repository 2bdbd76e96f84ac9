"""Plausible wrong answers to chapter 15's exercises (see tests/test_wrong_answers.py)."""

# A calculator with powers that checks the exponent; three wrong answers of ex-15-2 below each break one
# thing in it, so each mistake reads as its one difference.
_POWERS = '''ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
       ast.Div: lambda a, b: a / b}
def walk(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -walk(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = walk(node.left), walk(node.right)
        if abs(exponent) > 64:
            raise ValueError("exponent above 64")
        return base ** exponent
    if isinstance(node, ast.BinOp) and type(node.op) in ops:
        return ops[type(node.op)](walk(node.left), walk(node.right))
    raise ValueError("not arithmetic")
return walk(ast.parse(expression, mode="eval").body)'''

WRONG = {
    "ex-15-1": [
        # the phrase looked up in the plain answer: the first copy of the word, cited or not
        '''plain = ANY_TAG.sub("", grounded_answer)
found = {}
for c in grounded.parse_citations(grounded_answer)[1]:
    start = plain.find(c["text"])
    found[(start, start + len(c["text"]))] = c["documents"]
return [(start, end, docs) for (start, end), docs in sorted(found.items())]''',
        # the same with a cursor: each search starts after the previous citation, and still finds an uncited copy
        '''plain, at, found = ANY_TAG.sub("", grounded_answer), 0, []
for c in grounded.parse_citations(grounded_answer)[1]:
    start = plain.find(c["text"], at)
    found.append((start, start + len(c["text"]), c["documents"]))
    at = start + len(c["text"])
return found''',
        # offsets into the marked-up answer, not into the plain one
        '''found, pending = {}, [(grounded_answer, 0)]
while pending:
    text, offset = pending.pop()
    for m in SPAN.finditer(text):
        start = offset + m.start(2)
        found.setdefault((start, start + len(ANY_TAG.sub("", m.group(2)))), []).append(int(m.group(1)))
        pending.append((m.group(2), start))
return [(start, end, sorted(docs)) for (start, end), docs in sorted(found.items())]''',
        # nested spans kept apart: one entry per document, so "red" is cited twice
        '''plain, opened, spans = "", {}, []
for piece in re.split(r"(</?co: \\d+>)", grounded_answer):
    tag = re.fullmatch(r"<(/?)co: (\\d+)>", piece)
    if tag is None:
        plain += piece
    elif tag.group(1) == "":
        opened.setdefault(int(tag.group(2)), []).append(len(plain))
    elif opened.get(int(tag.group(2))):
        spans.append((opened[int(tag.group(2))].pop(), len(plain), [int(tag.group(2))]))
return sorted(spans)''',
        # a tag without its partner runs to the end of the answer
        '''plain, opened, spans = "", {}, {}
for piece in re.split(r"(</?co: \\d+>)", grounded_answer):
    tag = re.fullmatch(r"<(/?)co: (\\d+)>", piece)
    if tag is None:
        plain += piece
    elif tag.group(1) == "":
        opened.setdefault(int(tag.group(2)), []).append(len(plain))
    elif opened.get(int(tag.group(2))):
        spans.setdefault((opened[int(tag.group(2))].pop(), len(plain)), []).append(int(tag.group(2)))
for doc, starts in opened.items():
    for start in starts:
        spans.setdefault((start, len(plain)), []).append(doc)
return [(start, end, sorted(docs)) for (start, end), docs in sorted(spans.items())]''',
    ],
    "ex-15-2": [
        # "literal_eval is the safe eval": it is safe, but it reads literals, not arithmetic with powers
        '''try:
    return ast.literal_eval(expression)
except (SyntaxError, TypeError) as e:
    raise ValueError(str(e)) from None''',
        # the unary minus forgotten: "-2 ** 2" is refused
        _POWERS.replace("""    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -walk(node.operand)
""", ""),
        # off by one: an exponent of exactly 64 is refused
        _POWERS.replace('> 64:\n            raise ValueError("exponent above 64")',
                        '>= 64:\n            raise ValueError("exponent too large")'),
        # any constant is a number: "'ab' * 3" repeats a string
        _POWERS.replace("isinstance(node, ast.Constant) and type(node.value) in (int, float)",
                        "isinstance(node, ast.Constant)"),
        # the size of the result checked, not the exponent: 10 ** 10 ** 10 is computed before any check
        '''ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
       ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a ** b}
def walk(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -walk(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in ops:
        result = ops[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node.op, ast.Pow) and abs(result) > 2 ** 64:
            raise ValueError("power too large")
        return result
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
        # the count of questions rounded down: int(0.88 * 40) = 35 questions is short of 88%
        '''ranks = []
for i, q in enumerate(questions[:40]):
    ranking = top_k(q["question"], pool, len(pool))
    ranks.append(ranking.index(3 * i + q["gold"]) + 1)
ranks.sort()
return ranks[max(0, int(target * len(ranks)) - 1)]''',
    ],
}
