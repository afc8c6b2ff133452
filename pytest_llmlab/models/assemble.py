"""Assemble a Generation from OpenAI-format stream chunks as they arrive.

Kept apart from the HTTP client so the same assembly serves every provider module that
translates its wire format into these chunks, and so it can be tested on plain dicts.

Tool calls arrive as ``choices[0].delta.tool_calls`` entries: ``index`` (which call),
``id``, ``type`` and ``function.name`` (usually in the call's first delta only) and
``function.arguments`` fragments, cut anywhere (mid-string, mid-escape), joined and
parsed once the stream ends. An entry without ``index`` (some OpenAI-compatible layers
send whole calls without one) continues the call with its ``id``, starts a new call
for a new ``id``, and continues the last call when it has no ``id``. A name repeated in
later deltas is not appended again.

A tool call's confidence: the ``choices[0].logprobs.content`` tokens of a chunk whose
delta carries ``tool_calls`` belong to the call of the last entry of that delta (they
also stay in ``Generation.tokens``, every token of the generation). That is how the
servers that send logprobs for tool-call tokens at all send them: llama.cpp attaches
each sampled token's logprobs to the last delta that token produced, vLLM sends each
step's logprobs with that step's delta. Both drop the logprobs of tokens that produce
no delta (a ``<tool_call>`` tag, JSON their tool-call parser holds back), so a call's
tokens can be fewer than the tokens it took. (llama.cpp's server takes ``n_probs``,
not ``logprobs``, with tools on a stream: see `OpenAICompatible.request_body`.)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_llmlab.extract import json_kind
from pytest_llmlab.models.base import (
    Generation,
    Request,
    Timings,
    TokenLogprob,
    ToolCall,
    Usage,
)
from pytest_llmlab.redact import redact_text

__all__ = ["GenerationAssembler", "ThinkSplitter", "chunk_problem", "parse_arguments"]

#: Characters of a bad chunk quoted in the assembler's ValueError.
_QUOTE_CHARS = 200


def _wrong(path: str, value: object, wanted: str) -> str:
    return f"{path} is {json_kind(value)}, not {wanted}"


def chunk_problem(chunk: object) -> str | None:
    """Why ``chunk`` is not a ``chat.completion.chunk`` the assembler can read (one
    short phrase naming the field: ``choices[0].delta is a string, not an object``),
    or None. Absent fields and nulls are fine; a field of the wrong type is not.

    Runs on every chunk of every stream: the common shape passes with a few lookups
    (paths are only spelled out for a problem).
    """
    if not isinstance(chunk, dict):
        return _wrong("the chunk", chunk, "an object")
    for key in ("usage", "timings"):
        value = chunk.get(key)
        if value is not None and not isinstance(value, dict):
            return _wrong(key, value, "an object")
    choices = chunk.get("choices")
    if choices is None:
        return None
    if not isinstance(choices, list):
        return _wrong("choices", choices, "an array")
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            return _wrong(f"choices[{i}]", choice, "an object")
        problem = _choice_problem(choice, f"choices[{i}]")
        if problem is not None:
            return problem
    return None


def _choice_problem(choice: dict[str, Any], path: str) -> str | None:
    index = choice.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int):
        return _wrong(f"{path}.index", index, "an integer")
    finish_reason = choice.get("finish_reason")
    if finish_reason is not None and not isinstance(finish_reason, str):
        return _wrong(f"{path}.finish_reason", finish_reason, "a string")
    delta = choice.get("delta")
    if delta is not None:
        if not isinstance(delta, dict):
            return _wrong(f"{path}.delta", delta, "an object")
        for key in ("content", "reasoning_content", "reasoning"):
            value = delta.get(key)
            if value is not None and not isinstance(value, str):
                return _wrong(f"{path}.delta.{key}", value, "a string")
        calls = delta.get("tool_calls")
        if calls is not None:
            problem = _tool_calls_problem(calls, f"{path}.delta.tool_calls")
            if problem is not None:
                return problem
    logprobs = choice.get("logprobs")
    if logprobs is None:
        return None
    if not isinstance(logprobs, dict):
        return _wrong(f"{path}.logprobs", logprobs, "an object")
    content = logprobs.get("content")
    if content is None:
        return None
    if not isinstance(content, list):
        return _wrong(f"{path}.logprobs.content", content, "an array")
    for j, entry in enumerate(content):
        # Entries without a usable logprob are skipped (`_token`), not errors.
        top = entry.get("top_logprobs") if isinstance(entry, dict) else None
        if top is not None and not isinstance(top, list):
            return _wrong(f"{path}.logprobs.content[{j}].top_logprobs", top, "an array")
    return None


def _tool_calls_problem(calls: object, path: str) -> str | None:
    """What is wrong with a delta's ``tool_calls``; absent fields and nulls are fine."""
    if calls is None:
        return None
    if not isinstance(calls, list):
        return _wrong(path, calls, "an array")
    for k, call in enumerate(calls):
        where = f"{path}[{k}]"
        if not isinstance(call, dict):
            return _wrong(where, call, "an object")
        index = call.get("index")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            return _wrong(f"{where}.index", index, "an integer")
        if isinstance(index, int) and index < 0:
            return f"{where}.index is {index}, not an index (0 or more)"
        for key in ("id", "type"):
            if call.get(key) is not None and not isinstance(call[key], str):
                return _wrong(f"{where}.{key}", call[key], "a string")
        function = call.get("function")
        if function is None:
            continue
        if not isinstance(function, dict):
            return _wrong(f"{where}.function", function, "an object")
        for key in ("name", "arguments"):
            if function.get(key) is not None and not isinstance(function[key], str):
                return _wrong(f"{where}.function.{key}", function[key], "a string")
    return None


