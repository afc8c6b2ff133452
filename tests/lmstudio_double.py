"""A loopback protocol double of LM Studio's REST API (``/api/v0``) and its ``/v1``.

This is NOT LM Studio: a tiny threaded HTTP/1.1 server on 127.0.0.1 (random port) that
speaks what LM Studio's "REST API v0" document shows (lmstudio-ai/docs
``1_developer/2_rest/endpoints.mdx``, commit 86cb996): ``GET /api/v0/models`` answers
`DOC_MODELS` (the document's example list), ``GET /api/v0/models/{model}`` one entry of
it, ``POST /api/v0/chat/completions`` streams OpenAI's ``chat.completion.chunk`` SSE
events up to ``data: [DONE]``, the final chunk carrying ``finish_reason``, ``usage`` and
the document's `DOC_STATS`, `DOC_MODEL_INFO` and `DOC_RUNTIME` (the example answer
"Response format" shows them on the non-streamed answer; the double puts them where a
stream can carry them, its final chunk). ``GET /v1/models`` and
``POST /v1/chat/completions`` are the OpenAI-compatible routes: the same chunks without
the three objects, usage in a last chunk of empty ``choices`` when
``stream_options.include_usage`` is sent. With ``native = False`` every ``/api/v0``
route is a 404, as on an LM Studio before 0.3.6.

Usage::

    with serve_lmstudio() as server:
        server.play(text_stream(["Hi", "!"]), http_error(404, "model not found"))
        provider = LMStudioProvider(model=MODEL, display=f"lmstudio:{MODEL}",
                                    base_url=server.base_url)

Leaving the context joins every handler thread.
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
    DoubleState,
    LoopbackHTTPServer,
    RecordedRequest,
    RequestReader,
    ServedDouble,
    echo_key,
    received_key,
)

__all__ = [
    "DOC_MODELS",
    "DOC_MODEL_INFO",
    "DOC_RUNTIME",
    "DOC_STATS",
    "DOC_USAGE",
    "MODEL",
    "LMStudioDouble",
    "LMStudioScript",
    "end_without_done",
    "http_error",
    "serve_lmstudio",
    "text_stream",
]

#: The model of the document's chat example.
MODEL = "granite-3.0-2b-instruct"

#: endpoints.mdx, ``GET /api/v0/models`` "Response format", and the chat example's
#: model (``granite-3.0-2b-instruct``, with its ``model_info``), loaded.
DOC_MODELS: dict[str, Any] = {
    "object": "list",
    "data": [
        {"id": "qwen2-vl-7b-instruct", "object": "model", "type": "vlm",
         "publisher": "mlx-community", "arch": "qwen2_vl", "compatibility_type": "mlx",
         "quantization": "4bit", "state": "not-loaded", "max_context_length": 32768},
        {"id": "meta-llama-3.1-8b-instruct", "object": "model", "type": "llm",
         "publisher": "lmstudio-community", "arch": "llama", "compatibility_type": "gguf",
         "quantization": "Q4_K_M", "state": "not-loaded", "max_context_length": 131072},
        {"id": "text-embedding-nomic-embed-text-v1.5", "object": "model",
         "type": "embeddings", "publisher": "nomic-ai", "arch": "nomic-bert",
         "compatibility_type": "gguf", "quantization": "Q4_0", "state": "not-loaded",
         "max_context_length": 2048},
        {"id": MODEL, "object": "model", "type": "llm", "publisher": "lmstudio-community",
         "arch": "granite", "compatibility_type": "gguf", "quantization": "Q4_K_M",
         "state": "loaded", "max_context_length": 4096},
    ],
}  # fmt: skip

#: endpoints.mdx, ``POST /api/v0/chat/completions`` "Response format".
DOC_USAGE: dict[str, Any] = {"prompt_tokens": 24, "completion_tokens": 53, "total_tokens": 77}
DOC_STATS: dict[str, Any] = {
    "tokens_per_second": 51.43709529007664,
    "time_to_first_token": 0.111,
    "generation_time": 0.954,
    "stop_reason": "eosFound",
}
DOC_MODEL_INFO: dict[str, Any] = {
    "arch": "granite",
    "quant": "Q4_K_M",
    "format": "gguf",
    "context_length": 4096,
}
DOC_RUNTIME: dict[str, Any] = {
    "name": "llama.cpp-mac-arm64-apple-metal-advsimd",
    "version": "1.3.0",
    "supported_formats": ["gguf"],
}

Kind = Literal["text_stream", "http_error", "end_without_done"]


@dataclass(frozen=True)
class LMStudioScript:
    """One scripted answer to one chat request. Build with the helpers."""

    kind: Kind = "text_stream"
    tokens: tuple[str, ...] = ("The", " sky", " is", " blue")
    #: Natively: put ``stats``, ``model_info`` and ``runtime`` in the final chunk.
    extras: bool = True
    status: int = 200
    message: str = ""
    #: For the streams: ``{key}``, ``{key_base64}`` and ``{key_url}`` in the events
    #: become the Bearer token the request carried (`loopback.echo_key`), and the
    #: answer has an ``X-Echoed-Key`` header.
    echo_key: bool = False


def text_stream(
    tokens: list[str] | tuple[str, ...] = ("The", " sky", " is", " blue"),
    *,
    extras: bool = True,
    echo_key: bool = False,
) -> LMStudioScript:
    """One chunk per token, then the final chunk (``finish_reason: stop``, `DOC_USAGE`;
    natively also the documented objects unless ``extras`` is False, as LM Studio 0.3.x
    streams were reported to send them, lmstudio-bug-tracker#676), then ``[DONE]``
    (``echo_key``: see `LMStudioScript`)."""
    return LMStudioScript(tokens=tuple(tokens), extras=extras, echo_key=echo_key)


def http_error(status: int, message: str) -> LMStudioScript:
    """An HTTP error with OpenAI's ``{"error": {"message": ...}}`` body."""
    return LMStudioScript(kind="http_error", status=status, message=message)


def end_without_done(*tokens: str) -> LMStudioScript:
    """These token chunks, then a clean end of the body without ``[DONE]``."""
    return LMStudioScript(kind="end_without_done", tokens=tokens or ("I",))


@dataclass(kw_only=True)
class _State(DoubleState):
    scripts: deque[LMStudioScript] = field(default_factory=deque)
    models: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DOC_MODELS))
    native: bool = True
    requests: list[RecordedRequest] = field(default_factory=list)


