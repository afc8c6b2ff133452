"""LM Studio's own REST API (``/api/v0``), with ``/v1`` (OpenAI-compatible) as fallback.

Written against LM Studio's "REST API v0" document, lmstudio-ai/docs
``1_developer/2_rest/endpoints.mdx`` (commit 86cb996, also at
lmstudio.ai/docs/developer/rest/endpoints; requires LM Studio 0.3.6 or newer):
``GET /api/v0/models`` (every downloaded model: ``id``, ``type``, ``publisher``,
``arch``, ``compatibility_type``, ``quantization``, ``state``, ``max_context_length``),
``GET /api/v0/models/{model}`` and ``POST /api/v0/chat/completions``, whose answer is
OpenAI's chat completion plus three objects::

    "stats": {"tokens_per_second": 51.43, "time_to_first_token": 0.111,
              "generation_time": 0.954, "stop_reason": "eosFound"},
    "model_info": {"arch": "granite", "quant": "Q4_K_M", "format": "gguf",
                   "context_length": 4096},
    "runtime": {"name": "llama.cpp-mac-arm64-apple-metal-advsimd", "version": "1.3.0",
                "supported_formats": ["gguf"]}

The routes live under LM Studio's root, the provider table's base URL without its
``/v1`` (``http://127.0.0.1:1234/v1`` -> ``http://127.0.0.1:1234/api/v0/...``).

Which API a provider speaks is decided once, by `LMStudioProvider.ensure_available`
(or the first stream or `~LMStudioProvider.model_facts`): ``GET /api/v0/models``
answering 200 with a JSON model list means the native API; anything else (a 404 from
an LM Studio before 0.3.6 or another server at that URL, an error, a body that is not
a model list) means ``/v1``, streamed exactly as `OpenAICompatible` streams any
OpenAI-compatible server.

Natively the request is the same ``chat.completion`` body with ``stream: true``, and
the stream is the same SSE ``chat.completion.chunk`` events up to ``data: [DONE]``. The
document shows the three objects on the non-streamed answer only; a stream may carry
them in its final chunk, and this module reads them from whichever chunk has them
(LM Studio 0.3.x streams were reported to send none, lmstudio-ai/lmstudio-bug-tracker
#676 and #547: then the rates are the client's and the facts come from the model
list alone):

==============================  ===================================================
LM Studio field                 where it goes
==============================  ===================================================
``stats`` (each field)          ``timings.server``, as sent
``stats.tokens_per_second``     ``timings.server.predicted_per_second`` (llama.cpp's
                                name): the server's decode rate
``usage.prompt_tokens`` /       ``timings.server.prompt_per_second``: the prefill
``stats.time_to_first_token``   rate, derived (prompt tokens less cached ones, over
                                the time to the first token, which is the prompt's
                                processing as the server timed it); only with both
``model_info.arch``, ``quant``, `model_facts`: ``arch``, ``quantization``,
``format``, ``context_length``  ``format``, ``context_length`` (the context the
                                model is loaded with)
``runtime.name``, ``version``   `model_facts`: ``runtime``, ``runtime_version``
==============================  ===================================================

The assembler takes the server's rates (``rates_from == "server"``) only when it has
both, so a stream without usage keeps the client's. Before any stream has answered,
`model_facts` has what ``/api/v0/models`` lists for the model (``arch``,
``quantization``, ``format`` from ``compatibility_type``, ``max_context_length``, and
``context_length`` from ``loaded_context_length`` where a newer LM Studio lists it);
the runtime is only in chat answers, so the facts a generation records are those known
when it starts: the runtime from the second generation of a model on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from pytest_llmlab.errors import HTTPStatusError, hide_own_frames
from pytest_llmlab.models.base import Request
from pytest_llmlab.models.openai import (
    ChunkStream,
    OpenAICompatible,
    connect_reason,
    is_loopback,
    list_models,
)
from pytest_llmlab.redact import redact_text, terminal_safe

__all__ = [
    "LISTED",
    "LMStudioProvider",
    "LMStudioStream",
    "list_lmstudio_models",
    "lmstudio_root",
]

__tracebackhide__ = hide_own_frames

#: The native routes, under LM Studio's root.
MODELS_PATH = "/api/v0/models"
CHAT_PATH = "/api/v0/chat/completions"
#: The fields of one ``/api/v0/models`` entry that `list_lmstudio_models` keeps.
LISTED = ("id", "type", "publisher", "arch", "quantization", "state", "max_context_length")
#: Characters of a server's error message kept in a model-list error.
_MESSAGE_CHARS = 300


def lmstudio_root(base_url: str) -> str:
    """LM Studio's root from its OpenAI-compatible base URL: ``/v1`` dropped.

    >>> lmstudio_root("http://127.0.0.1:1234/v1/")
    'http://127.0.0.1:1234'
    """
    return base_url.rstrip("/").removesuffix("/v1")


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _seconds(value: object) -> float | None:
    """A positive finite number of the ``stats`` object, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if 0 < number < float("inf") else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _model_list(payload: object) -> list[dict[str, Any]] | None:
    """The entries of a ``/api/v0/models`` answer, or None when it is not one."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    return [entry for entry in data if isinstance(entry, dict)]


def _listed_facts(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The model facts in one ``/api/v0/models`` entry (only those it gives)."""
    facts: dict[str, Any] = {}
    for key, name in (("arch", "arch"), ("quantization", "quantization"),
                      ("compatibility_type", "format")):  # fmt: skip
        if (value := _text(entry.get(key))) is not None:
            facts[name] = value
    if (ctx := _count(entry.get("max_context_length"))) is not None:
        facts["max_context_length"] = ctx
    if (loaded := _count(entry.get("loaded_context_length"))) is not None:
        facts["context_length"] = loaded
    return facts


