"""A hub id that cannot be fetched fails at once, in one line that names the id and says what to do.

No real network: HF_ENDPOINT points at this machine, either at a closed port (what "offline" looks like
to the client: the connection is refused) or at a local server that answers every request with 503 and
counts them, so a client that retries with back-off (five retries, about 23 s) shows up as extra requests.
Each case runs in a fresh interpreter because huggingface_hub reads HF_ENDPOINT when it is imported.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from conftest import REPO

TOKENIZER_ID = "NoSuchOrg/tokenizer-only"
MODEL_ID = "NoSuchOrg/model-only"

# Loads both ids and prints, per loader, the exception's type and message as one JSON line.
PROBE = f"""
import json, minicohere
for what, load, repo_id in [("tokenizer", minicohere.Tokenizer.from_pretrained, {TOKENIZER_ID!r}),
                            ("model", minicohere.from_pretrained, {MODEL_ID!r})]:
    try:
        load(repo_id)
    except Exception as e:
        print(json.dumps(dict(what=what, type=type(e).__name__, message=str(e))))
    else:
        print(json.dumps(dict(what=what, type=None, message="loaded")))
"""


def run_probe(endpoint: str, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "HUGGING_FACE_HUB_TOKEN"}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=180,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    results = {r["what"]: r for r in map(json.loads, out.stdout.splitlines())}
    return results, out.stderr


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Unavailable:
    """A loopback HTTP server that answers 503 to everything and records each request line."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed by stop()
                return
            with conn:
                conn.settimeout(10)
                try:
                    head = conn.recv(65536).decode("latin-1")
                    self.requests.append(head.split("\r\n", 1)[0])
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def stop(self):
        self.sock.close()


def assert_one_clear_line(result, repo_id, *fragments):
    assert result["type"] is not None, f"{repo_id} loaded from a hub that cannot be reached"
    message = result["message"]
    assert "\n" not in message, message
    assert repo_id in message
    for fragment in fragments:
        assert fragment in message, message


def test_offline_hub_ids_fail_in_one_line_naming_the_id_and_the_way_out(tmp_path):
    results, stderr = run_probe(f"http://127.0.0.1:{closed_port()}", tmp_path)
    assert_one_clear_line(results["tokenizer"], TOKENIZER_ID, "cannot be reached", "retry",
                          "local folder holding tokenizer.json")
    assert_one_clear_line(results["model"], MODEL_ID, "cannot be reached", "retry", "local checkpoint folder")
    assert results["tokenizer"]["type"] == "OSError" and results["model"]["type"] == "CheckpointError"
    assert "Retrying" not in stderr and "Traceback" not in stderr


def test_unavailable_hub_is_asked_once_not_retried_with_back_off(tmp_path):
    server = Unavailable()
    try:
        results, stderr = run_probe(server.url, tmp_path)
    finally:
        server.stop()
    assert_one_clear_line(results["tokenizer"], TOKENIZER_ID, "local folder")
    assert_one_clear_line(results["model"], MODEL_ID, "local checkpoint folder")
    for repo_id in (TOKENIZER_ID, MODEL_ID):
        asked = [r for r in server.requests if repo_id in r]
        # one metadata request (the client may not even need it); a retrying client makes six
        assert 1 <= len(asked) <= 2, asked
    assert "Retrying" not in stderr


def test_gated_and_missing_repos_get_their_own_advice(monkeypatch):
    # the error classes huggingface_hub raises for them, without a network: the mapping is what is tested
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    from minicohere.tokenizer import _download_from_hub

    class Response:  # what the hub's HTTP errors carry
        status_code, headers, url, request = 401, {}, "http://hub.invalid", None

        def json(self):
            return {}

    for error, fragments in [(GatedRepoError("gated", response=Response()), ["is gated", "token"]),
                             (RepositoryNotFoundError("missing", response=Response()), ["no such repository", "token"])]:
        def refuse(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
        with pytest.raises(OSError) as info:
            _download_from_hub("SomeOrg/some-model", token=None, revision=None)
        message = str(info.value)
        assert "SomeOrg/some-model" in message and "\n" not in message
        for fragment in fragments:
            assert fragment in message, message