class _Handler(RequestReader):
    timeout = 5.0
    server: _Server

    def _record(self) -> RecordedRequest:
        recorded = self.read_request()
        with self.server.state.lock:
            self.server.state.requests.append(recorded)
        return recorded

    def _json(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _not_found(self) -> None:
        self._json(404, {"error": f"Unexpected endpoint or method. ({self.command} {self.path})"})

    def _event(self, value: dict[str, Any] | str, *, echo: bool = False) -> None:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if echo:
            text = echo_key(text, received_key(self.headers))
        data = f"data: {text}\n\n".encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        self._record()
        state = self.server.state
        entries = state.models.get("data") or []
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": e["id"], "object": "model", "owned_by": e["publisher"]} for e in entries
            ]})  # fmt: skip
        elif not state.native or not self.path.startswith("/api/v0/models"):
            self._not_found()
        elif self.path == "/api/v0/models":
            self._json(200, state.models)
        else:
            wanted = self.path.removeprefix("/api/v0/models/")
            entry = next((e for e in entries if e["id"] == wanted), None)
            if entry is None:
                self._json(404, {"error": {"message": f"Model {wanted!r} not found"}})
            else:
                self._json(200, entry)

    def do_POST(self) -> None:
        recorded = self._record()
        state = self.server.state
        native = self.path == "/api/v0/chat/completions" and state.native
        if not native and self.path != "/v1/chat/completions":
            self._not_found()
            return
        with state.lock:
            script = state.scripts.popleft() if state.scripts else text_stream()
        body = recorded.body if isinstance(recorded.body, dict) else {}
        try:
            self._play(script, body, native=native)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _play(self, script: LMStudioScript, body: dict[str, Any], *, native: bool) -> None:
        if script.kind == "http_error":
            self._json(script.status, {"error": {"message": script.message}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        if script.echo_key:
            self.send_header("X-Echoed-Key", received_key(self.headers))
        self.send_header("Connection", "close")
        self.end_headers()
        model = str(body.get("model", MODEL))
        echo = script.echo_key
        base = {"id": "chatcmpl-i3gkjwthhw96whukek9tz", "object": "chat.completion.chunk",
                "created": 1731990317, "model": model, "system_fingerprint": model}  # fmt: skip
        for token in script.tokens:
            delta = {"role": "assistant", "content": token}
            self._event({**base, "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            ]}, echo=echo)  # fmt: skip
        if script.kind == "end_without_done":
            self.wfile.write(b"0\r\n\r\n")
            return
        final: dict[str, Any] = {**base, "choices": [
            {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
        ]}  # fmt: skip
        usage = (body.get("stream_options") or {}).get("include_usage") is True
        if native:
            final["usage"] = dict(DOC_USAGE)
            if script.extras:
                final.update(stats=dict(DOC_STATS), model_info=dict(DOC_MODEL_INFO),
                             runtime=copy.deepcopy(DOC_RUNTIME))  # fmt: skip
        self._event(final, echo=echo)
        if usage and not native:
            self._event({**base, "choices": [], "usage": dict(DOC_USAGE)})
        self._event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


_Server = LoopbackHTTPServer["_State"]


class LMStudioDouble(ServedDouble["_State"]):
    """The running double; use `serve_lmstudio`."""

    url_path = "/v1"

    def __init__(self) -> None:
        super().__init__(_State(), _Handler)

    def play(self, *scripts: LMStudioScript) -> None:
        """Queue answers for the next chats, in order; then `text_stream()` answers."""
        with self._state.lock:
            self._state.scripts.extend(scripts)

    @property
    def state(self) -> _State:
        """``native`` (False: every ``/api/v0`` route is a 404) and ``models`` (the
        ``/api/v0/models`` answer), to change before a request."""
        return self._state

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def paths(self) -> list[str]:
        """``METHOD /path`` of every request, in order."""
        return [f"{r.method} {r.path}" for r in self.requests]


@contextmanager
def serve_lmstudio() -> Iterator[LMStudioDouble]:
    """Run the double for the duration of a ``with`` block."""
    with LMStudioDouble() as double:
        yield double
    assert not double.errors, f"the lmstudio double itself failed: {double.errors!r}"
