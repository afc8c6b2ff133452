"""A loopback protocol double of the OpenAI chat-completions streaming format.

This is NOT a real model server and NOT a real OpenAI endpoint: it is a tiny threaded
HTTP/1.1 server on 127.0.0.1 (random port) that speaks only the documented wire format
of ``POST /v1/chat/completions`` with ``stream: true`` -- ``data: {chat.completion.chunk
json}`` events separated by blank lines, ending with ``data: [DONE]``, usage in a last
chunk with empty ``choices`` when ``stream_options.include_usage`` is sent, and
per-token ``logprobs.content[{token, logprob, top_logprobs}]`` when ``logprobs`` is
asked for -- plus ``GET /v1/models``. It plays scripted behaviours (a normal stream,
stalls, HTTP errors, cut streams, malformed data, error events, a non-SSE answer,
keep-alive comments without end, redirects, raw bodies, a server that accepts and
never answers) so tests can check how the client reacts, and it records every request
it received.

Usage::

    with serve_loopback() as server:
        server.play(stream(["Hi", "!"]), http_error(500, "boom"))
        ...  # point OpenAICompatible at server.base_url
        assert server.requests[0].body["stream"] is True

Every stall is bounded (`STALL_LIMIT_S`) and released when the context exits; leaving
the context stops the server and joins every handler thread, so no thread outlives the
test that started it.
"""

from __future__ import annotations

import base64
import json
import select
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Generic, Literal, Self, TypeVar
from urllib.parse import quote

__all__ = [
    "STALL_LIMIT_S",
    "LoopbackServer",
    "RecordedRequest",
    "Script",
    "close_without_done",
    "closed_port",
    "cut_mid_chunk",
    "echo_key",
    "end_without_done",
    "error_event",
    "expected_logprob",
    "expected_top",
    "http_error",
    "json_answer",
    "keep_alive",
    "malformed",
    "raw",
    "received_key",
    "redirect",
    "serve_loopback",
    "stall",
    "stream",
    "tool_call_stream",
    "tool_delta",
    "until_disconnect",
]

#: The longest any scripted stall or wait lasts, even if the test never releases it.
STALL_LIMIT_S = 10.0

#: Socket timeout of each handler: a client that connects and sends nothing is dropped.
_HANDLER_SOCKET_TIMEOUT_S = 5.0

Kind = Literal[
    "stream",
    "stall",
    "http_error",
    "end_without_done",
    "close_without_done",
    "cut_mid_chunk",
    "malformed",
    "error_event",
    "json_answer",
    "until_disconnect",
    "keep_alive",
    "redirect",
    "raw",
]


@dataclass(frozen=True)
class Script:
    """One scripted answer to one ``POST /chat/completions``. Build with the helpers."""

    kind: Kind = "stream"
    tokens: tuple[str, ...] = ("Hello", ",", " world")
    reasoning: tuple[str, ...] = ()
    finish_reason: str = "stop"
    prompt_tokens: int = 7
    #: Of those, the ones served from the prompt cache: sent as OpenAI documents it,
    #: ``usage.prompt_tokens_details.cached_tokens`` (None: no details object).
    cached_tokens: int | None = None
    #: Send usage even when ``include_usage`` was not asked (False: never send it).
    usage: bool = True
    status: int = 200
    message: str = ""
    #: For "http_error": an OpenAI-style JSON error body; False: `message` as plain text.
    json_body: bool = True
    #: For "http_error": a ``Retry-After`` header value to send (None: none).
    retry_after: str | None = None
    #: For "stall": send headers and these many token chunks first; None: send nothing.
    stall_after: int | None = None
    bad_data: str = ""
    #: Interleave ``: keep-alive`` comments and ``event:`` / ``id:`` / ``retry:`` lines.
    comments: bool = False
    event_lines: bool = False
    #: Line ending of the SSE lines.
    newline: str = "\n"
    #: For "raw": the body, sent as is (in pieces of `piece_bytes`; 0: one piece).
    body: bytes = b""
    content_type: str = "text/event-stream; charset=utf-8"
    piece_bytes: int = 0
    #: For "redirect": the Location header.
    location: str = ""
    #: For "keep_alive": seconds between comments, and how many at most.
    interval_s: float = 0.0
    count: int = 0
    #: For "stream": seconds before the first token chunk and before each later one
    #: (a server's prefill and decode time, for timing tests).
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0
    #: For "stream": echo the API key the request carried (`echo_key`): ``{key}``,
    #: ``{key_base64}`` and ``{key_url}`` in the events become it, and the answer has
    #: an ``X-Echoed-Key`` header (a server that leaks the credential it was sent).
    echo_key: bool = False


