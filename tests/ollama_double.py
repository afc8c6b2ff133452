"""A loopback protocol double of Ollama's native API.

This is NOT Ollama: a tiny threaded HTTP/1.1 server on 127.0.0.1 (random port) that
speaks the wire format Ollama documents in ollama/ollama ``docs/api.md`` (commit
fb30760): ``POST /api/chat`` streams one ``ChatResponse`` JSON object per line
(``application/x-ndjson``, ``docs/api/streaming.mdx``), the last with ``done: true``,
``done_reason`` and the usage fields in nanoseconds (``docs/api/usage.mdx``);
``logprobs`` entries as ``docs/openapi.yaml``'s ``Logprob`` schema when asked for;
errors as ``{"error": "..."}`` with the status (``docs/api/errors.mdx``), or as such a
line inside the stream once it has begun; a model it does not have is HTTP 404
``model 'x' not found`` (``server/routes.go``). ``GET /api/tags``, ``GET /api/ps``,
``POST /api/show`` and ``GET /api/version`` answer with the documented examples.

The default lines are the documented ones: `DOC_FINAL` is the final line of "Chat
request (Streaming with tools)", `DOC_TOOL_LINE` its tool-call line, `DOC_TAGS` the
"List Local Models" answer, `DOC_PS` "List Running Models", `DOC_SHOW` "Show Model
Information" (``llava``), `DOC_LOGPROBS` the logprobs entry of ollama-python's
``tests/test_client.py::test_client_chat_with_logprobs``.

Usage::

    with serve_ollama() as server:
        server.play(text_stream(["Hi", "!"]), http_error(429, "busy", retry_after="0"))
        provider = OllamaProvider(model="llama3.2", display="ollama:llama3.2",
                                  base_url=server.base_url)

Like `loopback`, every stall is bounded and released when the context exits, and
leaving the context joins every handler thread.
"""

from __future__ import annotations

import copy
import json
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from loopback import (
    STALL_LIMIT_S,
    DoubleState,
    LoopbackHTTPServer,
    RecordedRequest,
    RequestReader,
    ServedDouble,
    echo_key,
    received_key,
)

__all__ = [
    "DOC_FINAL",
    "DOC_LOGPROBS",
    "DOC_PS",
    "DOC_SHOW",
    "DOC_TAGS",
    "DOC_TOOL_LINE",
    "WEATHER",
    "OllamaDouble",
    "OllamaScript",
    "cut_mid_line",
    "end_without_done",
    "error_line",
    "expected_logprob",
    "http_error",
    "line",
    "lines",
    "raw",
    "serve_ollama",
    "stall",
    "text_stream",
]

#: docs/api.md, "Chat request (Streaming with tools)", the final response.
DOC_FINAL: dict[str, Any] = {
    "model": "llama3.2",
    "created_at": "2025-07-07T20:22:19.19314Z",
    "message": {"role": "assistant", "content": ""},
    "done_reason": "stop",
    "done": True,
    "total_duration": 182242375,
    "load_duration": 41295167,
    "prompt_eval_count": 169,
    "prompt_eval_duration": 24573166,
    "eval_count": 15,
    "eval_duration": 115959084,
}

#: docs/api.md, "Chat request (Streaming with tools)", the tool-call line.
DOC_TOOL_LINE: dict[str, Any] = {
    "model": "llama3.2",
    "created_at": "2025-07-07T20:22:19.184789Z",
    "message": {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}],
    },
    "done": False,
}

#: ollama-python tests/test_client.py (test_client_chat_with_logprobs): one entry.
DOC_LOGPROBS: list[dict[str, Any]] = [
    {
        "token": "Hello",
        "logprob": -0.1,
        "top_logprobs": [{"token": "Hello", "logprob": -0.1}, {"token": "Hi", "logprob": -1.0}],
    }
]

#: docs/api.md, "List Local Models".
DOC_TAGS: dict[str, Any] = {
    "models": [
        {
            "name": "deepseek-r1:latest",
            "model": "deepseek-r1:latest",
            "modified_at": "2025-05-10T08:06:48.639712648-07:00",
            "size": 4683075271,
            "digest": "0a8c266910232fd3291e71e5ba1e058cc5af9d411192cf88b6d30e92b6e73163",
            "details": {
                "parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
                "parameter_size": "7.6B", "quantization_level": "Q4_K_M",
            },
        },
        {
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "modified_at": "2025-05-04T17:37:44.706015396-07:00",
            "size": 2019393189,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": {
                "parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "3.2B", "quantization_level": "Q4_K_M",
            },
        },
    ]
}  # fmt: skip

#: docs/api.md, "List Running Models" (the model renamed to one `DOC_TAGS` lists).
DOC_PS: dict[str, Any] = {
    "models": [
        {
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "size": 5137025024,
            "digest": "2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0aa7ae4490e6d8",
            "details": {
                "parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "7.2B", "quantization_level": "Q4_0",
            },
            "expires_at": "2024-06-04T14:38:31.83753-07:00",
            "size_vram": 5137025024,
        }
    ]
}  # fmt: skip

