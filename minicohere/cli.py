"""The command line: `python -m minicohere generate --prompt ...`, `python -m minicohere chat`,
`python -m minicohere answer --question ... [--documents FILE.jsonl] [--tools calculator] [--json]` and
`python -m minicohere export-gguf FOLDER OUT.gguf` (a checkpoint as a GGUF file for llama.cpp, gguf.py).

Both default to the tiny Command-R bundled with the package (assets/tiny-command-r/ in a clone,
minicohere/_assets/ in a regular install; see bundled.py), so they work offline;
`--model CohereForAI/c4ai-command-r-v01 --device cuda --dtype bfloat16` runs the real one. Whatever goes
wrong that the user can fix (a flag, a path, the network) is reported in one line on stderr, with a
non-zero exit status and no traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from pathlib import Path

from .bundled import bundled_path

# Sampling defaults, filled in after parsing: a flag left at None was not given, which is how a sampling
# flag given next to --greedy is told apart from its default.
SAMPLING_DEFAULTS = dict(temperature=0.8, top_p=0.95)
SAMPLING_FLAGS = dict(temperature="--temperature", top_k="--top-k", top_p="--top-p", min_p="--min-p",
                      seed="--seed")


class CliError(Exception):
    """A problem the user can fix, reported as one line without a traceback."""

    exit_code = 1


class BadInput(CliError):
    """Input refused after parsing (export-gguf's folder or --dtype; answer's documents file, question or
    tools): exit status 2, as argparse's own errors."""

    exit_code = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage block above its error; one line that points at --help is enough."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# -- flag types: bad values are refused before a model is loaded, which for a 35B model takes minutes --


def _number(cast, low=None, high=None, low_open=False, what=""):
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if cast is int else 'a number'}") from None
        if not math.isfinite(value):  # float() takes "nan" and "inf", and nan passes every comparison below
            raise argparse.ArgumentTypeError(f"{text} is not a finite number: {what}")
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what}")
        return value
    return parse


positive_float = _number(float, 0, low_open=True, what="must be > 0")
positive_int = _number(int, 1, what="must be >= 1")
probability = _number(float, 0, 1, low_open=True, what="must be in (0, 1]")
fraction = _number(float, 0, 1, what="must be in [0, 1]")
seed = _number(int, 0, 2**64 - 1, what="must be in [0, 2**64)")  # what torch.Generator.manual_seed takes


