"""Command-R's tokenizer and chat templates.

`Tokenizer` wraps the fast `tokenizers` library (the from-scratch version of the same
algorithm lives in `minicohere.bpe`) and adds what a model needs around it: the special
token ids, left-padded batches for generation, and Command-R's Jinja chat templates
(plain chat, grounded generation with documents, tool use).

    tok = Tokenizer.from_pretrained("CohereForAI/c4ai-command-r-v01")   # or a local folder
    tok = Tokenizer.default()                                           # minicohere's 4k one
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi!"}], add_generation_prompt=True)
"""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2
import torch
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as _FastTokenizer


# --------------------------------------------------------------------------------------
# Built-in chat templates. They render exactly the prompts of Command-R's own templates
# (the strings the model was trained on) but are written for this project. They are used
# when a checkpoint's tokenizer_config.json has no template of the requested name.

_TURN = "<|START_OF_TURN_TOKEN|>"
_END = "<|END_OF_TURN_TOKEN|>"

# Plain chat: an optional system turn, then user and assistant turns, contents stripped.
DEFAULT_CHAT_TEMPLATE = r"""
{{- bos_token -}}
{%- set turns = messages -%}
{%- if messages and messages[0]['role'] == 'system' -%}
    {{- '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' ~ messages[0]['content'] ~ '<|END_OF_TURN_TOKEN|>' -}}
    {%- set turns = messages[1:] -%}
{%- endif -%}
{%- for message in turns -%}
    {%- if (message['role'] == 'user') != loop.index0 is even -%}
        {{- raise_exception('roles must alternate user/assistant/user/assistant/...') -}}
    {%- endif -%}
    {%- if message['role'] == 'user' -%}
        {{- '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' ~ message['content'] | trim ~ '<|END_OF_TURN_TOKEN|>' -}}
    {%- else -%}
        {{- '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' ~ message['content'] | trim ~ '<|END_OF_TURN_TOKEN|>' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' -}}
{%- endif -%}
"""

# The opening system turn shared by the grounded-generation and tool-use prompts. The
# texts between the block tags are Cohere's prompt wording, kept verbatim because the
# model was trained on it; `trim_blocks` drops the newline right after each opening tag.
_PREAMBLE_BLOCKS = r"""
{%- set safety_preamble %}
The instructions in this section override those in the task description and style guide sections. Don't answer questions that are harmful or immoral.{% endset -%}
{%- set basic_rules %}
You are a powerful conversational AI trained by Cohere to help people. You are augmented by a number of tools, and your job is to use and consume the output of these tools to best help the user. You will see a conversation history between yourself and a user, ending with an utterance from the user. You will then see a specific instruction instructing you what kind of response to generate. When you answer the user's requests, you cite your sources in your answers, according to those instructions.{% endset -%}
{%- set default_user_preamble %}
## Task and Context
You help people answer their questions and other requests interactively. You will be asked a very wide array of requests on all kinds of topics. You will be equipped with a wide range of search engines or similar tools to help you, which you use to research your answer. You should focus on serving the user's needs as best you can, which will be wide-ranging.

## Style Guide
Unless the user asks for a different style of answer, you should answer in full sentences, using proper grammar and spelling.{% endset -%}
{{- bos_token -}}
{%- set turns = messages -%}
{%- set user_preamble = default_user_preamble -%}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set user_preamble = messages[0]['content'] -%}
    {%- set turns = messages[1:] -%}
{%- endif -%}
{{- '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|># Safety Preamble\n' ~ safety_preamble -}}
{{- '\n\n# System Preamble\n## Basic Rules\n' ~ basic_rules -}}
{{- '\n\n# User Preamble\n' ~ user_preamble -}}
"""

# The conversation turns of the grounded / tool prompts (system turns may appear later too,
# and tool results come back as a system turn wrapped in <results>).
_TURNS_BLOCK = r"""
{%- for message in turns -%}
    {%- if message['role'] == 'user' -%}
        {{- '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' ~ message['content'] | trim ~ '<|END_OF_TURN_TOKEN|>' -}}
    {%- elif message['role'] == 'system' -%}
        {{- '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' ~ message['content'] | trim ~ '<|END_OF_TURN_TOKEN|>' -}}
    {%- elif message['role'] == 'assistant' -%}
        {{- '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' ~ message['content'] | trim ~ '<|END_OF_TURN_TOKEN|>' -}}
    {%- elif message['role'] == 'tool' -%}
        {{- '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|><results>\n' ~ message['content'] | trim ~ '</results><|END_OF_TURN_TOKEN|>' -}}
    {%- endif -%}
{%- endfor -%}
"""