#: docs/api.md, "Show Model Information" (the fields this plugin reads, as shown).
DOC_SHOW: dict[str, Any] = {
    "details": {
        "parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
        "parameter_size": "8.0B", "quantization_level": "Q4_0",
    },
    "model_info": {
        "general.architecture": "llama",
        "general.file_type": 2,
        "general.parameter_count": 8030261248,
        "general.quantization_version": 2,
        "llama.block_count": 32,
        "llama.context_length": 8192,
        "llama.embedding_length": 4096,
    },
    "capabilities": ["completion", "vision"],
}  # fmt: skip

Kind = Literal[
    "text_stream", "lines", "http_error", "error_line", "end_without_done", "cut_mid_line",
    "stall", "raw",
]  # fmt: skip


#: The tool of Ollama's API documentation (its chat request with tools).
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather in a given city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@dataclass(frozen=True)
class OllamaScript:
    """One scripted answer to one ``POST /api/chat``. Build with the helpers."""

    kind: Kind = "text_stream"
    tokens: tuple[str, ...] = ("The", " sky", " is", " blue")
    thinking: tuple[str, ...] = ()
    #: For "lines" and the streams that end badly: the lines, sent as given.
    lines: tuple[dict[str, Any], ...] = ()
    done_reason: str = "stop"
    status: int = 200
    message: str = ""
    retry_after: str | None = None
    body: bytes = b""
    content_type: str = "application/x-ndjson"
    #: For "text_stream" and "lines": ``{key}``, ``{key_base64}`` and ``{key_url}`` in
    #: the lines become the API key the request carried (`loopback.echo_key`), and the
    #: answer has an ``X-Echoed-Key`` header.
    echo_key: bool = False


def line(
    content: str = "",
    *,
    thinking: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    logprobs: list[dict[str, Any]] | None = None,
    model: str = "llama3.2",
) -> dict[str, Any]:
    """One documented ``done: false`` line (docs/api.md "Chat request (Streaming)")."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    out: dict[str, Any] = {
        "model": model,
        "created_at": "2023-08-04T08:52:19.385406455-07:00",
        "message": message,
        "done": False,
    }
    if logprobs is not None:
        out["logprobs"] = logprobs
    return out


def expected_logprob(index: int) -> float:
    """The logprob `text_stream` sends for the token at ``index``."""
    return round(-0.05 * (index + 1), 4)


def text_stream(
    tokens: list[str] | tuple[str, ...] = ("The", " sky", " is", " blue"),
    *,
    thinking: tuple[str, ...] = (),
    done_reason: str = "stop",
    echo_key: bool = False,
) -> OllamaScript:
    """``thinking`` lines, one line per token (with ``logprobs`` when the request asks
    for them: ``top_logprobs`` alternatives, the token first), then `DOC_FINAL` with
    ``eval_count`` the number of lines before it; ``echo_key``: see `OllamaScript`."""
    return OllamaScript(
        tokens=tuple(tokens), thinking=thinking, done_reason=done_reason, echo_key=echo_key
    )


def lines(*sent: dict[str, Any]) -> OllamaScript:
    """These lines, one per NDJSON line, as given (the last should be ``done``)."""
    return OllamaScript(kind="lines", lines=sent)


def http_error(status: int, message: str, *, retry_after: str | None = None) -> OllamaScript:
    """An HTTP error status with Ollama's ``{"error": message}`` body (application/json)."""
    return OllamaScript(kind="http_error", status=status, message=message, retry_after=retry_after)


def error_line(message: str, *sent: dict[str, Any]) -> OllamaScript:
    """These lines, then ``{"error": message}`` (docs/api/errors.mdx, mid-stream)."""
    return OllamaScript(kind="error_line", lines=sent or (line("Yes"),), message=message)


def end_without_done(*sent: dict[str, Any]) -> OllamaScript:
    """These lines, then a clean end of the chunked body without a ``done`` line."""
    return OllamaScript(kind="end_without_done", lines=sent or (line("I"), line(" can")))


def cut_mid_line(*sent: dict[str, Any]) -> OllamaScript:
    """These lines, then half of a chunked-encoding chunk, then the socket closes."""
    return OllamaScript(kind="cut_mid_line", lines=sent or (line("I"),))


def stall(*sent: dict[str, Any]) -> OllamaScript:
    """These lines, then nothing until the test ends (bounded by `STALL_LIMIT_S`)."""
    return OllamaScript(kind="stall", lines=sent or (line("The"),))


def raw(body: bytes, content_type: str = "application/x-ndjson") -> OllamaScript:
    """A 200 answer whose chunked body is ``body`` byte for byte."""
    return OllamaScript(kind="raw", body=body, content_type=content_type)


def _full_name(model: str) -> str:
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


@dataclass(kw_only=True)
class _State(DoubleState):
    scripts: deque[OllamaScript] = field(default_factory=deque)
    tags: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DOC_TAGS))
    ps: dict[str, Any] | None = field(default_factory=lambda: copy.deepcopy(DOC_PS))
    show: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DOC_SHOW))
    version: str = "0.12.11"
    requests: list[RecordedRequest] = field(default_factory=list)

    def has(self, model: str) -> bool:
        names = {_full_name(str(m.get("name"))) for m in self.tags.get("models", [])}
        return _full_name(model) in names