def device(text: str) -> str:
    """A device this machine can put tensors on; checked here so that a bad one fails before loading."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (cpu, cuda, cuda:1, mps, ...)") from None
    if dev.type == "meta":
        raise argparse.ArgumentTypeError("meta tensors hold shapes but no values, so nothing can be generated "
                                         "on them (try --device cpu)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is available here (try --device cpu)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} CUDA GPU(s), cuda:0 to "
                                             f"cuda:{count - 1}")
    elif dev.type != "cpu":
        try:  # mps, xpu, ...: the one question every backend answers the same way
            torch.empty(1, device=dev)
        except Exception:
            raise argparse.ArgumentTypeError(f"{text}: no {dev.type} device is available to this PyTorch "
                                             "(try --device cpu)") from None
    return text


def add_model_flags(model) -> None:
    model.add_argument("--model", default=None, metavar="PATH_OR_HUB_ID",
                       help="checkpoint folder or hub id, e.g. CohereForAI/c4ai-command-r-v01 "
                            "(default: the bundled tiny-command-r)")
    model.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    model.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                       help="weights' dtype (default: auto, the checkpoint's own)")
    model.add_argument("--token", default=os.environ.get("HF_TOKEN"),
                       help="hub token for gated models (default: $HF_TOKEN)")


def build_parser() -> argparse.ArgumentParser:
    model_flags = OneLineParser(add_help=False)
    add_model_flags(model_flags.add_argument_group("model"))
    model_flags.add_argument("--max-new-tokens", type=positive_int, default=96, metavar="N",
                             help="at most N new tokens per model turn (default: 96)")
    shared = OneLineParser(add_help=False)
    add_model_flags(shared.add_argument_group("model"))
    decoding = shared.add_argument_group("decoding")
    decoding.add_argument("--max-new-tokens", type=positive_int, default=200, metavar="N",
                          help="at most N new tokens, fewer if the context ends first (default: 200)")
    decoding.add_argument("--greedy", action="store_true",
                          help="always take the most likely token (no sampling flags with it)")
    decoding.add_argument("--temperature", type=positive_float, default=None, metavar="T",
                          help=f"(default: {SAMPLING_DEFAULTS['temperature']})")
    decoding.add_argument("--top-k", type=positive_int, default=None, metavar="K", help="keep the K likeliest tokens")
    decoding.add_argument("--top-p", type=probability, default=None, metavar="P",
                          help="keep the likeliest tokens holding probability P "
                               f"(default: {SAMPLING_DEFAULTS['top_p']})")
    decoding.add_argument("--min-p", type=fraction, default=None, metavar="M",
                          help="drop tokens less than M times as likely as the best")
    decoding.add_argument("--seed", type=seed, default=None, metavar="S", help="make sampling reproducible")

    parser = OneLineParser(prog="python -m minicohere",
                           description="Generate text, chat, or answer from documents with a Command-R-architecture "
                                       "model (default: the bundled tiny-command-r, offline), or export one to GGUF.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{generate,chat,answer,export-gguf}")
    generate = commands.add_parser("generate", parents=[shared], help="continue a prompt, streaming the text",
                                   description="Continue a prompt and stream the text to stdout.")
    generate.add_argument("--prompt", required=True, help="the text to continue")
    chat = commands.add_parser("chat", parents=[shared], help="talk turn by turn through the chat template",
                               description="Read one user message per line from stdin and answer each; the "
                                           "conversation so far is kept. End with Ctrl-D (EOF) or Ctrl-C.")
    chat.add_argument("--system", default=None, help="an optional system message")
    grounding_flags(chat)
    answer = commands.add_parser("answer", parents=[model_flags], help="answer one question, grounded in "
                                 "documents (cited) and/or with tools", description="Answer one question "
                                 "greedily with the grounded-answer skills (the bundled model's LoRA adapter). "
                                 "Document numbers are the 0-based lines of --documents.")
    answer.add_argument("--question", required=True, help="the question")
    grounding_flags(answer)
    answer.add_argument("--json", action="store_true", help='print one JSON object: {"answer", "citations", '
                        '"tool_calls"}')
    export = commands.add_parser("export-gguf", help="write a checkpoint folder as a GGUF file for llama.cpp",
                                 description="Write a Command-R checkpoint folder (config.json, safetensors, "
                                             "tokenizer.json) as one GGUF file that llama.cpp and Ollama run.")
    export.add_argument("folder", help="the checkpoint folder, e.g. assets/tiny-command-r")
    export.add_argument("out", help="the .gguf file to write")
    export.add_argument("--dtype", default="f32", metavar="TYPE",
                        help="the matrices' type: f32 (default, exact), f16 or q8_0 (llama.cpp's 8-bit blocks)")
    return parser


def grounding_flags(parser) -> None:
    parser.add_argument("--documents", default=None, metavar="FILE.jsonl",
                        help='documents to answer from: one {"title": ..., "text": ...} object per line')
    parser.add_argument("--tools", default=None, metavar="NAMES",
                        help="comma-separated tools the model may call (known: calculator)")
    parser.add_argument("--no-quote", action="store_true",
                        help="let cited phrases be any words (by default each is a quote of the document it cites)")


def parse_args(argv=None) -> argparse.Namespace:
    """Parse, refuse --greedy next to a sampling flag (it would be ignored), then fill the sampling defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("answer", "export-gguf"):  # no sampling flags: answer is always greedy
        return args
    given = [f"{flag} {getattr(args, name)}" for name, flag in SAMPLING_FLAGS.items()
             if getattr(args, name) is not None]
    if args.greedy and given:
        parser.exit(2, f"{parser.prog} {args.command}: error: --greedy always takes the likeliest token, so "
                       f"{', '.join(given)} would be ignored; drop one or the other\n")
    for name, value in SAMPLING_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# -- loading ----------------------------------------------------------------------------------------


def looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def check_folder(name: str) -> None:
    """A local --model folder must hold a checkpoint and its tokenizer; say which file is missing, and where."""
    folder = Path(name).expanduser()
    if not folder.exists():
        if not looks_like_hub_id(name):
            raise CliError(f"--model {name}: no such folder (and not a hub id of the form org/name)")
        return
    if not folder.is_dir():
        raise CliError(f"--model {name}: that is a file; pass the checkpoint folder that holds it")
    for needed, what in (("config.json", "a checkpoint"), ("tokenizer.json", "its tokenizer")):
        if not (folder / needed).is_file():
            raise CliError(f"--model {name}: this folder has no {needed}, so it does not hold {what} "
                           f"(expected {folder / needed})")


