"""What every provider exchanges: the Request sent, the Generation returned.

These are pydantic models because they cross process boundaries (xdist workers, JSONL
records, cassettes) and users inspect them in assertions.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from pytest_llmlab.energy.reading import EnergyReading

__all__ = [
    "Generation",
    "Message",
    "Provider",
    "Request",
    "Timings",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
]


class Message(BaseModel):
    """One chat message as sent to the model."""

    model_config = ConfigDict(frozen=True)

    role: str
    content: str


class Request(BaseModel):
    """Everything sent for one generation, minus credentials."""

    messages: list[Message]
    temperature: float
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] | None = None
    logprobs: bool = True
    top_logprobs: int | None = None
    #: Extra provider parameters passed through verbatim (``top_p``, ``response_format``...).
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The last user message: what reports show as "the prompt"."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


class TopLogprob(BaseModel):
    """One alternative the model considered at a position."""

    token: str
    logprob: float

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)


class TokenLogprob(BaseModel):
    """One generated token with its log-probability and the top alternatives."""

    token: str
    logprob: float
    top: list[TopLogprob] = Field(default_factory=list)

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)


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

    def __str__(self) -> str:
        return self.text

    def __repr_args__(self) -> Any:
        # Assertion rewriting prints reprs: keep them to what a failing test needs.
        yield "model", self.model
        yield "temperature", self.temperature
        yield "text", self.text
        yield "finish_reason", self.finish_reason
        yield "completion_tokens", self.usage.completion_tokens


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
