"""The Gemini API (Google AI Studio) wire protocol: ``streamGenerateContent?alt=sse``.

Written against Google's Gemini API reference (ai.google.dev/api/generate-content:
``models.streamGenerateContent``, ``GenerateContentResponse``, ``Candidate``,
``UsageMetadata``, ``LogprobsResult``, ``PromptFeedback``) and the field names of the
official client, googleapis/python-genai (``google/genai/types.py``: ``FinishReason``,
``BlockedReason``, ``LogprobsResult``; ``google/genai/models.py``: the request
converters ``_GenerationConfig_to_mldev``, ``_Tool_to_mldev``; its tests'
``test_async_stream.py`` error frame and ``test_generate_content_config_zero_value.py``,
whose "Logprobs is not enabled for models/gemini-2.5-flash" is why logprobs are opt-in).

The request: ``POST {base}/models/{model}:streamGenerateContent?alt=sse`` with the key
in the ``x-goog-api-key`` header, never in a ``?key=`` query parameter (that would put
it into URLs, proxies' logs and our messages). The answer: one SSE ``data:`` event per
``GenerateContentResponse``, no ``[DONE]``: the stream is complete when the body ends
after a candidate carried a ``finishReason``; a body that ends without one is a
StreamError. `GeminiStream` translates each response into one OpenAI
``chat.completion.chunk`` dict for the shared `GenerationAssembler`:

- ``candidates[0].content.parts[].text`` -> ``delta.content``; a part with
  ``thought: true`` (sent with ``thinkingConfig.includeThoughts``) ->
  ``delta.reasoning_content``.
- ``functionCall`` parts ``{name, args}`` -> ``delta.tool_calls`` entries, each whole
  in one delta: ``index`` (the call's position in the generation), ``id`` (the
  server's ``functionCall.id`` when it sends one, else ``call_<index>``), ``type:
  function``, ``function.arguments = json.dumps(args)``.
- ``finishReason`` -> ``finish_reason``: ``STOP`` -> ``stop`` (``tool_calls`` when the
  generation called a function, as OpenAI reports it), ``MAX_TOKENS`` -> ``length``,
  the blocking reasons (`FILTER_REASONS`: ``SAFETY``, ``RECITATION``, ``BLOCKLIST``...)
  -> ``content_filter``, any other lower-cased (``malformed_function_call``).
- ``usageMetadata`` (cumulative, on every response; the last one counts) -> ``usage``:
  ``prompt_tokens`` = ``promptTokenCount``, ``completion_tokens`` =
  ``candidatesTokenCount + thoughtsTokenCount`` (thinking tokens are generated and
  billed as output, as OpenAI counts ``reasoning_tokens`` inside ``completion_tokens``;
  ``completion_tokens_details.reasoning_tokens`` keeps the thoughts apart),
  ``prompt_tokens_details.cached_tokens`` = ``cachedContentTokenCount``, and the
  server's own object, untouched, as ``usage.usage_metadata``. Gemini reports no
  server timings: ``timings.server`` stays empty.
- ``logprobsResult`` (per response, for that response's tokens): ``chosenCandidates
  [{token, logProbability}]`` with ``topCandidates[i].candidates`` ->
  ``choices[0].logprobs.content [{token, logprob, top_logprobs}]``.
- ``promptFeedback.blockReason`` (no candidates: the prompt was refused) and an
  ``{"error": {code, message, status}}`` frame inside the stream -> StreamError naming
  the model, the endpoint and the reason.

Everything else (HTTP errors with Google's ``{"error": {"code", "message", "status"}}``
body, deadlines, retries of 429/503, redaction, one-line messages) is the inherited
`ChunkStream` / `OpenAICompatible` behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from pytest_llmlab import wirejson
from pytest_llmlab.errors import HTTPStatusError, StreamError, hide_own_frames
from pytest_llmlab.extract import json_kind
from pytest_llmlab.models.base import Message, Request
from pytest_llmlab.models.openai import ChunkStream, OpenAICompatible, _quoted, _shown
from pytest_llmlab.models.providers import PROVIDERS
from pytest_llmlab.models.sse import ServerSentEvent

__all__ = [
    "API_KEY_ENVS",
    "DEFAULT_BASE_URL",
    "FILTER_REASONS",
    "GeminiProvider",
    "GeminiStream",
    "finish_reason",
    "usage_from_metadata",
]

__tracebackhide__ = hide_own_frames

#: The Gemini API's REST root (Google AI Studio keys).
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
#: The variables that may hold the key, in the order messages name them.
API_KEY_ENVS = PROVIDERS["gemini"].key_envs
#: ``finishReason`` values that mean the output was blocked: ``content_filter``.
FILTER_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)

#: Request params mapped into ``generationConfig`` under Gemini's name.
_GENERATION_PARAMS = {
    "top_p": "topP",
    "top_k": "topK",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
#: Shorthands for fields of ``generationConfig.thinkingConfig``.
_THINKING_PARAMS = {
    "thinking_budget": "thinkingBudget",
    "include_thoughts": "includeThoughts",
    "thinking_level": "thinkingLevel",
}
#: OpenAI's ``tool_choice`` strings -> ``toolConfig.functionCallingConfig.mode``.
_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
#: Added to a 400 answer when the request asked for logprobs.
_LOGPROBS_HINT = (
    " (the request asked for logprobs, gemini_logprobs: true; not every Gemini model "
    "offers them: drop the parameter for this model)"
)


def finish_reason(reason: str, *, called_tools: bool = False) -> str:
    """Gemini's ``finishReason`` as OpenAI's ``finish_reason`` (see the module doc)."""
    upper = reason.upper()
    if upper == "STOP":
        return "tool_calls" if called_tools else "stop"
    if upper == "MAX_TOKENS":
        return "length"
    if upper in FILTER_REASONS:
        return "content_filter"
    return reason.lower()


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def usage_from_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """``usageMetadata`` as an OpenAI ``usage`` object (see the module doc); a count
    the server leaves out is 0, and the server's object rides along untouched."""
    prompt = _count(metadata.get("promptTokenCount")) or 0
    candidates = _count(metadata.get("candidatesTokenCount")) or 0
    thoughts = _count(metadata.get("thoughtsTokenCount")) or 0
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": candidates + thoughts,
        "total_tokens": _count(metadata.get("totalTokenCount")) or prompt + candidates + thoughts,
        "completion_tokens_details": {"reasoning_tokens": thoughts},
        "usage_metadata": metadata,
    }
    cached = _count(metadata.get("cachedContentTokenCount"))
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def _logprobs(result: object) -> dict[str, Any] | None:
    """``logprobsResult`` as OpenAI's ``logprobs`` object; None when absent or empty."""
    if not isinstance(result, dict):
        return None
    chosen = result.get("chosenCandidates")
    if not isinstance(chosen, list) or not chosen:
        return None
    tops = result.get("topCandidates")
    tops = tops if isinstance(tops, list) else []
    content: list[dict[str, Any]] = []
    for step, entry in enumerate(chosen):
        if not isinstance(entry, dict):
            continue
        top = tops[step] if step < len(tops) and isinstance(tops[step], dict) else {}
        alternatives = top.get("candidates")
        content.append(
            {
                "token": str(entry.get("token", "")),
                "logprob": entry.get("logProbability"),
                "top_logprobs": [
                    {"token": str(alt.get("token", "")), "logprob": alt.get("logProbability")}
                    for alt in (alternatives if isinstance(alternatives, list) else [])
                    if isinstance(alt, dict)
                ],
            }
        )
    return {"content": content}