def load(args):
    """(model, tokenizer) from a folder or the hub, or a CliError that says what is wrong."""
    import minicohere

    if args.model is None:
        try:
            args.model = str(bundled_path("tiny-command-r"))
        except FileNotFoundError as e:
            raise CliError(f"{e} Or pass --model PATH_OR_HUB_ID.") from None
    check_folder(args.model)
    try:
        model = minicohere.from_pretrained(args.model, dtype=args.dtype, device=args.device, token=args.token,
                                           progress=False)
        tokenizer = minicohere.Tokenizer.from_pretrained(args.model, token=args.token)
    except (minicohere.CheckpointError, FileNotFoundError, ValueError, OSError) as e:
        message = str(e)
        if not message.startswith(args.model):  # minicohere's messages usually name the model already
            message = f"{args.model}: {message}"
        raise CliError(f"--model {message}") from None
    return model, tokenizer


def decoding_options(args, device) -> dict:
    """Keyword arguments for minicohere's generate."""
    import torch

    options = dict(do_sample=not args.greedy)
    if not args.greedy:
        options.update(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p)
        if args.seed is not None:  # multinomial wants its generator on the logits' device
            options["generator"] = torch.Generator(device=device).manual_seed(args.seed)
    return options


def room_for(model, prompt_len: int, wanted: int) -> int:
    """How many new tokens fit after the prompt in the model's context."""
    room = model.config.max_position_embeddings - prompt_len
    if room < 1:
        raise CliError(f"the prompt is {prompt_len} tokens; the model's context holds "
                       f"{model.config.max_position_embeddings}")
    return min(wanted, room)


# -- the two commands -------------------------------------------------------------------------------


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_generate(args) -> None:
    import torch

    from .model import TextStreamer

    model, tokenizer = load(args)
    ids = torch.tensor([tokenizer.encode(args.prompt)], device=args.device)
    new_tokens = room_for(model, ids.shape[1], args.max_new_tokens)
    started = False

    def show(text: str) -> None:  # the prompt goes out with the first piece, so an error finds stdout empty
        nonlocal started
        if not started:
            write(args.prompt)
            started = True
        write(text)

    try:
        model.generate(ids, max_new_tokens=new_tokens, streamer=TextStreamer(tokenizer, on_text=show),
                       **decoding_options(args, args.device))
    except ValueError as e:  # generate's own argument checks run before any token
        if started:
            raise
        raise CliError(str(e)) from None
    show("")
    write("\n")


def read_message(interactive: bool) -> str | None:
    """The next non-empty line from stdin, or None at end of input."""
    while True:
        if interactive:
            try:
                line = input("> ")  # input() gives line editing on a terminal
            except EOFError:
                write("\n")
                return None
        else:
            line = sys.stdin.readline()
            if not line:
                return None
        if line.strip():
            return line.strip()


def fit_history(tokenizer, history: list[dict], room: int) -> list[int]:
    """The prompt ids for `history`, dropping the oldest exchanges (never the system message) until it
    leaves `room` tokens free in the context."""
    ids = tokenizer.apply_chat_template(history, add_generation_prompt=True)
    first = 1 if history[0]["role"] == "system" else 0
    while len(ids) > room and len(history) - first > 1:
        del history[first:first + 2]  # one user message and its answer
        ids = tokenizer.apply_chat_template(history, add_generation_prompt=True)
    return ids


def run_chat(args) -> None:
    import torch

    from .model import TextStreamer

    documents = read_documents(args.documents) if args.documents else None
    tools = read_tools(args.tools)
    model, tokenizer = load(args)
    if documents or tools:
        return run_grounded_chat(args, model, tokenizer, documents, tools)
    context = model.config.max_position_embeddings
    history = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    while (message := read_message(interactive)) is not None:
        history.append({"role": "user", "content": message})
        ids = fit_history(tokenizer, history, context - min(args.max_new_tokens, context // 2))
        if len(ids) >= context:  # this message alone fills the context: say so, and carry on
            print(f"error: that message is {len(ids)} tokens; the model's context holds {context}", file=sys.stderr)
            history.pop()
            continue
        reply: list[str] = []

        def show(text: str) -> None:
            reply.append(text)
            write(text)

        model.generate(torch.tensor([ids], device=args.device),
                       max_new_tokens=room_for(model, len(ids), args.max_new_tokens),
                       streamer=TextStreamer(tokenizer, on_text=show), **decoding_options(args, args.device))
        write("\n")
        history.append({"role": "assistant", "content": "".join(reply).strip()})


def run_export(args) -> None:
    """Write the GGUF file; the progress bar goes to stderr, one line saying what was written to stdout."""
    try:
        import gguf  # noqa: F401  (the writer; minicohere.gguf imports it where it is used)
    except ImportError:
        raise CliError("export-gguf needs the gguf package: pip install gguf") from None
    from .gguf import GGUFExportError, export_gguf

    try:
        path = export_gguf(args.folder, args.out, dtype=args.dtype, progress=True)
    except GGUFExportError as e:
        raise BadInput(f"export-gguf: {e}") from None
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.dtype})")