_GENERATION_PROMPT = r"""
{%- if add_generation_prompt -%}
    {{- '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' -}}
{%- endif -%}
"""

# Grounded generation ("RAG"): documents are listed as "key: value" lines under
# "Document: i", then the model is told how to cite them. "fast" skips the uncited answer.
_DOCUMENTS_BLOCK = r"""
{{- '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|><results>' -}}
{%- for document in documents -%}
    {{- '\nDocument: ' ~ loop.index0 ~ '\n' -}}
    {%- for key, value in document.items() -%}
        {{- key ~ ': ' ~ value ~ '\n' -}}
    {%- endfor -%}
{%- endfor -%}
{{- '</results><|END_OF_TURN_TOKEN|>' -}}
"""
RAG_CHAT_TEMPLATE = _PREAMBLE_BLOCKS + r"""
{{- '<|END_OF_TURN_TOKEN|>' -}}
""" + _TURNS_BLOCK + _DOCUMENTS_BLOCK + r"""{%- set relevant %}
Firstly, Decide which of the retrieved documents are relevant to the user's last input by writing 'Relevant Documents:' followed by comma-separated list of document numbers. If none are relevant, you should instead write 'None'.{% endset -%}
{%- set cited %}
Secondly, Decide which of the retrieved documents contain facts that should be cited in a good answer to the user's last input by writing 'Cited Documents:' followed a comma-separated list of document numbers. If you dont want to cite any of them, you should instead write 'None'.{% endset -%}
{%- set plain_answer %}
Thirdly, Write 'Answer:' followed by a response to the user's last input in high quality natural english. Use the retrieved documents to help you. Do not insert any citations or grounding markup.{% endset -%}
{%- set grounded_answer %}
Finally, Write 'Grounded answer:' followed by a response to the user's last input in high quality natural english. Use the symbols <co: doc> and </co: doc> to indicate when a fact comes from a document in the search result, e.g <co: 0>my fact</co: 0> for a fact from document 0.{% endset -%}
{{- '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>Carefully perform the following instructions, in order, starting each with a new line.\n' -}}
{{- relevant ~ '\n' ~ cited ~ '\n' -}}
{%- if citation_mode == 'accurate' -%}
    {{- plain_answer ~ '\n' -}}
{%- endif -%}
{{- grounded_answer ~ '<|END_OF_TURN_TOKEN|>' -}}
""" + _GENERATION_PROMPT

# Tool use: each tool is shown to the model as a Python stub with a docstring, built from
# {"name", "description", "parameter_definitions": {param: {"type", "description", "required"}}}.
TOOL_USE_CHAT_TEMPLATE = _PREAMBLE_BLOCKS + r"""
{{- '\n\n## Available Tools\nHere is a list of tools that you have available to you:\n\n' -}}
{%- for tool in tools -%}
    {%- set params = tool.get('parameter_definitions', {}) -%}
    {%- if not loop.first -%}{{- '\n\n' -}}{%- endif -%}
    {{- '```python\ndef ' ~ tool['name'] ~ '(' -}}
    {%- for name, spec in params.items() -%}
        {%- set type = spec['type'] if spec.get('required') else 'Optional[' ~ spec['type'] ~ ']' -%}
        {{- (', ' if not loop.first else '') ~ name ~ ': ' ~ type ~ ('' if spec.get('required') else ' = None') -}}
    {%- endfor -%}
    {{- ') -> List[Dict]:\n    \"\"\"' ~ tool['description'] -}}
    {%- if params -%}
        {{- '\n\n    Args:' -}}
        {%- for name, spec in params.items() -%}
            {%- set type = spec['type'] if spec.get('required') else 'Optional[' ~ spec['type'] ~ ']' -%}
            {{- '\n        ' ~ name ~ ' (' ~ type ~ '): ' ~ spec['description'] -}}
        {%- endfor -%}
    {%- endif -%}
    {{- '\n    \"\"\"\n    pass\n```' -}}
{%- endfor -%}
{{- '<|END_OF_TURN_TOKEN|>' -}}
""" + _TURNS_BLOCK + r"""
{%- set action_instruction %}
Write 'Action:' followed by a json-formatted list of actions that you want to perform in order to produce a good response to the user's last input. You can use any of the supplied tools any number of times, but you should aim to execute the minimum number of necessary actions for the input. You should use the `directly-answer` tool if calling the other tools is unnecessary. The list of actions you want to call should be formatted as a list of json objects, for example:
```json
[
    {
        "tool_name": title of the tool in the specification,
        "parameters": a dict of parameters to input into the tool as they are defined in the specs, or {} if it takes no parameters
    }
]```{% endset -%}
{{- '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' ~ action_instruction ~ '<|END_OF_TURN_TOKEN|>' -}}
""" + _GENERATION_PROMPT

