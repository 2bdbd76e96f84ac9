"""Tokenizer: ids, batches, chat templates, loading errors; real Command-R files where present."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minicohere.tokenizer import BUILTIN_CHAT_TEMPLATES, Tokenizer, default_tokenizer_path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "command-r"
sys.path.insert(0, str(REPO / "scripts"))

CONVERSATIONS = [
    [{"role": "user", "content": "Hello, how are you?"}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "  Hi there  "},
     {"role": "assistant", "content": "Hello!\n"},
     {"role": "user", "content": "What is 12 plus 30?"}],
    [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
     {"role": "user", "content": "three"}, {"role": "assistant", "content": "four"}],
]

PENGUIN_CHAT = [{"role": "user", "content": "Whats the biggest penguin in the world?"}]
PENGUIN_DOCS = [{"title": "Tall penguins", "text": "Emperor penguins are the tallest."},
                {"title": "Penguin habitats", "text": "Emperor penguins only live in Antarctica."}]
PENGUIN_TOOLS = [
    {"name": "internet_search",
     "description": "Returns a list of relevant document snippets for a textual query retrieved from the internet",
     "parameter_definitions": {"query": {"description": "Query to search the internet with", "type": "str",
                                         "required": True}}},
    {"name": "directly_answer",
     "description": "Calls a standard (un-augmented) AI chatbot to generate a response given the conversation history",
     "parameter_definitions": {}},
]

# The prompts below are Command-R's documented renderings of the penguin examples (the
# docstrings of transformers' Cohere tokenizer; transformers' own tests check the same
# strings against the checkpoint's templates). One correction: the grounded-generation
# docstring leaves out the "# System Preamble" line that the checkpoint's rag template
# (and transformers' test of it) does write; we follow the checkpoint.
_PREAMBLE = (
    "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|># Safety Preamble\n"
    "The instructions in this section override those in the task description and style guide sections. "
    "Don't answer questions that are harmful or immoral.\n\n"
    "# System Preamble\n## Basic Rules\n"
    "You are a powerful conversational AI trained by Cohere to help people. You are augmented by a number of "
    "tools, and your job is to use and consume the output of these tools to best help the user. You will see a "
    "conversation history between yourself and a user, ending with an utterance from the user. You will then "
    "see a specific instruction instructing you what kind of response to generate. When you answer the user's "
    "requests, you cite your sources in your answers, according to those instructions.\n\n"
    "# User Preamble\n## Task and Context\n"
    "You help people answer their questions and other requests interactively. You will be asked a very wide "
    "array of requests on all kinds of topics. You will be equipped with a wide range of search engines or "
    "similar tools to help you, which you use to research your answer. You should focus on serving the user's "
    "needs as best you can, which will be wide-ranging.\n\n## Style Guide\n"
    "Unless the user asks for a different style of answer, you should answer in full sentences, using proper "
    "grammar and spelling."
)
_USER_TURN = "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Whats the biggest penguin in the world?<|END_OF_TURN_TOKEN|>"
_RELEVANT = ("Firstly, Decide which of the retrieved documents are relevant to the user's last input by writing "
             "'Relevant Documents:' followed by comma-separated list of document numbers. If none are relevant, "
             "you should instead write 'None'.\n")
_CITED = ("Secondly, Decide which of the retrieved documents contain facts that should be cited in a good answer "
          "to the user's last input by writing 'Cited Documents:' followed a comma-separated list of document "
          "numbers. If you dont want to cite any of them, you should instead write 'None'.\n")
_THIRDLY = ("Thirdly, Write 'Answer:' followed by a response to the user's last input in high quality natural "
            "english. Use the retrieved documents to help you. Do not insert any citations or grounding markup.\n")
_FINALLY = ("Finally, Write 'Grounded answer:' followed by a response to the user's last input in high quality "
            "natural english. Use the symbols <co: doc> and </co: doc> to indicate when a fact comes from a "
            "document in the search result, e.g <co: 0>my fact</co: 0> for a fact from document 0.")
DOCUMENTED_RAG_PROMPT = (
    _PREAMBLE + "<|END_OF_TURN_TOKEN|>" + _USER_TURN
    + "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|><results>\n"
    "Document: 0\ntitle: Tall penguins\ntext: Emperor penguins are the tallest.\n\n"
    "Document: 1\ntitle: Penguin habitats\ntext: Emperor penguins only live in Antarctica.\n"
    "</results><|END_OF_TURN_TOKEN|>"
    "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>Carefully perform the following instructions, in order, starting "
    "each with a new line.\n" + _RELEVANT + _CITED + _THIRDLY + _FINALLY
    + "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
)
DOCUMENTED_TOOL_USE_PROMPT = (
    _PREAMBLE + "\n\n## Available Tools\nHere is a list of tools that you have available to you:\n\n"
    '```python\ndef internet_search(query: str) -> List[Dict]:\n    """Returns a list of relevant document '
    'snippets for a textual query retrieved from the internet\n\n    Args:\n        query (str): Query to search '
    'the internet with\n    """\n    pass\n```\n\n'
    '```python\ndef directly_answer() -> List[Dict]:\n    """Calls a standard (un-augmented) AI chatbot to '
    'generate a response given the conversation history\n    """\n    pass\n```'
    "<|END_OF_TURN_TOKEN|>" + _USER_TURN
    + "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>Write 'Action:' followed by a json-formatted list of actions that "
    "you want to perform in order to produce a good response to the user's last input. You can use any of the "
    "supplied tools any number of times, but you should aim to execute the minimum number of necessary actions "
    "for the input. You should use the `directly-answer` tool if calling the other tools is unnecessary. The "
    "list of actions you want to call should be formatted as a list of json objects, for example:\n"
    '```json\n[\n    {\n        "tool_name": title of the tool in the specification,\n        "parameters": a '
    "dict of parameters to input into the tool as they are defined in the specs, or {} if it takes no "
    'parameters\n    }\n]```<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>'
)