def _answer_facts(info: object, runtime: object) -> dict[str, Any]:
    """The model facts in an answer's ``model_info`` and ``runtime`` objects."""
    facts: dict[str, Any] = {}
    if isinstance(info, dict):
        for key, name in (("arch", "arch"), ("quant", "quantization"), ("format", "format")):
            if (value := _text(info.get(key))) is not None:
                facts[name] = value
        if (ctx := _count(info.get("context_length"))) is not None:
            facts["context_length"] = ctx
    if isinstance(runtime, dict):
        for key, fact in (("name", "runtime"), ("version", "runtime_version")):
            if (value := _text(runtime.get(key))) is not None:
                facts[fact] = value
    return facts


def _server_timings(stats: Mapping[str, Any]) -> dict[str, Any]:
    """``stats`` as ``timings.server``: its plain fields as sent, and the decode rate
    as llama.cpp's ``predicted_per_second``."""
    timings = {
        key: value
        for key, value in stats.items()
        if isinstance(value, str | int | float) and not isinstance(value, bool)
    }
    timings.pop("predicted_per_second", None)
    timings.pop("prompt_per_second", None)
    if (rate := _seconds(stats.get("tokens_per_second"))) is not None:
        timings["predicted_per_second"] = rate
    return timings


def list_lmstudio_models(base_url: str, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The models an LM Studio server has (``GET /api/v0/models`` under the root of
    ``base_url``), each with `LISTED`'s keys (None where it says nothing). Where that
    route is a 404 (no REST API: an LM Studio before 0.3.6, another server), the ids of
    ``GET {base_url}/models``, every other key None.

    Raises ValueError with a one-line reason (connection refused, an HTTP status, an
    answer that is not a model list).
    """
    root = lmstudio_root(base_url)
    # A proxy set for the internet must not swallow a loopback server.
    with httpx.Client(timeout=timeout_s, trust_env=not is_loopback(root)) as client:
        try:
            response = client.get(f"{root}{MODELS_PATH}")
        except httpx.HTTPError as exc:
            raise ValueError(connect_reason(exc)) from None
    if response.status_code == 404:
        return [
            dict.fromkeys(LISTED) | {"id": model}
            for model in list_models(base_url, timeout_s=timeout_s)
        ]
    if response.status_code >= 400:
        reason = f"HTTP {response.status_code} {response.reason_phrase}"
        said = " ".join(response.text.split())[:_MESSAGE_CHARS]
        raise ValueError(f"{reason}: {terminal_safe(redact_text(said))}" if said else reason)
    try:
        entries = _model_list(response.json())
    except ValueError:
        entries = None
    if entries is None:
        raise ValueError("the answer is not an LM Studio model list (no 'data' array)")
    return [{key: entry.get(key) for key in LISTED} for entry in entries if entry.get("id")]


class LMStudioStream(ChunkStream):
    """One streamed ``POST /api/v0/chat/completions``: OpenAI's SSE chunks, with
    ``stats`` mapped into ``timings`` and ``model_info`` / ``runtime`` handed to the
    provider's facts (the mapping: this module's docstring)."""

    path = CHAT_PATH

    def __init__(self, owner: LMStudioProvider, body: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(owner, body, **kwargs)
        self._lmstudio = owner
        self._timings: dict[str, Any] | None = None
        self._prompt_tokens: int | None = None

    def url(self) -> str:
        return f"{self._lmstudio.root}{self.path}"

    def _read(self, response: httpx.Response, where: str) -> Iterator[dict[str, Any]]:
        """OpenAI's chunks up to ``[DONE]`` (`ChunkStream._read`), each mapped."""
        __tracebackhide__ = hide_own_frames
        for chunk in super()._read(response, where):
            yield self._mapped(chunk)

    def _mapped(self, chunk: dict[str, Any]) -> dict[str, Any]:
        stats = chunk.pop("stats", None)
        info, runtime = chunk.pop("model_info", None), chunk.pop("runtime", None)
        if info is not None or runtime is not None:
            self._lmstudio.learn(_answer_facts(info, runtime))
        usage = chunk.get("usage")
        changed = False
        if isinstance(usage, dict) and (prompt := _count(usage.get("prompt_tokens"))) is not None:
            details = usage.get("prompt_tokens_details")
            cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
            self._prompt_tokens = max(0, prompt - (cached or 0))
            changed = True
        if isinstance(stats, dict):
            self._timings = _server_timings(stats)
            changed = True
        if self._timings is not None and changed:
            timings = dict(self._timings)
            ttft = _seconds(self._timings.get("time_to_first_token"))
            if self._prompt_tokens and ttft is not None:
                timings["prompt_per_second"] = self._prompt_tokens / ttft
            chunk["timings"] = timings  # the assembler keeps the last one it sees
        return chunk

    def _check_answer(self, response: httpx.Response, where: str) -> None:
        """The inherited checks; a 404 says how to see the models LM Studio has."""
        __tracebackhide__ = hide_own_frames
        try:
            super()._check_answer(response, where)
        except HTTPStatusError as exc:
            if exc.status_code != 404:
                raise
            hint = (
                f" (does LM Studio have {self._lmstudio.model!r}? "
                "`llmlab models list --endpoint lmstudio` or `lms ls` lists its models)"
            )
            raise HTTPStatusError(f"{exc}{hint}", status_code=404) from None


