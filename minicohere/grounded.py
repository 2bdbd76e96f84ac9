"""Grounded answers with citations, and tool use, in Command-R's own formats (chapter 15).

    import minicohere
    model = minicohere.from_pretrained(minicohere.bundled_path("tiny-command-r"))
    tok = minicohere.Tokenizer.default()
    minicohere.answer(model, tok, "What colour is Mia's kite?",
                      documents=[{"title": "Mia's kite", "text": "Mia has a red kite."}])
    # {"answer": "Mia's kite is red.", "citations": [{"text": "red", "documents": [0]}], "tool_calls": []}

The pieces, in the order a call goes through them:

1. **Retrieval** (`retrieve`): when there are more documents than the prompt holds, BM25 picks the ones
   sharing the question's rarer words. The library is `rank_bm25`: one pure-Python file whose only need is
   numpy (already a dependency), so the package's runtime stays light; `bm25s` is faster on millions of
   documents through scipy's sparse matrices, a speed a prompt of a few documents never needs.
2. **The prompt** (`render_grounded`, `render_tools`): the tokenizer's chat templates render Command-R's
   turns: the documents as "Document: i" blocks inside a `<results>` system turn, then the instructions.
   Command-R's own instructions and preamble are ~1,200 tokens in the bundled 4k-token tokenizer, and the
   bundled model's context is 256; so when the full prompt does not fit, the same turns are rendered
   without the preamble and with the instructions cut to a few words (`style="compact"`). The model's
   *output* format is Command-R's either way.
3. **The output** (`parse_grounded`): `Relevant Documents:`, `Cited Documents:`, `Answer:`,
   `Grounded answer:` with `<co: N>...</co: N>` spans (citation_mode="accurate") -> answer text and
   citations. Malformed output is not an error: the parser returns what it found and lists what was missing.
4. **Tools** (`parse_action`, `calculator`, `run_tools`): the model writes `Action:` and a JSON list of
   tool calls and stops; the program runs each call (the calculator evaluates arithmetic by walking its
   syntax tree, never `eval`), feeds the results back as the template's tool turn, and the model answers.
5. **The skills** live in a LoRA adapter (`assets/tiny-command-r/grounded-adapter/`, peft's format, made
   by scripts/train_grounded.py), merged into a copy of the bundled model by `answer` (`adapted`); the
   base weights, and so plain generation, stay untouched. The shipped adapter learned the formats, to cite
   the document that answers and to copy the numbers into the calculator's call, but not to copy an
   invented name (the training script's docstring says what was tried).
6. **Quoting** (`generate_quoting`, answer's default quote=True): on the `Grounded answer:` line the greedy
   choice is narrowed to tokens that keep each `<co: N>` span a quote of document N and every other word
   one of the question's or the documents'. With it the adapter's answers are right where it chose the
   right words, invented names included (the measured table, both ways, is benchmarks/bench_grounded.py's).
"""

from __future__ import annotations

import ast
import copy
import json
import operator
import re
import weakref
from pathlib import Path

import torch

from .tokenizer import _DOCUMENTS_BLOCK, _TURNS_BLOCK

# --------------------------------------------------------------------------------------------------
# 1. Retrieval


def tokenize_for_search(text: str) -> list[str]:
    """Lower-cased words and numbers; "Mia's" -> "mia" so a possessive matches the bare name."""
    return re.findall(r"[a-z0-9]+", text.lower().replace("'s", ""))


def retrieve(question: str, documents: list[dict], k: int = 3) -> list[int]:
    """Indices of the k documents BM25 ranks highest for the question (best first; ties keep file order)."""
    from rank_bm25 import BM25Plus

    if not documents:
        return []
    corpus = [tokenize_for_search(" ".join(str(v) for v in d.values())) or ["<empty>"] for d in documents]
    # BM25+ rather than the classic Okapi weighting: on a handful of documents Okapi's idf of a word in most
    # of them goes negative, so a document *sharing* the question's words ranks lower (the gold document of
    # a held-out three-document question of assets/grounded/ comes first 52% of the time with Okapi, 96% with
    # BM25+: 103 and 192 of 200)
    scores = BM25Plus(corpus).get_scores(tokenize_for_search(question))
    order = sorted(range(len(documents)), key=lambda i: (-scores[i], i))
    return order[:k]


