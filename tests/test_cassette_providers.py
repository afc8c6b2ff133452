"""Cassettes through every provider module: record, then replay offline, the same.

Each case records one streamed generation from a protocol double, stops it, and
replays the cassette with ``--llm-record=none``'s mode through a fresh `ProviderPool`
(whose replay client is the provider module of live traffic, with no network): the
replayed Generation must equal the recorded one in everything but this run's clock
(text, reasoning, tokens with their logprobs and alternatives, tool calls, usage,
finish reason, backend facts, timings), and the replacement double must receive no
request at all. The doubles follow each provider's documented wire format (their
modules say where from): `loopback`, OpenAI's chat-completions SSE stream (served as
``vllm:``); `ollama_double`, Ollama's ``docs/api.md`` NDJSON; `anthropic_double`,
Anthropic's "Streaming Messages" events; `gemini_double`, the Gemini API's
``streamGenerateContent?alt=sse``; `lmstudio_double`, LM Studio's REST API
``/api/v0`` (and its ``/v1``, the fallback). The embedded case is the real SmolLM2-135M
GGUF in llama.cpp (skipped when the model store lacks it), at temperature 0 with a
fixed seed.

The secrets cases use doubles that echo the API key they were sent (raw, base64 and
URL-encoded, in the streamed text and an ``X-Echoed-Key`` header), with obviously fake
keys in the environment: none of those forms may reach the cassette file. The last
cases damage a recorded file and expect a `CassetteError` naming ``file:line``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

import anthropic_double
import gemini_double
import lmstudio_double
import ollama_double
import pytest
from loopback import LoopbackServer, serve_loopback, stream, tool_call_stream, tool_delta

from pytest_llmlab.cassettes import Cassettes, ItemTape
from pytest_llmlab.errors import CassetteError, CassetteMiss
from pytest_llmlab.llm import LLM
from pytest_llmlab.models.base import Generation, Provider
from pytest_llmlab.models.local import EmbeddedLlamaCpp
from pytest_llmlab.models.registry import ProviderPool
from pytest_llmlab.models.spec import parse_spec
from pytest_llmlab.models.store import store_home
from pytest_llmlab.option_values import RecordMode
from pytest_llmlab.redact import MASK

TEST_ID = "test_x.py::test_x"
#: Where the cassette of ``test_x.py`` is, as messages name it (from the rootdir).
SHOWN = "cassettes/test_x.py.jsonl"
PROMPT = "why is the sky blue?"
ANTHROPIC_KEY = "fake-anthropic-cassette-key-0123"
#: What a replay sets that its recording does not have, and the clock's edges.
RUN_ONLY = {"energy", "replayed", "cassette", "hardware"}
EDGES = ("started_ns", "first_token_ns", "finished_ns")


class Double(Protocol):
    """What every protocol double offers these tests."""

    @property
    def base_url(self) -> str: ...

    @property
    def requests(self) -> Sequence[object]: ...


# -- one generation, through a tape --------------------------------------------------


@dataclass
class Run:
    """One generation made through a fresh pool and cassettes: what it streamed, the
    provider it had (the live one, whether or not it was used)."""

    generation: Generation
    pieces: list[str]
    provider: Provider
    live_calls: int


def generate(
    tmp_path: Path,
    spec_text: str,
    *,
    mode: RecordMode,
    base_urls: Mapping[str, str] | None = None,
    provider: Provider | None = None,
    prompt: str = PROMPT,
    **kwargs: Any,
) -> Run:
    """``prompt`` to ``spec_text`` as a test's ``llm`` sends it under ``--llm-record
    =<mode>``: the live provider (``provider``, else the pool's) checked by
    ``before_live`` only when the request is not played back; everything closed."""
    pool = ProviderPool(base_urls=dict(base_urls or {}), timeout_s=10.0, retries=0)
    cassettes = Cassettes(
        mode=mode, folder=str(tmp_path / "cassettes"), speed=0.0, rootdir=tmp_path
    )
    spec = parse_spec(spec_text)
    live = provider if provider is not None else pool.get(spec)
    calls: list[None] = []

    def before_live() -> None:
        calls.append(None)
        live.ensure_available()

    tape = ItemTape(
        test_id=TEST_ID,
        test_file=tmp_path / "test_x.py",
        cassettes=cassettes,
        run=None,
        replayer=pool.replayer,
    )
    llm = LLM(model_spec=spec, temperature=0.0, provider=live, tape=tape, before_live=before_live)
    try:
        streamed = llm.stream(prompt, **kwargs)
        pieces = list(streamed)
        generation = streamed.generation
    finally:
        llm.close()
        cassettes.close()
        pool.close()
    return Run(generation, pieces, live, len(calls))


def comparable(generation: Generation) -> dict[str, Any]:
    """The generation as JSON without what only this run has (its clock's edges, the
    replay's marks, the energy reading, which a replay never claims as measured)."""
    data = generation.model_dump(mode="json", exclude=RUN_ONLY)
    data["timings"] = {k: v for k, v in data["timings"].items() if k not in EDGES}
    return data


def durations(generation: Generation) -> tuple[int | None, int]:
    """Nanoseconds from start to first token and to the end."""
    t = generation.timings
    first = None if t.first_token_ns is None else t.first_token_ns - t.started_ns
    return first, t.finished_ns - t.started_ns


def assert_replayed_as_recorded(replay: Run, live: Run) -> None:
    gen, was = replay.generation, live.generation
    assert (gen.replayed, gen.cassette, was.replayed) == (True, SHOWN, False)
    assert gen.error is None and gen.finish_reason == was.finish_reason
    assert (gen.text, gen.reasoning) == (was.text, was.reasoning)
    assert replay.pieces == live.pieces  # the same text chunks, in the same order
    assert [t.model_dump() for t in gen.tokens] == [t.model_dump() for t in was.tokens]
    assert [c.model_dump() for c in gen.tool_calls] == [c.model_dump() for c in was.tool_calls]
    assert gen.usage == was.usage
    assert gen.backend == was.backend
    assert (gen.timings.ttft_s, gen.timings.total_s) == (was.timings.ttft_s, was.timings.total_s)
    assert durations(gen) == durations(was)
    assert gen.timings.server == was.timings.server
    assert comparable(gen) == comparable(was)  # and nothing else differs either
    assert gen.energy is not None and gen.energy.measured is False
    assert (gen.energy.note or "").startswith(f"replayed from {SHOWN}")
    assert gen.hardware is not None and gen.hardware.get("fingerprint")
    assert replay.live_calls == 0, "a replay must not check (or start) the live provider"


def cassette_entries(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / SHOWN
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- the provider cases ----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One provider double, scripted for one recording."""

    spec: str
    #: The provider name whose base URL the double is.
    provider: str
    serve: Callable[[], AbstractContextManager[Any]]
    #: Queues the answer on a running double (and sets it up).
    play: Callable[[Any], None]
    text: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: The environment the pool reads keys from.
    env: Mapping[str, str] = field(default_factory=dict)
    #: Whether the answer has per-token logprobs, and top alternatives with them.
    logprobs: bool = False
    alternatives: bool = False
    tool: str | None = None
    backend: bool = False
    #: The cassette entry's ``variant`` (LM Studio's API), and its content type.
    variant: str | None = None
    content_type: str = "text/event-stream"


def _v1_only(double: lmstudio_double.LMStudioDouble) -> None:
    """An LM Studio before 0.3.6: every ``/api/v0`` route a 404."""
    double.state.native = False
    double.play(lmstudio_double.text_stream(["Blue", "."]))


GEMINI_STEPS = [
    ("The", -0.11, [("The", -0.11), ("A", -2.4)]),
    (" sky", -0.2, [(" sky", -0.2), (" sea", -1.9)]),
]
GEMINI_USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 3, "totalTokenCount": 15}

CASES = {
    "vllm-logprobs-reasoning": Case(
        spec="vllm:loopback-model",
        provider="vllm",
        serve=serve_loopback,
        play=lambda d: d.play(stream(["The", " sky", " is", " blue"], reasoning=("Rayleigh",))),
        text="The sky is blue",
        kwargs={"top_logprobs": 3, "max_tokens": 16},
        logprobs=True,
        alternatives=True,
    ),
    "vllm-tool-call": Case(
        spec="vllm:loopback-model",
        provider="vllm",
        serve=serve_loopback,
        play=lambda d: d.play(
            tool_call_stream(
                [
                    {"content": "Let me look."},
                    {"tool_calls": [tool_delta(0, id="call_w1", name="get_weather")]},
                    {"tool_calls": [tool_delta(0, '{"city": ')]},
                    {"tool_calls": [tool_delta(0, '"Tokyo"}')]},
                ],
                logprobs=[[("Let me look.", -0.3)], None, [('{"city": ', -0.01)], None],
                completion_tokens=9,
                piece_bytes=37,  # frames cut across pieces: split_frames rejoins them
            )
        ),
        text="Let me look.",
        kwargs={"tools": [ollama_double.WEATHER]},
        logprobs=True,
        tool="get_weather",
    ),
    "ollama-logprobs": Case(
        spec="ollama:llama3.2",
        provider="ollama",
        serve=ollama_double.serve_ollama,
        play=lambda d: d.play(ollama_double.text_stream(thinking=("Rayleigh",))),
        text="The sky is blue",
        kwargs={"top_logprobs": 3, "max_tokens": 16, "seed": 7},
        logprobs=True,
        alternatives=True,
        backend=True,
        content_type="application/x-ndjson",
    ),
    "ollama-tool-call": Case(
        spec="ollama:llama3.2",
        provider="ollama",
        serve=ollama_double.serve_ollama,
        play=lambda d: d.play(
            ollama_double.lines(
                ollama_double.line("Checking."),
                ollama_double.DOC_TOOL_LINE,
                ollama_double.DOC_FINAL,
            )
        ),
        text="Checking.",
        kwargs={"tools": [ollama_double.WEATHER], "logprobs": False},
        tool="get_weather",
        backend=True,
        content_type="application/x-ndjson",
    ),
    "anthropic-thinking": Case(
        spec=f"anthropic:{anthropic_double.MODEL}",
        provider="anthropic",
        serve=lambda: anthropic_double.serve_anthropic(api_key=ANTHROPIC_KEY),
        play=lambda d: d.play(
            anthropic_double.thinking_stream(("Rayleigh", " scattering"), ("The sky", " is blue"))
        ),
        text="The sky is blue",
        env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY},
        kwargs={"max_tokens": 64},
    ),
    "anthropic-tool-use": Case(
        spec=f"anthropic:{anthropic_double.MODEL}",
        provider="anthropic",
        serve=lambda: anthropic_double.serve_anthropic(api_key=ANTHROPIC_KEY),
        play=lambda d: d.play(
            anthropic_double.tool_use_stream(
                [("toolu_01cassette", "get_weather", ['{"city":', ' "Tokyo"}'])]
            )
        ),
        text="Let me look.",
        env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY},
        kwargs={"tools": [ollama_double.WEATHER], "tool_choice": "auto"},
        tool="get_weather",
    ),
    "gemini-logprobs": Case(
        spec=f"gemini:{gemini_double.MODEL}",
        provider="gemini",
        serve=gemini_double.serve_gemini,
        play=lambda d: d.play(
            gemini_double.stream(
                gemini_double.response(
                    "The sky",
                    thought="Rayleigh",
                    logprobs=GEMINI_STEPS,
                    usage={"promptTokenCount": 12, "totalTokenCount": 12},
                ),
                gemini_double.response(
                    " is blue",
                    finish="STOP",
                    logprobs=[(" is", -0.05, [(" is", -0.05)]), (" blue", -0.3, [])],
                    usage=GEMINI_USAGE,
                ),
            )
        ),
        text="The sky is blue",
        env={"GEMINI_API_KEY": gemini_double.KEY},
        kwargs={"gemini_logprobs": True, "top_logprobs": 2, "seed": 3},
        logprobs=True,
        alternatives=True,
    ),
    "gemini-function-call": Case(
        spec=f"gemini:{gemini_double.MODEL}",
        provider="gemini",
        serve=gemini_double.serve_gemini,
        play=lambda d: d.play(
            gemini_double.stream(
                gemini_double.response("Checking."),
                gemini_double.response(
                    calls=[{"name": "get_weather", "args": {"city": "Tokyo"}}],
                    finish="STOP",
                    usage=GEMINI_USAGE,
                ),
            )
        ),
        text="Checking.",
        env={"GEMINI_API_KEY": gemini_double.KEY},
        kwargs={"tools": [ollama_double.WEATHER]},
        tool="get_weather",
    ),
    "lmstudio-api-v0": Case(
        spec=f"lmstudio:{lmstudio_double.MODEL}",
        provider="lmstudio",
        serve=lmstudio_double.serve_lmstudio,
        play=lambda d: d.play(lmstudio_double.text_stream()),
        text="The sky is blue",
        backend=True,
        variant="api/v0",
    ),
    "lmstudio-v1-fallback": Case(
        spec=f"lmstudio:{lmstudio_double.MODEL}",
        provider="lmstudio",
        serve=lmstudio_double.serve_lmstudio,
        play=_v1_only,
        text="Blue.",
        variant="v1",
    ),
}


@pytest.fixture
def no_provider_env(monkeypatch: pytest.MonkeyPatch, fresh_process_redactor: None) -> None:
    """No provider key, base URL or proxy from the real environment."""
    for name in ("OPENAI_BASE_URL", "OLLAMA_HOST", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.usefixtures("no_provider_env")
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_recording_replays_as_it_was_recorded_without_a_request(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    with case.serve() as recorded_by:
        case.play(recorded_by)
        live = generate(
            tmp_path,
            case.spec,
            mode="new",
            base_urls={case.provider: recorded_by.base_url},
            **case.kwargs,
        )
        sent = len(recorded_by.requests)
    gen = live.generation
    assert (gen.text, gen.error, live.live_calls) == (case.text, None, 1)
    assert sent >= 1
    assert bool(gen.tokens) == case.logprobs
    assert any(len(t.top) > 1 for t in gen.tokens) == case.alternatives
    assert [c.name for c in gen.tool_calls] == ([case.tool] if case.tool else [])
    assert bool(gen.backend) == case.backend
    (entry,) = cassette_entries(tmp_path)
    assert (entry["status"], entry["variant"], entry["test"]) == (200, case.variant, TEST_ID)
    assert entry["content_type"].startswith(case.content_type)
    assert len(entry["frames"]) > 1

    for name in case.env:  # a replay needs no key (a CI job without secrets)
        monkeypatch.delenv(name)
    with case.serve() as replacement:  # another server, another port: nobody to ask
        case.play(replacement)
        replay = generate(
            tmp_path,
            case.spec,
            mode="none",
            base_urls={case.provider: replacement.base_url},
            **case.kwargs,
        )
        assert replacement.requests == []
    assert_replayed_as_recorded(replay, live)


@pytest.mark.usefixtures("no_provider_env")
def test_a_replay_of_another_provider_is_a_miss(tmp_path: Path) -> None:
    """The provider is part of the key: a cassette recorded through ``vllm:`` does not
    answer the same request to ``ollama:`` of the same model name."""
    with serve_loopback() as server:
        generate(tmp_path, "vllm:llama3.2", mode="new", base_urls={"vllm": server.base_url})
    with ollama_double.serve_ollama() as ollama, pytest.raises(CassetteMiss) as info:
        generate(tmp_path, "ollama:llama3.2", mode="none", base_urls={"ollama": ollama.base_url})
    assert ollama.requests == []
    message = str(info.value)
    assert f"key {cassette_entries(tmp_path)[0]['key']} (" in message  # the nearest one
    assert "provider ('vllm' recorded, 'ollama' now)" in message


@pytest.mark.usefixtures("no_provider_env")
@pytest.mark.parametrize(
    "case_id", ["vllm-tool-call", "ollama-tool-call", "anthropic-tool-use", "gemini-function-call"]
)
def test_a_tool_conversation_replays_turn_by_turn(
    case_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chat: the model calls the tool, the tool answers, the model replies. The second
    turn's request holds the first turn's call: its key must come out the same when
    the history is rebuilt from a replayed first turn."""
    case = CASES[case_id]
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)

    def converse(mode: RecordMode, double: Double) -> list[Generation]:
        pool = ProviderPool(base_urls={case.provider: double.base_url}, timeout_s=10.0)
        cassettes = Cassettes(
            mode=mode, folder=str(tmp_path / "cassettes"), speed=0.0, rootdir=tmp_path
        )
        spec = parse_spec(case.spec)
        tape = ItemTape(
            test_id=TEST_ID,
            test_file=tmp_path / "test_x.py",
            cassettes=cassettes,
            run=None,
            replayer=pool.replayer,
        )
        llm = LLM(model_spec=spec, temperature=0.0, provider=pool.get(spec), tape=tape)
        try:
            chat = llm.chat(system="You check the weather.", tools=[ollama_double.WEATHER])
            first = chat.say("Weather in Tokyo?")
            chat.tool_result(first.tool_calls[0].id or "", '{"sky": "clear"}')
            chat.say(max_tokens=32)
            return chat.turns
        finally:
            llm.close()
            cassettes.close()
            pool.close()

    with case.serve() as recorded_by:
        case.play(recorded_by)  # turn 0: the tool call; turn 1: the double's default text
        live = converse("new", recorded_by)
    assert [bool(turn.tool_calls) for turn in live] == [True, False]
    assert len(cassette_entries(tmp_path)) == 2
    with case.serve() as replacement:
        replay = converse("none", replacement)
        assert replacement.requests == []
    assert [turn.replayed for turn in replay] == [True, True]
    assert [comparable(turn) for turn in replay] == [comparable(turn) for turn in live]


# -- the embedded model ------------------------------------------------------------------


@pytest.fixture
def smollm2(request: pytest.FixtureRequest) -> EmbeddedLlamaCpp:
    """The session's embedded SmolLM2-135M (conftest's ``embedded``), when the model
    store has it: this test does not pull it."""
    if not sorted((store_home() / "smollm2-135m").glob("*.gguf")):
        pytest.skip("smollm2-135m is not in the model store (llmlab models pull smollm2-135m)")
    pytest.importorskip("xllamacpp", reason="the embedded runtime: pytest-llmlab[local]")
    embedded: EmbeddedLlamaCpp = request.getfixturevalue("embedded")
    return embedded


@pytest.mark.usefixtures("no_provider_env")
def test_the_embedded_model_replays_without_loading_it(
    smollm2: EmbeddedLlamaCpp, tmp_path: Path
) -> None:
    """llama.cpp's own stream (its ``timings``, its logprobs) recorded from the real
    model, replayed through the OpenAI protocol client: the replay's pool never starts
    its own embedded server."""
    spec = "local:smollm2-135m"
    asked: dict[str, Any] = {"max_tokens": 12, "seed": 1234, "top_logprobs": 3}
    prompt = "What is the capital of France? Answer in one word."
    live = generate(tmp_path, spec, mode="new", provider=smollm2, prompt=prompt, **asked)
    gen = live.generation
    assert "Paris" in gen.text and gen.tokens and gen.timings.server.get("predicted_n")
    assert all(len(t.top) == 3 for t in gen.tokens)
    replay = generate(tmp_path, spec, mode="none", prompt=prompt, **asked)
    assert isinstance(replay.provider, EmbeddedLlamaCpp) and replay.provider is not smollm2
    assert replay.provider.endpoint == "embedded llama.cpp (not started)"
    assert replay.provider.path is None  # not even resolved in the store
    assert_replayed_as_recorded(replay, live)
    assert replay.generation.timings.rates_from == "server"


# -- secrets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretCase:
    spec: str
    provider: str
    env: str
    key: str
    #: A running double that echoes ``key`` (``{key}``... in its text, see `ECHO`).
    serve: Callable[[str], AbstractContextManager[Any]]
    play: Callable[[Any], None]
    #: The header the key travels in, and its value there.
    header: str
    sent_as: Callable[[str], str] = lambda key: key


#: The echoing answer's pieces: the key as sent, in base64, URL-encoded.
ECHO = ["sent: ", "{key}", " b64: ", "{key_base64}", " url: ", "{key_url}", " end"]


def _bearer(key: str) -> str:
    return f"Bearer {key}"


SECRET_CASES = {
    "openai": SecretCase(
        spec="openai:gpt-4o-mini",
        provider="openai",
        env="OPENAI_API_KEY",
        key="sk-test-FAKE/cassette+openai=0123456789",
        serve=lambda _key: serve_loopback(),
        play=lambda d: d.play(stream(ECHO, echo_key=True)),
        header="authorization",
        sent_as=_bearer,
    ),
    "vllm": SecretCase(
        spec="vllm:loopback-model",
        provider="vllm",
        env="VLLM_API_KEY",
        key="fake-vllm/cassette+key=not-a-secret",
        serve=lambda _key: serve_loopback(),
        play=lambda d: d.play(stream(ECHO, echo_key=True)),
        header="authorization",
        sent_as=_bearer,
    ),
    "ollama": SecretCase(
        spec="ollama:llama3.2",
        provider="ollama",
        env="OLLAMA_API_KEY",
        key="sk-ollama-FAKE/9Qx7+LmW4=zR2vB8kT",
        serve=lambda _key: ollama_double.serve_ollama(),
        play=lambda d: d.play(ollama_double.text_stream(ECHO, echo_key=True)),
        header="authorization",
        sent_as=_bearer,
    ),
    "lmstudio": SecretCase(
        spec=f"lmstudio:{lmstudio_double.MODEL}",
        provider="lmstudio",
        env="LMSTUDIO_API_KEY",
        key="fake-lmstudio/cassette+key=0123",
        serve=lambda _key: lmstudio_double.serve_lmstudio(),
        play=lambda d: d.play(lmstudio_double.text_stream(ECHO, echo_key=True)),
        header="authorization",
        sent_as=_bearer,
    ),
    "anthropic": SecretCase(
        spec=f"anthropic:{anthropic_double.MODEL}",
        provider="anthropic",
        env="ANTHROPIC_API_KEY",
        key="fake-anthropic/cassette+key=0123",
        serve=lambda key: anthropic_double.serve_anthropic(api_key=key),
        play=lambda d: d.play(
            anthropic_double.events_reply(anthropic_double.text_events(ECHO), echo_key=True)
        ),
        header="x-api-key",
    ),
    "gemini": SecretCase(
        spec=f"gemini:{gemini_double.MODEL}",
        provider="gemini",
        env="GEMINI_API_KEY",
        key="fake-gemini/cassette+key=not-a-secret",
        serve=lambda key: gemini_double.serve_gemini(api_key=key),
        play=lambda d: d.play(
            gemini_double.stream(
                *(gemini_double.response(piece) for piece in ECHO[:-1]),
                gemini_double.response(ECHO[-1], finish="STOP", usage=GEMINI_USAGE),
                echo_key=True,
            )
        ),
        header="x-goog-api-key",
    ),
}


def key_forms(key: str) -> list[str]:
    """The forms of ``key`` the redactor masks: as is, base64 (with and without
    padding), URL-encoded (every way, with upper- and lower-case escapes)."""
    encoded = base64.b64encode(key.encode()).decode()
    escaped = {quote(key, safe=""), quote(key), quote_plus(key)}
    lowered = {re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), form) for form in escaped}
    forms = {key, encoded, encoded.rstrip("="), *escaped, *lowered}
    return sorted(forms)


