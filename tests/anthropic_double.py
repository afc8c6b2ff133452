"""A loopback protocol double of Anthropic's Messages API, streaming.

NOT a model and NOT Anthropic: a threaded HTTP/1.1 server on 127.0.0.1 (random port)
that speaks the wire format of Anthropic's "Streaming Messages" document
(https://platform.claude.com/docs/en/build-with-claude/streaming) for ``POST
/v1/messages`` with ``stream: true``: named server-sent events (``event: <type>`` and
``data: {"type": "<type>", ...}``) in the document's order -- ``message_start``,
``content_block_start`` / ``content_block_delta`` / ``content_block_stop`` per block,
``message_delta``, ``message_stop``, with ``ping`` events between -- and the errors of
its "Errors" document (https://docs.anthropic.com/en/api/errors): a JSON body
``{"type": "error", "error": {"type": "authentication_error", "message": ...}}`` with
the status (401, 404, 429 with ``Retry-After``, 529), or an ``error`` event inside a
200 stream (``overloaded_error``). ``GET /v1/models`` answers a model list.

Like the real API it checks the headers: a request without the expected ``x-api-key``
gets 401 ``authentication_error``, one without ``anthropic-version`` 400
``invalid_request_error``. It records every request (path, lower-cased headers, JSON
body) and plays scripted `Reply` objects in order::

    with serve_anthropic(api_key="fake-anthropic-test-key") as server:
        server.play(text_stream(["Hi", "!"]), http_error(529, "overloaded_error", "Overloaded"))

`fixture` plays one of the example streams of Anthropic's own Python client, copied
into ``tests/anthropic_streams/`` (see its SOURCE.md), byte for byte.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from loopback import (
    DoubleState,
    LoopbackHTTPServer,
    RequestReader,
    ServedDouble,
    echo_key,
    received_key,
)

__all__ = [
    "STREAMS",
    "AnthropicDouble",
    "Recorded",
    "Reply",
    "cut",
    "cut_mid_event",
    "error_after",
    "events_reply",
    "fixture",
    "http_error",
    "message_start",
    "serve_anthropic",
    "text_events",
    "text_stream",
    "thinking_stream",
    "tool_use_stream",
]

#: The example streams copied from anthropics/anthropic-sdk-python.
STREAMS = Path(__file__).parent / "anthropic_streams"
MODEL = "claude-test-1"
#: The longest any scripted pause lasts.
_PAUSE_LIMIT_S = 10.0

Event = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Reply:
    """One scripted answer to one ``POST /v1/messages``. Build with the helpers."""

    kind: Literal["events", "raw", "http_error", "cut_mid_event"] = "events"
    events: tuple[Event, ...] = ()
    #: Seconds to wait before the event at each position (a slow first token).
    pauses: tuple[tuple[int, float], ...] = ()
    #: For "raw": the body as it is.
    body: bytes = b""
    status: int = 200
    error_type: str = ""
    #: For "http_error": ``{key}`` becomes the ``x-api-key`` the request carried (a
    #: server that echoes the key, as some do in 401s).
    message: str = ""
    retry_after: str | None = None
    #: For "events": ``{key}``, ``{key_base64}`` and ``{key_url}`` in the events become
    #: the ``x-api-key`` the request carried (`loopback.echo_key`), and the answer has
    #: an ``X-Echoed-Key`` header.
    echo_key: bool = False


# -- events as the streaming document shows them -------------------------------------


def message_start(
    *, model: str = MODEL, input_tokens: int = 25, cache_read: int | None = None
) -> Event:
    usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": 1}
    if cache_read is not None:
        usage |= {"cache_creation_input_tokens": 0, "cache_read_input_tokens": cache_read}
    message: dict[str, Any] = {
        "id": "msg_loopback",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return "message_start", {"type": "message_start", "message": message}


def _block(index: int, block: dict[str, Any], deltas: list[dict[str, Any]]) -> list[Event]:
    events: list[Event] = [
        ("content_block_start", {"type": "content_block_start", "index": index,
                                 "content_block": block}),
    ]  # fmt: skip
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
        for d in deltas
    ]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def _end(stop_reason: str, output_tokens: int) -> list[Event]:
    return [
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                           "usage": {"output_tokens": output_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip


def text_events(
    texts: list[str] | tuple[str, ...] = ("Hello", " there", "!"),
    *,
    thoughts: tuple[str, ...] = (),
    stop_reason: str = "end_turn",
    output_tokens: int = 15,
    input_tokens: int = 25,
    cache_read: int | None = None,
) -> list[Event]:
    """``message_start``, a ``ping``, a thinking block (when ``thoughts``, ending with a
    ``signature_delta``), a text block of ``texts``, ``message_delta``, ``message_stop``."""
    events = [message_start(input_tokens=input_tokens, cache_read=cache_read)]
    events.append(("ping", {"type": "ping"}))
    index = 0
    if thoughts:
        deltas = [{"type": "thinking_delta", "thinking": t} for t in thoughts]
        deltas.append({"type": "signature_delta", "signature": "RXFOb3RBUmVhbFNpZ25hdHVyZQ=="})
        events += _block(0, {"type": "thinking", "thinking": ""}, deltas)
        index = 1
    events += _block(
        index, {"type": "text", "text": ""}, [{"type": "text_delta", "text": t} for t in texts]
    )
    return events + _end(stop_reason, output_tokens)


def events_reply(
    events: list[Event], *, pauses: dict[int, float] | None = None, echo_key: bool = False
) -> Reply:
    """A 200 event stream of ``events``, waiting ``pauses[i]`` s before event ``i``
    (``echo_key``: see `Reply`)."""
    return Reply(
        kind="events",
        events=tuple(events),
        pauses=tuple((pauses or {}).items()),
        echo_key=echo_key,
    )


def text_stream(texts: list[str] | tuple[str, ...] = ("Hello", " there", "!"), **kw: Any) -> Reply:
    """A text answer (keywords as `text_events`)."""
    return events_reply(text_events(texts, **kw))


def thinking_stream(thoughts: tuple[str, ...], texts: tuple[str, ...], **kw: Any) -> Reply:
    """A thinking block, then a text block."""
    return events_reply(text_events(texts, thoughts=thoughts, **kw))


def tool_use_stream(
    calls: list[tuple[str, str, list[str]]],
    *,
    text: str | None = "Let me look.",
    output_tokens: int = 40,
) -> Reply:
    """A text block (unless ``text`` is None), then one ``tool_use`` block per ``(id,
    name, partial_json fragments)``: its ``input_json_delta`` events, the first with
    empty ``partial_json`` as the document's example has; ``stop_reason: tool_use``."""
    events = [message_start()]
    index = 0
    if text is not None:
        events += _block(0, {"type": "text", "text": ""}, [{"type": "text_delta", "text": text}])
        index = 1
    for call_id, name, fragments in calls:
        deltas = [{"type": "input_json_delta", "partial_json": f} for f in ["", *fragments]]
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        events += _block(index, block, deltas)
        index += 1
    return events_reply(events + _end("tool_use", output_tokens))


