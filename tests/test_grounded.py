"""Grounded answers, citations and the calculator tool (minicohere.grounded, chapter 15)."""

from __future__ import annotations

import json
import re
import sys
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO

import minicohere
from minicohere import grounded
from minicohere.grounded import (calculator, format_action, format_grounded, parse_action, parse_citations,
                                 parse_grounded, render_grounded, render_tools, retrieve)

HELDOUT = REPO / "assets" / "grounded" / "heldout.jsonl"
ADAPTER = REPO / "assets" / "tiny-command-r" / "grounded-adapter"
needs_adapter = pytest.mark.skipif(not (ADAPTER / "adapter_model.safetensors").is_file(),
                                   reason="the grounded adapter is not trained yet (scripts/train_grounded.py)")


@pytest.fixture(scope="module")
def tokenizer():
    return minicohere.Tokenizer.default()


@pytest.fixture(scope="module")
def model():
    return minicohere.from_pretrained(minicohere.bundled_path("tiny-command-r"), progress=False)


def heldout(kind):
    return [r for r in map(json.loads, HELDOUT.read_text().splitlines()) if r["kind"] == kind]


# -- the parser --------------------------------------------------------------------------------------------


def test_parser_reads_all_four_fields_and_the_citation_span():
    out = parse_grounded("Relevant Documents: 0,2\nCited Documents: 2\nAnswer: Mia's kite is red.\n"
                         "Grounded answer: Mia's kite is <co: 2>red</co: 2>.")
    assert out["relevant"] == [0, 2] and out["cited"] == [2]
    assert out["answer"] == "Mia's kite is red." and out["text"] == "Mia's kite is red."
    assert out["citations"] == [{"text": "red", "documents": [2]}]
    assert out["missing"] == []


def test_parser_merges_nested_spans_into_one_citation_of_several_documents():
    text, citations = parse_citations("It is <co: 1><co: 0>red</co: 0></co: 1> and <co: 3>big</co: 3>.")
    assert text == "It is red and big."
    assert citations == [{"text": "red", "documents": [0, 1]}, {"text": "big", "documents": [3]}]


def test_parser_says_what_is_missing_and_keeps_what_it_found():
    out = parse_grounded("Cited Documents: zero\nGrounded answer: the kite is <co: 1>red and <co: 0>blue</co: 0>")
    assert out["missing"] == ["Relevant Documents", "Cited Documents", "Answer"]
    assert out["cited"] is None  # "zero" is not a list of numbers
    assert out["text"] == "the kite is red and blue"  # the unpaired tag is dropped from the text
    assert out["citations"] == [{"text": "blue", "documents": [0]}]


def test_parser_without_spans_falls_back_to_the_plain_answer_and_reports_no_citations():
    out = parse_grounded("Relevant Documents: None\nCited Documents: None\nAnswer: I do not know.\n"
                         "Grounded answer: I do not know.")
    assert out["relevant"] == [] and out["cited"] == []
    assert out["text"] == "I do not know." and out["citations"] == []
    assert out["missing"] == ["citation spans"]
    free = parse_grounded("Once upon a time, Mia went to the park.")
    assert free["text"] == "Once upon a time, Mia went to the park." and len(free["missing"]) == 4


def test_training_targets_parse_back_to_the_gold_document_and_fact():
    for example in heldout("grounded")[:50]:
        target = format_grounded(example["answer"], example["fact"], [example["gold"]])
        out = parse_grounded(target)
        assert out["missing"] == [] and out["text"] == example["answer"]
        assert out["citations"] == [{"text": example["fact"], "documents": [example["gold"]]}]


def test_format_grounded_refuses_a_fact_not_in_the_answer():
    with pytest.raises(ValueError, match="not part of the answer"):
        format_grounded("The kite is red.", "blue", [0])


# -- retrieval -----------------------------------------------------------------------------------------