class _Handler(RequestReader):
    timeout = 5.0
    server: _Server

    def _record(self) -> RecordedRequest:
        recorded = self.read_request()
        with self.server.state.lock:
            self.server.state.requests.append(recorded)
        return recorded

    def _head(self, status: int, content_type: str, *, length: int | None = None,
              retry_after: str | None = None, echo: bool = False) -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        if echo:
            self.send_header("X-Echoed-Key", received_key(self.headers))
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()

    def _json(self, status: int, value: Any, retry_after: str | None = None) -> None:
        data = json.dumps(value).encode()
        self._head(status, "application/json; charset=utf-8", length=len(data),
                   retry_after=retry_after)  # fmt: skip
        self.wfile.write(data)
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _line(self, value: dict[str, Any], *, echo: bool = False) -> None:
        text = json.dumps(value, ensure_ascii=False)
        if echo:
            text = echo_key(text, received_key(self.headers))
        self._chunk(text.encode() + b"\n")

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        self._record()
        state = self.server.state
        if self.path == "/api/tags":
            self._json(200, state.tags)
        elif self.path == "/api/ps" and state.ps is not None:
            self._json(200, state.ps)
        elif self.path == "/api/version":
            self._json(200, {"version": state.version})
        else:
            self._plain_404()

    def _plain_404(self) -> None:
        data = b"404 page not found"  # what Ollama's router (gin) answers
        self._head(404, "text/plain", length=len(data))
        self.wfile.write(data)

    def do_POST(self) -> None:
        recorded = self._record()
        state = self.server.state
        body = recorded.body if isinstance(recorded.body, dict) else {}
        model = str(body.get("model", ""))
        if self.path == "/api/show":
            if state.has(model):
                self._json(200, state.show)
            else:
                self._json(404, {"error": f"model '{model}' not found"})
            return
        if self.path != "/api/chat":
            self._plain_404()
            return
        if not state.has(model):
            self._json(404, {"error": f"model '{model}' not found"})
            return
        with state.lock:
            script = state.scripts.popleft() if state.scripts else text_stream()
        try:
            self._play(script, body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _stream_lines(self, script: OllamaScript, body: dict[str, Any]) -> list[dict[str, Any]]:
        model = str(body.get("model", "llama3.2"))
        sent = [line(thinking=text, model=model) for text in script.thinking]
        top_n = int(body.get("top_logprobs") or 0)
        for index, token in enumerate(script.tokens):
            logprobs = None
            if body.get("logprobs"):
                first = expected_logprob(index)
                alternatives = [(token, first)] + [
                    (f"alt{j}", round(first - j, 4)) for j in range(1, top_n)
                ]
                logprobs = [{
                    "token": token, "logprob": first, "bytes": list(token.encode()),
                    "top_logprobs": [
                        {"token": t, "logprob": lp, "bytes": list(t.encode())}
                        for t, lp in alternatives[:top_n]
                    ],
                }]  # fmt: skip
            sent.append(line(token, logprobs=logprobs, model=model))
        final = {**DOC_FINAL, "model": model, "done_reason": script.done_reason}
        final["eval_count"] = len(sent)
        return [*sent, final]

    def _play(self, script: OllamaScript, body: dict[str, Any]) -> None:
        kind = script.kind
        if kind == "http_error":
            self._json(script.status, {"error": script.message}, script.retry_after)
            return
        if kind == "raw":
            self._head(200, script.content_type)
            if script.body:
                self._chunk(script.body)
            self._end()
            return
        self._head(200, "application/x-ndjson", echo=script.echo_key)
        sent = self._stream_lines(script, body) if kind == "text_stream" else script.lines
        for value in sent:
            self._line(value, echo=script.echo_key)
        if kind == "error_line":
            self._line({"error": script.message})
        elif kind == "cut_mid_line":
            data = json.dumps(line("never")).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data[: len(data) // 2])
            self.wfile.flush()
            return  # the socket closes inside the announced chunk
        elif kind == "stall":
            self.server.state.release.wait(STALL_LIMIT_S)
            return
        self._end()


_Server = LoopbackHTTPServer["_State"]


class OllamaDouble(ServedDouble["_State"]):
    """The running double; use `serve_ollama`."""

    url_path = ""  # Ollama's root URL: no /v1

    def __init__(self) -> None:
        super().__init__(_State(), _Handler)

    def play(self, *scripts: OllamaScript) -> None:
        """Queue answers for the next chats, in order; then `text_stream()` answers."""
        with self._state.lock:
            self._state.scripts.extend(scripts)

    @property
    def state(self) -> _State:
        """The answers of the model routes (``tags``, ``ps``: None is a 404, ``show``,
        ``version``), to change before a request."""
        return self._state

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def chats(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/api/chat"]


@contextmanager
def serve_ollama() -> Iterator[OllamaDouble]:
    """Run the double for the duration of a ``with`` block."""
    with OllamaDouble() as double:
        yield double
    assert not double.errors, f"the ollama double itself failed: {double.errors!r}"
