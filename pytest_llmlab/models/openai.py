"""The OpenAI-compatible streaming client: one SSE parser for every such endpoint.

OpenAI, LM Studio, vLLM, llama.cpp's llama-server and the embedded llama.cpp server all
speak ``POST {base}/chat/completions`` with ``stream: true``: a sequence of
``chat.completion.chunk`` JSON events ending in ``data: [DONE]``. Usage arrives in a
last chunk with empty ``choices`` when ``stream_options.include_usage`` is set.

Every transport failure is turned into one of the errors in `pytest_llmlab.errors`,
with a one-line message naming the model and the endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from pytest_llmlab.errors import (
    EndpointUnreachable,
    GenerationError,
    GenerationTimeout,
    HTTPStatusError,
    MissingAPIKey,
    StreamError,
    hide_own_frames,
)
from pytest_llmlab.models.base import Request
from pytest_llmlab.models.providers import PROVIDERS
from pytest_llmlab.models.sse import iter_events, iter_lines

__all__ = [
    "ChunkStream",
    "OpenAICompatible",
    "connect_reason",
    "is_loopback",
    "list_models",
    "redact_url",
]

__tracebackhide__ = hide_own_frames

_OPENAI_CLOUD = str(PROVIDERS["openai"].default_base_url)
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
_ERROR_BODY_LIMIT = 4096


def redact_url(url: str) -> str:
    """Drop ``user:password@`` from a URL before it reaches a message or report."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def connect_reason(exc: Exception) -> str:
    """ "[Errno 111] Connection refused" -> "connection refused"."""
    text = str(exc) or type(exc).__name__
    if "]" in text and text.startswith("["):
        text = text.split("]", 1)[1]
    return text.strip().rstrip(".").lower() or type(exc).__name__


def list_models(base_url: str, *, timeout_s: float = 10.0) -> list[str]:
    """Model ids an OpenAI-compatible endpoint offers (``GET {base}/models``).

    Raises ValueError with a one-line reason (connection refused, an HTTP status, an
    answer that is not a model list).
    """
    base = base_url.rstrip("/")
    # A proxy set for the internet must not swallow a loopback server.
    with httpx.Client(timeout=timeout_s, trust_env=not is_loopback(base)) as client:
        try:
            response = client.get(f"{base}/models")
        except httpx.HTTPError as exc:
            raise ValueError(connect_reason(exc)) from None
    if response.status_code >= 400:
        raise ValueError(f"HTTP {response.status_code} {response.reason_phrase}")
    try:
        data = response.json().get("data")
    except (ValueError, AttributeError):
        raise ValueError("the answer is not an OpenAI model list") from None
    if not isinstance(data, list):
        raise ValueError("the answer has no 'data' list")  # noqa: TRY004 (a bad answer)
    return [str(entry.get("id")) for entry in data if isinstance(entry, dict)]


