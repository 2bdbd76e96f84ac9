"""`python -m minicohere`: offline generation and chat with the bundled model, one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "minicohere", *args], input=stdin, capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=120)


def assert_one_line_error(out, *fragments):
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_generate_runs_offline_and_prints_the_prompt_and_a_continuation():
    out = run("generate", "--prompt", "Once upon a time", "--max-new-tokens", "30", "--seed", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Once upon a time")
    assert len(out.stdout.split()) > 10


def test_greedy_generate_is_reproducible_and_sampling_follows_the_seed():
    greedy = [run("generate", "--prompt", "The sky was", "--greedy", "--max-new-tokens", "20") for _ in range(2)]
    assert greedy[0].returncode == 0 and greedy[0].stdout == greedy[1].stdout
    sampled = [run("generate", "--prompt", "The sky was", "--seed", str(s), "--temperature", "1.5",
                   "--max-new-tokens", "20").stdout for s in (1, 2)]
    assert sampled[0] != sampled[1]


def test_chat_answers_two_turns_from_piped_stdin_without_a_prompt():
    out = run("chat", "--greedy", "--max-new-tokens", "25",
              stdin="Dina has a blue shell. What colour is the shell?\n\nCount to 4, please.\n")
    assert out.returncode == 0, out.stderr
    replies = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(replies) == 2  # the blank line is skipped, not answered
    assert "blue" in replies[0].lower() and "1, 2, 3, 4" in replies[1]
    assert not out.stdout.startswith("> ")  # the "> " prompt is for terminals only


def test_chat_keeps_the_history_and_drops_the_oldest_exchange_when_full():
    from minicohere import Tokenizer
    from minicohere.cli import fit_history

    tokenizer = Tokenizer.default()
    history = [{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "Where did Mia go today?"},
               {"role": "assistant", "content": "Mia went to the park in Lysh."},
               {"role": "user", "content": "What did she take?"}]
    full = tokenizer.apply_chat_template(history, add_generation_prompt=True)
    assert fit_history(tokenizer, list(history), room=len(full)) == full
    trimmed = list(history)
    ids = fit_history(tokenizer, trimmed, room=len(full) - 1)
    assert [m["content"] for m in trimmed] == ["Be brief.", "What did she take?"]
    assert ids == tokenizer.apply_chat_template(trimmed, add_generation_prompt=True)


def test_ctrl_c_in_chat_exits_quietly():
    chat = subprocess.Popen([sys.executable, "-m", "minicohere", "chat", "--greedy", "--max-new-tokens", "20"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=REPO)
    try:
        chat.stdin.write("What is 2 plus 3?\n")
        chat.stdin.flush()
        assert chat.stdout.readline().strip()  # answered: it now waits for the next line
        chat.send_signal(signal.SIGINT)
        _, stderr = chat.communicate(timeout=60)
    finally:
        chat.kill()
    assert chat.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


def test_help_lists_every_flag():
    out = run("generate", "--help")
    assert out.returncode == 0
    for flag in ("--prompt", "--model", "--device", "--dtype", "--max-new-tokens", "--temperature", "--top-k",
                 "--top-p", "--min-p", "--greedy", "--seed"):
        assert flag in out.stdout


def test_missing_model_path_is_one_line():
    assert_one_line_error(run("generate", "--prompt", "hi", "--model", "./no/such/model"), "no such folder")


def test_unreachable_hub_id_is_one_line():
    assert_one_line_error(run("generate", "--prompt", "hi", "--model", "NoSuchOrg/no-model"),
                          "NoSuchOrg/no-model", "cannot be reached")


def main_in_process(capsys, *args):
    """Run the CLI's main() here (no interpreter start-up): exit status, stdout, stderr."""
    from minicohere.cli import main

    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's exit for a bad flag
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("flags, fragment", [
    (["--top-p", "1.5"], "--top-p: 1.5 is out of range"),
    (["--temperature", "0"], "--temperature: 0 is out of range"),
    (["--top-k", "many"], "--top-k: 'many' is not an integer"),
    (["--banana"], "unrecognized arguments: --banana"),
    (["--temperature", "nan"], "--temperature: nan is not a finite number"),
    (["--temperature", "inf"], "--temperature: inf is not a finite number"),
    (["--top-p", "nan"], "--top-p: nan is not a finite number"),
    (["--min-p", "nan"], "--min-p: nan is not a finite number"),
    (["--top-k", "0"], "--top-k: 0 is out of range"),
    (["--max-new-tokens", "0"], "--max-new-tokens: 0 is out of range"),
    (["--seed", "-1"], "--seed: -1 is out of range"),
    (["--seed", str(2**64)], f"--seed: {2**64} is out of range"),
    (["--device", "tpu"], "--device: 'tpu' is not a device"),
    (["--device", "meta"], "--device: meta tensors hold shapes but no values"),
    (["--dtype", "float8"], "--dtype: invalid choice: 'float8'"),
])
def test_bad_flag_values_are_one_line_naming_the_flag_and_value(capsys, flags, fragment):
    code, out, err = main_in_process(capsys, "generate", "--prompt", "hi", *flags)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and fragment in err, err


