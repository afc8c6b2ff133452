"""What every provider exchanges: the Request sent, the Generation returned.

These are pydantic models because they cross process boundaries (xdist workers, JSONL
records, cassettes) and users inspect them in assertions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, computed_field
from pydantic_core import core_schema

from pytest_llmlab.energy.reading import EnergyReading
from pytest_llmlab.extract import json_kind

__all__ = [
    "Generation",
    "Message",
    "Provider",
    "Request",
    "Timings",
    "TokenLogprob",
    "ToolCall",
    "TopLogprob",
    "Usage",
    "tool_problem",
]


class Message(BaseModel):
    """One chat message as sent to the model, in OpenAI's chat format.

    ``role`` is ``system``, ``user``, ``assistant`` or ``tool``. An assistant message
    that called tools carries them in ``tool_calls`` (OpenAI's wire form, see
    `ToolCall.wire`; its ``content`` may be None); a ``tool`` message answers the call
    ``tool_call_id`` with the tool's result as ``content``. Fields left None are not
    sent.
    """

    model_config = ConfigDict(frozen=True)

    role: str
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


def tool_problem(tool: object, path: str = "tool") -> str | None:
    """Why ``tool`` is not an OpenAI function schema (one phrase naming the field at
    ``path``: ``tools[0].function.name is missing``), or None.

    A schema is ``{"type": "function", "function": {"name": ..., "description": ...,
    "parameters": {JSON schema}}}``; ``description`` and ``parameters`` are optional.
    """
    if not isinstance(tool, dict):
        return f"{path} is {json_kind(tool)}, not an object"
    if tool.get("type") != "function":
        return f"{path}.type is {tool.get('type')!r}, not 'function'"
    function = tool.get("function")
    if not isinstance(function, dict):
        return f"{path}.function is {json_kind(function)}, not an object"
    name = function.get("name")
    if not isinstance(name, str) or not name:
        return (
            f"{path}.function.name is missing"
            if name is None
            else (f"{path}.function.name is {json_kind(name)}, not a non-empty string")
        )
    for key, kind, wanted in (("description", str, "a string"), ("parameters", dict, "an object")):
        value = function.get(key)
        if value is not None and not isinstance(value, kind):
            return f"{path}.function.{key} is {json_kind(value)}, not {wanted}"
    return None


#: Top alternatives per token a suite case asks for when one of its checks reads them
#: (``answer_prob``, ``confidence: {max_entropy: ...}``) and its params name no
#: ``top_logprobs``.
CHECK_TOP_LOGPROBS = 5


class Request(BaseModel):
    """Everything sent for one generation, minus credentials.

    Logprobs policy: ``logprobs`` (each generated token's own logprob, what confidence
    checks read) is on unless asked off; ``top_logprobs`` (the alternatives at each
    position, what entropy and ``answer_prob`` read) is None, meaning none, unless asked
    for: they cost the server, the wire and the client on every token.
    """

    messages: list[Message]
    temperature: float
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] | None = None
    logprobs: bool = True
    top_logprobs: int | None = None
    #: Functions the model may call, as OpenAI function schemas (`tool_problem` says
    #: what one must hold); None: no tools offered.
    tools: list[dict[str, Any]] | None = None
    #: OpenAI's ``tool_choice``: ``"auto"``, ``"none"``, ``"required"`` or
    #: ``{"type": "function", "function": {"name": ...}}``; None: the server's default.
    tool_choice: str | dict[str, Any] | None = None
    #: Extra provider parameters passed through verbatim (``top_p``, ``response_format``...).
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def alternatives(self) -> int:
        """How many top alternatives per token this request asks for (0: none)."""
        return max(0, self.top_logprobs or 0) if self.logprobs else 0

    @property
    def prompt(self) -> str:
        """The last user message: what reports show as "the prompt"."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content or ""
        return ""