class GeminiStream(ChunkStream):
    """One streamed ``streamGenerateContent`` request, read as OpenAI chunk dicts."""

    end_rule = "without a finishReason"

    expected_content = "an event stream (is the URL the Gemini API's, with alt=sse?)"

    def __init__(self, owner: GeminiProvider, body: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(owner, body, **kwargs)
        self.gemini = owner
        self._finished = False
        self._calls = 0

    def url(self) -> str:
        model = quote(self.gemini.model.removeprefix("models/"), safe="")
        return f"{self.gemini.base_url}/models/{model}:streamGenerateContent?alt=sse"

    # -- the wire format ---------------------------------------------------------------

    def _read(self, response: httpx.Response, where: str) -> Iterator[dict[str, Any]]:
        """One chunk per ``GenerateContentResponse`` event, until the body ends."""
        __tracebackhide__ = hide_own_frames
        unfinished: list[ServerSentEvent] = []
        for event in self._events(response, where, unfinished.append):
            yield self._chunk(event.data, where)
        # A body that ends right after its last data line, without the blank line that
        # would dispatch it, still sent that response when the JSON is whole (a cut
        # object never parses).
        for event in unfinished:
            try:
                whole = isinstance(json.loads(event.data), dict)
            except ValueError:
                whole = False
            if whole:
                yield self._chunk(event.data, where)
        if not self._finished:
            raise StreamError(self._ended_early(where))

    def _chunk(self, data: str, where: str) -> dict[str, Any]:
        __tracebackhide__ = hide_own_frames
        try:
            payload = wirejson.loads(data)
        except ValueError:
            raise StreamError(
                f"malformed JSON in stream from {where} after {self.chunks_received} "
                f"chunks: {_quoted(data, self.gemini.redactor())}"
            ) from None
        if not isinstance(payload, dict):
            raise self._bad(where, f"the response is {json_kind(payload)}, not an object", data)
        chunk = self._translate(payload, where, data)
        self.chunks_received += 1
        return chunk

    def _bad(self, where: str, problem: str, data: str) -> StreamError:
        return StreamError(
            f"malformed GenerateContentResponse in stream from {where} after "
            f"{self.chunks_received} chunks: {problem}: {_quoted(data, self.gemini.redactor())}"
        )

    def _translate(self, payload: dict[str, Any], where: str, data: str) -> dict[str, Any]:
        __tracebackhide__ = hide_own_frames
        mask = self.gemini.redactor()
        error = payload.get("error")
        if error is not None:
            if isinstance(error, dict):
                status = error.get("status") or error.get("code")
                message = str(error.get("message") or json.dumps(error))
                said = f"{status}: {message}" if status else message
            else:
                said = str(error)
            raise StreamError(f"error event in stream from {where}: {_shown(said, mask)}")
        feedback = payload.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            detail = feedback.get("blockReasonMessage")
            raise StreamError(
                f"{where} blocked the prompt: blockReason "
                f"{_shown(str(feedback['blockReason']), mask, 100)}"
                + (f" ({_shown(str(detail), mask)})" if detail else "")
            )
        chunk: dict[str, Any] = {"object": "chat.completion.chunk", "choices": []}
        if isinstance(payload.get("responseId"), str):
            chunk["id"] = payload["responseId"]
        if isinstance(payload.get("modelVersion"), str):
            chunk["model"] = payload["modelVersion"]
        metadata = payload.get("usageMetadata")
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise self._bad(where, f"usageMetadata is {json_kind(metadata)}", data)
            chunk["usage"] = usage_from_metadata(metadata)
        candidates = payload.get("candidates")
        if candidates is None:
            return chunk
        if not isinstance(candidates, list):
            raise self._bad(where, f"candidates is {json_kind(candidates)}, not an array", data)
        for candidate in candidates:
            if not isinstance(candidate, dict):
                raise self._bad(where, f"a candidate is {json_kind(candidate)}", data)
            if candidate.get("index", 0) == 0:
                chunk["choices"].append(self._choice(candidate, where, data))
                break
        return chunk

    def _choice(self, candidate: dict[str, Any], where: str, data: str) -> dict[str, Any]:
        __tracebackhide__ = hide_own_frames
        delta: dict[str, Any] = {}
        text: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        content = candidate.get("content") or {}
        parts = content.get("parts") if isinstance(content, dict) else None
        if parts is not None and not isinstance(parts, list):
            raise self._bad(where, f"content.parts is {json_kind(parts)}, not an array", data)
        for part in parts or ():
            if not isinstance(part, dict):
                raise self._bad(where, f"a part is {json_kind(part)}, not an object", data)
            if isinstance(part.get("text"), str):
                (thoughts if part.get("thought") is True else text).append(part["text"])
            call = part.get("functionCall")
            if isinstance(call, dict):
                calls.append(self._tool_call(call, where, data))
        if text:
            delta["content"] = "".join(text)
        if thoughts:
            delta["reasoning_content"] = "".join(thoughts)
        if calls:
            delta["tool_calls"] = calls
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
        logprobs = _logprobs(candidate.get("logprobsResult"))
        if logprobs is not None:
            choice["logprobs"] = logprobs
        reason = candidate.get("finishReason")
        if reason is not None:
            if not isinstance(reason, str):
                raise self._bad(where, f"finishReason is {json_kind(reason)}", data)
            choice["finish_reason"] = finish_reason(reason, called_tools=self._calls > 0)
            self._finished = True
        return choice

    def _tool_call(self, call: dict[str, Any], where: str, data: str) -> dict[str, Any]:
        name = call.get("name")
        if not isinstance(name, str) or not name:
            raise self._bad(where, "a functionCall has no name", data)
        args = call.get("args")
        index = self._calls
        self._calls += 1
        server_id = call.get("id")
        return {
            "index": index,
            "id": server_id if isinstance(server_id, str) and server_id else f"call_{index}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": json.dumps({} if args is None else args, ensure_ascii=False),
            },
        }

    # -- messages ------------------------------------------------------------------------

    def _check_answer(self, response: httpx.Response, where: str) -> None:
        """The inherited checks; a 400 to a request that asked for logprobs says so."""
        __tracebackhide__ = hide_own_frames
        try:
            super()._check_answer(response, where)
        except HTTPStatusError as exc:
            config = self._body.get("generationConfig") or {}
            if exc.status_code == 400 and config.get("responseLogprobs"):
                raise HTTPStatusError(f"{exc}{_LOGPROBS_HINT}", status_code=400) from None
            raise