def error_after(
    events: list[Event], error_type: str = "overloaded_error", message: str = "Overloaded"
) -> Reply:
    """``events``, then the document's ``error`` event, then the body ends."""
    error = {"type": "error", "error": {"type": error_type, "message": message}}
    return events_reply([*events, ("error", error)])


def cut(events: list[Event]) -> Reply:
    """``events`` (leave out the ``message_stop``), then a clean end of the body."""
    return events_reply(events)


def cut_mid_event(events: list[Event]) -> Reply:
    """``events``, then half of the next chunk, then the socket closes."""
    return Reply(kind="cut_mid_event", events=tuple(events))


def http_error(
    status: int, error_type: str, message: str, *, retry_after: str | None = None
) -> Reply:
    """``status`` with Anthropic's error body (and ``Retry-After`` when given)."""
    return Reply(
        kind="http_error", status=status, error_type=error_type, message=message,
        retry_after=retry_after,
    )  # fmt: skip


def fixture(name: str) -> Reply:
    """One of the copied example streams, sent byte for byte."""
    return Reply(kind="raw", body=(STREAMS / name).read_bytes())


def _event_bytes(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


# -- the server --------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """What the double received: method, path, lower-cased headers and JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


@dataclass(kw_only=True)
class _State(DoubleState):
    api_key: str | None
    version: str
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)