def received_key(headers: Message) -> str:
    """The credential a request carried: its ``Authorization`` token (``Bearer``'s key,
    or ``Basic``'s base64 of ``user:password``), else its ``x-api-key`` (Anthropic) or
    ``x-goog-api-key`` (Gemini) header; "" without one."""
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    if scheme.lower() in ("bearer", "basic") and token.strip():
        return token.strip()
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or ""


def echo_key(text: str, key: str) -> str:
    """``text`` with ``{key}`` replaced by ``key``, ``{key_base64}`` by its base64 and
    ``{key_url}`` by it URL-encoded (every character but letters, digits and ``_.-~``
    escaped): what a double that echoes its credential sends."""
    return (
        text.replace("{key_base64}", base64.b64encode(key.encode()).decode("ascii"))
        .replace("{key_url}", quote(key, safe=""))
        .replace("{key}", key)
    )


def stream(tokens: list[str] | tuple[str, ...] = ("Hello", ",", " world"), **kw: Any) -> Script:
    """A normal stream: role chunk, one chunk per token, finish chunk, usage, [DONE]."""
    return Script(kind="stream", tokens=tuple(tokens), **kw)


def stall(after_chunks: int | None = None, tokens: tuple[str, ...] = ("Hel",)) -> Script:
    """Accept and read the request, then send nothing (``after_chunks=None``), or send the
    headers and `after_chunks` token chunks, then stall until the test ends."""
    return Script(kind="stall", stall_after=after_chunks, tokens=tokens)


def http_error(
    status: int, message: str, *, json_body: bool = True, retry_after: str | None = None
) -> Script:
    """An HTTP error status with an OpenAI-style ``{"error": {"message": ...}}`` body
    (or `message` as plain text when ``json_body`` is False), and a ``Retry-After``
    header when given."""
    return Script(
        kind="http_error", status=status, message=message, json_body=json_body,
        retry_after=retry_after,
    )  # fmt: skip


def end_without_done(tokens: tuple[str, ...] = ("Hel", "lo")) -> Script:
    """Token chunks, then a clean end of the chunked body, never ``data: [DONE]``."""
    return Script(kind="end_without_done", tokens=tokens)


def close_without_done(tokens: tuple[str, ...] = ("Hel", "lo")) -> Script:
    """A close-delimited body (no chunked encoding): token chunks, then the socket closes."""
    return Script(kind="close_without_done", tokens=tokens)


def cut_mid_chunk(tokens: tuple[str, ...] = ("Hel", "lo")) -> Script:
    """Token chunks, then half of a chunked-encoding chunk, then the socket closes."""
    return Script(kind="cut_mid_chunk", tokens=tokens)


def malformed(bad_data: str, tokens: tuple[str, ...] = ("Hel",)) -> Script:
    """Token chunks, then a ``data:`` line whose payload is not JSON."""
    return Script(kind="malformed", tokens=tokens, bad_data=bad_data)


def error_event(message: str, tokens: tuple[str, ...] = ("Hel",)) -> Script:
    """Token chunks, then ``data: {"error": {"message": ...}}`` inside the stream."""
    return Script(kind="error_event", tokens=tokens, message=message)