def _shared(name):
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (Cohere's reference files live outside the repo, on course machines only)")
    return path


@pytest.fixture(scope="module")
def real():
    # the 255k-token tokenizer takes about a second to load: once per module
    return Tokenizer.from_file(_shared("tokenizer.json.gz"))


@pytest.fixture(scope="module")
def own():
    return Tokenizer.default()


# ==================================================================================
# the real Command-R tokenizer

def test_real_ids_match_the_published_ones(real):
    assert real.encode("Hello this is a test") == [5, 28339, 2075, 1801, 1671, 3282]
    assert (real.bos_token_id, real.eos_token_id, real.pad_token_id) == (5, 255001, 0)
    assert real.vocab_size == 255_029
    assert real.token_to_id("<|CHATBOT_TOKEN|>") == 255007 and real.id_to_token(255008) == "<|SYSTEM_TOKEN|>"


def test_real_chat_template_ids_have_one_bos(real):
    ids = real.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True)
    assert ids == [5, 255000, 255006, 28339, 19, 2991, 1955, 1933, 38, 255001, 255000, 255007]
    assert ids.count(real.bos_token_id) == 1


def test_encoding_a_rendered_prompt_with_special_tokens_doubles_the_bos(real):
    # why apply_chat_template encodes with add_special_tokens=False
    text = real.apply_chat_template(CONVERSATIONS[0], tokenize=False)
    assert real.encode(text)[:2] == [5, 5]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_builtin_default_template_renders_like_the_checkpoints(real, conversation, add_generation_prompt):
    checkpoint_template = _shared("chat_template.jinja").read_text()
    expected = real.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt,
                                        tokenize=False, template=checkpoint_template)
    got = real.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert got == expected


