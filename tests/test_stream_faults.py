"""Streams that never finish, servers that never answer, huge lines, chunks of the
wrong shape, answers that are not streams, and the bytes of a stream (BOM, charset).

The server in these tests (`tests/loopback.py`) is a protocol double of the OpenAI
chat-completions streaming format -- NOT a real model server and NOT OpenAI: it plays
scripted wire behaviours on 127.0.0.1. Requests go through `OpenAICompatible` and `LLM`
as in a user's test; the pytester tests run pytest itself to show what a user sees.
Every server loop here is bounded in count and time (`STALL_LIMIT_S` at most).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from clients import DISPLAY, Binder, Bound, generate_error

# tests/ has no __init__.py: pytest puts it on sys.path, so the helper imports as `loopback`.
from loopback import (
    LoopbackServer,
    Script,
    keep_alive,
    malformed,
    point_vllm_at,
    raw,
    redirect,
    serve_loopback,
    stall,
)

from pytest_llmlab.config import SettingsError, build_settings
from pytest_llmlab.errors import (
    EndpointUnreachable,
    GenerationTimeout,
    HTTPStatusError,
    StreamError,
)
from pytest_llmlab.llm import LLM
from pytest_llmlab.models import sse
from pytest_llmlab.models.assemble import GenerationAssembler, chunk_problem
from pytest_llmlab.models.base import Generation, Request
from pytest_llmlab.models.openai import OpenAICompatible, auto_deadline_s
from pytest_llmlab.models.spec import ModelSpec


@pytest.fixture
def bind() -> Iterator[Callable[..., Bound]]:
    """`Binder` of `LLM`s without a deadline unless a test gives one; closed at teardown."""
    with Binder() as binder:

        def make(base_url: str, **kwargs: Any) -> Bound:
            return binder(base_url, **{"deadline_s": 0, **kwargs})

        yield make


def sse_body(*payloads: dict[str, Any] | str) -> bytes:
    """``data:`` events of these payloads (dicts as JSON), each ended by a blank line."""
    parts = [p if isinstance(p, str) else json.dumps(p) for p in payloads]
    return "".join(f"data: {p}\n\n" for p in parts).encode()


def content_chunk(text: str, finish_reason: str | None = None) -> dict[str, Any]:
    """A documented ``chat.completion.chunk`` carrying `text`."""
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "test-model",
        "choices": [
            {"index": 0, "delta": {"content": text}, "logprobs": None,
             "finish_reason": finish_reason}
        ],
    }  # fmt: skip


# == 6. a stream that never ends: the deadline per generation ==========================


def test_keep_alive_stream_fails_at_the_deadline(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """The loopback double sends ``: keep-alive`` every 0.1 s: each read is fast, so only
    the deadline ends it: GenerationTimeout naming model, endpoint and the deadline.

    The 5 s bound is a hang guard, not a speed target.
    """
    server.play(keep_alive(0.1, count=50))
    bound = bind(server.base_url, timeout_s=2.0, deadline_s=0.6)
    started = time.monotonic()
    error = generate_error(bound)
    elapsed = time.monotonic() - started
    assert isinstance(error, GenerationTimeout)
    assert str(error) == (
        f"generation from {server.base_url} for {DISPLAY} did not finish within its 0.6 s "
        "deadline (--llm-deadline) after 0 chunks"
    )
    assert 0.5 <= elapsed < 5.0
    [record] = bound.records
    assert (record.finish_reason, record.error) == ("error", str(error))


def test_deadline_keeps_the_text_that_arrived(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """Tokens, then keep-alives from the loopback double: the record keeps the text."""
    server.play(keep_alive(0.1, count=50, tokens=("Hel", "lo")))
    bound = bind(server.base_url, timeout_s=2.0, deadline_s=0.5)
    error = generate_error(bound)
    assert isinstance(error, GenerationTimeout)
    assert str(error).endswith("deadline (--llm-deadline) after 2 chunks")
    assert [(g.text, g.finish_reason) for g in bound.records] == [("Hello", "error")]


def test_silent_stream_meets_a_deadline_shorter_than_the_timeout(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """The loopback double reads the request and sends nothing: with a deadline below
    the timeout, no read outlasts the deadline (hang guard 4 s, timeout 30 s)."""
    server.play(stall())
    bound = bind(server.base_url, timeout_s=30.0, deadline_s=0.5)
    started = time.monotonic()
    error = generate_error(bound)
    assert time.monotonic() - started < 4.0
    assert isinstance(error, GenerationTimeout)
    assert "within its 0.5 s deadline (--llm-deadline)" in str(error)


def test_auto_deadline_from_timeout_and_max_tokens(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """``auto`` (deadline None): timeout 0.4 s + 0.5 s x max_tokens 1 = 0.9 s, and the
    message says how it was derived (loopback double sending keep-alives)."""
    server.play(keep_alive(0.1, count=50))
    bound = bind(server.base_url, timeout_s=0.4, deadline_s=None)
    error = generate_error(bound, max_tokens=1)
    assert isinstance(error, GenerationTimeout)
    assert str(error) == (
        f"generation from {server.base_url} for {DISPLAY} did not finish within its 0.9 s "
        "deadline (--llm-deadline=auto: --llm-timeout + 0.5 s x 1 max_tokens) after 0 chunks"
    )


def test_auto_deadline_formula() -> None:
    """timeout + 0.5 s per max_tokens token (2048 unset), the token part at most 3600 s."""
    assert auto_deadline_s(120, None) == 120 + 1024
    assert auto_deadline_s(120, 16) == 128
    assert auto_deadline_s(5, 0) == 5
    assert auto_deadline_s(5, 1_000_000) == 5 + 3600
    provider = OpenAICompatible(model="m", display=DISPLAY, base_url="http://127.0.0.1:9/v1")
    request = Request(messages=[], temperature=0, max_tokens=8)
    assert provider.deadline_for(request) == (
        124.0,
        "--llm-deadline=auto: --llm-timeout + 0.5 s x 8 max_tokens",
    )
    provider.close()


def test_deadline_zero_disables_it(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """``0``: no deadline; keep-alives for 0.5 s, then the loopback double ends the body
    without [DONE]: a StreamError saying what was received instead of events."""
    server.play(keep_alive(0.05, count=10))
    bound = bind(server.base_url, timeout_s=2.0, deadline_s=0)
    error = generate_error(bound)
    assert isinstance(error, StreamError)
    comments = ": keep-alive\n\n" * 10
    assert str(error) == (
        f"stream from {server.base_url} for {DISPLAY} ended before [DONE] after 0 chunks: "
        f"no event in its {len(comments)} bytes, which begin {comments[:100]!r}"
    )


@pytest.mark.parametrize(
    ("raw_value", "expected"),
    [("auto", None), ("0", 0.0), ("off", 0.0), ("none", 0.0), ("12.5", 12.5)],
)
def test_deadline_option_values(raw_value: str, expected: float | None) -> None:
    """``--llm-deadline`` / ``llm_deadline`` / ``LLMLAB_DEADLINE``: auto, 0 (none), seconds."""
    for source in ({"cli": {"llm_deadline": raw_value}, "ini": {}, "env": {}},
                   {"cli": {}, "ini": {"llm_deadline": raw_value}, "env": {}},
                   {"cli": {}, "ini": {}, "env": {"LLMLAB_DEADLINE": raw_value}}):  # fmt: skip
        assert build_settings(**source).deadline == expected  # type: ignore[arg-type]
    assert build_settings(cli={}, ini={}, env={}).deadline is None  # default auto
    with pytest.raises(SettingsError, match="env LLMLAB_DEADLINE: '-1' is not a number"):
        build_settings(cli={}, ini={}, env={"LLMLAB_DEADLINE": "-1"})


# == 7. a server that accepts connections and never answers ============================


def test_silent_server_is_unavailable_once(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """The loopback double accepts and never answers: the probe's read timeout marks the
    model unreachable once, with a one-line reason; the verdict is cached."""
    server.silent = True
    bound = bind(server.base_url, timeout_s=0.5)
    with pytest.raises(EndpointUnreachable) as first:
        bound.provider.ensure_available()
    assert str(first.value) == (
        f"no answer from {server.base_url} for {DISPLAY}: it accepted the connection but "
        "sent nothing within 0.5 s (--llm-timeout)"
    )
    with pytest.raises(EndpointUnreachable) as second:
        bound.provider.ensure_available()
    assert second.value is first.value
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/v1/models")]


# == 8. one huge line: linear time, and a size limit per event =========================


def _one_line_chunks(size: int, chunk: int = 65536) -> list[str]:
    text = "data: " + "x" * size + "\n\n"
    return [text[i : i + chunk] for i in range(0, len(text), chunk)]


def test_huge_line_is_scanned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Complexity, counted not timed: splitting a 16 MB line that arrives in 64 KiB
    pieces looks at each character once (re-scanning what is pending would look at
    ~2 billion)."""
    scanned = 0
    split = sse._split

    def counting(text: str) -> list[str]:
        nonlocal scanned
        scanned += len(text)
        return split(text)

    monkeypatch.setattr(sse, "_split", counting)
    chunks = _one_line_chunks(16_000_000)
    lines = list(sse.iter_lines(chunks))
    assert [len(line) for line in lines] == [16_000_006, 0]
    assert 0 < scanned <= sum(map(len, chunks))


