"""Fault handling of the OpenAI-compatible client, against a loopback protocol double.

The server in these tests (`tests/loopback.py`) is a protocol double of the OpenAI
chat-completions streaming format -- NOT a real model server and NOT OpenAI: it plays
scripted wire behaviours (normal stream, stall, HTTP errors, cut streams, malformed
data, error events, non-SSE answers) on 127.0.0.1 and records what the client sent.
The requests go through `OpenAICompatible` and `LLM` exactly as in a user's test; the
last tests run pytest itself (pytester, plugin loaded from its entry point) to show
what a user sees.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator

import pytest
from clients import DISPLAY, Binder, Bound, generate_error

# tests/ has no __init__.py: pytest puts it on sys.path, so the helper imports as `loopback`.
from loopback import (
    LoopbackServer,
    Script,
    close_without_done,
    closed_port,
    cut_mid_chunk,
    end_without_done,
    error_event,
    expected_logprob,
    expected_top,
    http_error,
    json_answer,
    malformed,
    stall,
    stream,
    until_disconnect,
)

from pytest_llmlab.errors import (
    EndpointUnreachable,
    GenerationError,
    GenerationTimeout,
    HTTPStatusError,
    MissingAPIKey,
    StreamError,
)

API_KEY = "sk-loopback-SECRET-7f3a9c"


@pytest.fixture
def bind() -> Iterator[Binder]:
    """`Binder` of `LLM`s over `OpenAICompatible`; everything closed at teardown."""
    with Binder() as binder:
        yield binder


# -- unreachable endpoints ------------------------------------------------------------


def test_closed_port_message_is_exact(bind: Callable[..., Bound]) -> None:
    """No server (not even the loopback double) on the port: connection refused, one line.

    No real server is involved: nothing listens, or nothing is contacted.
    """
    port = closed_port()
    bound = bind(f"http://127.0.0.1:{port}/v1/")
    expected = f"cannot reach http://127.0.0.1:{port}/v1 for {DISPLAY}: connection refused"
    with pytest.raises(EndpointUnreachable) as info:
        bound.provider.ensure_available()
    assert str(info.value) == expected
    error = generate_error(bound)
    assert isinstance(error, EndpointUnreachable)
    assert str(error) == expected
    assert error.__cause__ is None and error.__suppress_context__


def test_closed_port_failed_generation_is_recorded(bind: Callable[..., Bound]) -> None:
    """A generation refused at connect time (no loopback double listening) is recorded as an error.

    No real server is involved: nothing listens, or nothing is contacted.
    """
    port = closed_port()
    bound = bind(f"http://127.0.0.1:{port}/v1")
    error = generate_error(bound)
    assert [(g.finish_reason, g.error) for g in bound.records] == [("error", str(error))]


def test_ensure_available_probes_models_once(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """The availability probe is one ``GET /v1/models`` to the loopback protocol double, cached.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    bound = bind(server.base_url)
    bound.provider.ensure_available()
    bound.provider.ensure_available()
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/v1/models")]