def test_bm25_ranks_the_document_with_the_questions_words_first():
    documents = [{"title": "Ben's kite", "text": "Ben has a red kite."},
                 {"title": "Mia's trip", "text": "Mia went to the park."},
                 {"title": "Mia's kite", "text": "Mia has a blue kite."}]
    assert retrieve("What colour is Mia's kite?", documents, k=3) == [2, 0, 1]
    assert retrieve("What colour is Mia's kite?", documents, k=1) == [2]
    assert retrieve("anything", [], k=3) == []


def test_bm25_finds_the_gold_document_of_held_out_questions_among_thirty_documents():
    examples = heldout("grounded")[:60]
    hits = 0
    for ex in examples:
        person = ex["question"].split("'s")[0].split()[-1] if "'s" in ex["question"] else ex["question"].split()[-2]
        others = [d for other in examples if person not in json.dumps(other["documents"]) for d in other["documents"]]
        pool = others[:27] + ex["documents"]  # the example's own three last: ties would favour the others
        hits += 27 + ex["gold"] in retrieve(ex["question"], pool, k=3)
    assert hits / len(examples) >= 0.95, hits


# -- the prompt ---------------------------------------------------------------------------------------------


def test_prompt_is_command_rs_full_template_when_it_fits_and_compact_otherwise(tokenizer):
    documents = [{"title": "Mia's kite", "text": "Mia has a red kite."}]
    full = tokenizer.apply_chat_template([{"role": "user", "content": "What colour is Mia's kite?"}],
                                         documents=documents, add_generation_prompt=True)
    assert render_grounded(tokenizer, "What colour is Mia's kite?", documents, room=None) == full
    compact = render_grounded(tokenizer, "What colour is Mia's kite?", documents, room=200)
    assert len(compact) <= 200 < len(full)
    text = tokenizer.decode(compact)
    # the documents turn is written exactly as Command-R's own template writes it
    results = "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|><results>\nDocument: 0\ntitle: Mia's kite\ntext: Mia has a red kite.\n</results><|END_OF_TURN_TOKEN|>"
    assert results in text and results in tokenizer.decode(full)
    assert text.endswith("<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>")
    with pytest.raises(ValueError, match="style"):
        render_grounded(tokenizer, "q", documents, style="short")


def test_tool_prompt_feeds_the_result_back_as_commands_rs_results_turn(tokenizer):
    messages = [{"role": "user", "content": "What is 23 plus 48?"},
                {"role": "assistant", "content": format_action([{"tool_name": "calculator",
                                                                 "parameters": {"expression": "23 + 48"}}])},
                {"role": "tool", "content": grounded.tool_results_text([{"name": "calculator", "result": 71}])}]
    text = tokenizer.decode(render_tools(tokenizer, messages, [grounded.CALCULATOR], room=256))
    assert "<|SYSTEM_TOKEN|><results>\nDocument: 0\ntool_name: calculator\nresult: 71</results>" in text
    full = tokenizer.decode(render_tools(tokenizer, messages, [grounded.CALCULATOR], room=None))
    assert "def calculator(expression: str) -> List[Dict]:" in full and "result: 71</results>" in full


# -- tools ------------------------------------------------------------------------------------------------------


def test_calculator_does_arithmetic_and_nothing_else():
    assert calculator("23 + 48") == 71 and calculator("(2 + 3) * 4 - 1") == 19 and calculator("7 / 2") == 3.5
    assert calculator("8 / 2") == 4 and isinstance(calculator("8 / 2"), int)
    for bad in ("__import__('os').system('true')", "2 ** 10", "x + 1", "[1, 2]", "1 +", "", "abs(-1)"):
        with pytest.raises(ValueError):
            calculator(bad)
    with pytest.raises(ValueError, match="divides by zero"):
        calculator("1 / (2 - 2)")