class _Handler(RequestReader):
    timeout = 5.0
    server: _Server

    def _record(self) -> Recorded:
        read = self.read_request()
        recorded = Recorded(read.method, read.path, read.headers, read.body)
        with self.server.state.lock:
            self.server.state.requests.append(recorded)
        return recorded

    def _error(self, status: int, kind: str, message: str, retry_after: str | None = None) -> None:
        data = json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_loopback")
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _headers_refused(self, recorded: Recorded) -> bool:
        """The API's own checks: the key, then the version header."""
        state = self.server.state
        if state.api_key is not None and recorded.headers.get("x-api-key") != state.api_key:
            self._error(401, "authentication_error", "invalid x-api-key")
            return True
        if recorded.headers.get("anthropic-version") != state.version:
            self._error(400, "invalid_request_error", "anthropic-version: header is required")
            return True
        return False

    def do_GET(self) -> None:
        recorded = self._record()
        if self._headers_refused(recorded):
            return
        if self.path.rstrip("/") != "/v1/models":
            self._error(404, "not_found_error", f"Not found: {self.path}")
            return
        data = json.dumps({
            "data": [{"type": "model", "id": MODEL, "display_name": "Claude Test",
                      "created_at": "2025-01-01T00:00:00Z"}],
            "has_more": False, "first_id": MODEL, "last_id": MODEL,
        }).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        recorded = self._record()
        if self._headers_refused(recorded):
            return
        if self.path.rstrip("/") != "/v1/messages":
            self._error(404, "not_found_error", f"Not found: {self.path}")
            return
        state = self.server.state
        with state.lock:
            reply = state.replies.popleft() if state.replies else text_stream()
        try:
            self._play(reply, recorded)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _play(self, reply: Reply, recorded: Recorded) -> None:
        if reply.kind == "http_error":
            message = reply.message.replace("{key}", recorded.headers.get("x-api-key", ""))
            self._error(reply.status, reply.error_type, message, reply.retry_after)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", "req_loopback")
        if reply.echo_key:
            self.send_header("X-Echoed-Key", received_key(self.headers))
        self.send_header("Connection", "close")
        self.end_headers()
        if reply.kind == "raw":
            self._chunk(reply.body)
        else:
            pauses = dict(reply.pauses)
            for position, (name, data) in enumerate(reply.events):
                if position in pauses:
                    self.server.state.release.wait(min(pauses[position], _PAUSE_LIMIT_S))
                event = _event_bytes(name, data)
                if reply.echo_key:
                    event = echo_key(event.decode(), received_key(self.headers)).encode()
                self._chunk(event)
        if reply.kind == "cut_mid_event":
            whole = _event_bytes(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "never"},
                },
            )
            self.wfile.write(f"{len(whole):x}\r\n".encode() + whole[: len(whole) // 2])
            self.wfile.flush()
            return  # the socket closes inside the announced chunk
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


_Server = LoopbackHTTPServer["_State"]


class AnthropicDouble(ServedDouble["_State"]):
    """The running double; use `serve_anthropic`."""

    url_path = "/v1"

    def __init__(self, *, api_key: str | None, version: str = "2023-06-01") -> None:
        super().__init__(_State(api_key=api_key, version=version), _Handler)

    def play(self, *replies: Reply) -> None:
        """Queue replies for the next POSTs, in order; then `text_stream` answers."""
        with self._state.lock:
            self._state.replies.extend(replies)

    @property
    def requests(self) -> list[Recorded]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]


@contextmanager
def serve_anthropic(
    api_key: str | None = "fake-anthropic-loopback-key",
) -> Iterator[AnthropicDouble]:
    """Run the double for a ``with`` block; it fails the test if a handler broke."""
    double = AnthropicDouble(api_key=api_key)
    with double:
        yield double
    assert not double.errors, f"the anthropic double itself failed: {double.errors!r}"