def test_a_device_this_machine_lacks_is_one_line_before_loading(capsys):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has an mps device")
    code, out, err = main_in_process(capsys, "generate", "--prompt", "hi", "--device", "mps")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "--device: mps: no mps device is available" in err, err


def test_bad_value_in_a_fresh_process_prints_nothing_on_stdout():
    out = run("generate", "--prompt", "hi", "--temperature", "nan")
    assert out.returncode == 2 and out.stdout == ""
    assert_one_line_error(out, "--temperature: nan")


@pytest.mark.parametrize("flags", [["--temperature", "0.5"], ["--top-p", "0.9", "--seed", "3"], ["--top-k", "5"],
                                   ["--min-p", "0.1"]])
def test_greedy_with_a_sampling_flag_is_refused_in_one_line(capsys, flags):
    code, out, err = main_in_process(capsys, "generate", "--prompt", "hi", "--greedy", *flags)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "--greedy" in err
    assert " ".join(flags[:2]) in err, err  # names the flag and its value


def test_a_folder_without_config_json_is_named_as_the_folder(capsys, tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    code, out, err = main_in_process(capsys, "generate", "--prompt", "hi", "--model", str(tmp_path))
    assert code == 1 and out == ""
    assert err.splitlines() == [f"error: --model {tmp_path}: this folder has no config.json, so it does not hold a "
                                f"checkpoint (expected {tmp_path / 'config.json'})"]


def test_missing_bundled_model_names_every_place_looked_in(capsys, monkeypatch, tmp_path):
    import minicohere.bundled

    monkeypatch.setattr(minicohere.bundled, "asset_roots", lambda: [tmp_path / "a", tmp_path / "b"])
    code, out, err = main_in_process(capsys, "generate", "--prompt", "hi")
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1
    assert str(tmp_path / "a" / "tiny-command-r") in err and str(tmp_path / "b" / "tiny-command-r") in err


def test_a_generate_error_leaves_stdout_empty(capsys, monkeypatch):
    # generate's own checks run before the first token, so the prompt must not be echoed before them
    import minicohere.model

    def refuse(*args, **kwargs):
        raise ValueError("max_new_tokens=5 is wrong somehow")

    monkeypatch.setattr(minicohere.model.CohereForCausalLM, "generate", refuse)
    code, out, err = main_in_process(capsys, "generate", "--prompt", "hi", "--max-new-tokens", "5")
    assert code == 1 and out == ""
    assert err.splitlines() == ["error: max_new_tokens=5 is wrong somehow"]


def test_cuda_request_without_a_gpu_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_one_line_error(run("generate", "--prompt", "hi", "--device", "cuda"), "no CUDA GPU")


def test_ctrl_c_while_torch_is_imported_exits_quietly():
    maps = "/proc/{}/maps"
    if not os.path.exists(maps.format(os.getpid())):
        pytest.skip("needs /proc to see when torch's library is being loaded")
    cli = subprocess.Popen([sys.executable, "-m", "minicohere", "generate", "--prompt", "hi", "--greedy"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    try:
        # wait until libtorch is mapped: `import torch` has begun, minicohere's __init__ is running
        for _ in range(3000):
            try:
                with open(maps.format(cli.pid)) as f:
                    if "libtorch" in f.read():
                        break
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        else:
            pytest.fail("torch was never loaded")
        cli.send_signal(signal.SIGINT)
        stdout, stderr = cli.communicate(timeout=60)
    finally:
        cli.kill()
    assert cli.returncode in (130, -signal.SIGINT), (cli.returncode, stderr)
    assert stdout == ""
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr


# -- answer: grounded answers with citations, and the calculator (chapter 15) --------------------------------

DOCUMENTS = [{"title": "Ben's kite", "text": "Ben has a red kite."},
             {"title": "Mia's kite", "text": "Mia has a blue kite."},
             {"title": "Mia's trip", "text": "Mia went to the lake in Brimblet."}]


def write_documents(tmp_path, lines, name="docs.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


@pytest.mark.parametrize("case", ["missing", "malformed", "not-an-object", "empty-question", "unknown-tool"])
def test_answer_bad_input_is_one_line_on_stderr_and_exit_status_2(tmp_path, case):
    good = write_documents(tmp_path, [json.dumps(d) for d in DOCUMENTS])
    args, fragments = {
        "missing": (["--question", "Hi?", "--documents", str(tmp_path / "nope.jsonl")], ["nope.jsonl", "no such file"]),
        "malformed": (["--question", "Hi?", "--documents",
                       write_documents(tmp_path, [json.dumps(DOCUMENTS[0]), '{"title": "x", "text": '], "bad.jsonl"),
                       ], ["line 2", "not valid JSON"]),
        "not-an-object": (["--question", "Hi?", "--documents", write_documents(tmp_path, ['["Mia has a kite."]'], "list.jsonl")],
                          ["line 1", '"text"']),
        "empty-question": (["--question", "  ", "--documents", good], ["--question", "empty"]),
        "unknown-tool": (["--question", "Hi?", "--tools", "calculator,web"], ["unknown tool 'web'", "calculator"]),
    }[case]
    out = run("answer", *args)
    assert out.returncode == 2
    assert_one_line_error(out, *fragments)
    assert out.stdout == ""


def test_answer_json_is_exactly_one_object_of_the_documented_shape(tmp_path):
    docs = write_documents(tmp_path, [json.dumps(d) for d in DOCUMENTS])
    out = run("answer", "--question", "What colour is Mia's kite?", "--documents", docs, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # one object: json.loads refuses trailing text
    assert list(result) == ["answer", "citations", "tool_calls"] and isinstance(result["answer"], str)
    for citation in result["citations"]:
        assert list(citation) == ["text", "documents"] and isinstance(citation["text"], str)
        assert citation["documents"] and all(d in range(len(DOCUMENTS)) for d in citation["documents"])
    out = run("answer", "--question", "What is 23 plus 48?", "--tools", "calculator", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for call in result["tool_calls"]:
        assert list(call) == ["name", "parameters", "result"] and isinstance(call["parameters"], dict)


@pytest.mark.skipif(not (REPO / "assets" / "tiny-command-r" / "grounded-adapter").is_dir(),
                    reason="the grounded adapter is not trained yet")
def test_answer_cites_the_right_line_and_calls_the_calculator_and_chat_cites_from_documents(tmp_path):
    # what the shipped adapter has learned: to cite the line that answers, copying a colour from it, and to
    # call the tool with the question's numbers (it does not copy invented names: benchmarks/bench_grounded.py)
    docs = write_documents(tmp_path, [json.dumps(d) for d in DOCUMENTS])
    out = run("answer", "--question", "What colour is Mia's kite?", "--documents", docs)
    assert out.returncode == 0, out.stderr
    assert re.search(r"\[1\]\.?\n", out.stdout) and out.stdout.endswith("Sources:\n  [1] Mia's kite\n"), out.stdout
    assert "blue" in out.stdout and "red" not in out.stdout, out.stdout
    out = run("answer", "--question", "What is 64 plus 19?", "--tools", "calculator")
    assert out.returncode == 0, out.stderr
    assert "calculator(expression='64 + 19') -> 83" in out.stdout and "83." in out.stdout.splitlines()[0], out.stdout
    out = run("chat", "--documents", docs, stdin="What colour is Ben's kite?\nWhere did Mia go?\n")
    assert out.returncode == 0, out.stderr
    assert "Sources:\n  [0] Ben's kite\n" in out.stdout and "Sources:\n  [2] Mia's trip\n" in out.stdout, out.stdout


@pytest.mark.skipif(not (REPO / "assets" / "tiny-command-r" / "grounded-adapter").is_dir(),
                    reason="the grounded adapter is not trained yet")
def test_answer_quotes_an_invented_name_from_the_cited_line_unless_told_not_to(tmp_path):
    # the adapter alone writes a name of its own for a pet; the default quoting decoder keeps the cited
    # phrase a quote of the cited line, and --no-quote turns it off
    docs = write_documents(tmp_path, [json.dumps({"title": "Ben's cat", "text": "Ben has a cat called Glimmoo."}),
                                      json.dumps({"title": "Mia's dog", "text": "Mia has a dog called Snackie."}),
                                      json.dumps(DOCUMENTS[1])])
    out = run("answer", "--question", "What is Mia's dog called?", "--documents", docs, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["citations"] == [{"text": "Snackie", "documents": [1]}], out.stdout
    out = run("answer", "--question", "What is Mia's dog called?", "--documents", docs, "--json", "--no-quote")
    assert out.returncode == 0, out.stderr
    assert "Snackie" not in out.stdout and json.loads(out.stdout)["citations"][0]["documents"] == [1], out.stdout