def json_answer(text: str = "not streamed") -> Script:
    """A non-streamed ``chat.completion`` JSON answer (``application/json``)."""
    return Script(kind="json_answer", tokens=(text,))


def until_disconnect(tokens: tuple[str, ...] = ("Hello",)) -> Script:
    """Token chunks, then nothing until the client drops the connection
    (`LoopbackServer.disconnected` is set when it does)."""
    return Script(kind="until_disconnect", tokens=tokens)


def keep_alive(interval_s: float = 0.1, count: int = 50, tokens: tuple[str, ...] = ()) -> Script:
    """Headers and `tokens` chunks, then a ``: keep-alive`` comment every `interval_s`
    (at most `count`, and never past `STALL_LIMIT_S`), then the body ends without
    ``[DONE]``: a stream that is alive but never finishes."""
    return Script(kind="keep_alive", tokens=tokens, interval_s=interval_s, count=count)


def redirect(status: int = 307, location: str = "/v2/chat/completions") -> Script:
    """A redirect status with a ``Location`` header and an empty body."""
    return Script(kind="redirect", status=status, location=location)


def raw(
    body: bytes,
    content_type: str = "text/event-stream; charset=utf-8",
    *,
    piece_bytes: int = 0,
) -> Script:
    """A 200 answer whose (chunked) body is `body` byte for byte, under `content_type`:
    for what no documented stream contains (a BOM, HTML, another charset, wrong shapes)."""
    return Script(kind="raw", body=body, content_type=content_type, piece_bytes=piece_bytes)


def tool_delta(
    index: int | None, arguments: str = "", *, id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """One ``delta.tool_calls`` entry as OpenAI's streaming function-calling guide shows
    it: the call's first delta carries ``id``, ``type`` and ``function.name`` with empty
    ``arguments``; the later ones only ``index`` and an ``arguments`` fragment
    (``index=None`` leaves it out, as some OpenAI-compatible layers do)."""
    entry: dict[str, Any] = {} if index is None else {"index": index}
    if id is not None:
        entry["id"] = id
        entry["type"] = "function"
    function: dict[str, Any] = {"arguments": arguments}
    if name is not None:
        function = {"name": name, **function}
    entry["function"] = function
    return entry


def tool_call_stream(
    deltas: list[dict[str, Any]] | tuple[dict[str, Any], ...],
    *,
    logprobs: list[list[tuple[str, float]] | None] | None = None,
    finish_reason: str = "tool_calls",
    completion_tokens: int | None = None,
    piece_bytes: int = 0,
) -> Script:
    """A stream of the given deltas, in OpenAI's ``chat.completion.chunk`` format:
    one chunk per delta (the first also with ``role``), each with the ``(token,
    logprob)`` pairs of `logprobs` at its position as ``logprobs.content`` when given,
    then the finish chunk, a usage chunk (when `completion_tokens` is given) and
    ``[DONE]``. Build tool-call deltas as
    ``{"tool_calls": [tool_delta(...)]}``. Played as a `raw` body (it does not depend
    on the request), cut into pieces of `piece_bytes` when given."""

    def chunk(delta: dict[str, Any], **choice: Any) -> dict[str, Any]:
        return {
            "id": "chatcmpl-loopback",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "loopback-model",
            "choices": [{"index": 0, "delta": delta, "logprobs": choice.get("logprobs"),
                         "finish_reason": choice.get("finish_reason")}],
        }  # fmt: skip

    events = []
    for position, delta in enumerate(deltas):
        if position == 0:
            delta = {"role": "assistant", "content": None, **delta}
        pairs = logprobs[position] if logprobs is not None else None
        content = None
        if pairs is not None:
            content = {
                "content": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                    for t, lp in pairs
                ],
                "refusal": None,
            }
        events.append(chunk(delta, logprobs=content))
    events.append(chunk({}, finish_reason=finish_reason))
    if completion_tokens is not None:
        usage = chunk({})
        usage["choices"] = []
        usage["usage"] = {
            "prompt_tokens": 7,
            "completion_tokens": completion_tokens,
            "total_tokens": 7 + completion_tokens,
        }
        events.append(usage)
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return raw(body.encode(), piece_bytes=piece_bytes)