BUILTIN_CHAT_TEMPLATES = {
    "default": DEFAULT_CHAT_TEMPLATE.strip(),
    "rag": RAG_CHAT_TEMPLATE.strip(),
    "tool_use": TOOL_USE_CHAT_TEMPLATE.strip(),
}

KNOWN_ROLES = ("system", "user", "assistant", "tool")
CITATION_MODES = ("accurate", "fast")

# special-token attributes a tokenizer_config.json may set, with Command-R's values
DEFAULT_SPECIAL_TOKENS = {
    "bos_token": "<BOS_TOKEN>",
    "eos_token": "<|END_OF_TURN_TOKEN|>",  # the model stops on end-of-turn, not <EOS_TOKEN>
    "pad_token": "<PAD>",
    "unk_token": "<UNK>",
    "cls_token": "<CLS>",
    "sep_token": "<SEP>",
    "mask_token": "<MASK_TOKEN>",
}


# --------------------------------------------------------------------------------------
# Jinja rendering, set up the way the Hugging Face ecosystem does it, so that the
# templates shipped with checkpoints render the same here as there.

def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, indent=None, separators=None, sort_keys=False):
    # unlike Jinja's own tojson: no HTML escaping, keys kept in their order
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=32)
def compile_template(source: str) -> jinja2.Template:
    """Compile a chat template in a sandbox (templates come from downloaded files)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def validate_messages(messages, allow_tool_role: bool = False) -> None:
    """Check a conversation before rendering; raise ValueError naming the bad message.

    Rules: a list of dicts with a known role; a system message only at index 0; after it,
    user and assistant alternate starting with user; `tool` results (only when tools are
    given) follow an assistant turn or other tool results, and the assistant speaks next.
    Content must be a string (an assistant turn with `tool_calls` may leave it out).
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r:.80}")
    previous = None  # role of the previous non-system message
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {type(m).__name__}")
        role = m.get("role")
        if role not in KNOWN_ROLES:
            raise ValueError(f"message {i} has unknown role {role!r}; expected one of {KNOWN_ROLES}")
        content = m.get("content")
        if not isinstance(content, str) and not (role == "assistant" and "tool_calls" in m and content is None):
            raise ValueError(f"message {i} ({role}) must have string 'content', got {type(content).__name__}")
        if role == "system":
            if i != 0:
                raise ValueError(f"message {i} is a system message; only message 0 may be one")
            continue
        if role == "tool" and not allow_tool_role:
            raise ValueError(f"message {i} has role 'tool', which needs tools=[...] and a tool-use template")
        allowed_after = {"user": (None, "assistant"), "assistant": ("user", "tool"),
                         "tool": ("assistant", "tool")}[role]
        if previous not in allowed_after:
            after = "the start" if previous is None else f"a {previous} message"
            raise ValueError(f"message {i} ({role}) cannot follow {after}: roles must alternate "
                             "user/assistant/user/... (system only first)")
        previous = role


# --------------------------------------------------------------------------------------