# --------------------------------------------------------------------------------------------------
# 2. Prompts. The compact templates keep Command-R's turns and markup; they drop the preamble and cut
# the instructions to a few words (the model learns the format from fine-tuning, not from the prose).

# the conversation turns and the documents turn are the tokenizer's own template blocks
_TURNS = "{%- set turns = messages -%}" + _TURNS_BLOCK

COMPACT_RAG_TEMPLATE = r"""
{{- bos_token -}}
""" + _TURNS + _DOCUMENTS_BLOCK + r"""
{{- '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>Answer with citations.<|END_OF_TURN_TOKEN|>' -}}
{%- if add_generation_prompt -%}{{- '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' -}}{%- endif -%}
""".strip()

COMPACT_TOOL_TEMPLATE = r"""
{{- bos_token -}}
{{- '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>## Available Tools' -}}
{%- for tool in tools -%}
    {{- '\n' ~ tool['name'] ~ '(' ~ (tool.get('parameter_definitions', {}) | join(', ')) ~ '): ' ~ tool['description'] -}}
{%- endfor -%}
{{- '<|END_OF_TURN_TOKEN|>' -}}
""" + _TURNS + r"""
{{- '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>Write Action: and a json list of tool calls.<|END_OF_TURN_TOKEN|>' -}}
{%- if add_generation_prompt -%}{{- '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' -}}{%- endif -%}
""".strip()

STYLES = ("auto", "full", "compact")


