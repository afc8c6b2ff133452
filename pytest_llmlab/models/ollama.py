"""Ollama's native API: ``POST /api/chat`` streamed as NDJSON, as OpenAI-format chunks.

Written against Ollama's own documentation, ollama/ollama ``docs/api.md`` ("Generate a
chat completion", "List Local Models", "Show Model Information", "List Running
Models", "Version"), ``docs/api/streaming.mdx``, ``docs/api/errors.mdx``,
``docs/api/usage.mdx`` and ``docs/openapi.yaml`` (``ChatRequest``, ``ChatResponse``, the
``Logprob`` schema), read at commit fb30760 (August 2026); the server's
``server/routes.go`` settled what the documents leave open (the content types, the
``logprobs`` lines its tool parser sends while it buffers).

The base URL is Ollama's root (``http://127.0.0.1:11434``, what ``OLLAMA_HOST`` names;
`ollama_base_url` reads it the way Ollama's clients do), not its OpenAI-compatible
``/v1``: the routes are ``/api/chat``, ``/api/tags``, ``/api/ps``, ``/api/show`` and
``/api/version`` under it.

The stream is one JSON object per line (``application/x-ndjson``), each mapped to one
``chat.completion.chunk`` that `pytest_llmlab.models.assemble.GenerationAssembler`
reads like any other provider's:

==================================  ===============================================
Ollama line                         chunk
==================================  ===============================================
``message.content``                 ``choices[0].delta.content``
``message.thinking`` (``think``)    ``choices[0].delta.reasoning_content``
``message.tool_calls`` (whole       ``choices[0].delta.tool_calls``: ``index`` (a
calls, ``arguments`` an object)     running count), ``id``, ``type: function``,
                                    ``function.name``, ``function.arguments`` (the
                                    object as JSON text)
``logprobs`` (``logprobs: true``,   ``choices[0].logprobs.content``: ``token``,
Ollama >= 0.12.11)                  ``logprob``, ``top_logprobs`` [{token, logprob}]
``done: true``, ``done_reason``     ``choices[0].finish_reason`` (``stop`` with tool
                                    calls becomes ``tool_calls``, as OpenAI says it)
``prompt_eval_count``,              ``usage.prompt_tokens``,
``eval_count``                      ``usage.completion_tokens``
the durations (nanoseconds)         ``timings``: the raw fields, plus llama.cpp's
                                    ``prompt_per_second`` / ``predicted_per_second``
                                    computed from them (the server's own rates)
``{"error": "..."}``                a StreamError with the message
==================================  ===============================================

A line that carries only ``logprobs`` (Ollama sends the logprobs of the tokens its tool
parser holds back that way) keeps them for the next line with text, a tool call or the
end, so a tool call's tokens count towards its confidence. A stream that ends before
its ``done: true`` line is cut (StreamError), like an SSE stream without ``[DONE]``.
HTTP errors, deadlines, retries and redaction are `OpenAICompatible`'s and
`ChunkStream`'s; a model Ollama does not have (HTTP 404 ``model 'x' not found``) says
to ``ollama pull`` it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from pytest_llmlab.errors import HTTPStatusError, ModelNotFound, StreamError, hide_own_frames
from pytest_llmlab.extract import json_kind
from pytest_llmlab.models.base import Message, Request
from pytest_llmlab.models.openai import (
    ChunkStream,
    OpenAICompatible,
    connect_reason,
    is_loopback,
)
from pytest_llmlab.models.providers import ollama_base_url
from pytest_llmlab.models.sse import MAX_EVENT_SIZE, decode, iter_lines
from pytest_llmlab.redact import redact_text, terminal_safe

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_TOP_LOGPROBS",
    "NDJSON",
    "OllamaProvider",
    "OllamaStream",
    "list_ollama_models",
    "ollama_base_url",
    "show_ollama_model",
]

__tracebackhide__ = hide_own_frames

#: Where Ollama listens unless ``OLLAMA_HOST`` says otherwise.
DEFAULT_BASE_URL = "http://127.0.0.1:11434"
#: The content type of Ollama's streamed answers.
NDJSON = "application/x-ndjson"
#: The most ``top_logprobs`` Ollama accepts (more is HTTP 400 "top_logprobs must be
#: between 0 and 20"); a request for more is sent as this many.
MAX_TOP_LOGPROBS = 20

#: Request fields of ``ChatRequest`` (docs/openapi.yaml) that ``params`` may set; every
#: other parameter is a model option (``options``: ``top_p``, ``num_ctx``,
#: ``num_thread``, ``top_k``, ``repeat_penalty``...), where Ollama ignores (and logs)
#: a name it does not know.
_TOP_LEVEL = frozenset({"format", "keep_alive", "think", "truncate", "shift"})
#: Characters of a server's error message kept in a model-list error.
_MESSAGE_CHARS = 300
#: Ollama's words for a model it does not have: ``model 'x' not found`` (chat, show),
#: ``model "x" not found, try pulling it first``.
_MODEL_NOT_FOUND = re.compile(r"model ['\"].*['\"] not found")
#: The duration and count fields of a final line (docs/api/usage.mdx), kept in
#: ``timings.server`` as sent.
_METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


# -- the NDJSON stream ---------------------------------------------------------------


def _line_problem(line: dict[str, Any]) -> str | None:
    """Why a decoded line is not a ``ChatResponse`` this module can map (one phrase
    naming the field), or None. Absent fields and nulls are fine."""
    message = line.get("message")
    if message is not None and not isinstance(message, dict):
        return f"message is {json_kind(message)}, not an object"
    message = message or {}
    for key in ("content", "thinking"):
        if message.get(key) is not None and not isinstance(message[key], str):
            return f"message.{key} is {json_kind(message[key])}, not a string"
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        return f"message.tool_calls is {json_kind(calls)}, not an array"
    for k, call in enumerate(calls or ()):
        where = f"message.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            return f"{where}.function is {json_kind(function)}, not an object"
        if not isinstance(function.get("name"), str):
            return f"{where}.function.name is {json_kind(function.get('name'))}, not a string"
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, dict | str):
            return f"{where}.function.arguments is {json_kind(arguments)}, not an object"
    logprobs = line.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, list):
        return f"logprobs is {json_kind(logprobs)}, not an array"
    if not isinstance(line.get("done", False), bool):
        return f"done is {json_kind(line['done'])}, not a boolean"
    if line.get("done_reason") is not None and not isinstance(line["done_reason"], str):
        return f"done_reason is {json_kind(line['done_reason'])}, not a string"
    return None


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _per_second(count: int | None, duration_ns: int | None) -> float | None:
    if not count or not duration_ns:
        return None
    rate = count / (duration_ns / 1e9)
    return rate if math.isfinite(rate) else None


def _logprob_entries(raw: list[Any]) -> list[dict[str, Any]]:
    """Ollama's ``logprobs`` entries as OpenAI's ``logprobs.content`` entries."""
    entries = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        top = [
            {"token": alt.get("token", ""), "logprob": alt.get("logprob")}
            for alt in item.get("top_logprobs") or ()
            if isinstance(alt, dict)
        ]
        entries.append({"token": item.get("token", ""), "logprob": item.get("logprob"),
                        "top_logprobs": top})  # fmt: skip
    return entries


class OllamaStream(ChunkStream):
    """One streamed ``POST /api/chat``: Ollama's NDJSON lines as OpenAI-format chunks
    (the mapping: this module's docstring)."""

    end_rule = "before its final line (done: true)"
    made_of = "line"

    path = "/api/chat"
    expected_content = f"an NDJSON stream ({NDJSON}; does it serve Ollama's /api/chat?)"

    def __init__(self, owner: OllamaProvider, body: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(owner, body, **kwargs)
        self._model = owner.model
        self._calls_seen = 0

    def content_ok(self, content_type: str) -> bool:
        """``application/x-ndjson``, what Ollama streams; also ``application/json``,
        what it sends for an answer of one object (a load request, ``stream: false``)."""
        media = content_type.partition(";")[0].strip().lower()
        return media in {NDJSON, "application/json"}

    def _check_answer(self, response: httpx.Response, where: str) -> None:
        """The inherited checks; a 404 says what to do about it."""
        __tracebackhide__ = hide_own_frames
        try:
            super()._check_answer(response, where)
        except HTTPStatusError as exc:
            if exc.status_code != 404:
                raise
            text = str(exc)
            if _MODEL_NOT_FOUND.search(text):
                hint = f": run `ollama pull {self._model}` on that host"
            else:  # gin's "404 page not found": not Ollama's API at this URL
                hint = ": is that Ollama's root URL? Its API is /api/chat under it"
            raise HTTPStatusError(text + hint, status_code=404) from None

    def _read(self, response: httpx.Response, where: str) -> Iterator[dict[str, Any]]:
        """One chunk per NDJSON line up to the ``done: true`` line; a line over 16 MiB,
        a line that is not a ``ChatResponse``, an ``{"error": ...}`` line or an end
        before ``done`` raises StreamError."""
        __tracebackhide__ = hide_own_frames
        pending: list[dict[str, Any]] = []  # logprobs of lines without text
        lines = iter_lines(decode(self._body_bytes(response, where)), max_size=MAX_EVENT_SIZE)
        while True:
            try:
                text = next(lines, None)
            except ValueError:  # the line-size limit
                raise StreamError(
                    f"stream from {where} failed after {self.chunks_received} chunks: a "
                    f"line longer than {MAX_EVENT_SIZE // (1024 * 1024)} MiB (the limit)"
                ) from None
            if text is None:
                raise StreamError(self._ended_early(where))
            if not text.strip():
                continue
            line = self._decode(text, where)  # JSON, an object, not an error line
            problem = _line_problem(line)
            if problem is not None:
                raise self._malformed(where, problem, text)
            chunk = self._chunk(line, pending)
            if chunk is None:
                continue
            self.chunks_received += 1
            self._choices_seen = True
            yield chunk
            if line.get("done") is True:
                self.drain(lines)  # the connection goes back to the pool
                return

    def _chunk(self, line: dict[str, Any], pending: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The chunk of one line; None for a line of logprobs alone (kept in ``pending``
        for the next chunk)."""
        message = line.get("message") or {}
        delta: dict[str, Any] = {}
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("thinking"):
            delta["reasoning_content"] = message["thinking"]
        calls = [self._tool_call(call) for call in message.get("tool_calls") or ()]
        if calls:
            delta["tool_calls"] = calls
        pending.extend(_logprob_entries(line.get("logprobs") or []))
        done = line.get("done") is True
        if not delta and not done:
            return None
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
        if pending:
            choice["logprobs"] = {"content": list(pending)}
            pending.clear()
        chunk: dict[str, Any] = {"object": "chat.completion.chunk", "choices": [choice]}
        if done:
            reason = line.get("done_reason") or None
            if reason == "stop" and self._calls_seen:
                reason = "tool_calls"
            choice["finish_reason"] = reason
            self._final(line, chunk)
        return chunk

    def _tool_call(self, call: dict[str, Any]) -> dict[str, Any]:
        """One whole Ollama call as a ``delta.tool_calls`` entry of its own index."""
        function = call["function"]
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        entry: dict[str, Any] = {
            "index": self._calls_seen,
            "type": "function",
            "function": {"name": function["name"], "arguments": arguments or ""},
        }
        if isinstance(call.get("id"), str) and call["id"]:
            entry["id"] = call["id"]
        self._calls_seen += 1
        return entry

    def _final(self, line: dict[str, Any], chunk: dict[str, Any]) -> None:
        """Usage and server timings of the ``done`` line into ``chunk``."""
        metrics = {key: value for key in _METRICS if (value := _count(line.get(key))) is not None}
        prompt, output = metrics.get("prompt_eval_count"), metrics.get("eval_count")
        if prompt is not None or output is not None:
            # Ollama leaves out zero counts (omitempty): present beside the other, 0.
            chunk["usage"] = {
                "prompt_tokens": prompt or 0,
                "completion_tokens": output or 0,
                "total_tokens": (prompt or 0) + (output or 0),
            }
        timings: dict[str, Any] = dict(metrics)
        prefill = _per_second(prompt, metrics.get("prompt_eval_duration"))
        decode_rate = _per_second(output, metrics.get("eval_duration"))
        if prefill is not None:
            timings["prompt_per_second"] = prefill
        if decode_rate is not None:
            timings["predicted_per_second"] = decode_rate
        if timings:
            chunk["timings"] = timings


# -- the provider --------------------------------------------------------------------


def _ollama_message(message: Message, tool_names: Mapping[str, str]) -> dict[str, Any]:
    """One OpenAI-format message as Ollama's: ``content`` always a string, an
    assistant's ``tool_calls`` with ``arguments`` as an object, a ``tool`` message
    with ``tool_name`` (the called function, found by its ``tool_call_id``)."""
    out: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.tool_calls:
        out["tool_calls"] = [_ollama_call(call) for call in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
        if message.tool_call_id in tool_names:
            out["tool_name"] = tool_names[message.tool_call_id]
    return out


def _ollama_call(call: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI ``tool_calls`` entry as Ollama's: arguments that are not a JSON
    object (Ollama has no way to send them back) go as ``{}``."""
    function = call.get("function") or {}
    arguments: Any = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            arguments = {}
    out: dict[str, Any] = {
        "function": {
            "name": function.get("name", ""),
            "arguments": arguments if isinstance(arguments, dict) else {},
        }
    }
    if call.get("id"):
        out["id"] = call["id"]
    return out


def _format(response_format: object) -> object:
    """OpenAI's ``response_format`` as Ollama's ``format``: ``json_object`` is
    ``"json"``, ``json_schema`` its schema; None for anything else."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None
    return None


def _facts(show: Mapping[str, Any]) -> dict[str, Any]:
    """The model facts in an ``/api/show`` answer: ``family``, ``parameter_size``,
    ``quantization``, ``format`` (its ``details``), ``parameter_count`` and
    ``context_length`` (its ``model_info``, under the architecture's prefix); only
    those it gives."""
    details, info = _object(show.get("details")), _object(show.get("model_info"))
    facts: dict[str, Any] = {}
    for key, name in (
        ("family", "family"),
        ("parameter_size", "parameter_size"),
        ("quantization_level", "quantization"),
        ("format", "format"),
    ):
        if (value := _text(details.get(key))) is not None:
            facts[name] = value
    if (count := _count(info.get("general.parameter_count"))) is not None:
        facts["parameter_count"] = count
    arch = info.get("general.architecture")
    if isinstance(arch, str) and (ctx := _count(info.get(f"{arch}.context_length"))):
        facts["context_length"] = ctx
    return facts


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _model_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    details = _object(entry.get("details"))
    return {
        "name": _text(entry.get("name")) or _text(entry.get("model")),
        "size": _count(entry.get("size")),
        "family": _text(details.get("family")),
        "parameter_size": _text(details.get("parameter_size")),
        "quantization": _text(details.get("quantization_level")),
        "format": _text(details.get("format")),
    }


def _get_json(client: httpx.Client, method: str, url: str, **kwargs: Any) -> Any:
    """One JSON answer; ValueError with a one-line reason for anything else."""
    try:
        response = client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise ValueError(connect_reason(exc)) from None
    if response.status_code >= 400:
        reason = f"HTTP {response.status_code} {response.reason_phrase}"
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            error = None
        if not isinstance(error, str):
            raise ValueError(reason)
        raise ValueError(f"{reason}: {terminal_safe(redact_text(error)[:_MESSAGE_CHARS])}")
    try:
        return response.json()
    except ValueError:
        raise ValueError("the answer is not JSON") from None


def _client(base_url: str, timeout_s: float) -> httpx.Client:
    # A proxy set for the internet must not swallow a loopback server.
    return httpx.Client(timeout=timeout_s, trust_env=not is_loopback(base_url))


def _full_name(model: str) -> str:
    """``llama3.2`` -> ``llama3.2:latest``: Ollama's default tag."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def list_ollama_models(base_url: str, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The models an Ollama server has (``GET /api/tags``), each ``name``, ``size``
    (bytes), ``family``, ``parameter_size``, ``quantization``, ``format`` (None where
    it says nothing) and ``loaded`` (in memory now, from ``GET /api/ps``; None when
    that route fails).

    Raises ValueError with a one-line reason (connection refused, an HTTP status, an
    answer that is not a model list).
    """
    base = ollama_base_url(base_url)
    with _client(base, timeout_s) as client:
        tags = _get_json(client, "GET", f"{base}/api/tags")
        models = tags.get("models") if isinstance(tags, dict) else None
        if not isinstance(models, list):
            raise ValueError("the answer has no 'models' list")  # noqa: TRY004 (a bad answer)
        try:
            running = _get_json(client, "GET", f"{base}/api/ps")
            loaded: set[str] | None = {
                _full_name(str(m.get("name") or m.get("model")))
                for m in running.get("models") or ()
                if isinstance(m, dict)
            }
        except (ValueError, AttributeError):
            loaded = None
    entries = [_model_entry(m) for m in models if isinstance(m, dict)]
    entries = [entry for entry in entries if entry["name"]]
    for entry in entries:
        entry["loaded"] = None if loaded is None else _full_name(entry["name"]) in loaded
    return entries


def show_ollama_model(base_url: str, model: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """One model's facts from ``POST /api/show`` (see `OllamaProvider.model_facts`,
    without the runtime). Raises ValueError with a one-line reason; a model the server
    does not have says to ``ollama pull`` it."""
    base = ollama_base_url(base_url)
    with _client(base, timeout_s) as client:
        try:
            show = _get_json(client, "POST", f"{base}/api/show", json={"model": model})
        except ValueError as exc:
            if str(exc).startswith("HTTP 404"):
                raise ValueError(f"{exc}: run `ollama pull {model}`") from None
            raise
    return _facts(show) if isinstance(show, dict) else {}


class OllamaProvider(OpenAICompatible):
    """Streams one model from an Ollama server's native API (``POST /api/chat``).

    ``base_url`` is Ollama's root, read by `ollama_base_url` (``/v1`` dropped).
    `ensure_available` also asks ``/api/show`` for the model once: one Ollama has not
    pulled is `ModelNotFound` at setup, saying ``ollama pull <model>``.
    """

    probe_path = "/api/tags"

    def __init__(self, *, model: str, display: str, base_url: str, **kwargs: Any) -> None:
        super().__init__(model=model, display=display, base_url=ollama_base_url(base_url), **kwargs)
        self._show: dict[str, Any] | None = None
        self._model_check: Exception | bool | None = None
        self._facts: dict[str, Any] | None = None

    # -- availability -------------------------------------------------------------

    def ensure_available(self) -> None:
        """The endpoint answers (`OpenAICompatible.ensure_available`), and it has the
        model: checked once per provider."""
        __tracebackhide__ = hide_own_frames
        super().ensure_available()
        if self._model_check is None:
            self._model_check = self._check_model()
        if isinstance(self._model_check, Exception):
            raise self._model_check

    def _check_model(self) -> Exception | bool:
        try:
            response = self.ask("POST", f"{self.base_url}/api/show", json={"model": self.model})
        except httpx.HTTPError:
            return True  # the real request will say what is wrong
        if response.status_code == 404 and _MODEL_NOT_FOUND.search(response.text):
            return ModelNotFound(
                f"{self.endpoint} has no model {self.model!r} for {self.display}: "
                f"run `ollama pull {self.model}` on that host"
            )
        if response.status_code == 200:
            try:
                show = response.json()
            except ValueError:
                show = None
            self._show = show if isinstance(show, dict) else None
        return True

    # -- facts ----------------------------------------------------------------------

    def model_facts(self) -> dict[str, Any]:
        """What Ollama says about the model, fetched once per provider: ``family``,
        ``parameter_size`` (``7.6B``), ``quantization`` (``Q4_K_M``), ``format``,
        ``parameter_count``, ``context_length`` (the model's, from ``/api/show``'s
        ``model_info``), ``runtime`` (``ollama``) and ``runtime_version``
        (``/api/version``); only those the server gives. Never raises: a fact is a
        nicety, not a reason to fail a test."""
        if self._facts is None:
            show = self._show
            if show is None:
                try:
                    response = self.ask(
                        "POST", f"{self.base_url}/api/show", json={"model": self.model}
                    )
                    show = response.json() if response.status_code == 200 else None
                except (httpx.HTTPError, ValueError):
                    show = None
            facts = _facts(show) if isinstance(show, dict) else {}
            facts["runtime"] = "ollama"
            try:
                response = self.ask("GET", f"{self.base_url}/api/version")
                version = response.json().get("version") if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError, AttributeError):
                version = None
            if isinstance(version, str) and version:
                facts["runtime_version"] = version
            self._facts = facts
        return dict(self._facts)

    # -- streaming ------------------------------------------------------------------

    def request_body(self, request: Request) -> dict[str, Any]:
        """Ollama's ``ChatRequest``: ``model``, ``messages``, ``stream: true``,
        ``options`` (``temperature``, ``seed``, ``num_predict`` from ``max_tokens``,
        ``stop``, and every parameter that is not a request field: ``top_p``,
        ``num_ctx``, ``num_thread``...), the request fields among the parameters
        (``keep_alive``, ``think``, ``format``; OpenAI's ``response_format`` becomes
        ``format``), ``logprobs`` / ``top_logprobs`` (at most 20), ``tools``.

        Ollama has no ``tool_choice``: ``"none"`` sends no tools, other choices are
        not sent."""
        tool_names = {
            str(call["id"]): str((call.get("function") or {}).get("name", ""))
            for message in request.messages
            for call in message.tool_calls or ()
            if isinstance(call, dict) and call.get("id")
        }
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [_ollama_message(m, tool_names) for m in request.messages],
            "stream": True,
        }
        options: dict[str, Any] = {"temperature": request.temperature}
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if request.seed is not None:
            options["seed"] = request.seed
        if request.stop:
            options["stop"] = request.stop
        if request.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = min(MAX_TOP_LOGPROBS, request.alternatives)
        if request.tools and request.tool_choice != "none":
            body["tools"] = request.tools
        for key, value in request.params.items():
            if key in _TOP_LEVEL:
                body[key] = value
            elif key == "options" and isinstance(value, dict):
                options.update(value)
            elif key == "response_format":
                if (fmt := _format(value)) is not None:
                    body.setdefault("format", fmt)
            else:
                options[key] = value
        body["options"] = options
        return body

    def stream_chunks(self, request: Request) -> OllamaStream:
        deadline_s, source = self.deadline_for(request)
        return OllamaStream(
            self,
            self.request_body(request),
            deadline_s=deadline_s,
            source=source,
            headers={"Accept": NDJSON},
        )