class TopLogprob:
    """One alternative the model considered at a position: ``token`` and ``logprob``."""

    __slots__ = ("logprob", "token")

    def __init__(self, token: str, logprob: float) -> None:
        self.token = token
        self.logprob = float(logprob)

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TopLogprob):
            return NotImplemented
        return self.token == other.token and self.logprob == other.logprob

    def __hash__(self) -> int:
        return hash((self.token, self.logprob))

    def __repr__(self) -> str:
        return f"TopLogprob(token={self.token!r}, logprob={self.logprob!r})"

    def model_dump(self) -> dict[str, Any]:
        """``{"token", "logprob"}``, as a pydantic model dumps."""
        return {"token": self.token, "logprob": self.logprob}


#: A position's alternatives as a token keeps them: ``(token, logprob)`` pairs.
Alternatives = tuple[tuple[str, float], ...]


class TokenLogprob:
    """One generated token with its log-probability and the top alternatives.

    Not a pydantic model, though it sits in Generation's fields and validates and
    dumps like one (``{"token", "logprob", "top": [{"token", "logprob"}, ...]}``): a
    generation holds one per token and five alternatives each, and as models they cost
    ~7 us and three garbage-collected objects apiece (`bench/replay.py`, issue 14). The
    alternatives are kept as plain pairs, which the cyclic collector stops tracking,
    and ``top`` builds the `TopLogprob` list when it is read.
    """

    __slots__ = ("_alternatives", "logprob", "token")

    def __init__(
        self,
        token: str,
        logprob: float,
        top: Iterable[TopLogprob | tuple[str, float]] = (),
    ) -> None:
        self.token = token
        self.logprob = float(logprob)
        self._alternatives: Alternatives = tuple(
            (alt.token, alt.logprob) if isinstance(alt, TopLogprob) else (alt[0], float(alt[1]))
            for alt in top
        )

    @classmethod
    def from_pairs(cls, token: str, logprob: float, alternatives: Alternatives) -> TokenLogprob:
        """A token from already-checked parts (the stream assembler's fast path)."""
        made = cls.__new__(cls)
        made.token, made.logprob, made._alternatives = token, logprob, alternatives
        return made

    @property
    def top(self) -> list[TopLogprob]:
        """The alternatives, most likely first as the server sent them (a new list on
        every read: change a token by making a new one)."""
        return [TopLogprob(token, logprob) for token, logprob in self._alternatives]

    @property
    def alternatives(self) -> Alternatives:
        """The alternatives as ``(token, logprob)`` pairs, without building objects."""
        return self._alternatives

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenLogprob):
            return NotImplemented
        return (self.token, self.logprob, self._alternatives) == (
            other.token,
            other.logprob,
            other._alternatives,
        )

    def __hash__(self) -> int:
        return hash((self.token, self.logprob, self._alternatives))

    def __repr__(self) -> str:
        return f"TokenLogprob(token={self.token!r}, logprob={self.logprob!r}, top={self.top!r})"

    def model_dump(self) -> dict[str, Any]:
        """The JSON form records and cassettes hold (as a pydantic model dumps)."""
        return {
            "token": self.token,
            "logprob": self.logprob,
            "top": [{"token": token, "logprob": logprob} for token, logprob in self._alternatives],
        }

    @classmethod
    def coerce(cls, value: object) -> TokenLogprob:
        """A TokenLogprob from itself or its JSON form; ValueError naming what is wrong."""
        if isinstance(value, TokenLogprob):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"a token is {json_kind(value)}, not an object")  # noqa: TRY004  # pydantic wants ValueError
        top = value.get("top") or ()
        if not isinstance(top, list | tuple):
            raise ValueError(f"a token's top is {json_kind(top)}, not an array")  # noqa: TRY004
        pairs = []
        for alt in top:
            if isinstance(alt, TopLogprob):
                pairs.append((alt.token, alt.logprob))
                continue
            if not isinstance(alt, Mapping):
                raise ValueError(f"an alternative is {json_kind(alt)}, not an object")  # noqa: TRY004
            pairs.append((_text(alt.get("token"), "an alternative's token"),
                          _number(alt.get("logprob"), "an alternative's logprob")))  # fmt: skip
        return cls.from_pairs(
            _text(value.get("token"), "a token's token"),
            _number(value.get("logprob"), "a token's logprob"),
            tuple(pairs),
        )

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.coerce,
            serialization=core_schema.plain_serializer_function_ser_schema(cls.model_dump),
        )


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is {json_kind(value)}, not a string")  # noqa: TRY004
    return value


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} is {json_kind(value)}, not a number")  # noqa: TRY004
    return float(value)