def test_action_parser_reads_compact_and_command_rs_indented_json():
    compact = format_action([{"tool_name": "calculator", "parameters": {"expression": "1 + 2"}}])
    assert parse_action(compact) == [{"tool_name": "calculator", "parameters": {"expression": "1 + 2"}}]
    indented = ('Action: ```json\n[\n    {\n        "tool_name": "calculator",\n        "parameters": '
                '{\n            "expression": "3 * 4"\n        }\n    }\n]```')
    assert parse_action(indented) == [{"tool_name": "calculator", "parameters": {"expression": "3 * 4"}}]
    assert parse_action("Answer: 71") is None
    assert parse_action("Action: ```json\n[{\"tool_name\": \"calculator\",") is None
    assert parse_action('Action: [{"name": "calculator"}, {"tool_name": "calculator", "parameters": {}}]') == \
        [{"tool_name": "calculator", "parameters": {}}]


class ScriptedModel(torch.nn.Module):
    """Stands in for a model: each generate call returns the next scripted turn, and records the prompt."""

    def __init__(self, tokenizer, turns, context=256):
        super().__init__()
        self.tokenizer, self.turns, self.prompts = tokenizer, list(turns), []
        self.config = SimpleNamespace(max_position_embeddings=context)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def generate(self, input_ids, max_new_tokens, **options):
        self.prompts.append(self.tokenizer.decode(input_ids[0]))
        new = self.tokenizer.encode(self.turns.pop(0), add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return torch.cat([input_ids, torch.tensor([new[:max_new_tokens]])], dim=1)


def test_tool_loop_runs_the_call_feeds_the_result_back_and_returns_the_answer(tokenizer):
    fake = ScriptedModel(tokenizer, [format_action([{"tool_name": "calculator", "parameters": {"expression": "23 + 48"}}]),
                                     "Answer: 23 plus 48 is 71."])
    out = minicohere.answer(fake, tokenizer, "What is 23 plus 48?", tools=["calculator"], adapter=None)
    assert out == {"answer": "23 plus 48 is 71.", "citations": [],
                   "tool_calls": [{"name": "calculator", "parameters": {"expression": "23 + 48"}, "result": 71}]}
    assert "result: 71</results>" not in fake.prompts[0] and "result: 71</results>" in fake.prompts[1]


def test_tool_loop_turns_a_failing_call_into_a_result_the_model_reads(tokenizer):
    fake = ScriptedModel(tokenizer, [format_action([{"tool_name": "calculator", "parameters": {"expression": "1 / 0"}},
                                                    {"tool_name": "search", "parameters": {}}]),
                                     "Answer: I cannot work that out."], context=512)
    out = minicohere.answer(fake, tokenizer, "What is 1 over 0?", tools=["calculator"], adapter=None,
                            max_new_tokens=150)  # two calls take ~130 tokens of this tokenizer
    assert [c["result"] for c in out["tool_calls"]] == [{"error": "'1 / 0' divides by zero"},
                                                       {"error": "unknown tool 'search'"}]
    assert "divides by zero" in fake.prompts[1] and out["answer"] == "I cannot work that out."


def test_citations_are_mapped_back_from_the_prompts_order_to_the_callers(tokenizer):
    documents = [{"title": "Ben's kite", "text": "Ben has a red kite."},
                 {"title": "Mia's trip", "text": "Mia went to the park."},
                 {"title": "Mia's kite", "text": "Mia has a blue kite."}]
    # BM25 puts document 2 first, so the model sees it as document 0
    fake = ScriptedModel(tokenizer, [format_grounded("Mia's kite is blue.", "blue", [0])])
    out = minicohere.answer(fake, tokenizer, "What colour is Mia's kite?", documents=documents, adapter=None,
                            quote=False)  # the scripted model runs through generate, not the quoting decoder
    assert "Document: 0\ntitle: Mia's kite" in fake.prompts[0]
    assert out == {"answer": "Mia's kite is blue.", "citations": [{"text": "blue", "documents": [2]}],
                   "tool_calls": []}


def test_answer_refuses_bad_input_before_running_the_model(tokenizer):
    fake = ScriptedModel(tokenizer, [])
    with pytest.raises(ValueError, match="non-empty"):
        minicohere.answer(fake, tokenizer, "  ")
    with pytest.raises(ValueError, match="unknown tool 'web'"):
        minicohere.answer(fake, tokenizer, "q", tools=["web"])
    with pytest.raises(ValueError, match="list of dicts"):
        minicohere.answer(fake, tokenizer, "q", documents=["Mia has a kite."])
    assert fake.prompts == []


# -- quoting: cited spans copied from the cited document --------------------------------------------------


def test_open_span_is_found_only_inside_an_open_span_of_the_grounded_answer_line():
    assert grounded.open_span("Answer: x\nGrounded answer: It is <co: 2>Snac") == (2, "Snac")
    assert grounded.open_span("Grounded answer: It is <co: 2>") == (2, "")
    assert grounded.open_span("Grounded answer: It is <co: 2>Snackie</co: 2>.") is None   # closed
    assert grounded.open_span("Grounded answer: It is <co: 2>Snackie</") is None          # closing begun
    assert grounded.open_span("Answer: It is <co: 2>Snac") is None                       # another line
    assert grounded.open_span("Grounded answer: <co: 0>a</co: 0> and <co: 1>b") == (1, "b")


def test_a_quote_starts_and_ends_on_word_boundaries_within_one_sentence():
    sources = ["Mia has a cat called Snackie. It sleeps."]
    assert grounded.is_quote("Snac", sources) and not grounded.is_quote("Snac", sources, whole=True)
    assert grounded.is_quote("Snackie", sources, whole=True)
    assert not grounded.is_quote("nackie", sources)                 # starts inside a word
    assert not grounded.is_quote("Snackie. It", sources)            # runs into the next sentence
    assert not grounded.is_quote("Snackie.", sources, whole=True)   # the full stop stays outside
    assert not grounded.is_quote("Snackey", sources) and not grounded.is_quote("", sources)


def test_quote_mask_allows_exactly_the_tokens_that_keep_the_span_a_quote():
    pieces = ["Sn", "ack", "ie", "ie.", "Mia", " has", "<", "cat", " called", "x"]
    allowed, may_close = grounded.quote_mask("Sn", ["Mia has a cat called Snackie."], pieces)
    assert [p for p, ok in zip(pieces, allowed.tolist()) if ok] == ["ack"] and not may_close
    allowed, may_close = grounded.quote_mask("", ["Mia has a cat called Snackie."], pieces)
    assert [p for p, ok in zip(pieces, allowed.tolist()) if ok] == ["Sn", "Mia", "cat"] and not may_close
    allowed, may_close = grounded.quote_mask("Snackie", ["Mia has a cat called Snackie."], pieces)
    assert not allowed.any() and may_close


class PreferringModel(torch.nn.Module):
    """A stand-in model whose next token is the next one of `script` (then eos), whatever it was fed,
    and whose second choice is always `fallback`: enough to see what the quoting decoder overrides."""

    def __init__(self, tokenizer, script: str, fallback: int):
        super().__init__()
        self.config = SimpleNamespace(max_position_embeddings=256, vocab_size=tokenizer.vocab_size)
        self.script = tokenizer.encode(script, add_special_tokens=False)
        self.eos, self.fallback, self.calls = tokenizer.eos_token_id, fallback, 0
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, cache=None, logits_to_keep=0):
        token = self.script[self.calls] if self.calls < len(self.script) else self.eos
        self.calls += 1
        logits = torch.zeros(1, ids.shape[1], self.config.vocab_size)
        logits[..., self.fallback] = 1.0
        logits[..., token] = 2.0
        return SimpleNamespace(logits=logits)