def expected_logprob(index: int) -> float:
    """The logprob the double sends for the token at `index` of a stream."""
    return round(-0.05 * (index + 1), 4)


def expected_top(index: int, token: str, count: int) -> list[tuple[str, float]]:
    """The ``top_logprobs`` alternatives the double sends for that token."""
    first = expected_logprob(index)
    return [(token, first)] + [(f"alt{j}", round(first - j, 4)) for j in range(1, count)]


@dataclass(frozen=True)
class RecordedRequest:
    """What the double received: method, path, lower-cased headers and JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None
    raw_body: bytes = b""


@dataclass(kw_only=True)
class DoubleState:
    """What every protocol double's state holds: its handlers' unexpected exceptions,
    the lock over the rest, and the event that releases stalled answers at stop."""

    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass(kw_only=True)
class _State(DoubleState):
    scripts: deque[Script] = field(default_factory=deque)
    default: Script = field(default_factory=stream)
    models_route: bool = True
    silent: bool = False
    requests: list[RecordedRequest] = field(default_factory=list)
    #: False: keep no request (a long soak must not measure the double's own growth).
    keep_requests: bool = True
    disconnected: threading.Event = field(default_factory=threading.Event)


class RequestReader(BaseHTTPRequestHandler):
    """A protocol double's handler base: HTTP/1.1, quiet, one request per connection
    (nothing idles at exit), and `read_request` for what the client sent."""

    protocol_version = "HTTP/1.1"
    timeout = _HANDLER_SOCKET_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def read_request(self) -> RecordedRequest:
        """The request: method, path, lower-cased headers, JSON body (None when the
        body is empty or not JSON) and the raw bytes."""
        self.close_connection = True
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw_body=raw,
        )


class _Handler(RequestReader):
    server: _Server
    #: Sent as ``X-Echoed-Key`` by `_head` once set (an `echo_key` stream).
    _echoed_key: str | None = None

    def _record(self) -> RecordedRequest:
        recorded = self.read_request()
        state = self.server.state
        if state.keep_requests:
            with state.lock:
                state.requests.append(recorded)
        return recorded

    def _head(
        self,
        status: int,
        content_type: str,
        *,
        chunked: bool,
        length: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        if self._echoed_key is not None:
            self.send_header("X-Echoed-Key", self._echoed_key)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _write(self, data: bytes, *, chunked: bool) -> None:
        if chunked:
            data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
        self.wfile.write(data)
        self.wfile.flush()

    # -- routes ---------------------------------------------------------------------

    def _stay_silent(self) -> bool:
        """In silent mode, hold the connection without a byte of answer (bounded)."""
        state = self.server.state
        if state.silent:
            state.release.wait(STALL_LIMIT_S)
        return state.silent

    def do_GET(self) -> None:
        self._record()
        if self._stay_silent():
            return
        if self.path.rstrip("/").endswith("/models") and self.server.state.models_route:
            body = json.dumps(
                {"object": "list", "data": [{"id": "loopback-model", "object": "model"}]}
            )
            self._json(200, body)
        else:
            self._json(404, json.dumps({"error": {"message": f"no route {self.path}"}}))

    def do_POST(self) -> None:
        recorded = self._record()
        state = self.server.state
        if self._stay_silent():
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
            return
        with state.lock:
            script = state.scripts.popleft() if state.scripts else state.default
        body = recorded.body if isinstance(recorded.body, dict) else {}
        try:
            self._play(script, body)
        except (BrokenPipeError, ConnectionResetError):
            state.disconnected.set()  # the client left while we were writing

    def _json(self, status: int, body: str, retry_after: str | None = None) -> None:
        data = body.encode()
        self._head(
            status, "application/json", chunked=False, length=len(data), retry_after=retry_after
        )
        self._write(data, chunked=False)

    # -- the OpenAI stream format ---------------------------------------------------

    def _chunk(self, body: dict[str, Any], delta: dict[str, Any], **choice: Any) -> dict[str, Any]:
        return {
            "id": "chatcmpl-loopback",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": body.get("model", "loopback-model"),
            "system_fingerprint": "fp_loopback",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": choice.get("logprobs"),
                 "finish_reason": choice.get("finish_reason")}
            ],
        }  # fmt: skip

    def _token_chunks(self, script: Script, body: dict[str, Any]) -> list[dict[str, Any]]:
        chunks = [self._chunk(body, {"reasoning_content": text}) for text in script.reasoning]
        want_logprobs = bool(body.get("logprobs"))
        top_n = int(body.get("top_logprobs") or 0)
        for index, token in enumerate(script.tokens):
            logprobs = None
            if want_logprobs:
                logprobs = {
                    "content": [
                        {
                            "token": token,
                            "logprob": expected_logprob(index),
                            "bytes": list(token.encode()),
                            "top_logprobs": [
                                {"token": t, "logprob": lp, "bytes": list(t.encode())}
                                for t, lp in expected_top(index, token, top_n)
                            ],
                        }
                    ],
                    "refusal": None,
                }
            chunks.append(self._chunk(body, {"content": token}, logprobs=logprobs))
        return chunks

    def _event(self, script: Script, payload: dict[str, Any] | str, *, chunked: bool) -> None:
        nl = script.newline
        data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        if script.echo_key:
            data = echo_key(data, received_key(self.headers))
        text = ""
        if script.comments:
            text += f": keep-alive{nl}{nl}"
        if script.event_lines:
            text += f"event: message{nl}id: 1{nl}retry: 1000{nl}"
        text += f"data: {data}{nl}{nl}"
        self._write(text.encode(), chunked=chunked)

    def _usage(self, script: Script, body: dict[str, Any]) -> dict[str, Any] | None:
        options = body.get("stream_options") or {}
        if not script.usage or not options.get("include_usage"):
            return None
        completion = len(script.tokens) + len(script.reasoning)
        chunk = self._chunk(body, {})
        chunk["choices"] = []
        chunk["usage"] = {
            "prompt_tokens": script.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": script.prompt_tokens + completion,
        }
        if script.cached_tokens is not None:
            chunk["usage"]["prompt_tokens_details"] = {"cached_tokens": script.cached_tokens}
        return chunk

    def _sse_head(self, *, chunked: bool = True, echo: bool = False) -> None:
        if echo:
            self._echoed_key = received_key(self.headers)
        self._head(200, "text/event-stream; charset=utf-8", chunked=chunked)

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _play(self, script: Script, body: dict[str, Any]) -> None:
        state = self.server.state
        kind = script.kind
        if kind == "stream":
            self._sse_head(echo=script.echo_key)
            self._event(
                script, self._chunk(body, {"role": "assistant", "content": ""}), chunked=True
            )
            for index, chunk in enumerate(self._token_chunks(script, body)):
                delay = script.first_token_delay_s if index == 0 else script.token_delay_s
                if delay:
                    time.sleep(min(delay, STALL_LIMIT_S))
                self._event(script, chunk, chunked=True)
            self._event(
                script, self._chunk(body, {}, finish_reason=script.finish_reason), chunked=True
            )
            usage = self._usage(script, body)
            if usage is not None:
                self._event(script, usage, chunked=True)
            self._event(script, "[DONE]", chunked=True)
            self._end_chunked()
        elif kind == "stall":
            if script.stall_after is not None:
                self._sse_head()
                for chunk in self._token_chunks(script, body)[: script.stall_after]:
                    self._event(script, chunk, chunked=True)
            state.release.wait(STALL_LIMIT_S)
        elif kind == "http_error":
            if script.json_body:
                self._json(script.status, json.dumps(
                    {"error": {"message": script.message, "type": "loopback_error",
                               "param": None, "code": None}}
                ), script.retry_after)  # fmt: skip
            else:
                data = script.message.encode()
                self._head(script.status, "text/plain", chunked=False, length=len(data))
                self._write(data, chunked=False)
        elif kind == "end_without_done":
            self._sse_head()
            for chunk in self._token_chunks(script, body):
                self._event(script, chunk, chunked=True)
            self._end_chunked()
        elif kind == "close_without_done":
            self._sse_head(chunked=False)
            for chunk in self._token_chunks(script, body):
                self._event(script, chunk, chunked=False)
            # returning closes the socket: a close-delimited body ends cleanly here
        elif kind == "cut_mid_chunk":
            self._sse_head()
            for chunk in self._token_chunks(script, body):
                self._event(script, chunk, chunked=True)
            data = f"data: {json.dumps(self._chunk(body, {'content': 'never'}))}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data[: len(data) // 2])
            self.wfile.flush()
            # returning closes the socket in the middle of the announced chunk
        elif kind == "malformed":
            self._sse_head()
            for chunk in self._token_chunks(script, body):
                self._event(script, chunk, chunked=True)
            self._event(script, script.bad_data, chunked=True)
            self._event(script, "[DONE]", chunked=True)
            self._end_chunked()
        elif kind == "error_event":
            self._sse_head()
            for chunk in self._token_chunks(script, body):
                self._event(script, chunk, chunked=True)
            error = {"error": {"message": script.message, "type": "server_error", "code": 500}}
            self._event(script, error, chunked=True)
            self._event(script, "[DONE]", chunked=True)
            self._end_chunked()
        elif kind == "json_answer":
            answer = {
                "id": "chatcmpl-loopback",
                "object": "chat.completion",
                "created": 1700000000,
                "model": body.get("model", "loopback-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(script.tokens)},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            self._json(200, json.dumps(answer))
        elif kind == "until_disconnect":
            self._sse_head()
            for chunk in self._token_chunks(script, body):
                self._event(script, chunk, chunked=True)
            self._wait_for_disconnect()
        elif kind == "keep_alive":
            self._sse_head()
            for chunk in self._token_chunks(script, body):
                self._event(script, chunk, chunked=True)
            deadline = time.monotonic() + STALL_LIMIT_S
            for _ in range(script.count):
                if state.release.wait(script.interval_s) or time.monotonic() > deadline:
                    break
                self._write(b": keep-alive\n\n", chunked=True)
            self._end_chunked()
        elif kind == "redirect":
            self.send_response(script.status)
            self.send_header("Location", script.location)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
        elif kind == "raw":
            self._head(200, script.content_type, chunked=True)
            size = script.piece_bytes or max(1, len(script.body))
            for start in range(0, len(script.body), size):
                self._write(script.body[start : start + size], chunked=True)
            self._end_chunked()
        else:  # pragma: no cover - a typo in a test
            raise ValueError(f"unknown script kind {kind!r}")

    def _wait_for_disconnect(self) -> None:
        state = self.server.state
        sock = self.connection
        waited = 0.0
        while waited < STALL_LIMIT_S and not state.release.is_set():
            readable, _, _ = select.select([sock], [], [], 0.02)
            waited += 0.02
            if readable:
                try:
                    data = sock.recv(1)
                except (ConnectionResetError, TimeoutError):
                    data = b""
                if not data:
                    state.disconnected.set()
                    return


StateT = TypeVar("StateT", bound=DoubleState)


class LoopbackHTTPServer(socketserver.ThreadingMixIn, HTTPServer, Generic[StateT]):
    """A threaded HTTP server on a free loopback port whose handlers read ``state``
    (every protocol double's), and which keeps its handlers' unexpected exceptions in
    ``state.errors`` for the test to assert on (a client leaving is not one)."""

    daemon_threads = False
    block_on_close = True  # server_close() joins every handler thread
    allow_reuse_address = True

    def __init__(self, state: StateT, handler: type[BaseHTTPRequestHandler]) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves an FQDN (a DNS lookup); loopback needs none.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(
            exc, (BrokenPipeError, ConnectionResetError, TimeoutError)
        ):
            self.state.errors.append(exc)


_Server = LoopbackHTTPServer["_State"]


class ServedDouble(Generic[StateT]):
    """A protocol double's server thread: `start` it (or use ``with``); `stop` releases
    stalled answers (the state's ``release``) and joins the thread."""

    #: What follows the port in `base_url` (``/v1``).
    url_path = ""

    def __init__(self, state: StateT, handler: type[BaseHTTPRequestHandler]) -> None:
        self._state = state
        self._handler = handler
        self._httpd: LoopbackHTTPServer[StateT] | None = None
        self._thread: threading.Thread | None = None

    @property
    def errors(self) -> list[BaseException]:
        """What the double's own handlers raised (the test asserts there is none)."""
        return list(self._state.errors)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.url_path}"

    def start(self) -> Self:
        self._httpd = LoopbackHTTPServer(self._state, self._handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=type(self).__name__,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(STALL_LIMIT_S)
            assert not self._thread.is_alive(), f"{type(self).__name__} thread did not stop"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LoopbackServer(ServedDouble["_State"]):
    """The running double. Use `serve_loopback` (or ``with LoopbackServer() as s``)."""

    url_path = "/v1"

    def __init__(self, *, keep_requests: bool = True) -> None:
        super().__init__(_State(keep_requests=keep_requests), _Handler)

    # -- scripting ------------------------------------------------------------------

    def play(self, *scripts: Script) -> None:
        """Queue scripts for the next POSTs, in order; afterwards `default` answers."""
        with self._state.lock:
            self._state.scripts.extend(scripts)

    @property
    def default(self) -> Script:
        return self._state.default

    @default.setter
    def default(self, script: Script) -> None:
        self._state.default = script

    @property
    def models_route(self) -> bool:
        """Whether ``GET /models`` answers 200 (False: 404, as on some servers)."""
        return self._state.models_route

    @models_route.setter
    def models_route(self, value: bool) -> None:
        self._state.models_route = value

    @property
    def silent(self) -> bool:
        """Whether every request is read and then left without an answer (a server
        that accepts connections and never answers), until the server stops."""
        return self._state.silent

    @silent.setter
    def silent(self, value: bool) -> None:
        self._state.silent = value

    # -- observations ---------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def posts(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    @property
    def disconnected(self) -> threading.Event:
        """Set when an `until_disconnect` script (or a write) sees the client leave."""
        return self._state.disconnected

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])


@contextmanager
def serve_loopback() -> Iterator[LoopbackServer]:
    """Run the protocol double for the duration of a ``with`` block."""
    server = LoopbackServer()
    with server:
        yield server
    assert not server.errors, f"the loopback double itself failed: {server.errors!r}"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def point_vllm_at(monkeypatch: Any, server: LoopbackServer) -> None:
    """An inner pytest run's environment: no stray ``LLMLAB_*`` or provider-key
    settings (the model store stays), no idle baseline, and ``vllm:`` models served by
    ``server``. ``monkeypatch`` is pytest's fixture (undone after the test)."""
    import os

    for name in list(os.environ):
        if (name.startswith("LLMLAB_") and name != "LLMLAB_HOME") or name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("LLMLAB_BASELINE_S", "0")
    # One request at a time: a test's queued answers go to its cases in order.
    monkeypatch.setenv("LLMLAB_CONCURRENCY", "1")
    monkeypatch.setenv("LLMLAB_VLLM_BASE_URL", server.base_url)