def test_huge_line_parse_time_grows_linearly() -> None:
    """8x the line takes well under 64x the time (a quadratic parser's ratio): best of 3
    runs each, a generous bound, so machine noise cannot fail it."""

    def best(size: int) -> float:
        chunks = _one_line_chunks(size)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            [event] = sse.iter_events(sse.iter_lines(chunks))
            times.append(time.perf_counter() - started)
            assert len(event.data) == size
        return min(times)

    small, large = best(2_000_000), best(16_000_000)
    assert large < 30 * max(small, 1e-4)


def test_parser_limits_one_event_and_one_line() -> None:
    """More than ``max_size`` characters in one event's data, or in one line, raise
    ValueError with the reason; exactly the limit is fine."""
    assert [e.data for e in sse.iter_events(["data: 12345", "data: 1234", ""], max_size=10)] == [
        "12345\n1234"
    ]
    with pytest.raises(ValueError, match=r"^an event larger than 10 characters"):
        list(sse.iter_events(["data: 12345", "data: 12345", ""], max_size=10))
    assert list(sse.iter_lines(["x" * 6, "x" * 4, "\n"], max_size=10)) == ["x" * 10]
    with pytest.raises(ValueError, match=r"^an event larger than 10 characters"):
        list(sse.iter_lines(["x" * 6, "x" * 5], max_size=10))
    with pytest.raises(ValueError, match=r"^an event larger than 10 characters"):
        list(sse.iter_lines(["x" * 11 + "\n"], max_size=10))
    assert sse.MAX_EVENT_SIZE == 16 * 1024 * 1024