def test_the_quoting_decoder_keeps_a_quote_and_writes_the_closing_tag_the_model_left_out(tokenizer):
    document = {"title": "Mia's cat", "text": "Mia has a cat called Snackie."}
    # the script stops right after the name: the decoder closes the span with the tag it opened
    question = "What is Mia's cat called?"
    fake = PreferringModel(tokenizer, "Grounded answer: Mia's cat is called <co: 0>Snackie", fallback=tokenizer.eos_token_id)
    assert grounded.generate_quoting(fake, tokenizer, [5], [document], 40, question) == \
        "Grounded answer: Mia's cat is called <co: 0>Snackie</co: 0>"
    # the script invents a longer name: inside the span only quotes of the document are allowed
    # ("Snackieboo": its third token "ieb" is no quote; the decoder takes the best one that is, and the
    # span ends where the model's second choice, eos, is allowed: at the end of the word)
    free = PreferringModel(tokenizer, "Grounded answer: Mia's cat is called <co: 0>Snackieboo", fallback=tokenizer.eos_token_id)
    quoted = grounded.generate_quoting(free, tokenizer, [5], [document], 40, question)
    assert quoted == "Grounded answer: Mia's cat is called <co: 0>Snackie</co: 0>", quoted


def test_outside_the_spans_the_grounded_answer_uses_only_the_questions_and_documents_words(tokenizer):
    document = {"title": "Mia's cat", "text": "Mia has a cat called Snackie."}
    # the script names another person ("Milo") and adds a quotation mark; neither survives
    fake = PreferringModel(tokenizer, 'Grounded answer: "Milo\'s cat is called <co: 0>Snackie</co: 0>.',
                           fallback=tokenizer.eos_token_id)
    out = grounded.generate_quoting(fake, tokenizer, [5], [document], 40, "What is Mia's cat called?")
    assert "Milo" not in out and '"' not in out, out
    assert set(re.findall(r"[\w']+", re.sub(r"</?co: \d+>", "", out.split(":", 1)[1]))) <= \
        set(re.findall(r"[\w']+", "What is Mia's cat called? Mia has a cat called Snackie. Mia's cat")), out
    allowed, ends = grounded.word_mask(" Mia's ca", {"Mia's", "cat", "called"}, ["t", "lled", "r", " is", ".", '"', "t."])
    assert allowed.tolist() == [True, True, False, False, False, False, True] and not ends


