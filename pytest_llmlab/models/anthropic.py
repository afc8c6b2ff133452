"""Anthropic's Messages API: ``POST {base}/messages`` with ``stream: true``.

Written against Anthropic's "Streaming Messages" document
(https://platform.claude.com/docs/en/build-with-claude/streaming) and the example streams
the official Python client ships in its tests (``anthropics/anthropic-sdk-python``:
``tests/lib/streaming/fixtures/basic_response.txt``, ``tool_use_response.txt``,
``incomplete_partial_json_response.txt``, ``tests/fixtures/fable-fallback/
stream-a-refusal.sse`` for thinking, and the ``overloaded_error`` event of
``tests/test_streaming.py``). The answer is an event stream of named events, each
with the same name in its JSON ``type``:

- ``message_start``: the `Message` with empty ``content``; its ``usage`` has the input
  tokens (``input_tokens``, ``cache_creation_input_tokens``,
  ``cache_read_input_tokens``) and its ``model``.
- per content block ``content_block_start`` (``text``, ``thinking``, ``tool_use`` with
  ``id`` and ``name``), ``content_block_delta`` (``text_delta``, ``thinking_delta``,
  ``input_json_delta`` with ``partial_json``, ``signature_delta``) and
  ``content_block_stop``, each with the block's ``index``;
- ``message_delta``: ``stop_reason`` and the *cumulative* ``usage``
  (``output_tokens``, and on newer servers the input counts again);
- ``message_stop``: the end. ``ping`` events keep the connection alive; an ``error``
  event (``{"type": "error", "error": {"type": "overloaded_error", "message":
  "Overloaded"}}``) ends the stream with an error even though the status was 200.
  Event types this module does not know are ignored, as the document's versioning
  policy asks of clients.

`AnthropicStream` turns these into OpenAI ``chat.completion.chunk`` dicts for
`pytest_llmlab.models.assemble.GenerationAssembler`: ``text_delta`` -> ``delta.content``,
``thinking_delta`` -> ``delta.reasoning_content``, ``input_json_delta`` ->
``delta.tool_calls`` argument fragments (``index`` = the content block's index; the
call's ``id``, ``type`` and ``function.name`` in its first fragment), ``stop_reason`` ->
``finish_reason`` (`FINISH_REASONS`), and at ``message_stop`` one last chunk with
``usage``. Nothing is emitted for ``message_start``, so time to first token is stamped
at the first text, thinking or tool-input delta, not when the message opened.

HTTP errors, deadlines, retries (429 and 529 answers; also an ``overloaded_error`` or
``rate_limit_error`` event that arrives before any content), redaction and the one-line
messages are `pytest_llmlab.models.openai`'s: this module only knows the wire format.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from pytest_llmlab import wirejson
from pytest_llmlab.errors import StreamError, hide_own_frames
from pytest_llmlab.extract import json_kind
from pytest_llmlab.models.base import Message, Request
from pytest_llmlab.models.openai import ChunkStream, OpenAICompatible, _quoted, _shown
from pytest_llmlab.models.sse import ServerSentEvent

__all__ = [
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "FINISH_REASONS",
    "RETRY_ERROR_TYPES",
    "AnthropicProvider",
    "AnthropicStream",
    "MessageStreamTranslator",
]

__tracebackhide__ = hide_own_frames

#: Where the Messages API lives (``--llm-anthropic-base-url`` / ini
#: ``llm_anthropic_base_url`` override it).
ANTHROPIC_BASE_URL = "https://api.anthropic.com/v1"
#: The ``anthropic-version`` header every request carries (the API's stable version).
ANTHROPIC_VERSION = "2023-06-01"
#: ``max_tokens`` sent when a request sets none: the API requires one, and 1024 is the
#: figure of Anthropic's own examples. With a ``thinking`` budget at or above it, the
#: budget plus 1024 (the budget must be below ``max_tokens``).
DEFAULT_MAX_TOKENS = 1024

#: Anthropic's ``stop_reason`` -> OpenAI's ``finish_reason``; others pass unchanged
#: (``pause_turn``...).
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: Error event types that mean "try again later" (HTTP 529 and 429 as events): retried
#: like those statuses when no content has arrived yet.
RETRY_ERROR_TYPES = frozenset({"overloaded_error", "rate_limit_error"})

_HOST = urlsplit(ANTHROPIC_BASE_URL).hostname


class _Malformed(ValueError):
    """An event of the wrong shape: the phrase says which field."""


class _RetryableEvent(StreamError):
    """An overloaded (or rate-limit) error event before any content: may be retried."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _index(data: dict[str, Any]) -> int:
    index = data.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise _Malformed(f"index is {json_kind(index)}, not a content block index")
    return index


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise _Malformed(f"{key} is {json_kind(value)}, not an object")
    return value