def test_any_http_answer_counts_as_reachable(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """A loopback protocol double without a /models route (404) is still reachable.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.models_route = False
    bind(server.base_url).provider.ensure_available()
    assert server.requests[0].path == "/v1/models"


def test_missing_api_key_names_the_variable(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """require_key without a key: MissingAPIKey naming the env var, nothing contacted.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    bound = bind(
        server.base_url,
        require_key=True,
        api_key_env="OPENAI_API_KEY",
        display="openai:gpt-4o-mini",
    )
    for _ in range(2):  # the verdict is cached, and raised again
        with pytest.raises(MissingAPIKey) as info:
            bound.provider.ensure_available()
        assert "set OPENAI_API_KEY" in str(info.value)
        assert "openai:gpt-4o-mini" in str(info.value)
    assert server.requests == []


# -- stalls ---------------------------------------------------------------------------


@pytest.mark.parametrize("after_chunks", [None, 1], ids=["nothing-sent", "one-chunk-then-stall"])
def test_stall_times_out(
    server: LoopbackServer, bind: Callable[..., Bound], after_chunks: int | None
) -> None:
    """The loopback protocol double accepts, then stalls: GenerationTimeout, no hang.

    The 5 s bound is a hang guard, not a speed target.
    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(stall(after_chunks))
    bound = bind(server.base_url, timeout_s=0.5)
    started = time.monotonic()
    error = generate_error(bound)
    elapsed = time.monotonic() - started
    assert isinstance(error, GenerationTimeout)
    assert 0.4 <= elapsed < 5.0
    chunks = after_chunks or 0
    assert str(error) == (
        f"no data from {server.base_url} for {DISPLAY} within 0.5 s (--llm-timeout) "
        f"after {chunks} chunks"
    )
    [record] = bound.records
    assert record.finish_reason == "error"
    assert record.text == ("Hel" if after_chunks else "")


# -- HTTP errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (500, "The server had an error while processing your request."),
        (401, "Incorrect API key provided."),
        (404, "The model `test-model` does not exist or you do not have access to it."),
    ],
)
def test_http_error_status_and_server_message(
    server: LoopbackServer, bind: Callable[..., Bound], status: int, message: str
) -> None:
    """The loopback protocol double answers an HTTP error with an OpenAI-style error body.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(http_error(status, message))
    error = generate_error(bind(server.base_url))
    assert isinstance(error, HTTPStatusError)
    assert error.status_code == status
    assert str(error) == f"HTTP {status} from {server.base_url} for {DISPLAY}: {message}"


def test_http_error_with_plain_text_body(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """A non-JSON error body from the loopback protocol double is quoted on one line.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(http_error(503, "upstream\n  connect error", json_body=False))
    error = generate_error(bind(server.base_url))
    assert isinstance(error, HTTPStatusError)
    assert error.status_code == 503
    assert str(error).endswith(": upstream connect error")


# -- broken streams -------------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [end_without_done(), close_without_done()],
    ids=["chunked-body-ends", "socket-closes"],
)
def test_stream_ending_without_done(
    server: LoopbackServer, bind: Callable[..., Bound], script: Script
) -> None:
    """The loopback protocol double ends the body cleanly but never sends ``data: [DONE]``.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(script)
    error = generate_error(bind(server.base_url))
    assert isinstance(error, StreamError)
    assert "[DONE]" in str(error)
    assert (
        str(error)
        == f"stream from {server.base_url} for {DISPLAY} ended before [DONE] after 2 chunks"
    )


def test_stream_cut_mid_chunk(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """The loopback protocol double closes the socket inside a chunked-encoding chunk.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(cut_mid_chunk())
    bound = bind(server.base_url)
    error = generate_error(bound)
    assert isinstance(error, StreamError)
    assert str(error).startswith(
        f"stream from {server.base_url} for {DISPLAY} was cut after 2 chunks: "
    )
    assert bound.records[0].text == "Hello"  # what arrived before the cut is kept


def test_malformed_json_is_quoted(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """A ``data:`` line from the loopback protocol double that is not JSON.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    bad = '{"choices": [{"delta": {"content": "oops"'
    server.play(malformed(bad))
    error = generate_error(bind(server.base_url))
    assert isinstance(error, StreamError)
    assert str(error) == (
        f"malformed JSON in stream from {server.base_url} for {DISPLAY} after 1 chunks: {bad!r}"
    )


def test_error_event_in_stream(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """The loopback protocol double sends ``data: {"error": {...}}`` mid-stream.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(error_event("model overloaded, retry later"))
    error = generate_error(bind(server.base_url))
    assert isinstance(error, StreamError)
    assert str(error) == (
        f"error event in stream from {server.base_url} for {DISPLAY}: model overloaded, retry later"
    )


def test_non_sse_answer(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """The loopback protocol double answers plain ``application/json`` instead of a stream.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(json_answer("I am not streamed"))
    error = generate_error(bind(server.base_url))
    assert isinstance(error, StreamError)
    assert "application/json instead of an event stream" in str(error)
    assert str(error).startswith(f"{server.base_url} for {DISPLAY} answered")


@pytest.mark.parametrize(
    ("script", "partial"),
    [
        (http_error(500, "boom"), ""),
        (stall(1), "Hel"),
        (end_without_done(), "Hello"),
        (cut_mid_chunk(), "Hello"),
        (malformed("{nope"), "Hel"),
        (error_event("overloaded"), "Hel"),
        (json_answer(), ""),
    ],
    ids=["500", "stall", "no-done", "cut", "malformed", "error-event", "non-sse"],
)
def test_failed_generation_is_recorded(
    server: LoopbackServer, bind: Callable[..., Bound], script: Script, partial: str
) -> None:
    """Every loopback-protocol-double fault still reaches the recorder: finish_reason
    "error", the error text, and whatever text had arrived.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(script)
    bound = bind(server.base_url, timeout_s=0.5 if script.kind == "stall" else 5.0)
    error = generate_error(bound)
    assert isinstance(error, GenerationError)
    [record] = bound.records
    assert record.finish_reason == "error"
    assert record.error == str(error)
    assert record.text == partial
    bound.llm.close()  # teardown must not record the failed stream a second time
    assert len(bound.records) == 1


# -- a normal stream ------------------------------------------------------------------


def test_normal_stream(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """A normal stream from the loopback protocol double: text, logprobs, usage, finish.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(stream(["Paris", " is", " the capital."], prompt_tokens=11, finish_reason="stop"))
    bound = bind(server.base_url)
    gen = bound.llm.generate("What is the capital of France?", top_logprobs=5)
    assert gen.text == "Paris is the capital."
    assert gen.finish_reason == "stop"
    assert gen.error is None
    assert (gen.usage.prompt_tokens, gen.usage.completion_tokens, gen.usage.reported) == (
        11,
        3,
        True,
    )
    assert [t.token for t in gen.tokens] == ["Paris", " is", " the capital."]
    for index, token in enumerate(gen.tokens):
        assert token.logprob == expected_logprob(index)
        assert [(t.token, t.logprob) for t in token.top] == expected_top(index, token.token, 5)
    timings = gen.timings
    assert timings.ttft_s is not None and 0 <= timings.ttft_s <= timings.total_s
    assert timings.started_ns <= (timings.first_token_ns or 0) <= timings.finished_ns
    assert bound.records == [gen]


def test_stream_yields_text_chunks(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """``llm.stream`` yields the loopback protocol double's tokens as they arrive.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(stream(["a", "b", "c"]))
    bound = bind(server.base_url)
    chunks = list(bound.llm.stream("x"))
    assert chunks == ["a", "b", "c"]
    assert bound.records[0].text == "abc"
    assert bound.records[0].finish_reason == "stop"


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_comments_and_event_lines_are_ignored(
    server: LoopbackServer, bind: Callable[..., Bound], newline: str
) -> None:
    """``: keep-alive`` comments and ``event:``/``id:``/``retry:`` lines from the loopback
    protocol double change nothing.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(stream(["Hello", ", world"], comments=True, event_lines=True, newline=newline))
    gen = bind(server.base_url).llm.generate("hi")
    assert gen.text == "Hello, world"
    assert gen.usage.completion_tokens == 2 and gen.usage.reported


def test_reasoning_content_stream(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """``reasoning_content`` deltas from the loopback protocol double become `reasoning`.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(stream(["42"], reasoning=("Let me ", "think.")))
    gen = bind(server.base_url).llm.generate("hi")
    assert (gen.text, gen.reasoning) == ("42", "Let me think.")


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"], ids=["LS", "PS", "NEL"])
def test_unicode_line_separators_inside_tokens(
    server: LoopbackServer, bind: Callable[..., Bound], char: str
) -> None:
    """The loopback protocol double sends a token holding a Unicode line separator raw in
    its UTF-8 JSON (as vLLM and llama.cpp do). SSE lines end only at CR/LF, so the token
    must come through intact.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(stream(["a", f"b{char}c", "d"]))
    gen = bind(server.base_url).llm.generate("hi")
    assert gen.text == f"ab{char}cd"


def test_usage_counted_when_server_sends_none(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """A loopback protocol double that ignores include_usage: tokens counted, not reported.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(stream(["a", "b", "c", "d"], usage=False))
    gen = bind(server.base_url).llm.generate("hi")
    assert (gen.usage.completion_tokens, gen.usage.reported) == (4, False)


# -- what the client sends ------------------------------------------------------------


def test_request_body_carries_the_call(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """The loopback protocol double records the body: everything LLM.generate was asked.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    bound = bind(server.base_url)
    bound.llm.generate(
        "What is 2+2?",
        system="Answer with a number.",
        seed=7,
        max_tokens=16,
        stop="END",
        temperature=0.3,
        top_p=0.9,
    )
    [post] = server.posts
    assert post.path == "/v1/chat/completions"
    assert post.headers["accept"] == "text/event-stream"
    assert post.headers["content-type"] == "application/json"
    body = post.body
    assert body["model"] == "test-model"
    assert body["messages"] == [
        {"role": "system", "content": "Answer with a number."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.3
    assert body["seed"] == 7
    assert body["max_tokens"] == 16
    assert body["stop"] == ["END"]
    # Token logprobs on, alternatives off by default: one is asked for, the fewest
    # that makes llama.cpp's server send the token's own logprob.
    assert body["logprobs"] is True
    assert body["top_logprobs"] == 1
    assert body["top_p"] == 0.9


def test_request_body_defaults_and_messages(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """Unset options are left out; messages come before the prompt (loopback protocol double).

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    bound = bind(server.base_url)
    bound.llm.generate(
        "and now?",
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        stop=["a", "b"],
    )
    body = server.posts[0].body
    assert [m["content"] for m in body["messages"]] == ["hi", "hello", "and now?"]
    assert body["temperature"] == 0.0
    assert body["stop"] == ["a", "b"]
    for key in ("seed", "max_tokens"):
        assert key not in body


def test_logprobs_off_and_top_logprobs_param(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """logprobs=False sends no logprobs fields; top_logprobs=N asks the double for N.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    bound = bind(server.base_url)
    plain = bound.llm.generate("x", logprobs=False)
    assert plain.tokens == []
    gen = bound.llm.generate("x", top_logprobs=2)
    default = bound.llm.generate("x")
    first, second, third = (p.body for p in server.posts)
    assert "logprobs" not in first and "top_logprobs" not in first
    assert (second["logprobs"], second["top_logprobs"]) == (True, 2)
    assert all(len(token.top) == 2 for token in gen.tokens) and gen.tokens
    # By default the one alternative the server must be asked for is dropped.
    assert (third["logprobs"], third["top_logprobs"]) == (True, 1)
    assert default.tokens and all(token.top == [] for token in default.tokens)
    assert [t.logprob for t in default.tokens] == [t.logprob for t in gen.tokens]


@pytest.mark.parametrize("api_key", [None, API_KEY], ids=["no-key", "key"])
def test_authorization_header_only_with_key(
    server: LoopbackServer, bind: Callable[..., Bound], api_key: str | None
) -> None:
    """The loopback protocol double sees ``Authorization: Bearer`` only when a key is set.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    bound = bind(server.base_url, api_key=api_key)
    bound.provider.ensure_available()
    bound.llm.generate("hi")
    assert len(server.requests) == 2
    for recorded in server.requests:
        if api_key is None:
            assert "authorization" not in recorded.headers
        else:
            assert recorded.headers["authorization"] == f"Bearer {api_key}"


def test_api_key_never_in_errors_or_generations(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """Against the loopback protocol double, the key is sent but never shown.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(
        stream(["ok"]),
        http_error(500, "boom"),
        http_error(401, "Incorrect API key provided."),
        cut_mid_chunk(),
        malformed("{bad"),
        error_event("nope"),
        stall(1),
    )
    bound = bind(server.base_url, api_key=API_KEY)
    texts = [bound.llm.generate("hi").model_dump_json()]
    for _ in range(5):
        texts.append(str(generate_error(bound)))
    stalled = bind(server.base_url, api_key=API_KEY, timeout_s=0.5)
    texts.append(str(generate_error(stalled)))
    dead = bind(f"http://127.0.0.1:{closed_port()}/v1", api_key=API_KEY)
    texts.append(str(generate_error(dead)))
    with pytest.raises(EndpointUnreachable) as info:
        dead.provider.ensure_available()
    texts.append(str(info.value))
    texts.extend(g.model_dump_json() for g in bound.records + stalled.records + dead.records)
    texts.extend([repr(bound.llm), bound.llm.endpoint])
    assert server.posts[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert len(texts) > 10
    for text in texts:
        assert API_KEY not in text
        assert "SECRET" not in text


def test_url_credentials_are_redacted(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """``user:password@`` in the base URL never reaches a message (loopback protocol double).

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(http_error(500, "boom"), cut_mid_chunk())
    bound = bind(f"http://alice:pw-h1dden@127.0.0.1:{server.port}/v1")
    assert bound.llm.endpoint == server.base_url
    messages = [str(generate_error(bound)), str(generate_error(bound))]
    port = closed_port()
    dead = bind(f"http://alice:pw-h1dden@127.0.0.1:{port}/v1")
    with pytest.raises(EndpointUnreachable) as info:
        dead.provider.ensure_available()
    messages.append(str(info.value))
    assert messages[0] == f"HTTP 500 from {server.base_url} for {DISPLAY}: boom"
    assert (
        messages[2] == f"cannot reach http://127.0.0.1:{port}/v1 for {DISPLAY}: connection refused"
    )
    for message in messages:
        assert "pw-h1dden" not in message and "alice" not in message


# -- stopping early -------------------------------------------------------------------


def test_break_then_generation_cancels(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """``break`` after the first chunk, then ``.generation``: cancelled, and the loopback
    protocol double sees the connection close.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(until_disconnect(("Hello",)))
    bound = bind(server.base_url)
    stream_ = bound.llm.stream("hi")
    for text in stream_:
        assert text == "Hello"
        break
    assert not server.disconnected.is_set()
    gen = stream_.generation
    assert gen.finish_reason == "cancelled"
    assert gen.text == "Hello"
    assert server.disconnected.wait(2.0), "the server never saw the client leave"
    assert bound.records == [gen]
    assert stream_.generation is gen  # idempotent
    assert list(stream_) == []


def test_stream_context_manager_and_llm_close_cancel(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """Leaving ``with llm.stream(...)``, or `LLM.close` at teardown, drops the connection
    to the loopback protocol double and records a cancelled generation.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    server.play(until_disconnect(("one",)))
    bound = bind(server.base_url)
    with bound.llm.stream("hi") as stream_:
        assert next(iter(stream_)) == "one"
    assert server.disconnected.wait(2.0)
    assert stream_.generation.finish_reason == "cancelled"

    server.disconnected.clear()
    server.play(until_disconnect(("two",)))
    left_open = bound.llm.stream("hi")
    assert next(iter(left_open)) == "two"
    bound.llm.close()
    assert server.disconnected.wait(2.0)
    assert [(g.text, g.finish_reason) for g in bound.records] == [
        ("one", "cancelled"),
        ("two", "cancelled"),
    ]


# -- what a pytest user sees (pytester, plugin from its entry point) -----------------

#: Plugins the inner runs do not need: hypothesis alone costs ~1.5 s of import per run.
INNER_ARGS = (
    "-p",
    "no:cacheprovider",
    "-p",
    "no:hypothesispytest",
    "-p",
    "no:anyio",
    "-p",
    "no:xdist",
)

USER_TEST = """
def test_one(llm):
    llm.generate("hello")
"""


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray LLMLAB_* / provider settings from the outer environment."""
    import os

    for name in list(os.environ):
        if (name.startswith("LLMLAB_") and name != "LLMLAB_HOME") or name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    # No idle-power baseline before the first generation: it only slows these runs down.
    monkeypatch.setenv("LLMLAB_BASELINE_S", "0")


def _section(output: str, title: str) -> list[str]:
    """The lines of one ``=== title ===`` section of pytest's terminal output."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^=+ {title} =+$", line))
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(r"^=+ .* =+$", lines[i])), len(lines)
    )
    return lines[start + 1 : end]


def test_user_sees_unreachable_endpoint_as_setup_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No loopback double at all: a closed port errors the test at setup, in one line.

    No real server is involved: nothing listens, or nothing is contacted.
    """
    _clean_env(monkeypatch)
    port = closed_port()
    monkeypatch.setenv("LLMLAB_LMSTUDIO_BASE_URL", f"http://127.0.0.1:{port}/v1")
    pytester.makepyfile(USER_TEST)
    result = pytester.runpytest_subprocess(
        "--llm-models=lmstudio:granite-3.0-2b", *INNER_ARGS, timeout=60
    )
    result.assert_outcomes(errors=1)
    message = (
        f"cannot reach http://127.0.0.1:{port}/v1 for lmstudio:granite-3.0-2b: connection refused"
    )
    errors = _section(result.stdout.str(), "ERRORS")
    assert any("ERROR at setup of test_one[lmstudio:granite-3.0-2b-T0]" in line for line in errors)
    assert [line for line in errors if message in line] == [message]
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output
    assert "httpx" not in output
    assert len([line for line in errors if line.strip() and not line.startswith("_")]) == 1


def test_user_can_skip_unavailable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No loopback double at all: ``--llm-skip-unavailable`` turns the error into a skip.

    No real server is involved: nothing listens, or nothing is contacted.
    """
    _clean_env(monkeypatch)
    port = closed_port()
    pytester.makepyfile(USER_TEST)
    result = pytester.runpytest_subprocess(
        "--llm-models=lmstudio:granite-3.0-2b",
        "-o",
        f"llm_lmstudio_base_url=http://127.0.0.1:{port}/v1",
        "--llm-skip-unavailable",
        "-rs",
        *INNER_ARGS,
        timeout=60,
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            (
                f"SKIPPED * model unavailable: cannot reach http://127.0.0.1:{port}/v1 "
                "for lmstudio:granite-3.0-2b: connection refused"
            )
        ]
    )


def test_user_sees_missing_openai_key(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """openai: with the default cloud URL and no OPENAI_API_KEY: a setup error naming it.

    No loopback double is needed: the key is checked before any connection.

    No real server is involved: nothing listens, or nothing is contacted.
    """
    _clean_env(monkeypatch)
    pytester.makepyfile(USER_TEST)
    result = pytester.runpytest_subprocess(
        "--llm-models=openai:gpt-4o-mini", *INNER_ARGS, timeout=60
    )
    result.assert_outcomes(errors=1)
    errors = _section(result.stdout.str(), "ERRORS")
    assert (
        "openai:gpt-4o-mini needs an API key: set OPENAI_API_KEY (endpoint https://api.openai.com/v1)"
        in errors
    )
    assert "Traceback" not in result.stdout.str()


def test_user_sees_http_500_as_failure_and_session_goes_on(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, server: LoopbackServer
) -> None:
    """The loopback protocol double answers 500 to the first test and streams to the
    second: one failure with status and message, no httpx frames, then a pass.

    The server here is a protocol double of the OpenAI streaming format, not a real server.
    """
    _clean_env(monkeypatch)
    monkeypatch.setenv("LLMLAB_VLLM_BASE_URL", server.base_url)
    server.play(http_error(500, "backend exploded"), stream(["fine"]))
    pytester.makepyfile(
        """
        def test_first(llm):
            llm.generate("hello")

        def test_second(llm):
            assert llm.generate("hello").text == "fine"
        """
    )
    result = pytester.runpytest_subprocess(
        "--llm-models=vllm:tiny", "--llm-timeout=10", *INNER_ARGS, timeout=60
    )
    result.assert_outcomes(failed=1, passed=1)
    failures = _section(result.stdout.str(), "FAILURES")
    text = "\n".join(failures)
    assert (
        f"HTTPStatusError: HTTP 500 from {server.base_url} for vllm:tiny: backend exploded" in text
    )
    assert 'llm.generate("hello")' in text
    assert not [line for line in failures if "httpx" in line]
    assert "pytest_llmlab/" not in text  # the plugin's own frames are hidden too
    assert "Traceback" not in text
    assert [p.path for p in server.posts] == ["/v1/chat/completions"] * 2

    records = [
        json.loads(line)
        for line in (pytester.path / "reports" / "results.jsonl").read_text().splitlines()
    ]
    assert [(r["test_id"].split("::")[1], r["outcome"], r["finish_reason"]) for r in records] == [
        ("test_first[vllm:tiny-T0]", "failed", "error"),
        ("test_second[vllm:tiny-T0]", "passed", "stop"),
    ]
    assert "backend exploded" in records[0]["error"]


def test_key_echoed_by_the_server_is_masked(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """A server that repeats the key in its error text (some do, in 401s) never gets it
    into our messages or records (loopback protocol double of the OpenAI format)."""
    server.play(
        http_error(401, f"Incorrect API key provided: {API_KEY}"),
        error_event(f"key {API_KEY} revoked"),
    )
    bound = bind(server.base_url, api_key=API_KEY)
    first = str(generate_error(bound))
    second = str(generate_error(bound))
    assert first.endswith("Incorrect API key provided: ***")
    assert second.endswith("key *** revoked")
    for record in bound.records:
        assert API_KEY not in record.model_dump_json()