def test_event_over_the_limit_is_a_stream_error(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """The loopback double sends one event line of 16 MiB + 1 characters: StreamError
    naming the limit, not a client buffering without bound."""
    server.play(raw(b"data: " + b"x" * (sse.MAX_EVENT_SIZE + 1) + b"\n\n"))
    bound = bind(server.base_url)
    error = generate_error(bound)
    assert isinstance(error, StreamError)
    assert str(error) == (
        f"stream from {server.base_url} for {DISPLAY} failed after 0 chunks: "
        "an event larger than 16 MiB (the limit per event)"
    )
    assert bound.records[0].finish_reason == "error"


def test_big_event_under_the_limit_streams(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """A 4 MB token in one chunk from the loopback double arrives whole."""
    big = "y" * 4_000_000
    server.play(raw(sse_body(content_chunk(big), content_chunk("", "stop"), "[DONE]")))
    gen = bind(server.base_url).llm.generate("x")
    assert (len(gen.text), gen.finish_reason) == (4_000_000, "stop")


# == 9. chunks of the wrong shape ======================================================

BAD_CHUNKS = [
    ('{"choices": [{"index": 0, "delta": "oops"}]}', "choices[0].delta is a string, not an object"),
    ('{"choices": 5}', "choices is a number, not an array"),
    ('{"choices": ["x"]}', "choices[0] is a string, not an object"),
    ("5", "the chunk is a number, not an object"),
    ('["a", "b"]', "the chunk is an array, not an object"),
    ('"text"', "the chunk is a string, not an object"),
    ("null", "the chunk is null, not an object"),
    ('{"choices": [{"delta": {"content": 7}}]}', "choices[0].delta.content is a number, not a string"),
    ('{"choices": [{"delta": {}, "finish_reason": 1}]}', "choices[0].finish_reason is a number, not a string"),
    ('{"choices": [{"index": "0", "delta": {}}]}', "choices[0].index is a string, not an integer"),
    ('{"choices": [{"delta": {}, "logprobs": "x"}]}', "choices[0].logprobs is a string, not an object"),
    ('{"choices": [{"delta": {}, "logprobs": {"content": 3}}]}', "choices[0].logprobs.content is a number, not an array"),
    ('{"choices": [], "usage": "many"}', "usage is a string, not an object"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "problem"), BAD_CHUNKS, ids=[p for _, p in BAD_CHUNKS])
def test_malformed_chunk_is_a_stream_error(
    server: LoopbackServer, bind: Callable[..., Bound], bad: str, problem: str
) -> None:
    """After one good chunk the loopback double sends a chunk of the wrong shape: a
    StreamError naming model, endpoint, the field and the chunk; recorded as an error
    with the text that had arrived."""
    server.play(malformed(bad))
    bound = bind(server.base_url)
    error = generate_error(bound)
    assert isinstance(error, StreamError)
    assert str(error) == (
        f"malformed chunk in stream from {server.base_url} for {DISPLAY} after 1 chunks: "
        f"{problem}: {bad!r}"
    )
    [record] = bound.records
    assert (record.finish_reason, record.error, record.text) == ("error", str(error), "Hel")


def test_malformed_chunk_is_quoted_cut() -> None:
    """A long bad chunk is quoted to 200 characters, never more."""
    bad = '{"choices": [{"delta": "' + "z" * 10_000 + '"}]}'
    with serve_loopback() as server:
        server.play(malformed(bad))
        provider = OpenAICompatible(model="m", display=DISPLAY, base_url=server.base_url)
        handle = provider.stream_chunks(Request(messages=[], temperature=0))
        with pytest.raises(StreamError) as info:
            list(handle)
        provider.close()
    message = str(info.value)
    assert message.endswith(repr(bad[:200]))
    assert len(message) < 400


def test_assembler_rejects_wrong_shapes_with_value_error() -> None:
    """The assembler takes nothing from a bad chunk: ValueError naming the field."""
    for bad, problem in BAD_CHUNKS:
        chunk = json.loads(bad)
        assert chunk_problem(chunk) == problem
        if not isinstance(chunk, dict):
            continue
        assembler = GenerationAssembler(
            request=Request(messages=[], temperature=0), model="m", spec="p:m", provider="p"
        )
        with pytest.raises(ValueError, match=re.escape(problem)):
            assembler.add(chunk)
    assert chunk_problem(content_chunk("fine")) is None
    assert chunk_problem({"choices": [{"delta": None, "logprobs": None}], "usage": None}) is None


class _ListProvider:
    """A provider whose stream is a fixed list of chunks, then (maybe) an exception."""

    endpoint = "http://example.invalid/v1"
    runs_locally = False

    def __init__(self, chunks: list[Any], then: Exception | None = None) -> None:
        self.chunks, self.then = chunks, then

    def ensure_available(self) -> None:
        pass

    def stream_chunks(self, request: Request) -> _ListHandle:
        return _ListHandle(self.chunks, self.then)

    def close(self) -> None:
        pass


class _ListHandle:
    def __init__(self, chunks: list[Any], then: Exception | None) -> None:
        self.chunks, self.then = chunks, then

    def __iter__(self) -> Iterator[Any]:
        yield from self.chunks
        if self.then is not None:
            raise self.then

    def close(self) -> None:
        pass


def _llm(provider: _ListProvider, records: list[Generation]) -> LLM:
    return LLM(
        model_spec=ModelSpec("vllm", "test-model"),
        temperature=0.0,
        provider=provider,
        recorder=records.append,
    )


def test_bad_chunk_from_any_provider_is_a_stream_error() -> None:
    """A provider that does not check chunks (a list here, no server) still gets a
    StreamError naming endpoint and model from `LLM`, and a recorded error."""
    records: list[Generation] = []
    provider = _ListProvider([content_chunk("Hi"), {"choices": [{"delta": "oops"}]}])
    with pytest.raises(StreamError) as info:
        _llm(provider, records).generate("x")
    assert str(info.value).startswith(
        "malformed chunk in stream from http://example.invalid/v1 for vllm:test-model after 1 "
        'chunks: choices[0].delta is a string, not an object: \'{"choices"'
    )
    assert [(g.text, g.finish_reason, g.error) for g in records] == [
        ("Hi", "error", str(info.value))
    ]


def test_unexpected_exception_is_recorded_as_an_error_not_cancelled() -> None:
    """A bug inside a stream keeps its own exception and traceback, and the record says
    ``error`` with its text (not ``cancelled`` without one)."""
    records: list[Generation] = []
    provider = _ListProvider([content_chunk("Hi")], then=RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        _llm(provider, records).generate("x")
    assert [(g.text, g.finish_reason, g.error) for g in records] == [
        ("Hi", "error", "RuntimeError: boom")
    ]


# == 10. no choices at all, redirects, HTML served as an event stream ==================


def test_only_empty_choices_is_an_error(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """Usage-only chunks (``choices: []``) then [DONE] from the loopback double: no
    answer and no finish reason is an error, not an empty pass."""
    usage = {"id": "c", "object": "chat.completion.chunk", "choices": [],
             "usage": {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}}  # fmt: skip
    server.play(raw(sse_body(usage, usage, "[DONE]")))
    bound = bind(server.base_url)
    error = generate_error(bound)
    assert isinstance(error, StreamError)
    assert str(error) == (
        f"stream from {server.base_url} for {DISPLAY} sent [DONE] after 2 chunks without a "
        "single choice: no answer and no finish reason"
    )
    assert bound.records[0].finish_reason == "error"


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("http://bob:pw-h1dden@127.0.0.1:9/v2/chat/completions", "http://127.0.0.1:9/v2/chat/completions"),
        ("/v2/chat/completions", "http://127.0.0.1:{port}/v2/chat/completions"),
        ("", "nowhere (no Location header)"),
    ],
    ids=["absolute-with-userinfo", "relative", "none"],
)  # fmt: skip
def test_redirect_says_where_to(
    server: LoopbackServer, bind: Callable[..., Bound], location: str, shown: str
) -> None:
    """A 307 from the loopback double: the message says it was redirected and where to
    (absolute, without ``user:password@``), instead of "no content type"."""
    server.play(redirect(307, location))
    error = generate_error(bind(server.base_url))
    assert isinstance(error, HTTPStatusError)
    assert error.status_code == 307
    assert str(error) == (
        f"HTTP 307 from {server.base_url} for {DISPLAY}: redirected to "
        f"{shown.format(port=server.port)} (redirects are not followed: set the base URL "
        "to the new address)"
    )
    assert "pw-h1dden" not in str(error) and "bob" not in str(error)


def test_html_as_event_stream_shows_what_came(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """An HTML page served as ``text/event-stream`` (a proxy's error page): the message
    quotes its first bytes, escaped (no raw escape sequence) and cut."""
    page = b"<!DOCTYPE html>\n<html><body>\x1b[31mBad gateway\x1b[0m" + b" " * 4000 + b"</html>\n"
    server.play(raw(page, "text/event-stream"))
    error = generate_error(bind(server.base_url))
    assert isinstance(error, StreamError)
    head = page[:100].decode()
    assert str(error) == (
        f"stream from {server.base_url} for {DISPLAY} ended before [DONE] after 0 chunks: "
        f"no event in its {len(page)} bytes, which begin {head!r}"
    )
    assert "\x1b" not in str(error) and "\\x1b[31m" in str(error)


def test_empty_event_stream_says_so(server: LoopbackServer, bind: Callable[..., Bound]) -> None:
    """An event stream with an empty body from the loopback double."""
    server.play(raw(b""))
    assert str(generate_error(bind(server.base_url))).endswith(
        "ended before [DONE] after 0 chunks: the body was empty"
    )


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [("text/event-stream;", True), ("TEXT/EVENT-STREAM; charset=utf-8", True),
     ("text/x-bogus", False), ("x bogus", False), ("application/x-text/event-stream", False)],
)  # fmt: skip
def test_content_type_is_the_mime_essence(
    server: LoopbackServer, bind: Callable[..., Bound], content_type: str, ok: bool
) -> None:
    """Mirrors WPT format-mime-*: the type before parameters, any case, decides."""
    server.play(raw(sse_body(content_chunk("ok", "stop"), "[DONE]"), content_type))
    bound = bind(server.base_url)
    if ok:
        assert bound.llm.generate("x").text == "ok"
    else:
        error = generate_error(bound)
        assert isinstance(error, StreamError)
        assert str(error) == (
            f"{server.base_url} for {DISPLAY} answered {content_type} instead of an event "
            "stream (does it support stream=true?)"
        )


# == 11. the bytes of a stream: BOM, UTF-8 whatever the charset, cut anywhere ===========


def test_bom_and_claimed_charset_do_not_change_the_text(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """The loopback double sends a BOM, then chunks with ``…`` and an invalid byte, one
    byte per network write, under ``charset=windows-1252``: the first event is kept, the
    text is UTF-8, the invalid byte is U+FFFD."""
    body = (
        b"\xef\xbb\xbf"
        + sse_body(content_chunk("ok\u2026"))
        + (
            b'data: {"choices": [{"index": 0, "delta": {"content": " \xff"}, "finish_reason": "stop"}]}'
            b"\n\ndata: [DONE]\n\n"
        )
    )
    server.play(raw(body, "text/event-stream; charset=windows-1252", piece_bytes=1))
    gen = bind(server.base_url).llm.generate("x")
    assert (gen.text, gen.finish_reason) == ("ok\u2026 \ufffd", "stop")


def test_done_without_the_final_blank_line_still_finishes(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """A server that closes right after ``data: [DONE]`` (no blank line): finished; but a
    JSON chunk the stream ends inside is not taken, and the stream was cut."""
    server.play(
        raw(sse_body(content_chunk("Hi", "stop")) + b"data: [DONE]"),
        raw(sse_body(content_chunk("Hi")) + b'data: {"choices": [{"delta": {"content": "!"}}]}'),
    )
    bound = bind(server.base_url)
    assert bound.llm.generate("x").text == "Hi"
    error = generate_error(bound)
    assert str(error) == (
        f"stream from {server.base_url} for {DISPLAY} ended before [DONE] after 1 chunks"
    )
    assert bound.records[-1].text == "Hi"


# == what a pytest user sees ===========================================================

INNER_ARGS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio",
              "-p", "no:xdist")  # fmt: skip


def _clean_env(monkeypatch: pytest.MonkeyPatch, server: LoopbackServer) -> None:
    """No stray LLMLAB_* / provider settings; vllm: points at the loopback double."""
    point_vllm_at(monkeypatch, server)


def _records(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    lines = (pytester.path / "reports" / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("script", "option", "message"),
    [
        (keep_alive(0.1, count=80), "--llm-deadline=1",
         ("GenerationTimeout: generation from {url} for vllm:tiny did not finish within its "
          "1 s deadline (--llm-deadline) after 0 chunks")),
        (malformed('{"choices": [{"index": 0, "delta": "oops"}]}'), "--llm-deadline=auto",
         ("StreamError: malformed chunk in stream from {url} for vllm:tiny after 1 chunks: "
          "choices[0].delta is a string, not an object: "
          "'{\"choices\": [{\"index\": 0, \"delta\": \"oops\"}]}'")),
    ],
    ids=["keep-alive-forever", "wrong-shape"],
)  # fmt: skip
def test_user_sees_one_line_and_a_recorded_error(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    server: LoopbackServer,
    script: Script,
    option: str,
    message: str,
) -> None:
    """A stream that never finishes, and a chunk of the wrong shape (loopback double):
    the test fails with one line naming model and endpoint, no library frames, and
    results.jsonl records ``finish_reason: "error"`` with the message."""
    _clean_env(monkeypatch, server)
    server.play(script)
    pytester.makepyfile('def test_one(llm):\n    llm.generate("hello")\n')
    result = pytester.runpytest_subprocess(
        "--llm-models=vllm:tiny", "--llm-timeout=5", option, *INNER_ARGS, timeout=60
    )
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    expected = message.replace("{url}", server.base_url)
    [line] = [line for line in output.splitlines() if line.startswith("E ")]
    assert line.endswith(f"pytest_llmlab.errors.{expected}")
    assert "AttributeError" not in output and "pytest_llmlab/" not in output
    assert "Traceback" not in output
    [record] = _records(pytester)
    assert (record["outcome"], record["finish_reason"]) == ("failed", "error")
    assert record["error"] == expected.split(": ", 1)[1]


@pytest.mark.parametrize("skip", [False, True], ids=["errors", "skips"])
def test_user_sees_a_silent_server_probed_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, server: LoopbackServer, skip: bool
) -> None:
    """A loopback double that accepts connections and never answers, three tests, a
    1 s timeout: one probe (one request ever reaches the server), the three tests
    error (or skip) with the same reason, and their setups take one timeout in all."""
    _clean_env(monkeypatch, server)
    server.silent = True
    pytester.makepyfile(
        "import pytest\n\n@pytest.mark.parametrize('n', [1, 2, 3])\n"
        "def test_one(llm, n):\n    llm.generate('hello')\n"
    )
    result = pytester.runpytest_subprocess(
        "--llm-models=vllm:tiny", "--llm-timeout=1", "--durations=0", "--durations-min=0",
        "-rs", *(["--llm-skip-unavailable"] if skip else []), *INNER_ARGS, timeout=60,
    )  # fmt: skip
    reason = (
        f"no answer from {server.base_url} for vllm:tiny: it accepted the connection but "
        "sent nothing within 1 s (--llm-timeout)"
    )
    output = result.stdout.str()
    if skip:
        result.assert_outcomes(skipped=3)
        assert (
            f"SKIPPED [3] test_user_sees_a_silent_server_probed_once.py:3: model unavailable: {reason}"
            in output
        )
    else:
        result.assert_outcomes(errors=3)
        assert len([line for line in output.splitlines() if line == reason]) == 3
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/v1/models")]
    setups = [float(s) for s in re.findall(r"^([\d.]+)s setup ", output, flags=re.MULTILINE)]
    assert len(setups) == 3
    assert 0.9 <= sum(setups) < 1.9  # one timeout, not three