def test_r_plus_tool_use_template_renders_with_tools_and_a_tool_turn(real):
    template = _shared("tool_use_template.jinja").read_text()
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                       "required": ["city"]}}}]
    messages = [{"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": None,
                 "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                                  "arguments": {"city": "Oslo"}}}]},
                {"role": "tool", "content": '{"temp_c": 3}'}]
    text = real.apply_chat_template(messages, tools=tools, template=template, tokenize=False,
                                    add_generation_prompt=True)
    assert "def get_weather(city: str) -> List[Dict]:" in text
    assert '"tool_name": "get_weather"' in text and '"city": "Oslo"' in text
    assert '<|SYSTEM_TOKEN|><results>\n{"temp_c": 3}</results><|END_OF_TURN_TOKEN|>' in text
    assert text.endswith("<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>")
    ids = real.apply_chat_template(messages, tools=tools, template=template, add_generation_prompt=True)
    assert ids.count(real.bos_token_id) == 1 and real.decode(ids) == text


# ==================================================================================
# the built-in grounded-generation and tool-use templates (tokenizer-independent text)

def test_grounded_generation_renders_the_documented_prompt(own):
    text = own.apply_chat_template(PENGUIN_CHAT, documents=PENGUIN_DOCS, add_generation_prompt=True,
                                   tokenize=False)
    assert text == DOCUMENTED_RAG_PROMPT


def test_fast_citation_mode_skips_the_uncited_answer(own):
    text = own.apply_chat_template(PENGUIN_CHAT, documents=PENGUIN_DOCS, citation_mode="fast",
                                   add_generation_prompt=True, tokenize=False)
    assert text == DOCUMENTED_RAG_PROMPT.replace(_THIRDLY, "")


def test_tool_use_renders_the_documented_prompt(own):
    text = own.apply_chat_template(PENGUIN_CHAT, tools=PENGUIN_TOOLS, add_generation_prompt=True, tokenize=False)
    assert text == DOCUMENTED_TOOL_USE_PROMPT


def test_optional_tool_parameters_render_as_optional(own):
    tools = [{"name": "f", "description": "d", "parameter_definitions": {
        "a": {"type": "int", "description": "x", "required": True}, "b": {"type": "str", "description": "y"}}}]
    text = own.apply_chat_template(PENGUIN_CHAT, tools=tools, tokenize=False)
    assert "def f(a: int, b: Optional[str] = None) -> List[Dict]:" in text
    assert "        b (Optional[str]): y\n" in text


def test_system_message_replaces_the_default_rag_preamble(own):
    chat = [{"role": "system", "content": "Answer like a pirate."}] + PENGUIN_CHAT
    text = own.apply_chat_template(chat, documents=PENGUIN_DOCS, tokenize=False)
    assert "# User Preamble\nAnswer like a pirate.<|END_OF_TURN_TOKEN|>" in text
    assert "## Task and Context" not in text


def test_real_tokenizer_uses_same_rag_and_tool_text(real):
    # the checkpoint-independent templates give the same prompt whichever vocabulary
    assert real.apply_chat_template(PENGUIN_CHAT, documents=PENGUIN_DOCS, add_generation_prompt=True,
                                    tokenize=False) == DOCUMENTED_RAG_PROMPT


# ==================================================================================
# minicohere's own small tokenizer

MIXED = ["Once upon a time, Mia had 12 red kites.", "안녕 世界 مرحبا 😀", "tabs\tand\n\nnewlines   ",
         "cafe\u0301 vs café", "<|USER_TOKEN|>hi<|END_OF_TURN_TOKEN|>", "x = [1, 22, 333]"]


def test_own_tokenizer_has_command_r_special_tokens(own):
    names = ["<PAD>", "<UNK>", "<CLS>", "<SEP>", "<MASK_TOKEN>", "<BOS_TOKEN>", "<EOS_TOKEN>", "<EOP_TOKEN>"]
    assert [own.id_to_token(i) for i in range(8)] == names
    assert own.vocab_size == 4096
    assert (own.bos_token, own.eos_token, own.pad_token) == ("<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "<PAD>")
    assert (own.bos_token_id, own.pad_token_id) == (5, 0)
    for t in ["<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>",
              "<|SYSTEM_TOKEN|>"]:
        assert own.token_to_id(t) is not None, t


def test_own_tokenizer_splits_digits_one_by_one(own):
    ids = own.encode("2024", add_special_tokens=False)
    assert [own.id_to_token(i) for i in ids] == ["2", "0", "2", "4"]


@pytest.mark.parametrize("text", MIXED)
def test_own_round_trip_up_to_nfc(own, text):
    import unicodedata
    ids = own.encode(text)
    assert ids[0] == own.bos_token_id and ids.count(own.bos_token_id) == 1
    assert own.decode(ids, skip_special_tokens=False) == "<BOS_TOKEN>" + unicodedata.normalize("NFC", text)


def test_own_chat_template_matches_the_turn_format(own):
    ids = own.apply_chat_template(CONVERSATIONS[1], add_generation_prompt=True)
    assert ids.count(own.bos_token_id) == 1
    assert own.decode(ids) == ("<BOS_TOKEN><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are terse.<|END_OF_TURN_TOKEN|>"
                               "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi there<|END_OF_TURN_TOKEN|>"
                               "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hello!<|END_OF_TURN_TOKEN|>"
                               "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>What is 12 plus 30?<|END_OF_TURN_TOKEN|>"
                               "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>")


def test_own_config_ships_the_three_templates():
    config = json.loads((default_tokenizer_path().parent / "tokenizer_config.json").read_text())
    assert {t["name"]: t["template"] for t in config["chat_template"]} == BUILTIN_CHAT_TEMPLATES


def test_template_without_bos_still_gets_exactly_one(own):
    ids = own.apply_chat_template(CONVERSATIONS[0], template="{{ messages[0]['content'] }}")
    assert ids == [own.bos_token_id] + own.encode("Hello, how are you?", add_special_tokens=False)


def test_batch_is_left_padded_with_a_mask(own):
    batch = own.encode_batch(["Hi", "A much longer sentence here."])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.dtype == torch.long and mask.dtype == torch.long and ids.shape == mask.shape
    short = own.encode("Hi")
    n_pad = ids.shape[1] - len(short)
    assert n_pad > 0
    assert ids[0].tolist() == [own.pad_token_id] * n_pad + short
    assert mask[0].tolist() == [0] * n_pad + [1] * len(short)
    assert mask[1].tolist() == [1] * ids.shape[1]
    # every row ends in a real token: generation continues from the last column
    assert (mask[:, -1] == 1).all()


def test_batch_right_padding_and_lists(own):
    batch = own.encode_batch(["Hi", "Hello there"], padding_side="right", return_tensors=None)
    assert batch["input_ids"][0][:len(own.encode("Hi"))] == own.encode("Hi")
    assert batch["attention_mask"][0][-1] == 0


def test_decode_accepts_a_tensor(own):
    ids = own.encode("The cat sat.")
    assert own.decode(torch.tensor(ids)) == own.decode(ids)
    with pytest.raises(ValueError, match="1-D"):
        own.decode(torch.tensor([ids]))


# -- errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("messages, match", [
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "message 1"),
    ([{"role": "assistant", "content": "a"}], "message 0"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "message 1 is a system"),
    ([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}], "message 1 has unknown role 'robot'"),
    ([{"role": "user"}], "message 0 .*string 'content'"),
    ([{"role": "user", "content": ["a"]}], "message 0"),
    ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], "message 1 has role 'tool'"),
    ([], "non-empty"),
])
def test_bad_conversations_name_the_message(own, messages, match):
    with pytest.raises(ValueError, match=match):
        own.apply_chat_template(messages)