def _render(tokenizer, messages, room: int, style: str, full_template, compact_template, **kwargs) -> list[int]:
    """Prompt ids: Command-R's full template when it leaves `room` tokens of context (or style="full"),
    else the compact one."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if style in ("auto", "full"):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, template=full_template, **kwargs)
        if style == "full" or room is None or len(ids) <= room:
            return ids
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, template=compact_template, **kwargs)


def render_grounded(tokenizer, question: str, documents: list[dict], room: int | None = None,
                    style: str = "auto") -> list[int]:
    """Ids of the grounded-generation prompt (citation_mode="accurate") that ends where the model writes.

    `room`: the most prompt tokens the model can take (its context minus the answer's tokens)."""
    messages = [{"role": "user", "content": question}]
    return _render(tokenizer, messages, room, style, "rag", COMPACT_RAG_TEMPLATE,
                   documents=list(documents), citation_mode="accurate")


def render_tools(tokenizer, messages: list[dict], tools: list[dict], room: int | None = None,
                 style: str = "auto") -> list[int]:
    """Ids of the tool-use prompt for a conversation (user turn, then any Action / tool-result turns)."""
    return _render(tokenizer, messages, room, style, "tool_use", COMPACT_TOOL_TEMPLATE, tools=list(tools))


# --------------------------------------------------------------------------------------------------
# 3. The model's grounded output, both ways: written (for training targets) and read back


def format_grounded(answer: str, fact: str, cited: list[int], relevant: list[int] | None = None) -> str:
    """The output the model learns to write: `fact` (a phrase of `answer`) wrapped in a citation of
    `cited`. Citing several documents puts each number in its own span, nested, as Command-R does."""
    if fact not in answer:
        raise ValueError(f"the cited fact {fact!r} is not part of the answer {answer!r}")
    relevant = cited if relevant is None else relevant
    span = fact
    for n in cited:
        span = f"<co: {n}>{span}</co: {n}>"
    numbers = lambda ids: ",".join(map(str, ids)) if ids else "None"  # noqa: E731
    return (f"Relevant Documents: {numbers(relevant)}\nCited Documents: {numbers(cited)}\n"
            f"Answer: {answer}\nGrounded answer: {answer.replace(fact, span, 1)}")


_FIELDS = ("Relevant Documents", "Cited Documents", "Answer", "Grounded answer")
_FIELD_LINE = re.compile(r"^\s*(Relevant Documents|Cited Documents|Answer|Grounded answer)\s*:\s*(.*)$")
_SPAN = re.compile(r"<co:\s*(\d+)\s*>(.*?)</co:\s*\1\s*>", re.S)
_TAG = re.compile(r"</?co:\s*[^>]*>")


def _numbers(text: str) -> list[int] | None:
    """'0,2' -> [0, 2]; 'None' -> []; anything else -> None (malformed)."""
    text = text.strip()
    if text.lower() in ("none", ""):
        return [] if text else None
    parts = [p.strip() for p in text.split(",")]
    return [int(p) for p in parts] if all(p.isdigit() for p in parts) else None


def parse_citations(grounded: str) -> tuple[str, list[dict]]:
    """'Mia's kite is <co: 0>red</co: 0>.' -> ("Mia's kite is red.", [{"text": "red", "documents": [0]}]).

    Nested spans over the same words merge into one citation of several documents; a tag without its
    partner is dropped from the text and cites nothing."""
    citations: list[dict] = []
    text = grounded
    while (m := _SPAN.search(text)) is not None:
        inner = _TAG.sub("", m.group(2))
        doc = int(m.group(1))
        same = next((c for c in citations if c["text"] == inner and c["_at"] == m.start()), None)
        if same is None:
            citations.append({"text": inner, "documents": [doc], "_at": m.start()})
        elif doc not in same["documents"]:
            same["documents"].append(doc)
        text = text[:m.start()] + m.group(2) + text[m.end():]
    for c in citations:
        del c["_at"]
        c["documents"].sort()
    return _TAG.sub("", text).strip(), citations


def parse_grounded(output: str) -> dict:
    """Read the model's grounded output; never raises on malformed text.

    Returns {"relevant": [int] or None, "cited": [int] or None, "answer": str or None,
    "grounded_answer": str or None, "text": str, "citations": [...], "missing": [field, ...]}:
    `text` is the best answer found (the grounded answer without markup, else the plain answer, else
    the whole output stripped of markup); `missing` names each field absent or unreadable."""
    found: dict[str, str] = {}
    current = None
    for line in output.splitlines():
        m = _FIELD_LINE.match(line)
        if m and m.group(1) not in found:
            current = m.group(1)
            found[current] = m.group(2)
        elif current in ("Answer", "Grounded answer") and line.strip():
            found[current] += "\n" + line  # an answer may run over several lines
        else:
            current = None if m else current
    relevant = _numbers(found["Relevant Documents"]) if "Relevant Documents" in found else None
    cited = _numbers(found["Cited Documents"]) if "Cited Documents" in found else None
    plain = found.get("Answer", "").strip() or None
    grounded = found.get("Grounded answer", "").strip() or None
    missing = [f for f, v in zip(_FIELDS, (relevant, cited, plain, grounded)) if v is None]
    if grounded is not None:
        text, citations = parse_citations(grounded)
        if not citations:
            missing.append("citation spans")
    else:
        text, citations = (plain or _TAG.sub("", output).strip()), []
    return {"relevant": relevant, "cited": cited, "answer": plain, "grounded_answer": grounded,
            "text": text, "citations": citations, "missing": missing}


# --------------------------------------------------------------------------------------------------
# 4. Tools: the calculator, Command-R's Action format, the loop

CALCULATOR = {
    "name": "calculator",
    "description": "Works out arithmetic such as 23 + 48.",
    "parameter_definitions": {"expression": {"type": "str", "description": "the sum to work out",
                                             "required": True}},
}
TOOLS = {"calculator": CALCULATOR}

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.USub: operator.neg, ast.UAdd: operator.pos}


