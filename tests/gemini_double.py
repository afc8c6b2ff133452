"""A loopback protocol double of the Gemini API's streaming endpoint.

NOT Google's server and NOT a model: a threaded HTTP/1.1 server on 127.0.0.1 (random
port) that speaks the documented wire format of ``POST /v1beta/models/{model}:
streamGenerateContent?alt=sse`` (Gemini API reference, ai.google.dev/api/generate-content,
"models.streamGenerateContent" and its REST example): one ``data:`` event per
``GenerateContentResponse`` -- ``candidates[{content: {role: model, parts: [{text}]},
finishReason, index}]``, ``usageMetadata`` (cumulative, on every response),
``modelVersion``, ``responseId`` -- and no ``[DONE]``: the body simply ends. Field names
and enum values follow googleapis/python-genai ``google/genai/types.py`` (``Part.thought``,
``FunctionCall``, ``LogprobsResult.chosenCandidates`` / ``topCandidates`` with
``logProbability``, ``FinishReason``, ``BlockedReason``); errors are Google's JSON
``{"error": {"code", "message", "status"}}`` (the in-stream error frame is the one in
python-genai's ``tests/client/test_async_stream.py``).

It checks what every request must carry: the key in the ``x-goog-api-key`` header
(a wrong or missing one gets Google's 400 ``API_KEY_INVALID`` answer) and never a
``key=`` query parameter (recorded in `GeminiDouble.key_in_query` and answered 400).
Scripted answers: `stream` of response frames (built with `response`), `http_error`
(with ``Retry-After``, or echoing the key it received, as some servers do), `cut` (a
chunked body cut mid-chunk), `end` (frames, then a clean end without a finishReason),
`stall` (frames, then silence until the test ends, bounded by `STALL_LIMIT_S`).
``GET /v1beta/models`` answers a model list.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from loopback import DoubleState, LoopbackHTTPServer, RequestReader, ServedDouble, echo_key

__all__ = [
    "KEY",
    "MODEL",
    "STALL_LIMIT_S",
    "GeminiDouble",
    "Reply",
    "Seen",
    "cut",
    "end",
    "http_error",
    "response",
    "serve_gemini",
    "stall",
    "stream",
]

#: The key the double accepts, and the model its answers name.
KEY = "fake-gemini-loopback-key-not-a-secret"
MODEL = "gemini-2.5-flash"
STALL_LIMIT_S = 10.0

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def response(
    text: str | None = None,
    *,
    thought: str | None = None,
    calls: list[dict[str, Any]] | None = None,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    logprobs: list[tuple[str, float, list[tuple[str, float]]]] | None = None,
    block_reason: str | None = None,
) -> dict[str, Any]:
    """One ``GenerateContentResponse`` as the API streams it: a thought part first
    (``thought: true``), then a text part, then ``functionCall`` parts (``{name,
    args}``); ``finishReason``; ``logprobsResult`` from ``(token, logprob, [(alt,
    logprob)...])`` steps; ``usageMetadata``; or, with ``block_reason``, no candidates
    and ``promptFeedback.blockReason``."""
    frame: dict[str, Any] = {}
    if block_reason is not None:
        frame["promptFeedback"] = {"blockReason": block_reason}
    else:
        parts: list[dict[str, Any]] = []
        if thought is not None:
            parts.append({"text": thought, "thought": True})
        if text is not None:
            parts.append({"text": text})
        parts.extend({"functionCall": call} for call in calls or ())
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        if logprobs is not None:
            candidate["logprobsResult"] = {
                "topCandidates": [
                    {"candidates": [{"token": t, "logProbability": lp} for t, lp in alts]}
                    for _, _, alts in logprobs
                ],
                "chosenCandidates": [{"token": t, "logProbability": lp} for t, lp, _ in logprobs],
            }
        frame["candidates"] = [candidate]
    if usage is not None:
        frame["usageMetadata"] = usage
    frame["modelVersion"] = MODEL
    frame["responseId"] = "loopback-response"
    return frame


@dataclass(frozen=True)
class Reply:
    """One scripted answer to one POST. Build with the helpers."""

    kind: Literal["stream", "http_error", "cut", "end", "stall"] = "stream"
    frames: tuple[dict[str, Any] | str, ...] = ()
    status: int = 200
    message: str = ""
    retry_after: str | None = None
    #: For "http_error": append the key it received to the message. For the streams:
    #: ``{key}``, ``{key_base64}`` and ``{key_url}`` in the frames become that key
    #: (`loopback.echo_key`), and the answer has an ``X-Echoed-Key`` header.
    echo_key: bool = False
    #: The SSE line ending ("\r\n" or "\n").
    newline: str = "\r\n"
    #: False: the body ends right after the last data line, without the blank line
    #: that would dispatch that event.
    final_blank_line: bool = True


def stream(
    *frames: dict[str, Any] | str,
    newline: str = "\r\n",
    final_blank_line: bool = True,
    echo_key: bool = False,
) -> Reply:
    """The frames as ``data:`` events (a str is sent as the data verbatim), then the end
    (``echo_key``: see `Reply`)."""
    return Reply(
        "stream", frames, newline=newline, final_blank_line=final_blank_line, echo_key=echo_key
    )


def http_error(
    status: int, message: str, *, retry_after: str | None = None, echo_key: bool = False
) -> Reply:
    """Google's error JSON with `status`; ``echo_key`` appends the key it received."""
    return Reply("http_error", status=status, message=message, retry_after=retry_after,
                 echo_key=echo_key)  # fmt: skip


def cut(*frames: dict[str, Any]) -> Reply:
    """The frames, then half of one more chunked-encoding chunk, then the socket closes."""
    return Reply("cut", frames)