class ToolCall(BaseModel):
    """One function call the model made, assembled from the streamed deltas.

    ``arguments_text`` is the arguments' JSON text as the model wrote it; ``arguments``
    the object it parses to, or None with ``error`` saying why (not JSON, or JSON that
    is not an object). An empty text counts as ``{}``: some servers send none for a
    call without parameters.

    ``tokens`` are the generated tokens the server sent with this call's deltas (the
    rule: `pytest_llmlab.models.assemble`); ``mean_prob`` and ``min_prob`` are their
    probabilities (e^logprob) averaged and at the lowest, None when the backend sent no
    logprobs for them. The lowest flags the doubtful decision: a wrong name or value
    hides among near-certain JSON punctuation in the mean.
    """

    #: The server's id of the call (what a ``tool`` message answers); None if it sent none.
    id: str | None = None
    name: str
    arguments_text: str = ""
    arguments: dict[str, Any] | None = None
    error: str | None = None
    tokens: list[TokenLogprob] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mean_prob(self) -> float | None:
        """Mean token probability over the call's tokens; None without logprobs."""
        if not self.tokens:
            return None
        return sum(token.prob for token in self.tokens) / len(self.tokens)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def min_prob(self) -> float | None:
        """The lowest token probability of the call's tokens; None without logprobs."""
        return min((token.prob for token in self.tokens), default=None)

    def wire(self) -> dict[str, Any]:
        """The call as an entry of an assistant message's OpenAI ``tool_calls``, to send
        the conversation back with the tool's result."""
        call: dict[str, Any] = {
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments_text or "{}"},
        }
        return call if self.id is None else {"id": self.id, **call}

    def __str__(self) -> str:
        return f"{self.name}({self.arguments_text})"