class ThinkSplitter:
    """Split streamed text into answer and ``<think>...</think>`` reasoning.

    Tags may be cut across chunks, so a tail that could still become a tag is held back
    until the next chunk decides it. Whitespace right after a closing tag is dropped so
    the answer does not start with the blank lines models put there.
    """

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.in_think = False
        self._pending = ""
        self._after_close = False

    def feed(self, text: str) -> tuple[str, str]:
        """Return the (answer, reasoning) text that this chunk settles."""
        if not self._pending and "<" not in text:
            # No tag and no start of one (both begin with "<"): all of it is settled
            # (the rule of `_emit`, without its lists: this is every chunk's path).
            if self.in_think:
                return "", text
            if self._after_close:
                text = text.lstrip()
                if not text:
                    return "", ""
                self._after_close = False
            return text, ""
        answer: list[str] = []
        reasoning: list[str] = []
        buffer = self._pending + text
        self._pending = ""
        while buffer:
            tag = self.CLOSE if self.in_think else self.OPEN
            index = buffer.find(tag)
            if index >= 0:
                self._emit(buffer[:index], answer, reasoning)
                buffer = buffer[index + len(tag) :]
                self.in_think = not self.in_think
                self._after_close = not self.in_think
                continue
            keep = _partial_suffix(buffer, tag)
            self._emit(buffer[: len(buffer) - keep], answer, reasoning)
            self._pending = buffer[len(buffer) - keep :]
            break
        return "".join(answer), "".join(reasoning)

    def flush(self) -> tuple[str, str]:
        """The held-back tail once the stream has ended."""
        answer: list[str] = []
        reasoning: list[str] = []
        self._emit(self._pending, answer, reasoning)
        self._pending = ""
        return "".join(answer), "".join(reasoning)

    def _emit(self, text: str, answer: list[str], reasoning: list[str]) -> None:
        if not text:
            return
        if self.in_think:
            reasoning.append(text)
            return
        if self._after_close:
            text = text.lstrip()
            if not text:
                return
            self._after_close = False
        answer.append(text)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