@needs_adapter
def test_quoting_makes_the_adapter_copy_invented_names_it_cannot_copy_freely(model, tokenizer):
    """The shipped adapter cites the right document but writes an invented name of its own for a pet; with
    quoting (answer's default) it writes the document's name, and every cited phrase is a quote of the
    document it cites."""
    pets = [ex for ex in heldout("grounded") if ex["question"].endswith("called?")][:6]
    free = [minicohere.answer(model, tokenizer, ex["question"], documents=ex["documents"], quote=False) for ex in pets]
    quoted = [minicohere.answer(model, tokenizer, ex["question"], documents=ex["documents"]) for ex in pets]
    assert sum(ex["fact"] in r["answer"] for r, ex in zip(free, pets)) == 0, free
    assert sum(ex["fact"] in r["answer"] for r, ex in zip(quoted, pets)) >= 4, quoted
    for r, ex in zip(quoted, pets):
        for c in r["citations"]:
            cited = [ex["documents"][d] for d in c["documents"]]
            assert all(grounded.is_quote(c["text"], [d["text"], d["title"]], whole=True) for d in cited), r


# -- the shipped adapter ---------------------------------------------------------------------------------------


@needs_adapter
def test_the_adapter_is_merged_into_a_copy_and_the_base_model_is_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = grounded.adapted(model)
    assert merged is not model and grounded.adapted(model) is merged  # cached
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(k.endswith("proj.weight") for k in changed)
    assert grounded.adapted(model, adapter=None) is model


@needs_adapter
def test_the_adapter_is_peft_format_and_peft_gives_the_same_logits(model):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(minicohere.bundled_path("tiny-command-r"), dtype=torch.float32)
    reference = peft.PeftModel.from_pretrained(reference, str(ADAPTER)).eval()
    ids = torch.tensor([minicohere.Tokenizer.default().encode("What colour is Mia's kite?")])
    with torch.no_grad():
        expected = reference(ids).logits
        got = grounded.adapted(model)(ids).logits
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