class Usage(BaseModel):
    """Token counts. ``reported`` is False when the server sent none and we counted."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported: bool = True
    #: Prompt tokens the server took from its prompt cache instead of processing them
    #: (OpenAI's ``usage.prompt_tokens_details.cached_tokens``, else llama.cpp's
    #: ``timings.cache_n``); None when the server does not say. Part of
    #: ``prompt_tokens``.
    cached_prompt_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def processed_prompt_tokens(self) -> int:
        """The prompt tokens the server actually ran through the model: the prompt
        minus its cached part."""
        return max(0, self.prompt_tokens - (self.cached_prompt_tokens or 0))


class Timings(BaseModel):
    """Client-side timings of one streamed generation, in seconds.

    ``ttft_s``, ``total_s`` and the edges are measured the same way for every provider
    (wall clock around the HTTP stream). The two rates are the server's own where it
    sends them (llama.cpp's ``prompt_per_second`` and ``predicted_per_second``: they
    leave out the HTTP and queueing time around the work), else computed here:
    prefill over the prompt tokens actually processed (cached ones excluded) per
    ``ttft_s``, decode over the tokens after the first; ``rates_from`` says which.
    ``server`` keeps whatever timing block the server reported, untouched.
    """

    ttft_s: float | None = None
    total_s: float = 0.0
    prefill_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None
    #: CLOCK_MONOTONIC nanoseconds of request start, first token and end: the energy
    #: window edges, comparable between processes of one host.
    started_ns: int = 0
    first_token_ns: int | None = None
    finished_ns: int = 0
    server: dict[str, Any] = Field(default_factory=dict)
    #: ``server`` when both rates are the server's own, ``client`` when computed here.
    rates_from: Literal["server", "client"] = "client"


class Generation(BaseModel):
    """One finished generation: the answer, its tokens, usage, timings and energy."""

    text: str
    reasoning: str = ""
    tokens: list[TokenLogprob] = Field(default_factory=list)
    #: The functions the model called, in the server's order (empty when it answered
    #: in text, or was offered no tools).
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    timings: Timings = Field(default_factory=Timings)
    #: The server's reason (``stop``, ``length``...), ``cancelled`` when the caller
    #: stopped the stream early, ``error`` when the request failed part-way.
    finish_reason: str | None = None
    #: The error message when the request failed part-way (recorded, then raised).
    error: str | None = None
    #: The model as shown in ids and reports (the alias when one was given).
    model: str
    #: The canonical ``provider:model`` spec.
    spec: str
    provider: str
    temperature: float
    request: Request
    #: The energy reading of this generation's window (see `EnergyReading`).
    energy: EnergyReading | None = None
    #: Prompt tokens the ``context`` and ``injections`` added to the system message,
    #: counted by the server's tokenizer; None without them or without a tokenizer.
    injection_tokens: int | None = None
    #: HTTP attempts the generation took (1 + retries after 429/503/529 or a reset).
    attempts: int = 1
    #: What the backend says of the model it ran (quantization, parameter size, context
    #: length, runtime name and version), where it says anything; else empty.
    backend: dict[str, Any] = Field(default_factory=dict)
    #: The turn of a conversation (`pytest_llmlab.llm.Chat`) this generation answered,
    #: 0 first; None outside one.
    turn: int | None = None
    #: Whether this generation was played back instead of generated: from a cassette
    #: (``--llm-record``), or reused from an earlier run (``--llm-resume``, ``llmlab
    #: rescore``); ``cassette`` is the file it came from, ``hardware`` the fingerprint
    #: and CPU of the machine that recorded it (its energy was measured there).
    replayed: bool = False
    cassette: str | None = None
    hardware: dict[str, str] | None = None

    def __str__(self) -> str:
        return self.text

    def as_message(self) -> Message:
        """This answer as the assistant message of a conversation: its text, and its
        tool calls in OpenAI's form (`ToolCall.wire`; the text is then None if empty)."""
        calls = [call.wire() for call in self.tool_calls]
        return Message(
            role="assistant",
            content=self.text if self.text or not calls else None,
            tool_calls=calls or None,
        )

    def __repr_args__(self) -> Any:
        # Assertion rewriting prints reprs: keep them to what a failing test needs.
        yield "model", self.model
        yield "temperature", self.temperature
        yield "text", self.text
        yield "finish_reason", self.finish_reason
        yield "completion_tokens", self.usage.completion_tokens
        if self.tool_calls:
            yield "tool_calls", [str(call) for call in self.tool_calls]


class Provider(Protocol):
    """A backend that streams OpenAI-format chat chunks for a Request.

    Implementations: `pytest_llmlab.models.openai.OpenAICompatible` (every
    OpenAI-style HTTP endpoint) and `pytest_llmlab.models.local.EmbeddedLlamaCpp`
    (starts llama.cpp in-process, then streams through the former).
    """

    #: What error messages name as the endpoint.
    endpoint: str

    @property
    def runs_locally(self) -> bool:
        """Whether this machine's energy meters see the model's work (loopback)."""
        ...

    def ensure_available(self) -> None:
        """Raise `ModelUnavailable` with the reason if the model cannot be used."""

    def stream_chunks(self, request: Request) -> StreamHandle:
        """Open the stream; iterate the handle for chunk dicts, close it to stop early."""

    def close(self) -> None:
        """Release connections and servers."""


class StreamHandle(Protocol):
    """An open chunk stream: iterate it, or close it to stop the request."""

    def __iter__(self) -> Any: ...

    def close(self) -> None: ...
