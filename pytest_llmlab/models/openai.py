"""The OpenAI-compatible streaming client: one SSE parser for every such endpoint.

OpenAI, LM Studio, vLLM, llama.cpp's llama-server and the embedded llama.cpp server all
speak ``POST {base}/chat/completions`` with ``stream: true``: a sequence of
``chat.completion.chunk`` JSON events ending in ``data: [DONE]``. Usage arrives in a
last chunk with empty ``choices`` when ``stream_options.include_usage`` is set.

Every transport failure is turned into one of the errors in `pytest_llmlab.errors`,
with a one-line message naming the model and the endpoint.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from pytest_llmlab import wirejson
from pytest_llmlab.errors import (
    EndpointUnreachable,
    GenerationError,
    GenerationTimeout,
    HTTPStatusError,
    LLMLabError,
    MissingAPIKey,
    StreamError,
    hide_own_frames,
)
from pytest_llmlab.models.assemble import chunk_problem
from pytest_llmlab.models.base import Request
from pytest_llmlab.models.providers import PROVIDERS
from pytest_llmlab.models.replay import Tape
from pytest_llmlab.models.retry import RETRY_STATUSES, RetryPolicy, retry_after_s
from pytest_llmlab.models.sse import EventReader, ServerSentEvent, decode, is_event_stream
from pytest_llmlab.redact import Redactor, current, terminal_safe, url_secrets

__all__ = [
    "AUTO_DEADLINE_MAX_S",
    "AUTO_DEADLINE_S_PER_TOKEN",
    "AUTO_DEADLINE_TOKENS",
    "ChunkStream",
    "OpenAICompatible",
    "auto_deadline_s",
    "connect_reason",
    "is_loopback",
    "list_models",
    "redact_url",
]

__tracebackhide__ = hide_own_frames

_OPENAI_CLOUD = str(PROVIDERS["openai"].default_base_url)
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
_ERROR_BODY_LIMIT = 4096
#: Bytes of a body kept to show what a server sent instead of events.
_HEAD_BYTES = 100

#: ``--llm-deadline=auto``: the timeout plus this much per token of ``max_tokens``
#: (`AUTO_DEADLINE_TOKENS` when a request sets none), that part at most an hour.
AUTO_DEADLINE_S_PER_TOKEN = 0.5
AUTO_DEADLINE_TOKENS = 2048
AUTO_DEADLINE_MAX_S = 3600.0


def auto_deadline_s(timeout_s: float, max_tokens: int | None) -> float:
    """The automatic deadline of one generation: ``timeout + 0.5 s x max_tokens``
    (2048 tokens when unset), the per-token part capped at 3600 s."""
    tokens = AUTO_DEADLINE_TOKENS if max_tokens is None else max(0, max_tokens)
    return timeout_s + min(AUTO_DEADLINE_S_PER_TOKEN * tokens, AUTO_DEADLINE_MAX_S)


def redact_url(url: str) -> str:
    """Drop ``user:password@`` from a URL before it reaches a message or report.

    Only the userinfo goes: the host is kept as written (``[::1]``), and a port that
    does not parse is no reason to show a password.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


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


#: Characters of a server's message kept in an error, and of a quoted bad event.
_MESSAGE_CHARS = 300
_QUOTE_CHARS = 200


def _shown(text: str, redactor: Redactor, limit: int = _MESSAGE_CHARS) -> str:
    """Server text as an error shows it: credentials masked first, then cut to
    ``limit`` characters, then control characters escaped (`terminal_safe`)."""
    return terminal_safe(redactor.text(text)[:limit])


def _quoted(text: str, redactor: Redactor) -> str:
    """A bad event's data, masked, cut to 200 characters and quoted (``repr``).

    JSON that spells a secret with escapes (``\\u0073k-...``) is shown decoded and
    masked, re-encoded, rather than as written.
    """
    masked = redactor.text(text)
    if "\\" in masked:
        try:
            decoded = json.loads(masked)
        except ValueError:
            pass
        else:
            plain = json.dumps(decoded, ensure_ascii=False)
            shown = json.dumps(redactor.value(decoded), ensure_ascii=False)
            if shown != plain:
                masked = shown
    return repr(masked[:_QUOTE_CHARS])