@needs_adapter
def test_the_shipped_adapter_writes_the_format_and_cites_the_answering_document_of_held_out_questions(model, tokenizer):
    """Held-out people and questions: the adapter writes Command-R's four lines with a citation span, and
    cites the one document that holds the answer far more often than chance (1 in 3); the base model
    writes no citation at all."""
    examples = heldout("grounded")[:12]
    right = 0
    for ex in examples:
        ids, chosen = grounded.grounded_prompt(tokenizer, ex["question"], ex["documents"], 256 - 96)
        parsed = parse_grounded(grounded._generate(grounded.adapted(model), tokenizer, ids, 96))
        assert parsed["missing"] == [], parsed
        right += {chosen[n] for c in parsed["citations"] for n in c["documents"] if n < len(chosen)} == {ex["gold"]}
    assert right >= 10, right
    for ex in examples[:3]:
        assert minicohere.answer(model, tokenizer, ex["question"], documents=ex["documents"], adapter=None)["citations"] == []


@needs_adapter
def test_the_shipped_adapter_calls_the_calculator_for_held_out_sums(model, tokenizer):
    """The adapter answers a held-out sum with Command-R's Action: one calculator call on the question's two
    numbers, and then a final answer holding the calculator's total."""
    for ex in heldout("sum")[:5]:
        out = minicohere.answer(model, tokenizer, ex["question"], tools=["calculator"])
        assert len(out["tool_calls"]) >= 1 and out["tool_calls"][0]["name"] == "calculator", out
        assert out["tool_calls"][0]["parameters"] == {"expression": ex["expression"]}, out
        assert out["tool_calls"][0]["result"] == ex["result"] and str(ex["result"]) in out["answer"], out
        base = minicohere.answer(model, tokenizer, ex["question"], tools=["calculator"], adapter=None)
        assert not base["tool_calls"], base


def test_the_data_splits_share_no_question_and_no_person():
    sys.path.insert(0, str(REPO / "scripts"))
    from make_grounded_data import HELDOUT_NAMES, build

    train, held = build(seed=0)
    assert held == list(map(json.loads, HELDOUT.read_text().splitlines()))  # the shipped file is the seed-0 build
    assert not {r["question"] for r in train} & {r["question"] for r in held}
    train_text = " ".join(json.dumps(r) for r in train if r["kind"] == "grounded")
    assert not [n for n in HELDOUT_NAMES if f'"{n} ' in train_text or f"{n}'s" in train_text]
    assert not {r["expression"] for r in train if r["kind"] == "sum"} & {r["expression"] for r in held if r["kind"] == "sum"}
    for r in held:
        if r["kind"] == "grounded":
            holding = [i for i, d in enumerate(r["documents"]) if re.search(rf"\b{re.escape(r['fact'])}\b", d["text"])]
            assert holding == [r["gold"]], r


def test_a_larger_training_split_keeps_the_shipped_held_out_sums_out(tmp_path):
    """Another size draws other held-out sums, so --train-only drops the training sums whose number pair
    the shipped held-out split asks: with nearly all 8,000 pairs drawn, about a hundred are dropped."""
    sys.path.insert(0, str(REPO / "scripts"))
    import make_grounded_data

    make_grounded_data.main(["--n-train", "50", "--n-train-sums", "7900", "--train-only", "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]
    train = list(map(json.loads, (tmp_path / "train.jsonl").read_text().splitlines()))
    held = list(map(json.loads, HELDOUT.read_text().splitlines()))
    sums = {r["expression"] for r in train if r["kind"] == "sum"}
    assert sum(r["kind"] == "grounded" for r in train) == 50 and 7700 < len(sums) < 7900
    assert not sums & {r["expression"] for r in held if r["kind"] == "sum"}
    assert not {r["question"] for r in train} & {r["question"] for r in held}
