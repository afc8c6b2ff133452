"""The ``anthropic:`` provider against a loopback double of the Messages API.

The double (`anthropic_double`) follows Anthropic's "Streaming Messages" document
(https://platform.claude.com/docs/en/build-with-claude/streaming) and its "Errors"
document; the example streams are those of Anthropic's own Python client
(``anthropics/anthropic-sdk-python``, copied into ``tests/anthropic_streams/``:
``basic_response.txt``, ``tool_use_response.txt``,
``incomplete_partial_json_response.txt``, and ``stream-a-refusal.sse`` for thinking).
Every generation runs through `pytest_llmlab.llm.LLM`, as a test's ``llm`` does.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from anthropic_double import (
    MODEL,
    AnthropicDouble,
    Reply,
    cut,
    cut_mid_event,
    error_after,
    events_reply,
    fixture,
    http_error,
    message_start,
    serve_anthropic,
    text_events,
    text_stream,
    thinking_stream,
    tool_use_stream,
)
from hypothesis import given
from hypothesis import strategies as st
from loopback import closed_port

from pytest_llmlab.errors import (
    EndpointUnreachable,
    HTTPStatusError,
    MissingAPIKey,
    StreamError,
)
from pytest_llmlab.expect import ExpectationFailed, collecting, expect
from pytest_llmlab.llm import LLM
from pytest_llmlab.models.anthropic import (
    ANTHROPIC_BASE_URL,
    DEFAULT_MAX_TOKENS,
    AnthropicProvider,
    MessageStreamTranslator,
)
from pytest_llmlab.models.assemble import GenerationAssembler
from pytest_llmlab.models.base import Message, Request
from pytest_llmlab.models.retry import RetryPolicy
from pytest_llmlab.models.spec import ModelSpec

KEY = "fake-anthropic-loopback-key-0123"
DISPLAY = f"anthropic:{MODEL}"


@pytest.fixture
def double() -> Iterator[AnthropicDouble]:
    with serve_anthropic(api_key=KEY) as server:
        yield server


def provider(double: AnthropicDouble, retries: int = 0, key: str | None = KEY) -> AnthropicProvider:
    return AnthropicProvider(
        model=MODEL,
        display=DISPLAY,
        base_url=double.base_url,
        api_key=key,
        retry=RetryPolicy(retries, base_delay_s=0.01),
        timeout_s=5.0,
    )


def model(double: AnthropicDouble, retries: int = 0, key: str | None = KEY) -> LLM:
    return LLM(
        model_spec=ModelSpec("anthropic", MODEL),
        temperature=0.0,
        provider=provider(double, retries, key),
    )


def generate(double: AnthropicDouble, *replies: Reply, **kwargs: Any) -> Any:
    double.play(*replies)
    return model(double).generate("hi", **kwargs)


# -- the documented example streams ------------------------------------------------------


def test_the_basic_example_stream(double: AnthropicDouble) -> None:
    gen = generate(double, fixture("basic_response.txt"))
    assert (gen.text, gen.reasoning, gen.finish_reason) == ("Hello there!", "", "stop")
    assert (gen.usage.prompt_tokens, gen.usage.completion_tokens) == (11, 6)
    assert gen.usage.reported and gen.tokens == [] and gen.tool_calls == []
    assert gen.usage.cached_prompt_tokens is None  # this example does not say


def test_the_tool_use_example_stream(double: AnthropicDouble) -> None:
    gen = generate(double, fixture("tool_use_response.txt"))
    assert gen.text == "I'll check the current weather in Paris for you."
    (call,) = gen.tool_calls
    assert (call.id, call.name) == ("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather")
    assert call.arguments == {"location": "Paris"} and call.error is None
    assert call.arguments_text == '{"location": "Paris"}'
    assert gen.finish_reason == "tool_calls"
    assert (gen.usage.prompt_tokens, gen.usage.completion_tokens) == (377, 65)
    assert gen.usage.cached_prompt_tokens == 0


def test_the_example_stream_cut_by_max_tokens(double: AnthropicDouble) -> None:
    gen = generate(double, fixture("incomplete_partial_json_response.txt"))
    assert gen.finish_reason == "length"
    (call,) = gen.tool_calls
    assert call.name == "make_file" and call.arguments is None
    assert call.error is not None and "cut off: finish reason 'length'" in call.error
    assert (gen.usage.prompt_tokens, gen.usage.completion_tokens) == (450, 124)


def test_the_thinking_example_stream(double: AnthropicDouble) -> None:
    gen = generate(double, fixture("thinking_refusal.sse"))
    assert gen.reasoning.startswith("Simple educational question")
    assert gen.reasoning.endswith("just roll with it politely.")
    assert gen.text == "Hi" and gen.finish_reason == "content_filter"  # stop_reason refusal
    assert (gen.usage.prompt_tokens, gen.usage.completion_tokens) == (28, 106)


def test_thinking_text_and_cached_prompt_tokens(double: AnthropicDouble) -> None:
    reply = thinking_stream(
        ("Paris is", " the capital."), ("Paris",), input_tokens=5, cache_read=95
    )
    gen = generate(double, reply)
    assert (gen.reasoning, gen.text) == ("Paris is the capital.", "Paris")
    # Anthropic's input_tokens leaves the cache reads out; our prompt_tokens holds both.
    assert (gen.usage.prompt_tokens, gen.usage.cached_prompt_tokens) == (100, 95)
    assert gen.usage.processed_prompt_tokens == 5


def test_text_streams_through_llm_stream(double: AnthropicDouble) -> None:
    double.play(text_stream(["Bon", "jour"]))
    with model(double).stream("hi") as stream:
        pieces = list(stream)
    assert pieces == ["Bon", "jour"] and stream.generation.text == "Bonjour"


def test_ttft_is_stamped_at_the_first_text_delta_not_at_message_start(
    double: AnthropicDouble,
) -> None:
    events = text_events(["Hi"])
    assert [name for name, _ in events[:3]] == ["message_start", "ping", "content_block_start"]
    gen = generate(double, events_reply(events, pauses={2: 0.4}))
    assert gen.text == "Hi"
    assert gen.timings.ttft_s is not None and gen.timings.ttft_s >= 0.4
    assert gen.timings.total_s - gen.timings.ttft_s < 0.3


def test_ttft_is_stamped_at_the_first_thinking_delta(double: AnthropicDouble) -> None:
    events = text_events(["Hi"], thoughts=("Hmm",))
    # message_start, ping, thinking start, thinking delta: pause before that delta.
    gen = generate(double, events_reply(events, pauses={3: 0.3, 6: 0.3}))
    assert gen.reasoning == "Hmm" and gen.timings.ttft_s is not None
    assert 0.3 <= gen.timings.ttft_s < 0.55  # not at the text, 0.3 s later


# -- tool calls ------------------------------------------------------------------------------

ZURICH = r'{"city": "Z\u00fcrich \"Altstadt\"", "days": 2}'
BACKSLASH = r'{"path": "C:\\temp\\new"}'


def test_tool_calls_assembled_from_fragments_split_mid_string_and_mid_escape(
    double: AnthropicDouble,
) -> None:
    # Cut inside a word, inside \u00fc, between a backslash and the quote it escapes,
    # and between the two backslashes of an escaped backslash.
    first = ['{"ci', 'ty": "Z\\u0', "0fcrich \\", '"Altstadt\\"", "da', 'ys": 2}']
    second = ['{"path": "C:\\', "\\temp\\", '\\new"}']
    assert "".join(first) == ZURICH and "".join(second) == BACKSLASH
    reply = tool_use_stream([("toolu_1", "weather", first), ("toolu_2", "open", second)])
    gen = generate(double, reply)
    assert gen.text == "Let me look." and gen.finish_reason == "tool_calls"
    weather, opened = gen.tool_calls
    assert (weather.id, weather.name, weather.arguments_text) == ("toolu_1", "weather", ZURICH)
    assert weather.arguments == {"city": 'Zürich "Altstadt"', "days": 2}
    assert (opened.id, opened.name) == ("toolu_2", "open")
    assert opened.arguments == {"path": "C:\\temp\\new"}
    assert weather.mean_prob is None  # no logprobs from Anthropic


def feed(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    translator = MessageStreamTranslator()
    return [chunk for name, data in events for chunk in translator.feed(name, data)]


def test_the_translation_of_tool_use_into_openai_deltas() -> None:
    """Without the assembler: what the chunks themselves carry."""
    reply = tool_use_stream([("toolu_9", "lookup", ['{"q"', ': "x"}'])], text=None)
    chunks = feed(list(reply.events))
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks[:-2]]
    assert calls == [
        [{"index": 0, "id": "toolu_9", "type": "function",
          "function": {"name": "lookup", "arguments": ""}}],
        [{"index": 0, "function": {"arguments": '{"q"'}}],
        [{"index": 0, "function": {"arguments": ': "x"}'}}],
    ]  # fmt: skip
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 40


def test_message_start_and_pings_make_no_chunk() -> None:
    """So the assembler cannot stamp the first token there."""
    events = text_events(["Hi"])
    assert feed(events[:3]) == []
    assert feed(events[:4])[0]["choices"][0]["delta"] == {"content": "Hi"}


def test_a_tool_use_block_without_input_deltas_is_still_a_call() -> None:
    start: dict[str, Any] = {"type": "content_block_start", "index": 0,
             "content_block": {"type": "tool_use", "id": "toolu_0", "name": "now", "input": {}}}  # fmt: skip
    stop = {"type": "content_block_stop", "index": 0}
    (chunk,) = feed([message_start(), ("content_block_start", start), ("content_block_stop", stop)])
    assert chunk["choices"][0]["delta"]["tool_calls"][0]["function"] == {
        "name": "now",
        "arguments": "",
    }
    start["content_block"]["input"] = {"tz": "UTC"}
    (chunk,) = feed([("content_block_start", start), ("content_block_stop", stop)])
    assert chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"tz": "UTC"}'


@given(cuts=st.lists(st.integers(0, len(ZURICH)), max_size=12))
def test_any_split_of_the_input_json_assembles_the_same_call(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(ZURICH)]
    fragments = [ZURICH[a:b] for a, b in itertools.pairwise(bounds)]
    reply = tool_use_stream([("toolu_1", "weather", fragments)])
    request = Request(messages=[Message(role="user", content="hi")], temperature=0.0)
    assembler = GenerationAssembler(
        request=request, model=MODEL, spec=DISPLAY, provider="anthropic"
    )
    for chunk in feed(list(reply.events)):
        assembler.add(chunk)
    (call,) = assembler.finish().tool_calls
    assert call.arguments_text == ZURICH
    assert call.arguments == {"city": 'Zürich "Altstadt"', "days": 2}


# -- the request -------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_the_request_body_and_headers(double: AnthropicDouble) -> None:
    generate(
        double,
        text_stream(),
        system="Be brief.",
        seed=7,
        stop=["END"],
        tools=[WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}],
        tool_choice="required",
        top_k=5,
    )
    (post,) = double.posts
    assert post.path == "/v1/messages"
    assert post.headers["x-api-key"] == KEY and post.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in post.headers
    assert post.body == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "system": "Be brief.",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "temperature": 0.0,
        "stop_sequences": ["END"],
        "stream": True,
        "tools": [
            {
                "name": "get_weather",
                "description": "The weather in a city.",
                "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
            },
            {"name": "now", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "any"},
        "top_k": 5,
    }  # no seed, no logprobs, no stream_options: Anthropic has none of them
    assert DEFAULT_MAX_TOKENS == 1024


def test_max_tokens_as_given_and_above_a_thinking_budget(double: AnthropicDouble) -> None:
    generate(double, text_stream(), max_tokens=50)
    thinking = {"type": "enabled", "budget_tokens": 2000}
    generate(double, text_stream(), thinking=thinking)
    first, second = double.posts
    assert first.body["max_tokens"] == 50
    assert second.body["max_tokens"] == 3024 and second.body["thinking"] == thinking


def test_a_conversation_with_tool_results_in_anthropic_s_form() -> None:
    call = {"id": "toolu_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    request = Request(
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="Weather in Paris and Rome?"),
            Message(role="assistant", content="Looking.", tool_calls=[call, {**call, "id": "t2"}]),
            Message(role="tool", tool_call_id="toolu_1", content="sunny"),
            Message(role="tool", tool_call_id="t2", content="rain"),
            Message(role="system", content="Answer in French."),
        ],
        temperature=0.5,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    body = AnthropicProvider(model=MODEL, display=DISPLAY).request_body(request)
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "name": "get_weather", "id": "toolu_1", "input": {"city": "Paris"}},
            {"type": "tool_use", "name": "get_weather", "id": "t2", "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "t2", "content": "rain"},
        ]},
    ]  # fmt: skip
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}


@pytest.mark.parametrize(
    ("ours", "theirs"), [("auto", "auto"), ("none", "none"), ("required", "any")]
)
def test_tool_choice_words(ours: str, theirs: str) -> None:
    request = Request(messages=[Message(role="user", content="x")], temperature=0, tool_choice=ours)
    body = AnthropicProvider(model=MODEL, display=DISPLAY).request_body(request)
    assert body["tool_choice"] == {"type": theirs}


def test_confidence_checks_are_unsupported_not_failed(double: AnthropicDouble) -> None:
    gen = generate(double, text_stream(["Paris"]))
    assert gen.tokens == [] and gen.request.logprobs
    with pytest.raises(pytest.skip.Exception, match="no logprobs from .*does not return them"):
        expect(gen).confidence(min_mean=0.5)
    with collecting(strict_capabilities=True) as checks:
        expect(gen).confidence(min_mean=0.5)
    with pytest.raises(ExpectationFailed, match="does not return them"):
        checks.raise_if_failed()


# -- errors ---------------------------------------------------------------------------------------


def one_line(exc: pytest.ExceptionInfo[BaseException], double: AnthropicDouble) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert DISPLAY in message and double.base_url in message
    assert KEY not in message
    return message


def test_401_names_model_and_endpoint_and_masks_an_echoed_key(double: AnthropicDouble) -> None:
    double.play(http_error(401, "authentication_error", "invalid x-api-key: {key}"))
    with pytest.raises(HTTPStatusError) as excinfo:
        model(double).generate("hi")
    message = one_line(excinfo, double)
    assert message.startswith("HTTP 401 from ") and message.endswith("invalid x-api-key: ***")
    assert excinfo.value.status_code == 401


def test_a_wrong_key_is_refused_by_the_double_like_the_api(double: AnthropicDouble) -> None:
    with pytest.raises(HTTPStatusError, match=r"HTTP 401 .*invalid x-api-key$"):
        model(double, key="fake-anthropic-wrong-key").generate("hi")


def test_404_for_an_unknown_model(double: AnthropicDouble) -> None:
    double.play(http_error(404, "not_found_error", "model: claude-nope"))
    with pytest.raises(HTTPStatusError) as excinfo:
        model(double).generate("hi")
    assert one_line(excinfo, double).endswith(": model: claude-nope")


def test_429_with_retry_after_is_retried_and_counted(double: AnthropicDouble) -> None:
    double.play(http_error(429, "rate_limit_error", "slow down", retry_after="0.3"), text_stream())
    start = time.monotonic()
    gen = model(double, retries=2).generate("hi")
    assert (gen.text, gen.attempts, len(double.posts)) == ("Hello there!", 2, 2)
    assert time.monotonic() - start >= 0.3


def test_529_overloaded_is_retried_and_bounded(double: AnthropicDouble) -> None:
    double.play(*(http_error(529, "overloaded_error", "Overloaded") for _ in range(4)))
    llm = model(double, retries=2)
    with pytest.raises(HTTPStatusError) as excinfo:
        llm.generate("hi")
    assert one_line(excinfo, double).endswith("Overloaded (after 3 attempts)")
    assert len(double.posts) == 3 and llm.generations[0].attempts == 3


def test_an_overloaded_event_before_any_content_is_retried(double: AnthropicDouble) -> None:
    double.play(error_after([message_start(), ("ping", {"type": "ping"})]), text_stream(["ok"]))
    gen = model(double, retries=2).generate("hi")
    assert (gen.text, gen.attempts, len(double.posts)) == ("ok", 2, 2)


def test_an_overloaded_event_after_the_first_token_is_never_retried(
    double: AnthropicDouble,
) -> None:
    events = text_events(["Hel", "lo"])[:4]  # up to the first text delta
    double.play(error_after(events), text_stream(["never"]))
    llm = model(double, retries=3)
    with pytest.raises(StreamError) as excinfo:
        llm.generate("hi")
    assert one_line(excinfo, double).endswith("after 4 events: overloaded_error: Overloaded")
    assert len(double.posts) == 1 and llm.generations[0].attempts == 1
    assert llm.generations[0].text == "Hel" and llm.generations[0].finish_reason == "error"


def test_overloaded_events_past_the_retries_say_how_many_attempts(double: AnthropicDouble) -> None:
    double.play(*(error_after([message_start()]) for _ in range(3)))
    with pytest.raises(StreamError, match=r"overloaded_error: Overloaded \(after 2 attempts\)$"):
        model(double, retries=1).generate("hi")
    assert len(double.posts) == 2


def test_an_error_event_is_masked_and_not_retried_when_not_transient(
    double: AnthropicDouble,
) -> None:
    double.play(error_after([message_start()], "api_error", f"bad key {KEY}"))
    with pytest.raises(StreamError) as excinfo:
        model(double, retries=3).generate("hi")
    assert one_line(excinfo, double).endswith("api_error: bad key ***")
    assert len(double.posts) == 1


def test_a_stream_ending_without_message_stop(double: AnthropicDouble) -> None:
    double.play(cut(text_events(["Hel", "lo"])[:-2]))
    llm = model(double, retries=3)
    with pytest.raises(StreamError) as excinfo:
        llm.generate("hi")
    assert one_line(excinfo, double).endswith("ended before message_stop after 6 events")
    assert len(double.posts) == 1 and llm.generations[0].text == "Hello"


def test_an_empty_stream(double: AnthropicDouble) -> None:
    double.play(cut([]))
    with pytest.raises(StreamError, match="after 0 events: the body was empty$"):
        model(double).generate("hi")


def test_a_stream_cut_inside_an_event(double: AnthropicDouble) -> None:
    double.play(cut_mid_event(text_events(["Hel"])[:4]), text_stream(["never"]))
    with pytest.raises(StreamError, match=r"was cut after 4 chunks") as excinfo:
        model(double, retries=3).generate("hi")
    one_line(excinfo, double)
    assert len(double.posts) == 1


def test_an_event_of_the_wrong_shape(double: AnthropicDouble) -> None:
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 7}}
    double.play(events_reply([message_start(), ("content_block_delta", delta)]))
    with pytest.raises(StreamError, match=r"content_block_delta event: delta\.text is a number"):
        model(double).generate("hi")


def test_an_event_that_is_not_json(double: AnthropicDouble) -> None:
    body = b"event: message_start\ndata: {not json\n\n"
    double.play(Reply(kind="raw", body=body))
    with pytest.raises(StreamError, match=r"malformed JSON in stream from .* after 0 events"):
        model(double).generate("hi")


# -- availability and identity ----------------------------------------------------------


def test_the_probe_sends_the_anthropic_headers(double: AnthropicDouble) -> None:
    provider(double).ensure_available()
    (probe,) = double.requests
    assert (probe.method, probe.path) == ("GET", "/v1/models")
    assert probe.headers["x-api-key"] == KEY and probe.headers["anthropic-version"] == "2023-06-01"


def test_a_missing_key_names_its_variable() -> None:
    cloud = AnthropicProvider(model=MODEL, display=DISPLAY, require_key=True)
    with pytest.raises(MissingAPIKey, match=r"needs an API key: set ANTHROPIC_API_KEY"):
        cloud.ensure_available()


def test_an_unreachable_endpoint() -> None:
    base = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(EndpointUnreachable, match=f"cannot reach {base} for {DISPLAY}"):
        AnthropicProvider(model=MODEL, display=DISPLAY, base_url=base).ensure_available()


def test_where_it_runs() -> None:
    cloud = AnthropicProvider(model=MODEL, display=DISPLAY)
    assert cloud.base_url == ANTHROPIC_BASE_URL
    assert (cloud.cloud_provider, cloud.runs_locally) == ("anthropic", False)
    local = AnthropicProvider(model=MODEL, display=DISPLAY, base_url="http://127.0.0.1:9/v1")
    assert (local.cloud_provider, local.runs_locally) == (None, True)


def test_the_fixtures_are_the_client_library_s_streams() -> None:
    """Guard against editing them: each is a complete documented stream."""
    from anthropic_double import STREAMS

    for path in sorted(STREAMS.glob("*.*")):
        if path.suffix == ".md":
            continue
        names = [line[7:] for line in path.read_text().splitlines() if line.startswith("event: ")]
        assert names[0] == "message_start" and names[-1] == "message_stop", path.name
        data = [line[6:] for line in path.read_text().splitlines() if line.startswith("data: ")]
        assert all(isinstance(json.loads(d), dict) for d in data)