def test_the_fake_keys_have_forms_that_differ() -> None:
    """Each secret case's key URL-encodes to something else, and its base64 pads: the
    forms checked below are not all the same string."""
    for case in SECRET_CASES.values():
        forms = key_forms(case.key)
        assert quote(case.key, safe="") != case.key, case.key
        assert len(forms) >= 4, forms


@pytest.mark.usefixtures("no_provider_env")
@pytest.mark.parametrize("case", list(SECRET_CASES.values()), ids=list(SECRET_CASES))
def test_an_echoed_key_never_reaches_the_cassette(
    case: SecretCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(case.env, case.key)
    with case.serve(case.key) as double:
        case.play(double)
        live = generate(
            tmp_path,
            case.spec,
            mode="new",
            base_urls={case.provider: double.base_url},
            prompt=f"repeat my key {case.key}",
            logprobs=False,
        )
        chat = [r for r in double.requests if getattr(r, "method", "") == "POST"][-1]
    assert chat.headers[case.header] == case.sent_as(case.key), "the key was sent"
    text = live.generation.text
    forms = key_forms(case.key)
    # In memory the generation keeps what the server said: the key in all three forms.
    assert live.generation.error is None
    assert case.key in text and base64.b64encode(case.key.encode()).decode() in text
    assert quote(case.key, safe="") in text

    cassette = (tmp_path / SHOWN).read_bytes()
    leaked = [form for form in forms if form.encode() in cassette]
    assert leaked == [], f"forms of the key in the cassette: {leaked}"
    (entry,) = cassette_entries(tmp_path)
    assert entry["request"]["messages"][-1]["content"] == f"repeat my key {MASK}"
    joined = "".join(frame[1] for frame in entry["frames"] if isinstance(frame[1], str))
    assert joined.count(MASK) == 3 and "sent: " in joined and " end" in joined

    # The replay reads what the file holds: the text with every form masked.
    with case.serve(case.key) as replacement:
        replay = generate(
            tmp_path,
            case.spec,
            mode="none",
            base_urls={case.provider: replacement.base_url},
            prompt=f"repeat my key {case.key}",
            logprobs=False,
        )
        assert replacement.requests == []
    assert replay.generation.text == f"sent: {MASK} b64: {MASK} url: {MASK} end"
    assert text == "".join(ECHO).format(
        key=case.key,
        key_base64=base64.b64encode(case.key.encode()).decode(),
        key_url=quote(case.key, safe=""),
    )


def test_a_base_url_password_never_reaches_the_cassette(
    tmp_path: Path, no_provider_env: None
) -> None:
    """Credentials in the base URL travel as HTTP Basic auth; a server that echoes
    that header's ``base64(user:password)`` is masked like a key."""
    user, password = "llmlab", "p@ss/FAKE+word-0123"

    def with_password(double: LoopbackServer) -> dict[str, str]:
        userinfo = f"{user}:{quote(password, safe='')}@"
        return {"vllm": double.base_url.replace("http://", f"http://{userinfo}")}

    with serve_loopback() as double:
        double.play(stream(["basic: ", "{key}", " end"], echo_key=True))
        live = generate(
            tmp_path, "vllm:m", mode="new", base_urls=with_password(double), logprobs=False
        )
        (chat,) = double.posts
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    assert chat.headers["authorization"] == f"Basic {basic}"
    assert live.generation.text == f"basic: {basic} end"
    cassette = (tmp_path / SHOWN).read_bytes()
    leaked = [f for f in (password, quote(password, safe=""), basic) if f.encode() in cassette]
    assert leaked == []
    with serve_loopback() as replacement:
        replay = generate(
            tmp_path, "vllm:m", mode="none", base_urls=with_password(replacement), logprobs=False
        )
        assert replacement.requests == []
    assert replay.generation.text == f"basic: {MASK} end"


# -- a damaged cassette --------------------------------------------------------------------


def _truncated(line: str) -> str:
    return line[: len(line) // 2]


def _frames_out_of_order(line: str) -> str:
    entry = json.loads(line)
    entry["frames"] = list(reversed(entry["frames"]))
    return json.dumps(entry)


def _no_key(line: str) -> str:
    entry = json.loads(line)
    del entry["key"]
    return json.dumps(entry)


DAMAGES: dict[str, tuple[Callable[[str], str], str]] = {
    "truncated": (_truncated, "not a JSON line"),
    "frames-out-of-order": (
        _frames_out_of_order,
        "not a cassette entry: frames[1]: the offset is not a whole number of ns >= the last",
    ),
    "no-key": (_no_key, "not a cassette entry: no 'key'"),
}


@pytest.fixture
def two_entries(tmp_path: Path, no_provider_env: None) -> Iterator[list[str]]:
    """A cassette of two recorded requests (two prompts), as its lines."""
    with serve_loopback() as server:
        server.play(stream(["One"]), stream(["Two"]))
        for prompt in ("first", "second"):
            generate(
                tmp_path, "vllm:m", mode="new", base_urls={"vllm": server.base_url}, prompt=prompt
            )
    lines = (tmp_path / SHOWN).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    yield lines


@pytest.mark.parametrize("mode", ["none", "new"])
@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_a_damaged_line_is_an_error_naming_the_file_and_line(
    two_entries: list[str], tmp_path: Path, damage: str, mode: RecordMode
) -> None:
    """Even the intact first entry is not played from a file with a bad line, nor is
    the file recorded over (``new``): the whole file is read first."""
    damaged, said = DAMAGES[damage]
    path = tmp_path / SHOWN
    path.write_text(f"{two_entries[0]}\n{damaged(two_entries[1])}\n", encoding="utf-8")
    before = path.read_bytes()
    with serve_loopback() as server:
        with pytest.raises(CassetteError) as info:
            generate(tmp_path, "vllm:m", mode=mode, base_urls={"vllm": server.base_url},
                     prompt="first")  # fmt: skip
        assert server.requests == []
    assert not isinstance(info.value, CassetteMiss)
    assert str(info.value).startswith(f"{SHOWN}:2: {said}"), str(info.value)
    assert path.read_bytes() == before


def test_an_intact_file_replays_both_entries(two_entries: list[str], tmp_path: Path) -> None:
    """The control of the damage cases: the same file, undamaged, answers both."""
    with serve_loopback() as server:
        texts = [
            generate(
                tmp_path, "vllm:m", mode="none", base_urls={"vllm": server.base_url}, prompt=p
            ).generation.text
            for p in ("first", "second")
        ]
        assert server.requests == []
    assert texts == ["One", "Two"]