def _token(entry: dict[str, Any], alternatives_wanted: bool) -> TokenLogprob | None:
    """A ``logprobs.content`` entry as a token; None without a usable logprob.
    ``alternatives_wanted`` False: its ``top_logprobs`` are dropped (the one a server
    must be asked for to send the token's own logprob, see `Request.alternatives`)."""
    logprob = entry.get("logprob")
    if not isinstance(logprob, int | float):
        return None
    token = entry.get("token", "")
    top = (entry.get("top_logprobs") or ()) if alternatives_wanted else ()
    try:
        # The shape every server sends, at the cost of the bare parse: ``+ ""`` and
        # ``+ 0.0`` raise TypeError for anything but a string and a number.
        alternatives = tuple([(alt["token"] + "", alt["logprob"] + 0.0) for alt in top])
    except (KeyError, TypeError):
        alternatives = tuple(
            (str(alt.get("token", "")), float(alt["logprob"]))
            for alt in top
            if isinstance(alt, dict) and isinstance(alt.get("logprob"), int | float)
        )
    # llama.cpp reports -inf as a very large negative number; keep what was sent.
    return TokenLogprob.from_pairs(
        token if isinstance(token, str) else str(token), float(logprob), alternatives
    )


def parse_arguments(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """A tool call's arguments text as ``(object, None)``, or ``(None, why)`` when it is
    not JSON or not a JSON object. Empty text is ``{}`` (servers send none for a call
    without parameters)."""
    if not text.strip():
        return {}, None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"the arguments are not JSON: {exc.msg} at character {exc.pos}"
    except RecursionError:
        return None, "the arguments are not JSON: nested too deeply"
    if not isinstance(value, dict):
        return None, f"the arguments are {json_kind(value)}, not an object"
    return value, None


@dataclass(slots=True)
class _CallParts:
    """One tool call while its deltas arrive."""

    id: str | None = None
    name: str = ""
    fragments: list[str] = field(default_factory=list)
    tokens: list[TokenLogprob] = field(default_factory=list)

    def finish(self, finish_reason: str | None) -> ToolCall:
        text = "".join(self.fragments)
        arguments, error = parse_arguments(text)
        if error is not None and finish_reason == "length":
            error += " (the generation was cut off: finish reason 'length')"
        return ToolCall(
            id=self.id,
            name=self.name,
            arguments_text=text,
            arguments=arguments,
            error=error,
            tokens=self.tokens,
        )


class GenerationAssembler:
    """Feed chunks with `add`; `finish` returns the Generation."""

    def __init__(
        self,
        *,
        request: Request,
        model: str,
        spec: str,
        provider: str,
        clock_ns: Any = time.monotonic_ns,
    ) -> None:
        self.request = request
        self.model = model
        self.spec = spec
        self.provider = provider
        self._clock_ns = clock_ns
        self.started_ns = clock_ns()
        self.first_token_ns: int | None = None
        self._splitter = ThinkSplitter()
        self._answer: list[str] = []
        self._reasoning: list[str] = []
        self._tokens: list[TokenLogprob] = []
        self._alternatives_wanted = request.alternatives > 0
        self._content_chunks = 0
        self._calls: dict[int, _CallParts] = {}
        self._last_call: int | None = None
        self._usage: dict[str, Any] | None = None
        self._server_timings: dict[str, Any] = {}
        self.finish_reason: str | None = None
        #: Why the chunk `add` last refused has the wrong shape (`chunk_problem`).
        self.problem: str | None = None

    @property
    def text(self) -> str:
        """The answer so far."""
        return "".join(self._answer)

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one chunk; return the answer text it adds (possibly empty).

        A chunk of the wrong shape (see `chunk_problem`) raises ValueError naming the
        field and quoting the chunk (cut to 200 characters), its phrase kept in
        `problem`; nothing of it is taken.
        """
        taken = self._add_common(chunk)
        if taken is not None:
            return taken
        problem = chunk_problem(chunk)
        if problem is not None:
            self.problem = problem
            dumped = json.dumps(chunk, ensure_ascii=False, default=str)
            # Masked before it is cut (a cut key would show its start), quoted (repr).
            raise ValueError(f"{problem}: {redact_text(dumped)[:_QUOTE_CHARS]!r}")
        usage, timings = chunk.get("usage"), chunk.get("timings")
        if isinstance(usage, dict):
            self._usage = usage
        if isinstance(timings, dict):
            self._server_timings = timings
        added: list[str] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
            content = delta.get("content") or ""
            call = None
            for entry in delta.get("tool_calls") or ():
                call = self._call_delta(entry)
            if (reasoning or content or call) and self.first_token_ns is None:
                self.first_token_ns = self._clock_ns()
            if reasoning:
                self._reasoning.append(str(reasoning))
            if content or call is not None:
                self._content_chunks += 1  # the count of output when usage is missing
            if content:
                answer, thought = self._splitter.feed(str(content))
                if thought:
                    self._reasoning.append(thought)
                if answer:
                    self._answer.append(answer)
                    added.append(answer)
            logprobs = choice.get("logprobs") or {}
            for entry in logprobs.get("content") or []:
                if (
                    isinstance(entry, dict)
                    and (token := _token(entry, self._alternatives_wanted)) is not None
                ):
                    self._tokens.append(token)
                    if call is not None:
                        call.tokens.append(token)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return "".join(added)

    def _add_common(self, chunk: object) -> str | None:
        """Take a chunk of the shape nearly every chunk has, checked and read in one
        pass: one choice (index 0) whose delta holds only text (or nothing) and whose
        logprobs are well-formed tokens, no finish reason, usage or timings. The answer
        text it adds; None, with nothing taken, for any other chunk, which `add` then
        checks (`chunk_problem`) and reads field by field. Exact types only (``type()
        is``): what a JSON parser builds, and the quickest test there is."""
        if type(chunk) is not dict:
            return None
        choices = chunk.get("choices")
        if type(choices) is not list or len(choices) != 1:
            return None
        if chunk.get("usage") is not None or chunk.get("timings") is not None:
            return None
        choice = choices[0]
        if type(choice) is not dict or choice.get("finish_reason") is not None:
            return None
        index = choice.get("index", 0)
        delta = choice.get("delta")
        if type(index) is not int or index != 0 or type(delta) is not dict:
            return None
        content = delta.get("content")
        if (content is not None and type(content) is not str) or (
            delta.get("tool_calls") is not None
            or delta.get("reasoning_content") is not None
            or delta.get("reasoning") is not None
        ):
            return None
        tokens: list[TokenLogprob] = []
        logprobs = choice.get("logprobs")
        if logprobs is not None:
            if type(logprobs) is not dict:
                return None
            entries = logprobs.get("content")
            if entries is not None:
                if type(entries) is not list:
                    return None
                wanted = self._alternatives_wanted
                try:
                    for entry in entries:
                        # ``+ ""`` and ``+ 0.0`` raise TypeError for anything but a
                        # string and a number, subscripts KeyError or TypeError.
                        token, logprob = entry["token"] + "", entry["logprob"] + 0.0
                        top = entry.get("top_logprobs")
                        if top is not None and type(top) is not list:
                            return None
                        alternatives: tuple[tuple[str, float], ...] = ()
                        if top and wanted:
                            alternatives = tuple(
                                [(alt["token"] + "", alt["logprob"] + 0.0) for alt in top]
                            )
                        tokens.append(TokenLogprob.from_pairs(token, logprob, alternatives))
                except (KeyError, TypeError, AttributeError):
                    return None
        # Checked: from here on it is taken.
        if tokens:
            self._tokens.extend(tokens)
        if not content:
            return ""
        if self.first_token_ns is None:
            self.first_token_ns = self._clock_ns()
        self._content_chunks += 1
        answer, thought = self._splitter.feed(content)
        if thought:
            self._reasoning.append(thought)
        if answer:
            self._answer.append(answer)
        return answer

    def _call_delta(self, entry: dict[str, Any]) -> _CallParts:
        """Take one ``delta.tool_calls`` entry into its call (see the module docstring)."""
        call_id = entry.get("id") or None
        index = entry.get("index")
        if index is None:
            index = self._index_without_one(call_id)
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _CallParts()
        self._last_call = index
        if call_id is not None and call.id is None:
            call.id = call_id
        function = entry.get("function") or {}
        name = function.get("name")
        if name and name != call.name:
            call.name += name
        if function.get("arguments"):
            call.fragments.append(function["arguments"])
        return call

    def _index_without_one(self, call_id: str | None) -> int:
        if call_id is None:
            return 0 if self._last_call is None else self._last_call
        for index, call in self._calls.items():
            if call.id == call_id:
                return index
        return max(self._calls, default=-1) + 1

    def flush(self) -> str:
        """Settle text held back by the think splitter; return the answer part."""
        answer, thought = self._splitter.flush()
        if thought:
            self._reasoning.append(thought)
        if answer:
            self._answer.append(answer)
        return answer

    def finish(self, *, finish_reason: str | None = None) -> Generation:
        """Build the Generation; `finish_reason` overrides the server's (e.g. ``cancelled``)."""
        self.flush()
        finished_ns = self._clock_ns()
        usage = self._build_usage()
        reason = finish_reason or self.finish_reason
        return Generation(
            text="".join(self._answer),
            reasoning="".join(self._reasoning).strip(),
            tokens=self._tokens,
            tool_calls=[call.finish(reason) for _, call in sorted(self._calls.items())],
            usage=usage,
            timings=self._build_timings(usage, finished_ns),
            finish_reason=reason,
            model=self.model,
            spec=self.spec,
            provider=self.provider,
            temperature=self.request.temperature,
            request=self.request,
        )

    def _build_usage(self) -> Usage:
        raw = self._usage or {}
        completion = raw.get("completion_tokens")
        prompt = raw.get("prompt_tokens")
        if isinstance(completion, int):
            prompt_tokens = prompt if isinstance(prompt, int) else 0
            cached = self._cached_tokens(raw)
            return Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion,
                reported=True,
                cached_prompt_tokens=None if cached is None else max(0, min(cached, prompt_tokens)),
            )
        # No usage from the server: count tokens from logprobs, else content chunks.
        counted = len(self._tokens) or self._content_chunks
        return Usage(prompt_tokens=0, completion_tokens=counted, reported=False)

    def _cached_tokens(self, usage: dict[str, Any]) -> int | None:
        """Cached prompt tokens: OpenAI's ``usage.prompt_tokens_details.cached_tokens``,
        else llama.cpp's ``timings.cache_n``; None when neither says."""
        details = usage.get("prompt_tokens_details")
        if (
            isinstance(details, dict)
            and (cached := _count(details.get("cached_tokens"))) is not None
        ):
            return cached
        return _count(self._server_timings.get("cache_n"))

    def _build_timings(self, usage: Usage, finished_ns: int) -> Timings:
        total_s = (finished_ns - self.started_ns) / 1e9
        ttft_s = None
        prefill = decode = None
        if self.first_token_ns is not None:
            ttft_s = (self.first_token_ns - self.started_ns) / 1e9
            # Cached prompt tokens cost the server nothing: the rate is over the rest.
            if usage.processed_prompt_tokens and ttft_s > 0:
                prefill = usage.processed_prompt_tokens / ttft_s
            decode_s = (finished_ns - self.first_token_ns) / 1e9
            # The first token belongs to prefill; the rest were decoded after it.
            if usage.completion_tokens > 1 and decode_s > 0:
                decode = (usage.completion_tokens - 1) / decode_s
        server_prefill = _rate(self._server_timings.get("prompt_per_second"))
        server_decode = _rate(self._server_timings.get("predicted_per_second"))
        rates_from: Literal["server", "client"] = "client"
        if server_prefill is not None and server_decode is not None:
            # The server timed the work itself, without HTTP and queueing around it.
            prefill, decode, rates_from = server_prefill, server_decode, "server"
        return Timings(
            ttft_s=ttft_s,
            total_s=total_s,
            prefill_tokens_per_s=prefill,
            decode_tokens_per_s=decode,
            started_ns=self.started_ns,
            first_token_ns=self.first_token_ns,
            finished_ns=finished_ns,
            server={k: v for k, v in self._server_timings.items() if _plain(v)},
            rates_from=rates_from,
        )


def _count(value: object) -> int | None:
    """A token count as JSON sends it (a non-negative integer), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _rate(value: object) -> float | None:
    """A server's tokens-per-second figure: a finite positive number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    rate = float(value)
    return rate if math.isfinite(rate) and rate > 0 else None


def _plain(value: object) -> bool:
    return isinstance(value, str | int | bool) or (
        isinstance(value, float) and math.isfinite(value)
    )