def _text(data: dict[str, Any], key: str, path: str) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Malformed(f"{path}.{key} is {json_kind(value)}, not a string")
    return value


def _count(value: object) -> int | None:
    """A token count as JSON sends it (a non-negative integer), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


@dataclass(slots=True)
class _ToolBlock:
    """A ``tool_use`` content block while its input arrives."""

    id: str | None
    name: str
    #: The ``input`` of ``content_block_start`` (``{}`` when streamed).
    start_input: object = None
    announced: bool = False


@dataclass
class MessageStreamTranslator:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` dicts out.

    Pure logic, no I/O: `feed` takes one event's type and decoded data and returns the
    chunks it makes (often none); `finished` turns True at ``message_stop``. A field
    of the wrong type raises ValueError naming it.
    """

    message_id: str = ""
    model: str = ""
    finished: bool = False
    #: True once a chunk with content (text, thinking, a tool call) was returned: from
    #: then on a failed request is not retried.
    content_started: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    _tools: dict[int, _ToolBlock] = field(default_factory=dict)

    def feed(self, kind: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks of one event (``kind``: its ``type``)."""
        if kind == "message_start":
            message = _object(data, "message")
            self.message_id = _text(message, "id", "message")
            self.model = _text(message, "model", "message")
            self._take_usage(message.get("usage"))
            return []
        if kind == "content_block_start":
            return self._block_start(_index(data), _object(data, "content_block"))
        if kind == "content_block_delta":
            return self._block_delta(_index(data), _object(data, "delta"))
        if kind == "content_block_stop":
            return self._block_stop(_index(data))
        if kind == "message_delta":
            self._take_usage(data.get("usage"))
            stop_reason = _text(_object(data, "delta"), "stop_reason", "delta")
            if not stop_reason:
                return []
            reason = FINISH_REASONS.get(stop_reason, stop_reason)
            return [self._chunk({}, finish_reason=reason)]
        if kind == "message_stop":
            self.finished = True
            usage = self.usage_chunk()
            return [] if usage is None else [usage]
        return []  # ping, and event types added after this module was written

    def usage_chunk(self) -> dict[str, Any] | None:
        """The usage so far as OpenAI sends it (``choices`` empty); None without an
        output count. ``prompt_tokens`` is every input token: Anthropic's
        ``input_tokens`` leaves out the cached ones (``cache_creation_input_tokens``
        and ``cache_read_input_tokens``, its prompt-caching document says); the
        cache reads are ``prompt_tokens_details.cached_tokens``."""
        usage = self.usage
        if "output_tokens" not in usage:
            return None
        prompt = sum(
            usage.get(key, 0)
            for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        shaped: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": usage["output_tokens"],
            "total_tokens": prompt + usage["output_tokens"],
        }
        if "cache_read_input_tokens" in usage:
            shaped["prompt_tokens_details"] = {"cached_tokens": usage["cache_read_input_tokens"]}
        chunk = self._chunk({})
        chunk["choices"] = []
        chunk["usage"] = shaped
        return chunk

    # -- the parts ------------------------------------------------------------------

    def _take_usage(self, usage: object) -> None:
        """Counts of ``message_start`` and of each ``message_delta`` (cumulative: the
        latest figure of each count wins)."""
        if not isinstance(usage, dict):
            return
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ):
            count = _count(usage.get(key))
            if count is not None:
                self.usage[key] = count

    def _block_start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        kind = block.get("type")
        if kind == "text":
            return self._content({"content": _text(block, "text", "content_block")})
        if kind == "thinking":
            return self._content({"reasoning_content": _text(block, "thinking", "content_block")})
        if kind == "tool_use":
            self._tools[index] = _ToolBlock(
                id=_text(block, "id", "content_block") or None,
                name=_text(block, "name", "content_block"),
                start_input=block.get("input"),
            )
        return []  # redacted thinking, server tool results...: not part of the answer

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        kind = delta.get("type")
        if kind == "text_delta":
            return self._content({"content": _text(delta, "text", "delta")})
        if kind == "thinking_delta":
            return self._content({"reasoning_content": _text(delta, "thinking", "delta")})
        if kind == "input_json_delta":
            fragment = _text(delta, "partial_json", "delta")
            tool = self._tools.get(index)
            if tool is None:
                raise _Malformed(
                    f"input_json_delta for content block {index}, which did not start "
                    "as a tool_use block"
                )
            return self._tool_fragment(index, tool, fragment)
        return []  # signature_delta, citations_delta: nothing the Generation keeps

    def _block_stop(self, index: int) -> list[dict[str, Any]]:
        """A tool call that got no input delta at all still becomes a call, with the
        ``input`` its start event carried."""
        tool = self._tools.get(index)
        if tool is None or tool.announced:
            return []
        start = tool.start_input
        arguments = json.dumps(start) if isinstance(start, dict) and start else ""
        return self._tool_fragment(index, tool, arguments)

    def _tool_fragment(self, index: int, tool: _ToolBlock, fragment: str) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {"index": index}
        function: dict[str, Any] = {"arguments": fragment}
        if not tool.announced:
            tool.announced = True
            if tool.id is not None:
                entry["id"] = tool.id
            entry["type"] = "function"
            function = {"name": tool.name, **function}
        elif not fragment:
            return []
        entry["function"] = function
        self.content_started = True
        return [self._chunk({"tool_calls": [entry]})]

    def _content(self, delta: dict[str, str]) -> list[dict[str, Any]]:
        if not any(delta.values()):
            return []
        self.content_started = True
        return [self._chunk(delta)]

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "object": "chat.completion.chunk",
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }


class AnthropicStream(ChunkStream):
    """One streamed ``POST {base}/messages``: iterate for OpenAI-format chunks.

    ``chunks_received`` counts Anthropic events. An ``overloaded_error`` or
    ``rate_limit_error`` event before any content is retried like HTTP 529 / 429
    (within ``--llm-retries`` and the deadline); after content, never.
    """

    end_rule = "before message_stop"
    counted = "events"

    path = "/messages"

    def _read(self, response: httpx.Response, where: str) -> Iterator[dict[str, Any]]:
        """Anthropic's events up to ``message_stop``; a stream that ends without it is
        a StreamError (the rule of OpenAI's ``[DONE]``)."""
        __tracebackhide__ = hide_own_frames
        translator = MessageStreamTranslator()
        unfinished: list[ServerSentEvent] = []
        events = self._events(response, where, unfinished.append)
        for event in events:
            data = self._data(event, where)
            kind = str(data.get("type") or event.event)
            if kind == "error":
                self._raise_error_event(data, where, retryable=not translator.content_started)
            try:
                chunks = translator.feed(kind, data)
            except _Malformed as exc:
                raise self._malformed(where, f"{kind} event: {exc}", event.data) from None
            self.chunks_received += 1
            yield from chunks
            if translator.finished:
                self.drain(events)  # the connection goes back to the pool
                return
        # A server that closes right after message_stop, without the blank line that
        # would dispatch it, has still finished.
        if any(self._is_stop(event) for event in unfinished):
            usage = translator.usage_chunk()
            if usage is not None:
                yield usage
            return
        raise StreamError(self._ended_early(where))

    def _attempt(
        self, url: str, timeout: httpx.Timeout, where: str
    ) -> Generator[dict[str, Any], None, float | None]:
        """The inherited attempt, plus a retry after an overloaded error event that came
        before any content (the response is closed by then)."""
        __tracebackhide__ = hide_own_frames
        try:
            return (yield from super()._attempt(url, timeout, where))
        except _RetryableEvent as exc:
            wait = self._retry_wait(exc.reason, None)
            if wait is None:
                raise StreamError(f"{exc}{self._retry_note}") from None
            # The next attempt starts afresh: what this one received says nothing of it.
            self.chunks_received = 0
            self._bytes_received = 0
            self._head = b""
            return wait

    def _data(self, event: ServerSentEvent, where: str) -> dict[str, Any]:
        __tracebackhide__ = hide_own_frames
        try:
            data = wirejson.loads(event.data)
        except ValueError:
            raise StreamError(
                f"malformed JSON in stream from {where} after {self.chunks_received} "
                f"events: {_quoted(event.data, self._owner.redactor())}"
            ) from None
        if not isinstance(data, dict):
            raise self._malformed(
                where, f"the {event.event} event is {json_kind(data)}, not an object", event.data
            )
        return data

    def _raise_error_event(self, data: dict[str, Any], where: str, *, retryable: bool) -> None:
        __tracebackhide__ = hide_own_frames
        error = data.get("error")
        redactor = self._owner.redactor()
        if isinstance(error, dict):
            kind = str(error.get("type") or "error")
            message = str(error.get("message") or json.dumps(error))
        else:
            kind, message = "error", json.dumps(error)
        text = (
            f"error event in stream from {where} after {self.chunks_received} events: "
            f"{_shown(kind, redactor, 100)}: {_shown(message, redactor)}"
        )
        if retryable and kind in RETRY_ERROR_TYPES:
            raise _RetryableEvent(text, f"{kind} event")
        raise StreamError(text)

    def _malformed(self, where: str, problem: str | None, data: str) -> StreamError:
        return StreamError(
            f"malformed event in stream from {where} after {self.chunks_received} events: "
            f"{problem or 'not an object'}: {_quoted(data, self._owner.redactor())}"
        )

    @staticmethod
    def _is_stop(event: ServerSentEvent) -> bool:
        try:
            data = wirejson.loads(event.data)
        except ValueError:
            return False
        return isinstance(data, dict) and data.get("type") == "message_stop"


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI function schema as Anthropic's tool: ``name``, ``description``,
    ``input_schema`` (required there: an empty object schema when none is given)."""
    function = tool.get("function") or {}
    mapped: dict[str, Any] = {"name": function.get("name")}
    if function.get("description"):
        mapped["description"] = function["description"]
    mapped["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return mapped


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``tool_choice`` as Anthropic's: ``auto``, ``required`` -> ``any``,
    ``none``, one function -> ``{"type": "tool", "name": ...}``."""
    if isinstance(choice, dict):
        function = choice.get("function")
        if choice.get("type") == "function" and isinstance(function, dict):
            return {"type": "tool", "name": function.get("name")}
        return choice  # already Anthropic's form
    return {"type": {"required": "any"}.get(choice, choice)}


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    """An assistant message's OpenAI ``tool_calls`` entry as a ``tool_use`` block."""
    function = call.get("function") or {}
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError:
        arguments = {}
    block: dict[str, Any] = {"type": "tool_use", "name": function.get("name")}
    if call.get("id"):
        block["id"] = call["id"]
    block["input"] = arguments if isinstance(arguments, dict) else {}
    return block


def _messages(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """The top-level ``system`` text (system messages joined by a blank line) and the
    ``messages`` list: assistant tool calls as ``tool_use`` blocks, ``tool`` messages
    as ``tool_result`` blocks of a user message (consecutive results in one)."""
    system: list[str] = []
    chat: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content or "")
        elif message.role == "tool":
            result: dict[str, Any] = {"type": "tool_result"}
            if message.tool_call_id is not None:
                result["tool_use_id"] = message.tool_call_id
            result["content"] = message.content or ""
            last = chat[-1] if chat else None
            if (
                last is not None
                and last["role"] == "user"
                and isinstance(last["content"], list)
                and all(block.get("type") == "tool_result" for block in last["content"])
            ):
                last["content"].append(result)
            else:
                chat.append({"role": "user", "content": [result]})
        elif message.role == "assistant" and message.tool_calls:
            blocks: list[dict[str, Any]] = []
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            blocks.extend(_tool_use(call) for call in message.tool_calls)
            chat.append({"role": "assistant", "content": blocks})
        else:
            chat.append({"role": message.role, "content": message.content or ""})
    return ("\n\n".join(system) if system else None), chat


class AnthropicProvider(OpenAICompatible):
    """Streams Anthropic Messages from one model (``anthropic:<model>``).

    The key goes in ``x-api-key`` with ``anthropic-version: 2023-06-01`` on every
    request (the ``GET /models`` probe too); ``ANTHROPIC_API_KEY`` by convention.
    """

    probe_path = "/models"

    def __init__(
        self,
        *,
        model: str,
        display: str,
        base_url: str = ANTHROPIC_BASE_URL,
        version: str = ANTHROPIC_VERSION,
        **kwargs: Any,
    ) -> None:
        """As `OpenAICompatible` (the key's variable named ``ANTHROPIC_API_KEY`` unless
        given); ``version``: the ``anthropic-version`` header."""
        self.version = version
        kwargs.setdefault("api_key_env", "ANTHROPIC_API_KEY")
        super().__init__(model=model, display=display, base_url=base_url, **kwargs)

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self.version}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    @property
    def cloud_provider(self) -> str | None:
        """``anthropic`` for Anthropic's own endpoint (energy estimates), else None."""
        return "anthropic" if urlsplit(self.base_url).hostname == _HOST else None

    def request_body(self, request: Request) -> dict[str, Any]:
        """The JSON body of one streamed Messages request.

        ``model``; ``messages`` without the system messages, which go to the top-level
        ``system`` field; ``max_tokens`` always (the API requires it:
        `DEFAULT_MAX_TOKENS`, 1024, when the request sets none); ``temperature`` as
        given (Anthropic's range is 0 to 1, and with ``thinking`` it accepts only 1);
        ``stop`` as ``stop_sequences``; ``stream: true``; ``tools`` as ``{name,
        description, input_schema}`` and ``tool_choice`` in Anthropic's form; then
        ``params`` verbatim (``thinking``, ``top_p``, ``top_k``, ``metadata``...).
        Not sent: ``seed`` (Anthropic has none: a seeded request is not
        reproducible there), ``logprobs`` / ``top_logprobs`` (it returns none: the
        Generation has no tokens, and confidence checks skip) and
        ``stream_options`` (usage always arrives).
        """
        system, chat = _messages(request.messages)
        body: dict[str, Any] = {"model": self.model, "messages": chat}
        if system is not None:
            body["system"] = system
        body["max_tokens"] = self._max_tokens(request)
        body["temperature"] = request.temperature
        if request.stop:
            body["stop_sequences"] = request.stop
        body["stream"] = True
        if request.tools:
            body["tools"] = [_tool(tool) for tool in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
        body.update(request.params)
        return body

    @staticmethod
    def _max_tokens(request: Request) -> int:
        if request.max_tokens is not None:
            return request.max_tokens
        thinking = request.params.get("thinking")
        budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
        if (
            isinstance(budget, int)
            and not isinstance(budget, bool)
            and budget >= DEFAULT_MAX_TOKENS
        ):
            return budget + DEFAULT_MAX_TOKENS
        return DEFAULT_MAX_TOKENS

    def stream_chunks(self, request: Request) -> AnthropicStream:
        deadline_s, source = self.deadline_for(request)
        return AnthropicStream(
            self, self.request_body(request), deadline_s=deadline_s, source=source
        )
