"""Concept naming: the consensus summarizer and the OpenAI-compatible endpoint (fake local server)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ard_core.naming import (
    SUMMARY_PROMPT,
    ConsensusSummarizer,
    EndpointError,
    OpenAISummarizer,
    parse_concept,
)


def test_consensus_names_the_shared_phrase():
    caps = [
        "a woman speaking German slowly in a sad voice",
        "a woman speaking French quickly",
        "a woman speaking English in an angry voice",
        "a man speaking Italian",
    ]
    c = ConsensusSummarizer().summarize(caps)
    assert c.name == "woman speaking"
    assert "3 of 4" in c.description


def test_consensus_is_deterministic_and_handles_empty():
    caps = ["a dog barking", "a dog barking loudly outside", "a dog growling"]
    assert ConsensusSummarizer().summarize(caps) == ConsensusSummarizer().summarize(list(caps))
    assert ConsensusSummarizer().summarize(caps).name == "dog barking"
    assert ConsensusSummarizer().summarize([]).name == "unknown"


def test_consensus_tie_break_does_not_depend_on_the_string_hash_seed():
    """'dog' and 'outside' tie (2 of 3 each): the earlier phrase wins in every process, whatever
    PYTHONHASHSEED (set order once picked either, so a re-run named features differently)."""
    import os
    import subprocess
    import sys

    code = ("from ard_core.naming import ConsensusSummarizer as C; print(C().summarize(["
            "'a dog barking loudly outside', 'a cat meowing outside', 'a dog and a cat fighting']).name)")
    names = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip() for seed in range(6)}
    assert names == {"dog"}


def test_parse_concept_formats():
    assert parse_concept("Name: Female speech\nDescription: Women talking.") == ("Female speech", "Women talking.")
    assert parse_concept("**Name:** Dog barks\n**Description:** Barking.").name == "Dog barks"
    assert parse_concept("Sirens\nEmergency vehicles wailing.") == ("Sirens", "Emergency vehicles wailing.")
    with pytest.raises(ValueError):
        parse_concept("  \n")


class _FakeChat(BaseHTTPRequestHandler):
    calls: list = []
    fail_first = 0

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.path, self.headers.get("Authorization"), body))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"busy")
            return
        user = body["messages"][-1]["content"]
        if "Reply with yes or no only." in user:  # a detection judge: yes when the name's last word is in the caption
            name, caption = user.split('"')[1], user.split('"')[3]
            content = "yes" if name.split()[-1] in caption else "no"
        else:
            n = user.count("\n1. ") + user.count("\n2. ") + user.count("\n3. ")
            content = f"Name: dog barking\nDescription: {n} captions of dogs."
        reply = {"choices": [{"message": {"role": "assistant", "content": content}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def fake_server():
    _FakeChat.calls = []
    _FakeChat.fail_first = 0
    srv = HTTPServer(("127.0.0.1", 0), _FakeChat)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


def test_endpoint_speaks_openai_chat(fake_server, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sekrit")
    url = f"http://127.0.0.1:{fake_server.server_port}/v1"
    s = OpenAISummarizer(url, "llama-3-70b", api_key_env="TEST_KEY", retries=0)
    c = s.summarize(["a dog barking", "dogs barking", "a dog"])
    assert c == ("dog barking", "3 captions of dogs.")
    path, auth, body = _FakeChat.calls[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sekrit"
    assert body["model"] == "llama-3-70b"
    assert SUMMARY_PROMPT in body["messages"][-1]["content"]


def test_endpoint_retries_then_succeeds(fake_server):
    _FakeChat.fail_first = 2
    url = f"http://127.0.0.1:{fake_server.server_port}/v1"
    c = OpenAISummarizer(url, "m", retries=2, backoff_s=0.01).summarize(["a dog"])
    assert c.name == "dog barking" and len(_FakeChat.calls) == 3


def test_endpoint_clear_error_after_retries(fake_server):
    _FakeChat.fail_first = 10
    url = f"http://127.0.0.1:{fake_server.server_port}/v1"
    with pytest.raises(EndpointError, match=r"chat/completions \(model 'm'\) failed: HTTP 503"):
        OpenAISummarizer(url, "m", retries=1, backoff_s=0.01).summarize(["a dog"])


def test_endpoint_unreachable_is_clear():
    with pytest.raises(EndpointError, match="failed: URLError"):
        OpenAISummarizer("http://127.0.0.1:9/v1", "m", retries=0, timeout_s=2).summarize(["x"])


def test_detection_judge_through_the_endpoint(fake_server):
    """The LLM-judged detection score asks the OpenAI-compatible endpoint one yes/no question per clip."""
    import numpy as np

    from ard_core.detection import Sample, llm_detection
    from ard_core.naming import ChatEndpoint

    url = f"http://127.0.0.1:{fake_server.server_port}/v1"
    captions = ["a dog barking", "rain falling", "dogs barking loudly", "a siren"]
    d = llm_detection(ChatEndpoint(url, "judge", retries=0), "dog barking", captions, Sample(np.array([0, 2]), np.array([1, 3])))
    assert (d.score, d.n_pos, d.n_neg) == (1.0, 2, 2) and len(_FakeChat.calls) == 4
    assert all(c[2]["model"] == "judge" and c[2]["max_tokens"] == 3 for c in _FakeChat.calls)