class Tokenizer:
    """Command-R's byte-level BPE tokenizer (fast library) plus chat templates."""

    def __init__(self, fast_tokenizer: _FastTokenizer, config: dict | None = None, source: str = "<memory>"):
        self._tk = fast_tokenizer
        self.source = source
        config = config or {}
        self.special_tokens = {}
        for attr, default in DEFAULT_SPECIAL_TOKENS.items():
            value = config.get(attr, default)
            if isinstance(value, dict):  # the {"content": ..., "lstrip": ...} form
                value = value.get("content")
            if value is not None and self._tk.token_to_id(value) is None:
                if attr not in config:  # Command-R's default, absent from another vocabulary (Tiny Aya's)
                    value = None
                else:
                    raise ValueError(f"{source}: {attr} {value!r} is not in the vocabulary")
            self.special_tokens[attr] = value
        self.chat_templates = _parse_chat_templates(config.get("chat_template"), source)

    # -- loading -----------------------------------------------------------------------

    @classmethod
    def from_file(cls, tokenizer_json_path, config_path=None) -> "Tokenizer":
        """Load `tokenizer.json` (or `.json.gz`) and optionally `tokenizer_config.json`."""
        path = Path(tokenizer_json_path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                fast = _FastTokenizer.from_str(f.read())
        else:
            try:
                fast = _FastTokenizer.from_file(str(path))
            except Exception as e:  # the Rust error alone does not say which file
                raise ValueError(f"could not read tokenizer file {path}: {e}") from None
        config = {}
        if config_path is not None:
            config_path = Path(config_path)
            if not config_path.is_file():
                raise FileNotFoundError(f"tokenizer config not found: {config_path}")
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ValueError(f"{config_path} is not valid JSON: {e}") from None
        return cls(fast, config, source=str(path))

    @classmethod
    def from_pretrained(cls, dir_or_repo_id, token=None, revision=None) -> "Tokenizer":
        """Load from a local folder, or from a Hugging Face hub repository id.

        Reads `tokenizer.json` and, where present, `tokenizer_config.json` (chat
        templates and special-token names). Gated repositories need `token`.
        """
        local = Path(os.path.expanduser(str(dir_or_repo_id)))
        if local.is_dir():
            config = local / "tokenizer_config.json"
            return cls.from_file(local / "tokenizer.json", config if config.is_file() else None)
        if local.is_file():
            raise ValueError(f"{local} is a file: pass its folder, or use Tokenizer.from_file")
        repo_id = str(dir_or_repo_id)
        if repo_id.startswith((".", "/", "~")) or repo_id.count("/") > 1 or not repo_id.strip():
            raise FileNotFoundError(f"tokenizer folder not found: {local} (and it is not a hub repo id)")
        return cls.from_file(*_download_from_hub(repo_id, token, revision))

    @classmethod
    def default(cls) -> "Tokenizer":
        """minicohere's own small tokenizer (4096 tokens, Command-R's special tokens)."""
        return cls.from_pretrained(default_tokenizer_path().parent)

    # -- special tokens and vocabulary --------------------------------------------------

    bos_token = property(lambda self: self.special_tokens["bos_token"])
    eos_token = property(lambda self: self.special_tokens["eos_token"])
    pad_token = property(lambda self: self.special_tokens["pad_token"])
    bos_token_id = property(lambda self: self.token_to_id(self.bos_token))
    eos_token_id = property(lambda self: self.token_to_id(self.eos_token))
    pad_token_id = property(lambda self: self.token_to_id(self.pad_token))

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added/special tokens included."""
        return self._tk.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return None if token is None else self._tk.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tk.id_to_token(int(token_id))

    # -- encoding and decoding ----------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Text -> ids; with add_special_tokens the BOS token is put in front."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return self._tk.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts, add_special_tokens: bool = True, padding_side: str = "left",
                     return_tensors: str | None = "pt") -> dict:
        """Encode several texts, padded to the longest with the pad id.

        Left padding (the default) keeps every prompt's last token in the last column,
        which is where generation continues. `attention_mask` is 1 on real tokens.
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("encode_batch expects a list of str")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        rows = [e.ids for e in self._tk.encode_batch(list(texts), add_special_tokens=add_special_tokens)]
        width = max((len(r) for r in rows), default=0)
        input_ids, attention_mask = [], []
        for r in rows:
            pad = [self.pad_token_id] * (width - len(r))
            ones, zeros = [1] * len(r), [0] * len(pad)
            input_ids.append(pad + r if padding_side == "left" else r + pad)
            attention_mask.append(zeros + ones if padding_side == "left" else ones + zeros)
        if return_tensors == "pt":
            shape = (len(rows), width)
            input_ids = torch.tensor(input_ids, dtype=torch.long).reshape(shape)
            attention_mask = torch.tensor(attention_mask, dtype=torch.long).reshape(shape)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """ids (a list or a 1-D tensor) -> text."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode expects a 1-D tensor of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is out of range for vocab_size {self.vocab_size}")
        return self._tk.decode(ids, skip_special_tokens=skip_special_tokens)

    # -- chat templates -----------------------------------------------------------------

    def get_chat_template(self, template: str | None = None, tools=None, documents=None) -> str:
        """The Jinja source to use: a raw template string, or a template name
        ("default", "rag", "tool_use"; chosen from tools/documents when None).
        The checkpoint's own template of that name wins over the built-in one."""
        if template is not None and ("{{" in template or "{%" in template):
            return template
        name = template or ("tool_use" if tools else "rag" if documents else "default")
        if name in self.chat_templates:
            return self.chat_templates[name]
        if name in BUILTIN_CHAT_TEMPLATES:
            return BUILTIN_CHAT_TEMPLATES[name]
        known = sorted(set(self.chat_templates) | set(BUILTIN_CHAT_TEMPLATES))
        raise ValueError(f"unknown chat template {name!r}; known: {known}, or pass Jinja source")

    def apply_chat_template(self, messages, add_generation_prompt: bool = False, tokenize: bool = True,
                            documents=None, tools=None, citation_mode: str = "accurate", template=None):
        """Render a conversation as Command-R's prompt: the string, or its ids (one BOS)."""
        validate_messages(messages, allow_tool_role=tools is not None)
        if citation_mode not in CITATION_MODES:
            raise ValueError(f"citation_mode must be one of {CITATION_MODES}, got {citation_mode!r}")
        if documents is not None and not (isinstance(documents, (list, tuple))
                                          and all(isinstance(d, dict) for d in documents)):
            raise ValueError("documents must be a list of dicts such as {'title': ..., 'text': ...}")
        if tools is not None and not (isinstance(tools, (list, tuple)) and all(isinstance(t, dict) for t in tools)):
            raise ValueError("tools must be a list of dicts")
        source = self.get_chat_template(template, tools=tools, documents=documents)
        variables = {k: v for k, v in self.special_tokens.items() if v is not None}
        text = compile_template(source).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt,
            documents=documents or [], tools=tools or [], citation_mode=citation_mode, **variables)
        if not tokenize:
            return text
        # the template already wrote the BOS token: adding another would give two
        ids = self.encode(text, add_special_tokens=False)
        if not ids or ids[0] != self.bos_token_id:
            ids.insert(0, self.bos_token_id)
        return ids

    def __repr__(self):
        return f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size})"