class LMStudioProvider(OpenAICompatible):
    """Streams one model from LM Studio: its REST API (``/api/v0``) when it answers,
    else its OpenAI-compatible ``/v1`` (see this module's docstring).

    ``base_url`` is the ``/v1`` URL, as the provider table has it; `root` is it without
    ``/v1``. Messages name the base URL.
    """

    def __init__(self, *, model: str, display: str, base_url: str, **kwargs: Any) -> None:
        super().__init__(model=model, display=display, base_url=base_url, **kwargs)
        self.root = lmstudio_root(self.base_url)
        self._native: bool | None = None
        self._listed: dict[str, Any] = {}
        self._learned: dict[str, Any] = {}

    @property
    def native(self) -> bool:
        """Whether this provider streams from ``/api/v0`` (decided on first use)."""
        if self._native is None:
            self._native = self._detect()
        return self._native

    def ensure_available(self) -> None:
        """The endpoint answers (`OpenAICompatible.ensure_available`); then which API
        it speaks is decided, once."""
        __tracebackhide__ = hide_own_frames
        super().ensure_available()
        _ = self.native

    def _detect(self) -> bool:
        """``GET /api/v0/models``: a 200 model list means native (its entry for this
        model is kept for `model_facts`); anything else, ``/v1``."""
        try:
            response = self.ask("GET", f"{self.root}{MODELS_PATH}")
            entries = _model_list(response.json()) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return False
        if entries is None:
            return False
        entry = next((e for e in entries if e.get("id") == self.model), None)
        self._listed = _listed_facts(entry) if entry is not None else {}
        return True

    @property
    def variant(self) -> str:
        """``api/v0`` (native) or ``v1``: what a cassette of this client keeps."""
        return "api/v0" if self.native else "v1"

    def use_variant(self, variant: str | None) -> None:
        self._native = variant == "api/v0"

    # -- facts ----------------------------------------------------------------------

    def learn(self, facts: Mapping[str, Any]) -> None:
        """Facts an answer gave (``model_info``, ``runtime``), for later generations."""
        self._learned.update(facts)

    def model_facts(self) -> dict[str, Any]:
        """What LM Studio says of the model: ``arch``, ``quantization``, ``format``,
        ``context_length`` (loaded), ``max_context_length``, ``runtime``,
        ``runtime_version``; only those it gave, an answer's over the model list's;
        nothing through ``/v1``. Never raises."""
        if not self.native:
            return {}
        return {**self._listed, **self._learned}

    # -- streaming ------------------------------------------------------------------

    def stream_chunks(self, request: Request) -> ChunkStream:
        """`LMStudioStream` natively, else `OpenAICompatible`'s ``/v1`` stream; the body
        is the same (``stream_options.include_usage`` asks for usage on both)."""
        if not self.native:
            return super().stream_chunks(request)
        deadline_s, source = self.deadline_for(request)
        return LMStudioStream(
            self, self.request_body(request), deadline_s=deadline_s, source=source
        )