def calculator(expression: str):
    """Arithmetic on numbers (+ - * / // % and brackets) by walking the syntax tree: no names, no calls,
    no powers (2 ** 10 ** 10 would never finish), so no input can do more than arithmetic."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"the calculator needs an expression such as '23 + 48', got {expression!r}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"{expression!r} is not arithmetic") from None

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
                raise ValueError(f"{expression!r} divides by zero")
            return _OPERATORS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.operand))
        raise ValueError(f"{expression!r}: only numbers and + - * / // % ( ) are allowed")

    result = value(tree.body)
    return int(result) if isinstance(result, float) and result.is_integer() else result


def format_action(calls: list[dict]) -> str:
    """`Action:` and a fenced JSON list of {"tool_name", "parameters"}: what the model writes to call tools."""
    return "Action: ```json\n" + json.dumps(calls) + "\n```"


def parse_action(output: str) -> list[dict] | None:
    """The tool calls of an `Action:` output, or None when there is no readable Action (the output is then
    taken as an answer). Calls that are not {"tool_name": str, "parameters": dict} are dropped."""
    m = re.search(r"Action:\s*(?:```(?:json)?)?\s*(\[.*\])\s*(?:```)?", output, re.S)
    if m is None:
        return None
    try:
        calls = json.loads(m.group(1))
    except json.JSONDecodeError:
        return None
    if not isinstance(calls, list):
        return None
    return [c for c in calls if isinstance(c, dict) and isinstance(c.get("tool_name"), str)
            and isinstance(c.get("parameters", {}), dict)]


def tool_results_text(calls: list[dict]) -> str:
    """The tool turn's content: each result as a "Document: i" block, as Command-R's tool results are."""
    blocks = []
    for i, call in enumerate(calls):
        blocks.append(f"Document: {i}\ntool_name: {call['name']}\nresult: {json.dumps(call['result'])}")
    return "\n\n".join(blocks)


def run_tool(call: dict, tools: dict) -> dict:
    """Run one parsed call; a failure is the tool's result (an error message the model reads), not a crash."""
    name, parameters = call["tool_name"], call.get("parameters", {})
    if name not in tools:
        result = {"error": f"unknown tool {name!r}"}
    else:
        try:
            result = tools[name](**parameters)
        except (TypeError, ValueError) as e:
            result = {"error": str(e)}
    return {"name": name, "parameters": parameters, "result": result}


# --------------------------------------------------------------------------------------------------
# 5. The adapter and `answer`

_ADAPTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def default_adapter_path() -> Path:
    from .bundled import bundled_path

    return bundled_path("tiny-command-r/grounded-adapter")