def test_bad_template_arguments(own):
    with pytest.raises(ValueError, match="citation_mode"):
        own.apply_chat_template(PENGUIN_CHAT, documents=PENGUIN_DOCS, citation_mode="slow")
    with pytest.raises(ValueError, match="unknown chat template 'nope'"):
        own.apply_chat_template(PENGUIN_CHAT, template="nope")
    with pytest.raises(ValueError, match="documents"):
        own.apply_chat_template(PENGUIN_CHAT, documents=["not a dict"])


def test_raise_exception_in_a_template_surfaces(own):
    from jinja2.exceptions import TemplateError
    with pytest.raises(TemplateError, match="boom"):
        own.apply_chat_template(PENGUIN_CHAT, template="{{ raise_exception('boom') }}")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Tokenizer.from_file(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)  # a folder without tokenizer.json
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        Tokenizer.from_file(default_tokenizer_path(), tmp_path / "cfg.json")
    with pytest.raises(FileNotFoundError, match="no/such/dir"):
        Tokenizer.from_pretrained("./no/such/dir")


def test_bad_chat_template_in_config_is_named(tmp_path):
    cfg = tmp_path / "tokenizer_config.json"
    cfg.write_text(json.dumps({"chat_template": 42}))
    with pytest.raises(ValueError, match="chat_template"):
        Tokenizer.from_file(default_tokenizer_path(), cfg)


def test_from_pretrained_reads_a_local_folder_with_a_string_template(tmp_path):
    (tmp_path / "tokenizer.json").write_bytes(default_tokenizer_path().read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ bos_token }}X"}))
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.apply_chat_template(PENGUIN_CHAT, tokenize=False) == "<BOS_TOKEN>X"
    # names the checkpoint lacks fall back to the built-ins
    assert tok.apply_chat_template(PENGUIN_CHAT, documents=PENGUIN_DOCS, tokenize=False).startswith(_PREAMBLE)


def test_unreachable_hub_id_gives_a_clear_error():
    # a fresh interpreter, because huggingface_hub reads HF_HUB_OFFLINE when imported
    code = ("from minicohere.tokenizer import Tokenizer\n"
            "try:\n    Tokenizer.from_pretrained('nobody-here/no-such-model-xyz')\n"
            "except OSError as e:\n    print('ERR', e)\n")
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60).stdout
    assert out.startswith("ERR nobody-here/no-such-model-xyz: the hub cannot be reached (HF_HUB_OFFLINE is set)")
    assert "local folder holding tokenizer.json" in out and len(out.splitlines()) == 1


# -- the shipped assets are reproducible ------------------------------------------------

def test_retraining_reproduces_the_shipped_tokenizer(tmp_path):
    import train_tokenizer
    train_tokenizer.main(["--out", str(tmp_path)])
    assert (tmp_path / "tokenizer.json").read_bytes() == default_tokenizer_path().read_bytes()
    assert (tmp_path / "tokenizer_config.json").read_bytes() == \
        (default_tokenizer_path().parent / "tokenizer_config.json").read_bytes()


def test_corpus_is_deterministic_and_varied():
    from make_corpus import build_corpus
    train, val = build_corpus(seed=0, n_train=300, n_val=20)
    assert (train, val) == build_corpus(seed=0, n_train=300, n_val=20)
    assert build_corpus(seed=1, n_train=300, n_val=20)[0] != train
    assert len(train) == 300 and len(val) == 20 and len(set(train)) > 250
    assert not any("\n\n" in t for t in train)  # documents are blank-line separated in the files
