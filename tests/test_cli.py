"""`python -m minicohere`: offline generation and chat with the bundled model, one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

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


@pytest.mark.parametrize("flags, fragment", [
    (["--top-p", "1.5"], "--top-p: 1.5 is out of range"),
    (["--temperature", "0"], "--temperature: 0 is out of range"),
    (["--top-k", "many"], "--top-k: 'many' is not an integer"),
    (["--banana"], "unrecognized arguments: --banana"),
])
def test_bad_flags_are_one_line(flags, fragment):
    out = run("generate", "--prompt", "hi", *flags)
    assert out.returncode == 2
    assert_one_line_error(out, fragment)


def test_cuda_request_without_a_gpu_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_one_line_error(run("generate", "--prompt", "hi", "--device", "cuda"), "no CUDA GPU")