def _server_error_message(response: httpx.Response) -> str:
    """The server's own words from an error body: OpenAI's ``error.message`` or raw text."""
    try:
        raw = response.read()[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")
    except httpx.HTTPError:
        return response.reason_phrase or "no body"
    try:
        body = json.loads(raw)
    except ValueError:
        return " ".join(raw.split())[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or json.dumps(error)
            return str(message)[:300]
        return str(error)[:300]
    return raw[:300]


class OpenAICompatible:
    """Streams chat completions from one model behind an OpenAI-compatible base URL."""

    def __init__(
        self,
        *,
        model: str,
        display: str,
        base_url: str,
        api_key: str | None = None,
        api_key_env: str | None = None,
        require_key: bool = False,
        timeout_s: float = 120.0,
        top_logprobs: int = 5,
    ) -> None:
        self.model = model
        self.display = display
        self.base_url = base_url.rstrip("/")
        self.endpoint = redact_url(self.base_url)
        self.timeout_s = timeout_s
        self.top_logprobs = top_logprobs
        self._api_key = api_key
        self._api_key_env = api_key_env
        self._require_key = require_key
        self._available: Exception | bool | None = None
        headers = {"Accept": "text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            # A proxy set for the internet must not swallow loopback servers.
            trust_env=not is_loopback(self.base_url),
        )

    @property
    def runs_locally(self) -> bool:
        """True for a loopback endpoint: this machine's energy meters see its work."""
        return is_loopback(self.base_url)

    @property
    def cloud_provider(self) -> str | None:
        """The cloud this endpoint belongs to, for energy estimates (``openai``)."""
        host = urlsplit(self.base_url).hostname
        return "openai" if host == urlsplit(_OPENAI_CLOUD).hostname else None

    # -- availability -------------------------------------------------------------

    def ensure_available(self) -> None:
        """Check once per session that the key is set and the endpoint accepts connections.

        Any HTTP answer counts as reachable: some servers have no ``/models`` route.
        """
        __tracebackhide__ = hide_own_frames
        if self._available is None:
            self._available = True
            try:
                self._probe()
            except (EndpointUnreachable, MissingAPIKey) as exc:
                self._available = exc
        if isinstance(self._available, Exception):
            raise self._available

    def _probe(self) -> None:
        if self._require_key and not self._api_key:
            raise MissingAPIKey(
                f"{self.display} needs an API key: set {self._api_key_env} "
                f"(endpoint {self.endpoint})"
            )
        try:
            self._client.get(f"{self.base_url}/models").close()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            raise EndpointUnreachable(
                f"cannot reach {self.endpoint} for {self.display}: {connect_reason(exc)}"
            ) from None
        except httpx.HTTPError:
            pass  # it answered something; the real request will say what is wrong

    # -- streaming ----------------------------------------------------------------

    def request_body(self, request: Request) -> dict[str, Any]:
        """The JSON body for one streamed chat completion."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.model_dump() for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": request.temperature,
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = request.stop
        if request.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = (
                request.top_logprobs if request.top_logprobs is not None else self.top_logprobs
            )
        body.update(request.params)
        return body

    def stream_chunks(self, request: Request) -> ChunkStream:
        return ChunkStream(self, self.request_body(request))

    def close(self) -> None:
        self._client.close()

    def _describe(self) -> str:
        return f"{self.endpoint} for {self.display}"

    def scrub(self, text: str) -> str:
        """Mask the API key in server text: some servers echo it in 401 messages."""
        if self._api_key and len(self._api_key) >= 4:
            return text.replace(self._api_key, "***")
        return text


class ChunkStream:
    """One open streamed request: iterate for chunk dicts, `close` to stop it early."""

    def __init__(self, owner: OpenAICompatible, body: dict[str, Any]) -> None:
        self._owner = owner
        self._body = body
        self._iterator: Generator[dict[str, Any], None, None] | None = None
        self.chunks_received = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._iterator is None:
            self._iterator = self._iterate()
        return self._iterator

    def close(self) -> None:
        """Stop reading and drop the connection: the server sees the client leave."""
        if self._iterator is not None:
            self._iterator.close()  # runs the `with` exit below, closing the response

    def _iterate(self) -> Generator[dict[str, Any], None, None]:
        __tracebackhide__ = hide_own_frames
        owner = self._owner
        url = f"{owner.base_url}/chat/completions"
        where = owner._describe()
        try:
            with owner._client.stream("POST", url, json=self._body) as response:
                if response.status_code >= 400:
                    raise HTTPStatusError(
                        f"HTTP {response.status_code} from {where}: "
                        f"{owner.scrub(_server_error_message(response))}",
                        status_code=response.status_code,
                    )
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" not in content_type:
                    raise StreamError(
                        f"{where} answered {content_type or 'no content type'!s} "
                        "instead of an event stream (does it support stream=true?)"
                    )
                done = False
                for event in iter_events(iter_lines(response.iter_text())):
                    if event.data.strip() == "[DONE]":
                        done = True
                        break
                    chunk = self._decode(event.data, where)
                    self.chunks_received += 1
                    yield chunk
                if not done:
                    raise StreamError(
                        f"stream from {where} ended before [DONE] "
                        f"after {self.chunks_received} chunks"
                    )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise EndpointUnreachable(
                f"cannot reach {owner.endpoint} for {owner.display}: {connect_reason(exc)}"
            ) from None
        except httpx.TimeoutException:
            raise GenerationTimeout(
                f"no data from {where} within {owner.timeout_s:g} s (--llm-timeout) "
                f"after {self.chunks_received} chunks"
            ) from None
        except httpx.RemoteProtocolError as exc:
            raise StreamError(
                f"stream from {where} was cut after {self.chunks_received} chunks: "
                f"{connect_reason(exc)}"
            ) from None
        except httpx.HTTPError as exc:
            raise GenerationError(
                f"request to {where} failed: {type(exc).__name__}: {exc}"
            ) from None

    def _decode(self, data: str, where: str) -> dict[str, Any]:
        __tracebackhide__ = hide_own_frames
        try:
            chunk = json.loads(data)
        except ValueError:
            raise StreamError(
                f"malformed JSON in stream from {where} after {self.chunks_received} "
                f"chunks: {self._owner.scrub(data[:200])!r}"
            ) from None
        if not isinstance(chunk, dict):
            raise StreamError(f"unexpected event in stream from {where}: {data[:200]!r}")
        if "error" in chunk and not chunk.get("choices"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise StreamError(
                f"error event in stream from {where}: {self._owner.scrub(str(message))}"
            )
        return chunk
