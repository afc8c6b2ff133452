"""A stream read to its end keeps its connection: the next request reuses it, and a
kept connection the server closed is replaced once, at once.

The server here is a minimal HTTP/1.1 keep-alive double of the OpenAI chat-completions
stream (https://platform.openai.com/docs/api-reference/chat-streaming: ``data:`` events,
then ``data: [DONE]``), answering with a Content-Length body, as servers behind a
proxy do; it counts the TCP connections it accepts. Not a model.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pytest_llmlab.llm import LLM
from pytest_llmlab.models.openai import OpenAICompatible
from pytest_llmlab.models.spec import parse_spec


def _body(extra: bytes = b"") -> bytes:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}],
    }
    usage = {"id": "c", "object": "chat.completion.chunk", "choices": [],
             "usage": {"prompt_tokens": 3, "completion_tokens": 1}}  # fmt: skip
    events = [json.dumps(chunk), json.dumps(usage), "[DONE]"]
    return "".join(f"data: {e}\n\n" for e in events).encode() + extra


class KeepAliveDouble:
    """Serves ``body`` to every POST over keep-alive connections, counting them.
    ``one_per_connection``: a second request on a connection is dropped unanswered
    (what a server with a per-connection request limit, or an idle timeout that
    races the client, does)."""

    def __init__(self, body: bytes, *, one_per_connection: bool = False) -> None:
        self.connections = 0
        self.requests = 0
        self.dropped = 0
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                double.connections += 1

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                served = getattr(self, "served", 0)
                if one_per_connection and served:
                    double.dropped += 1
                    self.close_connection = True
                    return
                self.served = served + 1
                double.requests += 1
                # llama.cpp's /tokenize answers the count, with the same reuse rules.
                tokenize = self.path.endswith("/tokenize")
                answer = b'{"tokens": [1, 2, 3]}' if tokenize else body
                self.send_response(200)
                self.send_header(
                    "content-type", "application/json" if tokenize else "text/event-stream"
                )
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def keepalive_llm(request: pytest.FixtureRequest) -> Iterator[tuple[LLM, KeepAliveDouble]]:
    """An LLM on the keep-alive double (``request.param``: bytes after [DONE])."""
    double = KeepAliveDouble(_body(getattr(request, "param", b"")))
    provider = OpenAICompatible(model="tiny", display="vllm:tiny", base_url=double.base_url)
    llm = LLM(model_spec=parse_spec("vllm:tiny"), temperature=0.0, provider=provider)
    try:
        yield llm, double
    finally:
        llm.close()
        provider.close()
        double.close()


def test_requests_share_one_connection(keepalive_llm: tuple[LLM, KeepAliveDouble]) -> None:
    """What follows ``[DONE]`` (the body's end) is read, so the connection goes back to
    the pool: three generations, one connection (not one each: a TLS handshake per
    request against a cloud)."""
    llm, double = keepalive_llm
    texts = [llm.generate("hi").text for _ in range(3)]
    assert texts == ["ok"] * 3 and double.requests == 3
    assert double.connections == 1


@pytest.mark.parametrize(
    "keepalive_llm", [b": a comment after the end\n\n" + b"x" * 100], indirect=True
)
def test_bytes_after_done_are_read_and_ignored(
    keepalive_llm: tuple[LLM, KeepAliveDouble],
) -> None:
    """Bytes a server sends after ``[DONE]`` change nothing in the answer, and the
    connection is still reused once they are read."""
    llm, double = keepalive_llm
    first, second = llm.generate("hi"), llm.generate("hi")
    assert (first.text, first.error, second.text) == ("ok", None, "ok")
    assert double.connections == 1


def test_a_kept_connection_the_server_closed_is_retried_once_on_a_new_one() -> None:
    """The server drops the second request on a kept connection without an answer
    (httpx: "Server disconnected without sending a response"): the request goes again,
    at once, on a new connection, and its generation says it took two attempts."""
    double = KeepAliveDouble(_body(), one_per_connection=True)
    provider = OpenAICompatible(model="tiny", display="vllm:tiny", base_url=double.base_url)
    llm = LLM(model_spec=parse_spec("vllm:tiny"), temperature=0.0, provider=provider)
    try:
        first, second = llm.generate("hi"), llm.generate("hi")
        assert (first.text, second.text, second.error) == ("ok", "ok", None)
        assert (first.attempts, second.attempts) == (1, 2)
        assert (double.requests, double.dropped, double.connections) == (2, 1, 2)
    finally:
        llm.close()
        provider.close()
        double.close()


def test_without_keep_alive_every_request_opens_a_connection() -> None:
    double = KeepAliveDouble(_body())
    provider = OpenAICompatible(
        model="tiny", display="vllm:tiny", base_url=double.base_url, keep_alive=False
    )
    llm = LLM(model_spec=parse_spec("vllm:tiny"), temperature=0.0, provider=provider)
    try:
        assert [llm.generate("hi").text for _ in range(2)] == ["ok", "ok"]
        assert double.connections == 2
    finally:
        llm.close()
        provider.close()
        double.close()


def test_a_token_count_on_a_kept_connection_the_server_closed_is_asked_again() -> None:
    """llama.cpp's ``/tokenize`` (the count behind ``injection_tokens``) on a kept
    connection the server dropped unanswered is asked again on a new one, not given
    up as unknown."""
    double = KeepAliveDouble(_body(), one_per_connection=True)
    provider = OpenAICompatible(
        model="tiny", display="local:tiny", base_url=double.base_url, llama_tokenizer=True
    )
    try:
        assert [provider.count_tokens("a b c"), provider.count_tokens("a b c")] == [3, 3]
        assert (double.requests, double.dropped, double.connections) == (2, 1, 2)
    finally:
        provider.close()
        double.close()