def _tool_response(content: str | None) -> dict[str, Any]:
    """A tool's result as ``functionResponse.response`` (which must be an object): the
    JSON object it is, else ``{"result": <the text or the JSON value>}``."""
    try:
        value = json.loads(content or "")
    except ValueError:
        value = content or ""
    return value if isinstance(value, dict) else {"result": value}


def _contents(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The chat as Gemini ``contents`` and the ``systemInstruction`` parts.

    ``assistant`` becomes ``model`` (its ``tool_calls`` ``functionCall`` parts),
    a ``tool`` message a ``user`` turn with a ``functionResponse`` naming the function
    of the call it answers; consecutive turns of one role are merged into one content,
    so parallel calls' results travel together as Gemini expects.
    """
    system: list[dict[str, str]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for message in messages:
        parts: list[dict[str, Any]] = []
        if message.role == "system":
            if message.content:
                system.append({"text": message.content})
            continue
        if message.role == "tool":
            role = "user"
            name = names.get(message.tool_call_id or "", message.tool_call_id or "")
            parts.append(
                {"functionResponse": {"name": name, "response": _tool_response(message.content)}}
            )
        else:
            role = "model" if message.role == "assistant" else "user"
            if message.content:
                parts.append({"text": message.content})
            for call in message.tool_calls or ():
                function = call.get("function") or {}
                name = str(function.get("name", ""))
                if call.get("id"):
                    names[str(call["id"])] = name
                try:
                    args = json.loads(function.get("arguments") or "{}")
                except ValueError:
                    args = {}
                parts.append({"functionCall": {"name": name, "args": args}})
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents, system


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI function schemas as one Gemini ``functionDeclarations`` tool; the JSON
    schema goes verbatim into ``parametersJsonSchema`` (full JSON Schema, unlike the
    OpenAPI subset of ``parameters``)."""
    declarations = []
    for tool in tools:
        function = tool.get("function") or {}
        declaration: dict[str, Any] = {"name": function.get("name")}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters") is not None:
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def _tool_config(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        config: dict[str, Any] = {"mode": "ANY"}
        if name:
            config["allowedFunctionNames"] = [name]
        return {"functionCallingConfig": config}
    return {"functionCallingConfig": {"mode": _TOOL_MODES.get(choice, choice.upper())}}


def _response_format(value: object) -> dict[str, Any]:
    """OpenAI's ``response_format`` as ``generationConfig`` fields: JSON output, with
    the schema as ``responseJsonSchema`` for ``json_schema``."""
    if not isinstance(value, dict) or value.get("type") not in ("json_schema", "json_object"):
        return {}
    config: dict[str, Any] = {"responseMimeType": "application/json"}
    schema = (value.get("json_schema") or {}).get("schema")
    if value["type"] == "json_schema" and schema is not None:
        config["responseJsonSchema"] = schema
    return config


class GeminiProvider(OpenAICompatible):
    """Streams generations from one Gemini model through the Gemini API."""

    def __init__(
        self, *, model: str, display: str, base_url: str = DEFAULT_BASE_URL, **kwargs: Any
    ) -> None:
        """As `OpenAICompatible`, but a key is required unless said otherwise, and the
        missing-key message names both variables (`API_KEY_ENVS`) unless given."""
        kwargs.setdefault("api_key_env", " or ".join(API_KEY_ENVS))
        kwargs.setdefault("require_key", True)
        super().__init__(model=model, display=display, base_url=base_url, **kwargs)

    #: ``GET {base}/models`` lists the models: any answer means reachable.
    probe_path = "/models"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """The key in ``x-goog-api-key``: never in the URL."""
        return {"x-goog-api-key": api_key} if api_key else {}

    @property
    def cloud_provider(self) -> str | None:
        """``google`` for Google's endpoint (energy estimates), else None."""
        host = urlsplit(self.base_url).hostname
        return "google" if host == urlsplit(DEFAULT_BASE_URL).hostname else None

    def request_body(self, request: Request) -> dict[str, Any]:
        """The ``GenerateContentRequest`` for one generation.

        ``generationConfig``: ``temperature``, ``maxOutputTokens``, ``seed``,
        ``stopSequences`` from the request; ``topP``, ``topK``, ``presencePenalty``,
        ``frequencyPenalty`` from the params ``top_p``, ``top_k``, ``presence_penalty``,
        ``frequency_penalty``; ``thinkingConfig`` from ``thinking_config`` (an object,
        sent as written) and the shorthands ``thinking_budget``, ``include_thoughts``,
        ``thinking_level``; ``responseMimeType`` / ``responseJsonSchema`` from OpenAI's
        ``response_format``; a ``generation_config`` object is merged in last, as
        written. Logprobs (``responseLogprobs: true``, plus ``logprobs: top_logprobs`` when
        alternatives are asked for) only
        when the request wants them *and* the params say ``gemini_logprobs: true``:
        models without them (gemini-2.5-flash among them) answer HTTP 400 "Logprobs is
        not enabled", and a request asks for logprobs by default. Any other param goes
        to the top level of the body as written (``safetySettings``,
        ``cachedContent``...): the API's own 400 names a field it does not know.
        """
        params = dict(request.params)
        contents, system = _contents(request.messages)
        config: dict[str, Any] = {"temperature": request.temperature}
        if request.max_tokens is not None:
            config["maxOutputTokens"] = request.max_tokens
        if request.seed is not None:
            config["seed"] = request.seed
        if request.stop:
            config["stopSequences"] = request.stop
        for key, name in _GENERATION_PARAMS.items():
            if key in params:
                config[name] = params.pop(key)
        thinking = dict(params.pop("thinking_config", None) or {})
        for key, name in _THINKING_PARAMS.items():
            if key in params:
                thinking[name] = params.pop(key)
        if thinking:
            config["thinkingConfig"] = thinking
        config.update(_response_format(params.pop("response_format", None)))
        if params.pop("gemini_logprobs", False) is True and request.logprobs:
            config["responseLogprobs"] = True  # the chosen tokens' logprobs
            if request.alternatives:
                config["logprobs"] = request.alternatives
        config.update(params.pop("generation_config", None) or {})
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        body["generationConfig"] = config
        if request.tools:
            body["tools"] = _tools(request.tools)
        if request.tool_choice is not None:
            body["toolConfig"] = _tool_config(request.tool_choice)
        body.update(params)
        return body

    def stream_chunks(self, request: Request) -> GeminiStream:
        deadline_s, source = self.deadline_for(request)
        return GeminiStream(self, self.request_body(request), deadline_s=deadline_s, source=source)
