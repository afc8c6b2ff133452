"""Tool calls end to end on the OpenAI-compatible path: assembly, confidence, checks,
suites, records, the embedded model; and conversations (`LLM.chat`).

Assembly is tested on hand-built ``chat.completion.chunk`` dicts and, over HTTP, on the
loopback protocol double (tests/loopback.py: not a model), whose tool-call streams
follow OpenAI's streaming function-calling guide: the first delta of a call carries
``index``, ``id``, ``type`` and ``function.name`` with empty ``arguments``, the later
ones ``index`` and an ``arguments`` fragment, the finish chunk ``finish_reason:
"tool_calls"``.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from clients import Bound
from hypothesis import given
from hypothesis import strategies as st
from loopback import LoopbackServer, http_error, stream, tool_call_stream, tool_delta
from suite_runs import SuiteLab

from pytest_llmlab import (
    LLM,
    ExpectationFailed,
    Generation,
    LLMLabError,
    Message,
    Request,
    parse_spec,
)
from pytest_llmlab.expect import collecting, expect, render_failures
from pytest_llmlab.models.assemble import GenerationAssembler, chunk_problem, parse_arguments
from pytest_llmlab.models.base import TokenLogprob, ToolCall
from pytest_llmlab.models.local import EmbeddedLlamaCpp
from pytest_llmlab.models.openai import OpenAICompatible
from pytest_llmlab.report.csvfile import records_frame
from pytest_llmlab.results import record_from_generation
from pytest_llmlab.suites.checks import parse_check

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
SEARCH = {"type": "function", "function": {"name": "search"}}
#: Arguments with every escape a model writes: a quote, a backslash, \n, \u00e9.
ESCAPED = '{"city": "Par\\"is\\\\ \\u00e9\\n", "days": 2}'


@pytest.fixture
def bind() -> Iterator[Any]:
    from clients import Binder

    with Binder() as binder:
        yield binder


def request(tools: list[dict[str, Any]] | None = None, logprobs: bool = True) -> Request:
    return Request(
        messages=[Message(role="user", content="Weather in Paris?")],
        temperature=0.0,
        tools=tools,
        logprobs=logprobs,
    )


def assembler(tools: list[dict[str, Any]] | None = None) -> GenerationAssembler:
    return GenerationAssembler(
        request=request([WEATHER] if tools is None else tools),
        model="m",
        spec="vllm:m",
        provider="vllm",
    )


def chunk(
    delta: dict[str, Any],
    logprobs: list[tuple[str, float]] | None = None,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    content = None
    if logprobs is not None:
        content = {
            "content": [{"token": t, "logprob": lp, "top_logprobs": []} for t, lp in logprobs]
        }
    return {
        "object": "chat.completion.chunk",
        "choices": [
            {"index": 0, "delta": delta, "logprobs": content, "finish_reason": finish_reason}
        ],
    }


def calls(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": list(entries)}


def assemble(*chunks: dict[str, Any]) -> Generation:
    asm = assembler()
    for item in chunks:
        asm.add(item)
    return asm.finish()


def fragments(text: str, cuts: list[int]) -> list[str]:
    points = [0, *sorted(set(cuts)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(points) if b > a]


# -- assembly ---------------------------------------------------------------------------


@given(st.lists(st.integers(min_value=1, max_value=len(ESCAPED) - 1), max_size=12))
def test_arguments_split_anywhere_parse_to_the_same_object(cuts: list[int]) -> None:
    """Fragments cut at any character, mid-string and mid-escape, join before parsing."""
    first = tool_delta(0, "", id="call_1", name="get_weather")
    gen = assemble(
        chunk(calls(first)), *(chunk(calls(tool_delta(0, f))) for f in fragments(ESCAPED, cuts))
    )
    (call,) = gen.tool_calls
    assert (call.id, call.name, call.arguments_text) == ("call_1", "get_weather", ESCAPED)
    assert call.arguments == {"city": 'Par"is\\ é\n', "days": 2}
    assert call.error is None


def test_calls_interleaved_by_index_come_out_in_index_order() -> None:
    """Two calls whose deltas interleave, the second announced first; ids only in the
    first delta of each; names and ids are not repeated."""
    gen = assemble(
        chunk(calls(tool_delta(1, "", id="call_b", name="search"))),
        chunk(calls(tool_delta(0, '{"ci', id="call_a", name="get_weather"))),
        chunk(calls(tool_delta(1, '{"q": "rain'))),
        chunk(calls(tool_delta(0, 'ty": "Paris"}'))),
        chunk(calls(tool_delta(1, '"}'))),
        chunk({}, finish_reason="tool_calls"),
    )
    assert [(c.id, c.name, c.arguments) for c in gen.tool_calls] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "search", {"q": "rain"}),
    ]
    assert gen.finish_reason == "tool_calls"
    assert gen.text == ""
    assert gen.timings.ttft_s is not None  # the first tool delta is the first token


def test_entries_without_index_follow_their_id_or_the_last_call() -> None:
    """No ``index``: a new id starts a call, its own id continues it, no id continues the
    last call; a name sent again in every delta is not doubled."""
    gen = assemble(
        chunk(calls(tool_delta(None, '{"city":', id="a", name="get_weather"))),
        chunk(calls(tool_delta(None, ' "Oslo"}', name="get_weather"))),
        chunk(calls(tool_delta(None, "{}", id="b", name="search"))),
        chunk(calls(tool_delta(None, "", id="a"))),
    )
    assert [(c.id, c.name, c.arguments) for c in gen.tool_calls] == [
        ("a", "get_weather", {"city": "Oslo"}),
        ("b", "search", {}),
    ]


def test_a_name_in_fragments_is_joined() -> None:
    gen = assemble(
        chunk(calls(tool_delta(0, "", id="c", name="get_"))),
        chunk(calls({"index": 0, "function": {"name": "weather", "arguments": "{}"}})),
    )
    assert gen.tool_calls[0].name == "get_weather"


def test_confidence_is_over_the_tokens_sent_with_each_call() -> None:
    """Logprobs of a chunk with a tool-call delta belong to that delta's (last) call;
    those of content chunks to none; every token stays in ``gen.tokens``."""
    gen = assemble(
        chunk({"content": "Let me check."}, [("Let", -0.1)]),
        chunk(calls(tool_delta(0, "", id="a", name="get_weather")), [("get", math.log(0.9))]),
        chunk(calls(tool_delta(0, '{"city": "Paris"}')), [("Paris", math.log(0.4))]),
        chunk(calls(tool_delta(1, "{}", id="b", name="search")), [("search", math.log(0.8))]),
        chunk({}, finish_reason="tool_calls"),
    )
    weather, search = gen.tool_calls
    assert [t.token for t in weather.tokens] == ["get", "Paris"]
    assert weather.mean_prob == pytest.approx(0.65)
    assert weather.min_prob == pytest.approx(0.4)
    assert search.mean_prob == pytest.approx(0.8) and search.min_prob == pytest.approx(0.8)
    assert [t.token for t in gen.tokens] == ["Let", "get", "Paris", "search"]
    assert gen.text == "Let me check."


def test_a_call_without_logprobs_has_no_confidence() -> None:
    gen = assemble(chunk(calls(tool_delta(0, "{}", id="a", name="get_weather"))))
    assert (gen.tool_calls[0].mean_prob, gen.tool_calls[0].min_prob) == (None, None)


@pytest.mark.parametrize(
    ("text", "arguments", "error"),
    [
        ('{"city": "Paris"', None, "the arguments are not JSON: Expecting ',' delimiter"),
        ('["Paris"]', None, "the arguments are an array, not an object"),
        ('"{\\"city\\": \\"Paris\\"}"', None, "the arguments are a string, not an object"),
        ("", {}, None),
        ("  ", {}, None),
    ],
    ids=["cut", "array", "double-encoded", "empty", "blank"],
)
def test_arguments_that_do_not_parse_say_why(
    text: str, arguments: dict[str, Any] | None, error: str | None
) -> None:
    got, why = parse_arguments(text)
    assert got == arguments
    assert why is None if error is None else (why or "").startswith(error)


def test_a_call_cut_by_max_tokens_says_so() -> None:
    gen = assemble(
        chunk(calls(tool_delta(0, '{"city": "Pa', id="a", name="get_weather"))),
        chunk({}, finish_reason="length"),
    )
    (call,) = gen.tool_calls
    assert call.arguments is None and call.arguments_text == '{"city": "Pa'
    assert call.error is not None and "cut off: finish reason 'length'" in call.error


@pytest.mark.parametrize(
    ("tool_calls", "problem"),
    [
        ({"index": 0}, "choices[0].delta.tool_calls is an object, not an array"),
        (["call"], "choices[0].delta.tool_calls[0] is a string, not an object"),
        ([{"index": "0"}], "choices[0].delta.tool_calls[0].index is a string, not an integer"),
        ([{"index": True}], "choices[0].delta.tool_calls[0].index is a boolean, not an integer"),
        ([{"index": -1}], "choices[0].delta.tool_calls[0].index is -1, not an index (0 or more)"),
        ([{"index": 0, "id": 7}], "choices[0].delta.tool_calls[0].id is a number, not a string"),
        ([{"index": 0, "function": "f"}], "tool_calls[0].function is a string, not an object"),
        (
            [{"index": 0, "function": {"arguments": {"city": "Paris"}}}],
            "choices[0].delta.tool_calls[0].function.arguments is an object, not a string",
        ),
        ([{"index": 0, "function": {"name": None, "arguments": None}}], None),
        ([tool_delta(0, "", id="a", name="f")], None),
        (None, None),
    ],
)
def test_chunk_problem_checks_tool_call_deltas(tool_calls: Any, problem: str | None) -> None:
    got = chunk_problem(chunk({"tool_calls": tool_calls}))
    assert got == problem if problem is None or got is None else problem in got


def test_a_malformed_tool_delta_is_rejected_whole() -> None:
    asm = assembler()
    with pytest.raises(ValueError, match=r"tool_calls\[0\]\.function\.arguments is an object"):
        asm.add(chunk(calls({"index": 0, "function": {"arguments": {}}})))
    assert asm.finish().tool_calls == []


# -- requests ---------------------------------------------------------------------------


def test_tools_and_tool_choice_reach_the_body_and_a_tool_result_goes_back(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """Over the loopback protocol double: the call is assembled from a stream cut into
    3-byte pieces, sent back as the assistant's ``tool_calls`` with the ``tool`` message
    answering it; plain messages stay ``{role, content}``."""
    server.play(
        tool_call_stream(
            [
                calls(tool_delta(0, "", id="call_1", name="get_weather")),
                *(calls(tool_delta(0, f)) for f in fragments(ESCAPED, [3, 9, 11, 20])),
            ],
            logprobs=[[("get_weather", -0.01)], None, [("Par", -0.7)], None, None, None],
            completion_tokens=9,
            piece_bytes=3,
        )
    )
    bound = bind(server.base_url)
    gen = bound.llm.generate("Weather in Paris?", tools=[WEATHER], tool_choice="required")
    (call,) = gen.tool_calls
    assert (call.name, call.arguments) == ("get_weather", {"city": 'Par"is\\ é\n', "days": 2})
    assert call.min_prob == pytest.approx(math.exp(-0.7))
    assert gen.finish_reason == "tool_calls" and gen.usage.completion_tokens == 9
    first = server.posts[0].body
    assert first["tools"] == [WEATHER] and first["tool_choice"] == "required"
    assert first["logprobs"] is True and "n_probs" not in first
    assert first["messages"] == [{"role": "user", "content": "Weather in Paris?"}]

    bound.llm.generate(
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call.wire()]},
            {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"},
        ],
        tools=[WEATHER],
    )
    second = server.posts[1].body
    assert second["messages"][1:] == [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ESCAPED},
                }
            ],
        },
        {"role": "tool", "content": "18 C, sunny", "tool_call_id": "call_1"},
    ]
    assert "tool_choice" not in second


def test_no_tools_no_tool_keys_in_the_body() -> None:
    provider = OpenAICompatible(model="m", display="vllm:m", base_url="http://127.0.0.1:1/v1")
    try:
        body = provider.request_body(request())
    finally:
        provider.close()
    assert not {"tools", "tool_choice", "n_probs"} & set(body)
    assert body["messages"] == [{"role": "user", "content": "Weather in Paris?"}]


@pytest.mark.parametrize("tools", [None, [WEATHER]], ids=["no-tools", "tools"])
def test_llama_cpp_gets_n_probs_instead_of_logprobs_with_tools(
    tools: list[dict[str, Any]] | None,
) -> None:
    """llama.cpp's server answers ``logprobs`` with tools on a stream with HTTP 400
    (seen on the embedded one, see `test_embedded_model_with_tools`); ``n_probs`` asks
    for the same logprobs."""
    provider = OpenAICompatible(
        model="m", display="local:m", base_url="http://127.0.0.1:1/v1", llama_tokenizer=True
    )
    try:
        body = provider.request_body(request(tools))
    finally:
        provider.close()
    # One alternative by default (the fewest that brings the token's own logprob).
    if tools:
        assert body["n_probs"] == 1 and "logprobs" not in body and "top_logprobs" not in body
    else:
        assert (body["logprobs"], body["top_logprobs"]) == (True, 1) and "n_probs" not in body
    asked = provider.request_body(request(tools).model_copy(update={"top_logprobs": 4}))
    assert asked.get("n_probs", asked.get("top_logprobs")) == 4


def test_marker_tools_become_request_tools_and_the_call_wins() -> None:
    """``@pytest.mark.llm(tools=..., tool_choice=...)`` and a suite's ``tools:`` reach
    the LLM as params: they become the Request's fields, never raw params."""
    llm = LLM(
        model_spec=parse_spec("vllm:m"),
        temperature=0.0,
        provider=OpenAICompatible(model="m", display="vllm:m", base_url="http://127.0.0.1:1/v1"),
        defaults={"params": {"tools": [SEARCH], "tool_choice": "required", "top_p": 0.5}},
    )
    marked = llm.build_request("x")
    assert (marked.tools, marked.tool_choice, marked.params) == (
        [SEARCH],
        "required",
        {"top_p": 0.5},
    )
    own = llm.build_request("x", tools=[WEATHER], tool_choice={"type": "function"})
    assert (own.tools, own.tool_choice) == ([WEATHER], {"type": "function"})
    llm.provider.close()


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ([{"type": "function", "function": {}}], "tools[0].function.name is missing"),
        ([WEATHER, {"name": "f"}], "tools[1].type is None, not 'function'"),
        ([{"type": "function", "function": {"name": ""}}], "tools[0].function.name is a string"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": []}}],
            "tools[0].function.parameters is an array, not an object",
        ),
        (WEATHER, "tools= takes a list of OpenAI function schemas, not one"),
    ],
)
def test_a_bad_tool_is_a_value_error_naming_it(
    bind: Callable[..., Bound], tools: Any, message: str
) -> None:
    bound = bind("http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        bound.llm.build_request("x", tools=tools)


# -- checks -----------------------------------------------------------------------------


def token(text: str, prob: float) -> TokenLogprob:
    return TokenLogprob(token=text, logprob=math.log(prob))


def generation(
    *tool_calls: ToolCall, tools: list[dict[str, Any]] | None = None, logprobs: bool = True
) -> Generation:
    return Generation(
        text="",
        tool_calls=list(tool_calls),
        model="vllm:m",
        spec="vllm:m",
        provider="vllm",
        temperature=0.0,
        request=request([WEATHER, SEARCH] if tools is None else tools, logprobs=logprobs),
        finish_reason="tool_calls" if tool_calls else "stop",
    )


def weather(arguments: str = '{"city": "Paris", "days": 2}', *probs: float) -> ToolCall:
    parsed, error = parse_arguments(arguments)
    tokens = [token(f"t{i}", p) for i, p in enumerate(probs)]
    return ToolCall(
        id="a",
        name="get_weather",
        arguments_text=arguments,
        arguments=parsed,
        error=error,
        tokens=tokens,
    )


def message_of(check: Callable[[Any], object], gen: Generation) -> str:
    with pytest.raises(ExpectationFailed) as info:
        check(expect(gen))
    (failure,) = info.value.failures
    return f"{failure.check}: {failure.message}"


def test_tool_call_passes_on_name_schema_arguments_and_confidence() -> None:
    gen = generation(weather('{"city": "Paris", "days": 2}', 0.99, 0.8))
    schema = WEATHER["function"]["parameters"]  # type: ignore[index]
    expect(gen).tool_call("get_weather").tool_call(
        "get_weather", arguments_schema=schema, arguments={"city": "Paris"}, min_confidence=0.8
    ).tool_call("get_weather", arguments={"days": 2.0, "city": "Paris"})


@pytest.mark.parametrize(
    ("gen", "check", "message"),
    [
        (
            generation(),
            lambda e: e.tool_call("get_weather"),
            "tool_call('get_weather'): no tool call: the model answered in text",
        ),
        (
            generation(tools=[]),
            lambda e: e.tool_call("get_weather"),
            (
                "tool_call('get_weather'): no tool call: the request offered no tools "
                "(pass tools=[...])"
            ),
        ),
        (
            generation(weather()),
            lambda e: e.tool_call("get_wether"),
            (
                "tool_call('get_wether'): no call to 'get_wether' ('get_wether' is not among the "
                'tools offered: get_weather, search); the model called get_weather({"city": '
                '"Paris", "days": 2})'
            ),
        ),
        (
            generation(weather('{"city": Paris}')),
            lambda e: e.tool_call("get_weather"),
            "tool_call('get_weather'): the arguments are not JSON: Expecting value at character 9",
        ),
        (
            generation(weather('{"city": 7}')),
            lambda e: e.tool_call(
                "get_weather", arguments_schema={"properties": {"city": {"type": "string"}}}
            ),
            (
                "tool_call('get_weather', arguments_schema=<JSON schema>): 1 schema error against "
                "the JSON schema:\n  $.city: 7 is not of type 'string'"
            ),
        ),
        (
            generation(weather('{"city": "Lyon"}')),
            lambda e: e.tool_call("get_weather", arguments={"city": "Paris"}),
            (
                "tool_call('get_weather', arguments={'city': 'Paris'}): arguments $.city is 'Lyon', "
                "expected 'Paris'"
            ),
        ),
        (
            generation(weather('{"town": "Paris"}')),
            lambda e: e.tool_call("get_weather", arguments={"city": "Paris"}),
            (
                "tool_call('get_weather', arguments={'city': 'Paris'}): arguments $: no key 'city' "
                "(keys: 'town')"
            ),
        ),
        (
            generation(weather('{"city": "Paris"}', 0.99, 0.3, 0.99)),
            lambda e: e.tool_call("get_weather", min_confidence=0.5),
            (
                "tool_call('get_weather', min_confidence=0.5): lowest token probability of the "
                "call 0.3 < 0.5 (token 't1'; mean 0.76 over 3 tokens): "
                'get_weather({"city": "Paris"})'
            ),
        ),
        (
            generation(weather(), weather('{"days": 1}')),
            lambda e: e.tool_call("get_weather", arguments={"city": "Oslo"}),
            (
                "tool_call('get_weather', arguments={'city': 'Oslo'}): "
                'get_weather({"city": "Paris", "days": 2}): arguments $.city is \'Paris\', '
                "expected 'Oslo'\n"
                "get_weather({\"days\": 1}): arguments $: no key 'city' (keys: 'days')"
            ),
        ),
        (
            generation(weather(), weather()),
            lambda e: e.no_tool_call(),
            (
                'no_tool_call(): called 2 tools: get_weather({"city": "Paris", "days": 2}), '
                'get_weather({"city": "Paris", "days": 2})'
            ),
        ),
        (
            generation(weather(), logprobs=False),
            lambda e: e.tool_call("get_weather", min_confidence=0.5),
            (
                "tool_call('get_weather', min_confidence=0.5): no logprobs from vllm:m: the "
                "request asked for none (logprobs=False)"
            ),
        ),
    ],
    ids=[
        "text",
        "no-tools",
        "other-name",
        "not-json",
        "schema",
        "value",
        "missing-key",
        "confidence",
        "each-call",
        "no-tool-call",
        "logprobs-off",
    ],
)
def test_tool_call_failures_say_what_was_called(
    gen: Generation, check: Callable[[Any], object], message: str
) -> None:
    assert message_of(check, gen) == message


def test_one_qualifying_call_among_several_passes() -> None:
    gen = generation(weather('{"city": "Lyon"}', 0.2), weather('{"city": "Paris"}', 0.9))
    expect(gen).tool_call("get_weather", arguments={"city": "Paris"}, min_confidence=0.8)
    expect(generation()).no_tool_call()


@pytest.mark.parametrize(
    ("got", "expected", "passes"),
    [
        ({"a": 1, "b": {"c": [1, 2], "d": "x"}}, {"b": {"c": [1, 2]}}, True),
        ({"a": 1.0}, {"a": 1}, True),
        ({"a": True}, {"a": 1}, False),
        ({"a": 1}, {"a": True}, False),
        ({"a": [1, 2, 3]}, {"a": [1, 2]}, False),
        ({"a": [{"b": 1, "c": 2}]}, {"a": [{"b": 1}]}, False),
        ({"a": "1"}, {"a": 1}, False),
        ({"a": None}, {"a": None}, True),
        ({"a": {"b": 1}}, {"a": "b"}, False),
    ],
)
def test_arguments_are_matched_as_a_subset_of_objects(
    got: dict[str, Any], expected: dict[str, Any], passes: bool
) -> None:
    gen = generation(weather(json.dumps(got)))
    if passes:
        expect(gen).tool_call("get_weather", arguments=expected)
    else:
        with pytest.raises(ExpectationFailed):
            expect(gen).tool_call("get_weather", arguments=expected)


def test_min_confidence_without_call_logprobs_is_unsupported() -> None:
    """Skipped by default, failed under strict capabilities; the other parts still count."""
    gen = generation(weather())
    with pytest.raises(pytest.skip.Exception, match="no logprobs for the tokens of the call"):
        expect(gen).tool_call("get_weather", min_confidence=0.5)
    with collecting(strict_capabilities=True) as strict:
        expect(gen).tool_call("get_weather", min_confidence=0.5)
    assert [f.message for f in strict.failures] == [
        (
            "no logprobs for the tokens of the call to 'get_weather' from vllm:m: the backend "
            "does not return them for tool calls"
        )
    ]
    with collecting() as lenient:
        expect(gen).tool_call("get_weather", arguments={"city": "Oslo"}, min_confidence=0.5)
    assert len(lenient.failures) == 1 and not lenient.skips


def test_failure_report_lists_the_calls() -> None:
    gen = generation(weather())
    with pytest.raises(ExpectationFailed) as info:
        expect(gen).no_tool_call()
    text = render_failures(info.value.failures)
    assert text.splitlines()[-1] == '  tool calls: get_weather({"city": "Paris", "days": 2})'


def test_suite_check_arguments_are_validated_from_the_method() -> None:
    assert parse_check({"tool_call": "get_weather"}).call_kwargs["name"] == "get_weather"
    assert parse_check({"no_tool_call": True}).call_kwargs == {}
    with pytest.raises(ValueError, match="tool_call: min_confidence: Input should be a valid"):
        parse_check({"tool_call": {"name": "f", "min_confidence": "high"}})
    with pytest.raises(ValueError, match="no_tool_call takes no argument"):
        parse_check({"no_tool_call": "get_weather"})


# -- records and CSV --------------------------------------------------------------------


def test_records_carry_the_calls_and_their_confidence() -> None:
    gen = generation(weather('{"city": "Paris"}', 0.9, 0.5), weather("{", 0.7))
    record = record_from_generation(gen, test_id="t", alias=None, worker="main")
    assert record["tool_calls"] == [
        {
            "id": "a",
            "name": "get_weather",
            "arguments_text": '{"city": "Paris"}',
            "arguments": {"city": "Paris"},
            "error": None,
            "mean_prob": pytest.approx(0.7),
            "min_prob": pytest.approx(0.5),
        },
        {
            "id": "a",
            "name": "get_weather",
            "arguments_text": "{",
            "arguments": None,
            "error": parse_arguments("{")[1],
            "mean_prob": pytest.approx(0.7),
            "min_prob": pytest.approx(0.7),
        },
    ]
    assert record["avg_tool_confidence"] == pytest.approx(0.7)
    assert record["min_tool_confidence"] == pytest.approx(0.5)
    plain = record_from_generation(generation(tools=[]), test_id="t", alias=None, worker="main")
    offered = record_from_generation(generation(), test_id="t", alias=None, worker="main")
    assert (plain["tool_calls"], offered["tool_calls"]) == (None, [])
    assert plain["avg_tool_confidence"] is None and plain["min_tool_confidence"] is None
    frame = records_frame([record, offered, plain])
    assert frame["tool_calls"].tolist()[:2] == [2, 0] and frame["tool_calls"].isna().tolist()[2]
    assert frame["min_tool_confidence"].tolist()[0] == pytest.approx(0.5)


# -- suites -----------------------------------------------------------------------------

SUITE = """
defaults:
  tools:
    - type: function
      function:
        name: get_weather
        parameters: {type: object, properties: {city: {type: string}}}
  params: {tool_choice: required}
cases:
  - id: paris
    prompt: Weather in Paris?
    checks:
      - tool_call: {name: get_weather, arguments: {city: Paris}, min_confidence: 0.5}
  - id: lyon
    prompt: Weather in Lyon?
    checks:
      - tool_call: {name: get_weather, arguments: {city: Lyon}}
  - id: chat
    prompt: Hello!
    tools: []
    checks:
      - no_tool_call: true
"""


def test_suite_tool_call_checks_against_the_double(lab: SuiteLab) -> None:
    """A suite's ``tools:`` reach the body; ``tool_call:`` passes on the right city and
    fails on the wrong one (the double answers Paris to both); ``no_tool_call:`` passes
    on a text answer; the records and CSV carry the calls."""
    paris = tool_call_stream(
        [
            calls(tool_delta(0, "", id="call_1", name="get_weather")),
            calls(tool_delta(0, '{"city": "Par')),
            calls(tool_delta(0, 'is"}')),
        ],
        logprobs=[[("get_weather", -0.01)], [("Par", -0.2)], [("is", -0.05)]],
        completion_tokens=3,
    )
    lab.server.play(paris, paris)
    lab.always("Hi there!")
    lab.write("weather.suite.yaml", SUITE)
    result = lab.run()
    result.assert_outcomes(passed=2, failed=1)
    assert "arguments $.city is 'Paris', expected 'Lyon'" in result.stdout.str()
    first, _, third = lab.bodies()
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert first["tool_choice"] == "required"
    assert "tools" not in third and "tool_choice" not in third  # a choice needs tools
    records = {r["case_id"]: r for r in lab.records()}
    assert records["paris"]["tool_calls"][0]["arguments"] == {"city": "Paris"}
    assert records["paris"]["min_tool_confidence"] == pytest.approx(math.exp(-0.2))
    assert records["chat"]["tool_calls"] is None
    with (lab.path / "reports" / "results.csv").open(encoding="utf-8") as handle:
        rows = {row["case_id"]: row for row in csv.DictReader(handle)}
    assert (rows["paris"]["tool_calls"], rows["chat"]["tool_calls"]) == ("1", "")


def test_a_bad_suite_tool_is_a_collection_error(lab: SuiteLab) -> None:
    lab.write(
        "bad.suite.yaml",
        """
        cases:
          - id: a
            prompt: hi
            tools: [{type: function, function: {description: no name}}]
        """,
    )
    result = lab.run()
    assert result.ret != 0
    assert "tools[0].function.name is missing" in result.stdout.str()


# -- the embedded model -----------------------------------------------------------------


def test_embedded_model_with_tools(embedded: EmbeddedLlamaCpp) -> None:
    """The real llama.cpp with SmolLM2-135M and ``tools=``: the request is accepted
    (with ``n_probs``: its server refuses ``logprobs`` with tools on a stream), and the
    answer is text with its logprobs. SmolLM2's chat template has no tools
    (``/props`` says ``supports_tools: False``), so llama.cpp renders the prompt
    without them and constrains nothing: the model cannot call a tool here. Assembly,
    confidence and checks of real calls are tested above against the double."""
    root = embedded.base_url.removesuffix("/v1")
    caps = httpx.get(f"{root}/props", timeout=10).json().get("chat_template_caps") or {}
    llm = LLM(model_spec=parse_spec("local:smollm2-135m"), temperature=0.0, provider=embedded)
    gen = llm.generate(
        "What is the weather in Paris?", tools=[WEATHER], tool_choice="auto", max_tokens=12
    )
    assert gen.error is None and gen.text and gen.tokens
    if not caps.get("supports_tools"):
        assert gen.tool_calls == []
        expect(gen).no_tool_call()
    else:  # a template with tools: then the call must assemble
        expect(gen).tool_call("get_weather")


# -- conversations ----------------------------------------------------------------------


def test_a_chat_keeps_the_history_through_a_tool_call(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    """Over the loopback protocol double: turn 0 calls get_weather, the chat refuses to
    go on until the call is answered, turn 1 answers in text; each request carries the
    system message and the whole history, each record its turn."""
    server.play(
        tool_call_stream([calls(tool_delta(0, '{"city": "Paris"}', id="c1", name="get_weather"))]),
        stream(["It is 18 C."]),
    )
    bound = bind(server.base_url)
    chat = bound.llm.chat(system="Be brief.", tools=[WEATHER])
    first = chat.say("Weather in Paris?")
    assert first.turn == 0 and first.tool_calls[0].id == "c1"
    with pytest.raises(ValueError, match=r"answer the tool calls 'c1' with chat.tool_result"):
        chat.say("Well?")
    chat.tool_result("c1", "18 C, sunny")
    second = chat.say()
    assert (second.turn, second.text) == (1, "It is 18 C.")
    assert chat.turns == [first, second]
    body = server.posts[1].body
    assert body["tools"] == [WEATHER]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [first.tool_calls[0].wire()]},
        {"role": "tool", "content": "18 C, sunny", "tool_call_id": "c1"},
    ]
    assert [m.role for m in chat.messages] == ["user", "assistant", "tool", "assistant"]
    assert chat.messages[-1] == Message(role="assistant", content="It is 18 C.")
    assert [g.turn for g in bound.records] == [0, 1]
    records = [
        record_from_generation(g, test_id="t", alias=None, worker="main") for g in bound.records
    ]
    assert [r["turn"] for r in records] == [0, 1]
    assert records_frame(records)["turn"].tolist() == [0, 1]


def test_a_failed_turn_leaves_the_history_as_it_was(
    server: LoopbackServer, bind: Callable[..., Bound]
) -> None:
    server.play(stream(["Hi!"]), http_error(400, "bad request"), stream(["Bye."]))
    bound = bind(server.base_url)
    chat = bound.llm.chat()
    chat.say("Hello")
    with pytest.raises(LLMLabError, match="bad request"):
        chat.say("Again")
    assert [m.content for m in chat.messages] == ["Hello", "Hi!"]
    third = chat.say("Bye")
    assert third.turn == 1
    assert [m["content"] for m in server.posts[2].body["messages"]] == ["Hello", "Hi!", "Bye"]
    assert bound.records[1].turn == 1 and bound.records[1].error  # the failed turn 1, recorded


def test_a_chat_rejects_messages_and_an_empty_first_turn(bind: Callable[..., Bound]) -> None:
    bound = bind("http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="keeps its own messages"):
        bound.llm.chat(messages=[])
    with pytest.raises(ValueError, match="needs text for the first turn"):
        bound.llm.chat().say()
    assert generation().turn is None