# -- grounded answers and tools (chapter 15) ------------------------------------------------------------


def read_documents(path: str) -> list[dict]:
    """FILE.jsonl: one {"title": str, "text": str} object per non-empty line; each problem names its line."""
    import json

    file = Path(path).expanduser()
    if not file.is_file():
        raise BadInput(f"--documents {path}: no such file")
    documents = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"--documents {path}: cannot be read as UTF-8 text ({e})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise BadInput(f"--documents {path}: line {number} is empty; each line must hold one "
                             '{"title": ..., "text": ...} object (document numbers are line numbers)')
        try:
            document = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"--documents {path}: line {number} is not valid JSON ({e.msg})") from None
        if not isinstance(document, dict) or not isinstance(document.get("text"), str) \
                or not isinstance(document.get("title", ""), str):
            raise BadInput(f"--documents {path}: line {number} must be an object with a string \"text\" "
                             'and optionally a string "title", e.g. {"title": "Mia", "text": "Mia has a kite."}')
        documents.append({"title": document.get("title", ""), "text": document["text"]})
    if not documents:
        raise BadInput(f"--documents {path}: the file holds no documents")
    return documents


def read_tools(names: str | None) -> list[str] | None:
    from .grounded import TOOLS

    if names is None:
        return None
    tools = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in tools if n not in TOOLS]
    if unknown or not tools:
        raise BadInput(f"--tools {names}: unknown tool {(unknown or [names])[0]!r}; known tools: {', '.join(TOOLS)}")
    return tools


def show_answer(result: dict, documents: list[dict] | None) -> str:
    """Human text: the answer with [n] after each cited phrase, the sources, and the tool calls."""
    text, at = result["answer"], 0
    for citation in result["citations"]:
        where = text.find(citation["text"], at)
        if where < 0:
            continue
        end = where + len(citation["text"])
        mark = "[" + ",".join(map(str, citation["documents"])) + "]"
        text, at = text[:end] + mark + text[end:], end + len(mark)
    lines = [text]
    cited = sorted({d for c in result["citations"] for d in c["documents"]})
    if cited and documents:
        lines += ["", "Sources:"] + [f"  [{d}] {documents[d].get('title') or documents[d]['text'][:60]}"
                                     for d in cited]
    for call in result["tool_calls"]:
        params = ", ".join(f"{k}={v!r}" for k, v in call["parameters"].items())
        lines.append(f"(used {call['name']}({params}) -> {call['result']})")
    return "\n".join(lines) + "\n"


def run_answer(args) -> None:
    import json

    from .grounded import answer

    if not args.question.strip():
        raise BadInput("--question is empty; ask something, e.g. --question \"What colour is Mia's kite?\"")
    documents = read_documents(args.documents) if args.documents else None
    tools = read_tools(args.tools)
    model, tokenizer = load(args)
    try:
        result = answer(model, tokenizer, args.question, documents=documents, tools=tools,
                        max_new_tokens=args.max_new_tokens, quote=not args.no_quote)
    except ValueError as e:  # e.g. documents too long for the model's context
        raise BadInput(str(e)) from None
    write(json.dumps(result, ensure_ascii=False) + "\n" if args.json else show_answer(result, documents))


def run_grounded_chat(args, model, tokenizer, documents, tools) -> None:
    """chat --documents/--tools: each message is answered on its own through `answer` (grounded, greedy)."""
    from .grounded import answer

    interactive = sys.stdin.isatty()
    while (message := read_message(interactive)) is not None:
        try:
            result = answer(model, tokenizer, message, documents=documents, tools=tools,
                            max_new_tokens=min(args.max_new_tokens, 96), quote=not args.no_quote)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            continue
        write(show_answer(result, documents))


def main(argv=None) -> int:
    if signal.getsignal(signal.SIGINT) is signal.SIG_DFL:
        # minicohere/__init__.py let Ctrl-C end `python -m minicohere` silently while torch was imported;
        # from here on it is a KeyboardInterrupt, caught below.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        args = parse_args(argv)
        {"generate": run_generate, "chat": run_chat, "answer": run_answer, "export-gguf": run_export}[args.command](args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C: stop quietly, on a fresh line
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0