def end(*frames: dict[str, Any]) -> Reply:
    """The frames, then a clean end of the body, no response with a finishReason."""
    return Reply("end", frames)


def stall(*frames: dict[str, Any]) -> Reply:
    """The frames, then nothing until the test ends."""
    return Reply("stall", frames)


@dataclass(frozen=True)
class Seen:
    """A request the double received: method, path (query included), lower-cased
    headers, JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


@dataclass(kw_only=True)
class _State(DoubleState):
    api_key: str = KEY
    replies: deque[Reply] = field(default_factory=deque)
    seen: list[Seen] = field(default_factory=list)
    key_in_query: list[str] = field(default_factory=list)


class _Handler(RequestReader):
    timeout = 5.0
    server: _Server

    def _record(self) -> Seen:
        read = self.read_request()
        seen = Seen(read.method, read.path, read.headers, read.body)
        state = self.server.state
        with state.lock:
            state.seen.append(seen)
            if "key" in parse_qs(urlsplit(self.path).query):
                state.key_in_query.append(self.path)
        return seen

    def _json(self, status: int, payload: Any, retry_after: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, retry_after: str | None = None) -> None:
        name = _STATUS_NAMES.get(status, "UNKNOWN")
        self._json(status, {"error": {"code": status, "message": message, "status": name}},
                   retry_after)  # fmt: skip

    def _refused(self, seen: Seen) -> bool:
        """Google's answers to a key in the URL or a wrong key in the header."""
        if "key" in parse_qs(urlsplit(seen.path).query):
            self._error(400, "the double refuses a key= query parameter: use x-goog-api-key")
            return True
        if seen.headers.get("x-goog-api-key") != self.server.state.api_key:
            self._error(400, "API key not valid. Please pass a valid API key.")
            return True
        return False

    def do_GET(self) -> None:
        seen = self._record()
        if self._refused(seen):
            return
        if urlsplit(seen.path).path.rstrip("/") == "/v1beta/models":
            self._json(200, {"models": [{"name": f"models/{MODEL}"}]})
        else:
            self._error(404, f"no route {seen.path}")

    def do_POST(self) -> None:
        seen = self._record()
        if self._refused(seen):
            return
        parts = urlsplit(seen.path)
        route = parts.path.removeprefix("/v1beta/models/")
        if (
            not parts.path.startswith("/v1beta/models/")
            or not route.endswith(":streamGenerateContent")
            or parse_qs(parts.query).get("alt") != ["sse"]
        ):
            self._error(404, f"no route {seen.path}")
            return
        state = self.server.state
        with state.lock:
            reply = state.replies.popleft() if state.replies else _DEFAULT
        try:
            self._play(reply, seen)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _play(self, reply: Reply, seen: Seen) -> None:
        if reply.kind == "http_error":
            message = reply.message
            if reply.echo_key:
                message += f" (key {seen.headers.get('x-goog-api-key', '')})"
            self._error(reply.status, message, reply.retry_after)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        key = seen.headers.get("x-goog-api-key", "")
        if reply.echo_key:
            self.send_header("X-Echoed-Key", key)
        self.send_header("Connection", "close")
        self.end_headers()
        nl = reply.newline
        for position, frame in enumerate(reply.frames, 1):
            data = frame if isinstance(frame, str) else json.dumps(frame, ensure_ascii=False)
            if reply.echo_key:
                data = echo_key(data, key)
            last = position == len(reply.frames) and not reply.final_blank_line
            self._chunk(f"data: {data}{nl}{'' if last else nl}".encode())
        if reply.kind == "cut":
            piece = f"data: {json.dumps(response('never'))}{nl}{nl}".encode()
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece[: len(piece) // 2])
            self.wfile.flush()
            return
        if reply.kind == "stall":
            self.server.state.release.wait(STALL_LIMIT_S)
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


_DEFAULT = stream(
    response("Hello", usage={"promptTokenCount": 4, "totalTokenCount": 4}),
    response(
        ", world",
        finish="STOP",
        usage={"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 7},
    ),
)


_Server = LoopbackHTTPServer["_State"]


class GeminiDouble(ServedDouble["_State"]):
    """The running double; use `serve_gemini`."""

    url_path = "/v1beta"

    def __init__(self, *, api_key: str = KEY) -> None:
        """``api_key``: the one key the double accepts."""
        super().__init__(_State(api_key=api_key), _Handler)

    def play(self, *replies: Reply) -> None:
        """Queue replies for the next POSTs; afterwards a two-frame "Hello, world"."""
        with self._state.lock:
            self._state.replies.extend(replies)

    @property
    def requests(self) -> list[Seen]:
        """Every request the double received, in order."""
        with self._state.lock:
            return list(self._state.seen)

    @property
    def posts(self) -> list[Seen]:
        with self._state.lock:
            return [seen for seen in self._state.seen if seen.method == "POST"]

    @property
    def key_in_query(self) -> list[str]:
        """Paths of requests that carried a ``key=`` query parameter (must stay empty)."""
        with self._state.lock:
            return list(self._state.key_in_query)


@contextmanager
def serve_gemini(api_key: str = KEY) -> Iterator[GeminiDouble]:
    """Run the double (accepting ``api_key``) for a ``with`` block; fail if the double
    itself broke, or if a request carried the key in its URL."""
    double = GeminiDouble(api_key=api_key).start()
    try:
        yield double
    finally:
        double.stop()
    assert not double.errors, f"the Gemini double itself failed: {double.errors!r}"
    assert not double.key_in_query, f"key sent in the URL: {double.key_in_query}"