def _server_error_message(response: httpx.Response, redactor: Redactor | None = None) -> str:
    """The server's own words from an error body: OpenAI's ``error.message`` or raw text.

    At most 4 KiB of the body is read; ``redactor`` (default: the process's,
    `pytest_llmlab.redact.current`) masks credentials before anything is cut.
    """
    mask = current() if redactor is None else redactor
    data = b""
    try:
        for piece in response.iter_bytes():
            data += piece
            if len(data) > _ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        return _shown(response.reason_phrase, mask) or "no body"
    window = data[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")
    # A key cut by the window would show its first half: `clipped` drops that too.
    raw = mask.clipped(window) if len(data) > _ERROR_BODY_LIMIT else mask.text(window)
    message: object
    try:
        body = json.loads(raw)
    except ValueError:
        message = " ".join(raw.split())
    else:
        error = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or json.dumps(error)
        else:
            message = error if isinstance(error, str) else raw
    # Masked again: a key written with JSON escapes only reads plainly once decoded.
    return _shown(str(message), mask) or _shown(response.reason_phrase, mask)


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
        deadline_s: float | None = None,
        llama_tokenizer: bool = False,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        keep_alive: bool = True,
    ) -> None:
        """``timeout_s`` bounds the connect and each read; ``deadline_s`` a whole
        generation (None: `auto_deadline_s`, 0: no deadline); ``llama_tokenizer``: the
        server is llama.cpp's, with ``POST /tokenize`` (`count_tokens`); ``transport``
        replaces the network (a cassette's `pytest_llmlab.models.replay.ReplayTransport`);
        ``keep_alive``: reuse connections between requests (else each request pays a
        new connection, and against a cloud a TLS handshake); a request whose kept
        connection the server had closed is sent again at once on a new one."""
        self.model = model
        self.display = display
        self.base_url = base_url.rstrip("/")
        self.endpoint = redact_url(self.base_url)
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self._llama_tokenizer = llama_tokenizer
        self.retry = retry or RetryPolicy()
        self._api_key = api_key
        self._api_key_env = api_key_env
        self._require_key = require_key
        self._available: Exception | bool | None = None
        headers = {"Accept": "text/event-stream", **self.auth_headers(api_key)}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            # A proxy set for the internet must not swallow loopback servers.
            trust_env=transport is None and not is_loopback(self.base_url),
            transport=transport,
            limits=httpx.Limits(max_keepalive_connections=None if keep_alive else 0),
        )

    #: What `ensure_available` GETs under the base URL: any answer means reachable.
    probe_path = "/models"

    @property
    def variant(self) -> str | None:
        """Which of its APIs this client streams from, where a provider has several
        (LM Studio: ``api/v0`` or ``v1``): a cassette keeps it, so a replay reads the
        frames with the stream class that received them. None: one API."""
        return None

    def use_variant(self, variant: str | None) -> None:
        """Stream as `variant` says, without asking the server (a replay)."""

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """The headers that carry the key: OpenAI's ``Authorization: Bearer``; a
        provider module with its own scheme overrides this."""
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

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
        """Check once per session that the key is set and the endpoint answers.

        Any HTTP answer counts as reachable: some servers have no ``/models`` route. A
        server that accepts the connection but sends nothing within the timeout is
        unreachable too, once: every later test of the model errors at once.
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
            # The status line and headers are the answer: the body is not waited for.
            with self._client.stream("GET", f"{self.base_url}{self.probe_path}"):
                pass
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            raise EndpointUnreachable(
                f"cannot reach {self.endpoint} for {self.display}: {connect_reason(exc)}"
            ) from None
        except httpx.TimeoutException:  # connected, then silence (read, write or pool)
            raise EndpointUnreachable(
                f"no answer from {self.endpoint} for {self.display}: it accepted the "
                f"connection but sent nothing within {self.timeout_s:g} s (--llm-timeout)"
            ) from None
        except httpx.HTTPError:
            pass  # it answered something; the real request will say what is wrong

    # -- streaming ----------------------------------------------------------------

    def request_body(self, request: Request) -> dict[str, Any]:
        """The JSON body for one streamed chat completion.

        Message fields left None are not sent. With ``tools`` on llama.cpp's server,
        which answers ``logprobs`` on a streamed request with tools with HTTP 400
        ("logprobs is not supported with tools + stream", ggml-org/llama.cpp#28478),
        the logprobs are asked for with its own ``n_probs`` instead: it sends the same
        ``logprobs.content``.
        """
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.model_dump(exclude_none=True) for m in request.messages],
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
            # At least one: llama.cpp's server sends no logprobs at all for 0 (and 20
            # alternatives when the field is absent); OpenAI, vLLM and LM Studio take 1
            # too. The assembler drops alternatives the request did not ask for.
            top = max(1, request.alternatives)
            if request.tools and self._llama_tokenizer:
                body["n_probs"] = top
            else:
                body["logprobs"] = True
                body["top_logprobs"] = top
        if request.tools:
            body["tools"] = request.tools
            if request.tool_choice is not None:  # servers refuse a choice without tools
                body["tool_choice"] = request.tool_choice
        body.update(request.params)
        return body

    def stream_chunks(self, request: Request) -> ChunkStream:
        deadline_s, source = self.deadline_for(request)
        return ChunkStream(self, self.request_body(request), deadline_s=deadline_s, source=source)

    def deadline_for(self, request: Request) -> tuple[float | None, str]:
        """Seconds the whole generation may take (None: no deadline) and where that
        figure comes from, for the message that names it."""
        if self.deadline_s is not None:
            return (self.deadline_s or None), "--llm-deadline"
        tokens = request.max_tokens
        per_token = AUTO_DEADLINE_S_PER_TOKEN * (AUTO_DEADLINE_TOKENS if tokens is None else tokens)
        if per_token >= AUTO_DEADLINE_MAX_S:
            how = f"+ {AUTO_DEADLINE_MAX_S:g} s, the most"
        elif tokens is None:
            how = (
                f"+ {AUTO_DEADLINE_S_PER_TOKEN:g} s x {AUTO_DEADLINE_TOKENS} tokens (no max_tokens)"
            )
        else:
            how = f"+ {AUTO_DEADLINE_S_PER_TOKEN:g} s x {tokens} max_tokens"
        return auto_deadline_s(self.timeout_s, tokens), f"--llm-deadline=auto: --llm-timeout {how}"

    def count_tokens(self, text: str) -> int | None:
        """The tokens ``text`` makes for this model, from llama.cpp's ``/tokenize``
        (no special tokens); None for other servers, or when the call fails: a count is
        a nicety, never a reason to fail a test."""
        if not self._llama_tokenizer:
            return None
        root = self.base_url.removesuffix("/v1")
        try:
            response = self.ask(
                "POST", f"{root}/tokenize", json={"content": text, "add_special": False}
            )
            tokens = response.json().get("tokens") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return len(tokens) if isinstance(tokens, list) else None

    def ask(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request that only reads (a model list, a token count, a version): sent
        once more, at once, when the kept-alive connection it went out on had been
        closed by the server (llama.cpp's server closes them), which reading twice
        cannot harm. httpx's errors otherwise, as ``Client.request`` raises them."""
        try:
            return self._client.request(method, url, **kwargs)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            return self._client.request(method, url, **kwargs)

    def close(self) -> None:
        self._client.close()

    def _describe(self) -> str:
        return f"{self.endpoint} for {self.display}"

    def redactor(self) -> Redactor:
        """What masks server text of this endpoint: its key and base-URL credentials,
        and every secret of the process (`pytest_llmlab.redact.current`)."""
        return current() | Redactor([self._api_key or "", *url_secrets(self.base_url)])

    def scrub(self, text: str) -> str:
        """Mask every credential in server text: some servers echo the key in 401s."""
        return self.redactor().text(text)


#: The most a stream reads after its end marker to keep its connection (`ChunkStream.drain`).
DRAIN_BYTES = 64 * 1024


class ChunkStream:
    """One open streamed request: iterate for chunk dicts, `close` to stop it early.

    ``deadline_s`` bounds the whole request (None: unbounded but for each read's
    timeout); ``source`` says where that figure came from, for its message.
    """

    def __init__(
        self,
        owner: OpenAICompatible,
        body: dict[str, Any],
        *,
        deadline_s: float | None = None,
        source: str = "--llm-deadline",
        headers: dict[str, str] | None = None,
    ) -> None:
        self._owner = owner
        self._body = body
        #: Headers of this request besides the client's (a provider's version header).
        self.headers = headers
        #: A replay's answer (`pytest_llmlab.models.replay.ReplayTransport.answer`),
        #: read without sending the request: the same checks and parser read it.
        self.played: Callable[[], httpx.Response] | None = None
        self._deadline_s = deadline_s
        self._deadline_source = source
        self._deadline_at: float | None = None
        self._iterator: Generator[dict[str, Any], None, None] | None = None
        #: Set to record what the answer's body brings, frame by frame (cassettes).
        self.tape: Tape | None = None
        self.chunks_received = 0
        #: Whether each chunk is checked here (`chunk_problem`) before it is yielded.
        #: A consumer that checks each one itself, as the assembler does while it
        #: reads it, sets it False and reports a bad one with `malformed_chunk`.
        self.check_chunks = True
        self._last_data = ""  # the last chunk's event data, as it came
        self._choices_seen = False
        self._head = b""  # the body's first bytes, to show what came instead of events
        self._bytes_received = 0
        #: Attempts made (1 + retries), and why each retry happened.
        self.attempts = 1
        self.retried: list[str] = []
        self._retry_note = ""
        self._stale_retried = False
        self._rng: random.Random | None = None  # made for a first retry: seeding costs

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
        url = self.url()
        where = owner._describe()
        deadline = self._deadline_s
        if deadline is not None:
            self._deadline_at = time.monotonic() + deadline
        # No single read outlasts the deadline, so a silent server meets it too.
        read_s = owner.timeout_s if deadline is None else min(owner.timeout_s, deadline)
        timeout = httpx.Timeout(owner.timeout_s, read=read_s)
        while True:
            wait = yield from self._attempt(url, timeout, where)
            if wait is None:
                return
            time.sleep(wait)
            self.attempts += 1

    def _retry_wait(self, reason: str, retry_after: float | None) -> float | None:
        """The wait before trying again after ``reason``, or None when no retry is
        left or the wait would pass the deadline (the final error then says why)."""
        policy = self._owner.retry
        if self.attempts > policy.retries:
            if policy.retries:
                self._retry_note = f" (after {self.attempts} attempts)"
            return None
        if self._rng is None:
            self._rng = random.Random()
        wait = policy.delay_s(self.attempts, retry_after, self._rng)
        if self._deadline_at is not None and time.monotonic() + wait >= self._deadline_at:
            self._retry_note = (
                f" (not retried: waiting {wait:.3g} s would pass the {self._deadline_s:g} s "
                f"deadline, {self._deadline_source})"
            )
            return None
        self.retried.append(reason)
        return wait

    def _attempt(
        self, url: str, timeout: httpx.Timeout, where: str
    ) -> Generator[dict[str, Any], None, float | None]:
        """One HTTP attempt: yields its chunks; returns the wait before the next
        attempt when this one may be retried (nothing received yet), else None."""
        __tracebackhide__ = hide_own_frames
        owner = self._owner
        connected: list[bool] = []  # a new connection was opened for this attempt

        def trace(name: str, info: dict[str, Any]) -> None:
            if name.endswith("connect_tcp.started"):
                connected.append(True)

        opened: AbstractContextManager[httpx.Response] = (
            contextlib.closing(self.played())
            if self.played is not None
            else owner._client.stream(
                "POST",
                url,
                json=self._body,
                headers=self.headers,
                timeout=timeout,
                extensions={"trace": trace},
            )
        )
        try:
            with opened as response:
                if self.tape is not None:
                    self.tape.begin(response.status_code, response.headers.get("content-type", ""))
                if response.status_code in RETRY_STATUSES:
                    wait = self._retry_wait(
                        f"HTTP {response.status_code}", retry_after_s(response.headers)
                    )
                    if wait is not None:
                        return wait
                self._check_answer(response, where)
                yield from self._read(response, where)
                return None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise EndpointUnreachable(
                f"cannot reach {owner.endpoint} for {owner.display}: {connect_reason(exc)}"
            ) from None
        except httpx.TimeoutException:
            deadline = self._deadline_s
            if deadline is not None and (deadline <= owner.timeout_s or self._past_deadline()):
                raise self._deadline_error(where) from None
            raise GenerationTimeout(
                f"no data from {where} within {owner.timeout_s:g} s (--llm-timeout) "
                f"after {self.chunks_received} chunks"
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            if not self._bytes_received and not connected and not self._stale_retried:
                # A kept-alive connection the server had closed (an idle timeout, a
                # per-connection request limit): nothing reached it; once, at once.
                self._stale_retried = True
                self.retried.append("a kept-alive connection the server had closed")
                return 0.0
            if not self._bytes_received:  # reset before the answer began: may retry
                wait = self._retry_wait(f"connection reset ({type(exc).__name__})", None)
                if wait is not None:
                    return wait
            if isinstance(exc, httpx.RemoteProtocolError) or not self._bytes_received:
                raise StreamError(
                    f"stream from {where} was cut after {self.chunks_received} chunks: "
                    f"{connect_reason(exc)}{self._retry_note}"
                ) from None
            raise GenerationError(
                f"request to {where} failed: {type(exc).__name__}: {exc}"
            ) from None
        except httpx.HTTPError as exc:
            raise GenerationError(
                f"request to {where} failed: {type(exc).__name__}: {exc}"
            ) from None

    # -- the wire format: what a provider module's stream class overrides ----------

    #: The request path under the base URL.
    path = "/chat/completions"
    #: What the body must be, for the message when it is something else.
    expected_content = "an event stream (does it support stream=true?)"

    def url(self) -> str:
        return f"{self._owner.base_url}{self.path}"

    def content_ok(self, content_type: str) -> bool:
        """Whether an answer of ``content_type`` is the stream this format reads."""
        return is_event_stream(content_type)

    @property
    def chunks_checked(self) -> bool:
        """Whether this stream checks its chunks (`chunk_problem`, unless its consumer
        turned ``check_chunks`` off) and keeps each one's data as it came, for
        `malformed_chunk`: the base `_read` does, in `_decode`; a format that reads its
        own (a subclass's `_read`) builds chunks the assembler checks."""
        return type(self)._read is ChunkStream._read

    def _read(self, response: httpx.Response, where: str) -> Iterator[dict[str, Any]]:
        """The answer's chunks (OpenAI format), raising StreamError for a stream that
        breaks the format's rules. Here: SSE ``chat.completion.chunk`` events up to
        ``data: [DONE]``."""
        __tracebackhide__ = hide_own_frames
        done = False
        unfinished: list[ServerSentEvent] = []
        events = self._events(response, where, unfinished.append)
        for event in events:
            if event.data.strip() == "[DONE]":
                done = True
                break
            chunk = self._decode(event.data, where)
            self.chunks_received += 1
            self._choices_seen = self._choices_seen or bool(chunk.get("choices"))
            yield chunk
        if done:
            self.drain(events)
        # A server that closes right after "data: [DONE]", without the blank line that
        # would dispatch it, has still finished.
        done = done or any(e.data.strip() == "[DONE]" for e in unfinished)
        if not done:
            raise StreamError(self._ended_early(where))
        if not self._choices_seen:
            raise StreamError(
                f"stream from {where} sent [DONE] after {self.chunks_received} "
                "chunks without a single choice: no answer and no finish reason"
            )

    def drain(self, rest: Iterator[object]) -> None:
        """Read what follows the stream's end marker (normally only the end of the
        body): a response read to its end hands its connection back to the client's
        pool for the next request, where one left unread is closed, and every request
        would pay a new connection (a TLS handshake, against a cloud). OpenAI's and
        Anthropic's SDKs do the same. At most `DRAIN_BYTES` more are read; an error
        here only costs the connection: the answer is complete."""
        start = self._bytes_received
        try:
            for _ in rest:
                if self._bytes_received - start > DRAIN_BYTES:
                    return
        except (httpx.HTTPError, LLMLabError, ValueError):  # ValueError: a line over the limit
            return

    def _check_answer(self, response: httpx.Response, where: str) -> None:
        """Raise unless the answer is an event stream: an HTTP error status, a
        redirect (not followed: say where to), another content type."""
        __tracebackhide__ = hide_own_frames
        owner = self._owner
        status = response.status_code
        if status >= 400:
            raise HTTPStatusError(
                f"HTTP {status} from {where}: {_server_error_message(response, owner.redactor())}"
                f"{self._retry_note}",
                status_code=status,
            )
        if 300 <= status < 400:
            raise HTTPStatusError(
                f"HTTP {status} from {where}: redirected to {self._location(response)} "
                "(redirects are not followed: set the base URL to the new address)",
                status_code=status,
            )
        content_type = response.headers.get("content-type", "")
        if not self.content_ok(content_type):
            shown = _shown(content_type, owner.redactor(), 100) if content_type else ""
            raise StreamError(
                f"{where} answered {shown or 'no content type'} instead of {self.expected_content}"
            )

    def _location(self, response: httpx.Response) -> str:
        """Where a redirect points, absolute, without ``user:password@``, made safe."""
        location = response.headers.get("location", "")
        if not location:
            return "nowhere (no Location header)"
        try:
            target = str(response.url.join(location))
        except (httpx.InvalidURL, ValueError):
            target = location
        return _shown(redact_url(target), self._owner.redactor())

    def _events(
        self,
        response: httpx.Response,
        where: str,
        on_incomplete: Callable[[ServerSentEvent], object],
    ) -> Iterator[ServerSentEvent]:
        """The body's events (UTF-8, WHATWG rules); one over the size limit per event
        is a StreamError."""
        __tracebackhide__ = hide_own_frames
        reader = EventReader()
        try:
            for text in decode(self._body_bytes(response, where)):
                yield from reader.feed(text)
            unfinished = reader.end()
        except ValueError as exc:  # the parser's limit, with its reason
            raise StreamError(
                f"stream from {where} failed after {self.chunks_received} chunks: {exc}"
            ) from None
        if unfinished is not None:
            on_incomplete(unfinished)

    def _body_bytes(self, response: httpx.Response, where: str) -> Iterator[bytes]:
        """The body as it arrives, its first bytes kept, the deadline checked on every
        piece (comments and keep-alives included)."""
        __tracebackhide__ = hide_own_frames
        tape = self.tape
        for data in response.iter_bytes():
            if tape is not None:
                tape.piece(data)
            if len(self._head) < _HEAD_BYTES:
                self._head += data[: _HEAD_BYTES - len(self._head)]
            self._bytes_received += len(data)
            if self._past_deadline():
                raise self._deadline_error(where)
            yield data

    def _past_deadline(self) -> bool:
        return self._deadline_at is not None and time.monotonic() >= self._deadline_at

    def _deadline_error(self, where: str) -> GenerationTimeout:
        return GenerationTimeout(
            f"generation from {where} did not finish within its {self._deadline_s:g} s "
            f"deadline ({self._deadline_source}) after {self.chunks_received} chunks"
        )

    #: How the format's end is missed, what it counts, and what it is made of: the
    #: words of `_ended_early` (``ended before [DONE] after 3 chunks``).
    end_rule = "before [DONE]"
    counted = "chunks"
    made_of = "event"

    def _ended_early(self, where: str) -> str:
        """The message of a stream that ended before its end marker: with what it sent
        instead when that was not a single chunk."""
        message = (
            f"stream from {where} ended {self.end_rule} after {self.chunks_received} {self.counted}"
        )
        if self.chunks_received:
            return message
        if not self._bytes_received:
            return f"{message}: the body was empty"
        head = _quoted(self._head.decode("utf-8", "replace"), self._owner.redactor())
        return (
            f"{message}: no {self.made_of} in its {self._bytes_received} bytes, which begin {head}"
        )

    def _malformed(self, where: str, problem: str | None, data: str) -> StreamError:
        return StreamError(
            f"malformed chunk in stream from {where} after {self.chunks_received} chunks: "
            f"{problem or 'not a chat.completion.chunk'}: {_quoted(data, self._owner.redactor())}"
        )

    def _decode(self, data: str, where: str) -> dict[str, Any]:
        __tracebackhide__ = hide_own_frames
        try:
            chunk = wirejson.loads(data)
        except ValueError:
            raise StreamError(
                f"malformed JSON in stream from {where} after {self.chunks_received} "
                f"chunks: {_quoted(data, self._owner.redactor())}"
            ) from None
        if not isinstance(chunk, dict):
            raise self._malformed(where, chunk_problem(chunk), data)
        if "error" in chunk and not chunk.get("choices"):
            error = chunk["error"]
            if isinstance(error, dict):
                message = error.get("message") or error.get("detail") or json.dumps(error)
            else:
                message = error
            raise StreamError(
                f"error event in stream from {where}: "
                f"{_shown(str(message), self._owner.redactor())}"
            )
        self._last_data = data
        if self.check_chunks:
            problem = chunk_problem(chunk)
            if problem is not None:
                raise self._malformed(where, problem, data)
        return chunk

    def malformed_chunk(self, problem: str) -> StreamError:
        """The error for the last chunk yielded, found of the wrong shape by its
        consumer (``check_chunks`` False): the same message as when it is found here."""
        self.chunks_received -= 1  # the count of chunks before it, as the message says
        return self._malformed(self._owner._describe(), problem, self._last_data)