def merge_adapter(model, folder) -> torch.nn.Module:
    """A copy of `model` with the peft-format LoRA adapter in `folder` folded into its weights
    (W + alpha/r * B @ A: the adapter's forward, at no cost per token). `model` itself is unchanged."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    pairs = {}  # layer name -> (A, B), every one checked before the model is copied
    modules = dict(model.named_modules())
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[len("base_model.model."):-len(".lora_A.weight")]
        b = tensors[key.replace("lora_A", "lora_B")]
        layer = modules.get(name)
        if layer is None or tuple(layer.weight.shape) != (b.shape[0], a.shape[1]):
            raise ValueError(f"{folder}: adapter tensor {key} does not fit this model "
                             f"(no layer {name} of shape {(b.shape[0], a.shape[1])})")
        pairs[name] = (a, b)
    merged = copy.deepcopy(model)
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for name, (a, b) in pairs.items():
            weight = modules[name].weight
            weight += (scale * b.float() @ a.float()).to(weight.device, weight.dtype)
    return merged.eval()


def adapted(model, adapter="default"):
    """The model `answer` runs: `model` with an adapter merged in (cached per model), or `model` itself
    for adapter=None. "default" is the shipped adapter, used only where it fits: a model of other shapes
    (a real Command-R) runs as it is, as does any model when the adapter is not installed."""
    if adapter is None:
        return model
    folder = Path(adapter) if adapter != "default" else None
    if folder is None:
        try:
            folder = default_adapter_path()
        except FileNotFoundError:
            return model
    cache = _ADAPTED.setdefault(model, {})  # folder -> merged copy, or None where it does not fit
    if str(folder) not in cache:
        try:
            cache[str(folder)] = merge_adapter(model, folder)
        except ValueError:
            if adapter != "default":
                raise
            cache[str(folder)] = None
    return cache[str(folder)] or model


def _generate(model, tokenizer, ids: list[int], max_new_tokens: int) -> str:
    room = model.config.max_position_embeddings - len(ids)
    if room < 1:
        raise ValueError(f"the prompt is {len(ids)} tokens; the model's context holds "
                         f"{model.config.max_position_embeddings}: pass fewer or shorter documents")
    device = next(model.parameters()).device
    out = model.generate(torch.tensor([ids], device=device), max_new_tokens=min(max_new_tokens, room),
                         do_sample=False, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


# Quoting. The adapter taught the bundled model to cite the right document and to write a count or a
# colour, but not to copy an invented name letter by letter (its five layers grew no copying circuit in the
# CPU training we could afford; scripts/train_grounded.py's docstring has the measurements). So `answer`
# narrows its greedy choice on the `Grounded answer:` line, the line it returns: inside a `<co: N>` span
# only tokens that keep the span a quote of document N (starting and ending on word boundaries, within one
# sentence), and outside the spans only words that stand in the question or the documents. The model still
# decides which words to write, which to cite and where to stop; the decoder keeps them verbatim.
_OPEN_SPAN = re.compile(r"<co:\s*(\d+)\s*>")
_SENTENCE_END = re.compile(r"[.!?](\s|$)|\n")
_WORD = re.compile(r"[\w']+")
_NOT_PLAIN = re.compile(r"[^\w' .,!?]")  # anything but words, spaces and plain punctuation


def open_span(text: str) -> tuple[int, str] | None:
    """(document number, the span's text so far) when `text` ends inside an open `<co: N>` span of its
    `Grounded answer:` line; None anywhere else (other lines, between spans, or once a tag has begun)."""
    line = text.rsplit("\n", 1)[-1]
    spans = list(_OPEN_SPAN.finditer(line)) if line.startswith("Grounded answer:") else []
    if not spans or "<" in line[spans[-1].end():]:
        return None
    return int(spans[-1].group(1)), line[spans[-1].end():]


def is_quote(text: str, sources: list[str], whole: bool = False) -> bool:
    """Does `text` stand in one of `sources`, starting at the start of a word (not with a space) and,
    with whole=True, ending at the end of one, within one sentence?"""
    if not text.strip() or text[0].isspace() or _SENTENCE_END.search(text) or (whole and text[-1] in ".!?"):
        return False
    pattern = ((r"(?<![\w'])" if text[0].isalnum() else "") + re.escape(text)  # "Mia's": "s" starts no word
               + (r"(?![\w'])" if whole and text[-1].isalnum() else ""))
    return any(text in source and re.search(pattern, source) for source in sources)


def quote_mask(span: str, sources: list[str], pieces: list[str]) -> tuple[torch.Tensor, bool]:
    """(allowed, may_close): which tokens (by their text `pieces`) extend `span` into a longer quote of
    `sources`, and whether the span may end here (it is a quote of whole words)."""
    allowed = torch.tensor([bool(p) and "<" not in p and is_quote(span + p, sources) for p in pieces])
    return allowed, is_quote(span, sources, whole=True)


def word_mask(text: str, words: set[str], pieces: list[str]) -> tuple[torch.Tensor, bool]:
    """(allowed, word_ends): which tokens keep every word of `text` + piece one of `words` (the last word
    may be unfinished: a prefix of one), adding nothing but spaces and plain punctuation; and whether
    `text` ends on a finished word (or none), where a tag, a new line or the end may come."""
    prefixes = {w[:i] for w in words for i in range(1, len(w) + 1)}
    tail = re.search(r"[\w']*$", text).group(0)
    allowed = []
    for p in pieces:
        found = _WORD.findall(tail + p)
        open_word = found.pop() if found and re.search(r"[\w']$", tail + p) else ""
        allowed.append(bool(p) and not _NOT_PLAIN.search(p) and all(w in words for w in found)
                       and (not open_word or open_word in prefixes))
    return torch.tensor(allowed), tail == "" or tail in words


def _token_pieces(tokenizer) -> list[str]:
    if getattr(tokenizer, "_quote_pieces", None) is None:
        tokenizer._quote_pieces = [tokenizer.decode([t]) for t in range(tokenizer.vocab_size)]
    return tokenizer._quote_pieces


@torch.no_grad()
def generate_quoting(model, tokenizer, ids: list[int], documents: list[dict], max_new_tokens: int,
                     question: str = "") -> str:
    """Greedy decoding, as `_generate`, except on the `Grounded answer:` line: every `<co: N>` span is a
    quote of documents[N] (title or text; `quote_mask`), and when the model would end a span (a tag's "<",
    or the end of its output) the exact closing tag is written; outside the spans every word stands in
    `question` or in one of `documents` (`word_mask`)."""
    from .model import KVCache

    room = model.config.max_position_embeddings - len(ids)
    if room < 1:
        raise ValueError(f"the prompt is {len(ids)} tokens; the model's context holds "
                         f"{model.config.max_position_embeddings}: pass fewer or shorter documents")
    pieces, eos, vocab = _token_pieces(tokenizer), tokenizer.eos_token_id, model.config.vocab_size
    pieces = (pieces + [""] * vocab)[:vocab]  # rows the tokenizer never writes are never chosen here
    stops = torch.tensor([p.startswith("<") for p in pieces])  # where a tag, or the output, may end
    newline = torch.tensor(["\n" in p for p in pieces])
    if eos is not None:
        stops[eos] = True
    words = set(_WORD.findall(question)) | {w for d in documents for v in d.values() for w in _WORD.findall(str(v))}
    device = next(model.parameters()).device
    cache, out = KVCache(), []
    step = lambda new: model(torch.tensor([new], device=device), cache=cache, logits_to_keep=1).logits[0, -1].float()  # noqa: E731
    logits, limit = step(ids), min(max_new_tokens, room)
    while len(out) < limit:
        text = tokenizer.decode(out, skip_special_tokens=True)
        line, inside, allowed = text.rsplit("\n", 1)[-1], open_span(text), None
        if inside is not None:
            if inside[0] < len(documents):  # a span citing no document of the prompt gets no rule
                number = inside[0]
                allowed, may_close = quote_mask(inside[1], [str(documents[number].get(k, "")) for k in ("text", "title")], pieces)
                allowed = allowed | stops if may_close else allowed
        elif line.startswith("Grounded answer:") and not re.search(r"<[^>]*$", line):  # between spans, not in a tag
            allowed, word_ends = word_mask(line[len("Grounded answer:"):], words, pieces)
            allowed = allowed | stops | newline if word_ends else allowed
        ruled = allowed is not None and bool(allowed.any())
        choice = int(logits.cpu().masked_fill(~allowed, float("-inf")).argmax()) if ruled else int(logits.argmax())
        if ruled and inside is not None and stops[choice]:  # the model ends the quote: write its tag
            tag = tokenizer.encode(f"</co: {inside[0]}>", add_special_tokens=False)[:limit - len(out)]
            out += tag
            logits = step(tag)
            continue
        if choice == eos:
            break
        out.append(choice)
        logits = step([choice])
    return tokenizer.decode(out, skip_special_tokens=True)


def check_documents(documents) -> list[dict]:
    if not isinstance(documents, (list, tuple)) or not all(isinstance(d, dict) for d in documents):
        raise ValueError("documents must be a list of dicts such as {'title': ..., 'text': ...}")
    return list(documents)


def check_tools(tools) -> dict:
    """Tool names (or {"name": ...} specs) -> {name: function}; only the calculator is built in."""
    found = {}
    for tool in tools:
        name = tool.get("name") if isinstance(tool, dict) else tool
        if name not in TOOLS:
            raise ValueError(f"unknown tool {name!r}; known tools: {', '.join(TOOLS)}")
        found[name] = calculator
    return found


def grounded_prompt(tokenizer, question: str, documents: list[dict], room: int, k: int = 3):
    """(prompt ids, chosen): as many of the k best documents (BM25) as fit in `room` tokens, best first,
    numbered in the prompt 0..n-1; chosen[n] is the caller's index of prompt document n. The training
    script builds its prompts with this function too, so the model is trained on the prompts `answer` writes."""
    chosen = retrieve(question, documents, k=min(k, len(documents)))
    while True:
        ids = render_grounded(tokenizer, question, [documents[i] for i in chosen], room)
        if len(ids) <= room or len(chosen) == 1:
            return ids, chosen
        chosen = chosen[:-1]


def answer(model, tokenizer, question: str, documents=None, tools=None, adapter="default",
           max_new_tokens: int = 96, k: int = 3, max_steps: int = 3, quote: bool = True) -> dict:
    """Answer `question`, grounded in `documents` (cited by their 0-based index) and/or with `tools`
    (names such as ["calculator"]). Greedy, so the same question gives the same answer. With quote=True
    each cited phrase is a quote of the document it cites and the rest of the answer uses only words of the
    question and the documents (`generate_quoting`); quote=False decodes freely.

    Returns {"answer": str, "citations": [{"text": str, "documents": [int, ...]}],
    "tool_calls": [{"name": str, "parameters": {...}, "result": ...}]}."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string")
    documents = check_documents(documents) if documents is not None else None
    functions = check_tools(tools) if tools else {}
    model = adapted(model, adapter)
    context = model.config.max_position_embeddings
    tool_calls: list[dict] = []

    if functions:
        messages = [{"role": "user", "content": question.strip()}]
        specs = [TOOLS[name] for name in functions]
        for _ in range(max_steps):  # a small state machine: Action -> run -> results turn -> ...
            output = _generate(model, tokenizer, render_tools(tokenizer, messages, specs, context - max_new_tokens),
                               max_new_tokens)
            calls = parse_action(output)
            if calls is None:  # the model answered
                text = parse_grounded(output)["text"]
                if not documents:
                    return {"answer": text, "citations": [], "tool_calls": tool_calls}
                break
            calls = [c for c in calls if c["tool_name"] != "directly-answer"]
            if not calls:
                break
            ran = [run_tool(c, functions) for c in calls]
            tool_calls += ran
            messages += [{"role": "assistant", "content": output.strip()},
                         {"role": "tool", "content": tool_results_text(ran)}]
        if not documents:  # out of steps: whatever the last turn said
            return {"answer": parse_grounded(output)["text"], "citations": [], "tool_calls": tool_calls}

    if not documents:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question.strip()}],
                                            add_generation_prompt=True)
        return {"answer": _generate(model, tokenizer, ids, max_new_tokens).strip(), "citations": [],
                "tool_calls": tool_calls}

    ids, chosen = grounded_prompt(tokenizer, question.strip(), documents, context - max_new_tokens, k)
    output = (generate_quoting(model, tokenizer, ids, [documents[i] for i in chosen], max_new_tokens, question) if quote
              else _generate(model, tokenizer, ids, max_new_tokens))
    parsed = parse_grounded(output)
    citations = [{"text": c["text"], "documents": sorted(chosen[n] for n in c["documents"] if n < len(chosen))}
                 for c in parsed["citations"]]
    return {"answer": parsed["text"], "citations": [c for c in citations if c["documents"]], "tool_calls": tool_calls}