def default_tokenizer_path() -> Path:
    """Path of minicohere's own tokenizer.json: assets/tokenizer/ in a clone, the package's copy in a regular
    install (see bundled.py; FileNotFoundError names every place looked in)."""
    from .bundled import bundled_path

    return bundled_path("tokenizer/tokenizer.json")


def _parse_chat_templates(value, source) -> dict[str, str]:
    """tokenizer_config's chat_template: a string, or a list of {"name", "template"}."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"default": value}
    if isinstance(value, list) and all(isinstance(t, dict) and "name" in t and "template" in t for t in value):
        return {t["name"]: t["template"] for t in value}
    raise ValueError(f"{source}: chat_template must be a string or a list of "
                     f"{{'name', 'template'}} dicts, got {type(value).__name__}")


def _download_from_hub(repo_id, token, revision):
    """Fetch tokenizer.json (required) and tokenizer_config.json (optional) from the hub, in one attempt
    (hub.download: every failure is one line naming the repo id and what to do)."""
    from .hub import download

    where = repo_id + (f" (revision {revision})" if revision else "")
    folder = download(repo_id, ["tokenizer.json", "tokenizer_config.json"], "its tokenizer",
                      "a local folder holding tokenizer.json", revision=revision, token=token)
    if not (folder / "tokenizer.json").is_file():
        raise OSError(f"{where} has no tokenizer.json on the hub (or in the local cache)")
    config = folder / "tokenizer_config.json"
    return folder / "tokenizer.json", (config if config.is_file() else None)
