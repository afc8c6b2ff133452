"""The ``ollama:`` wire protocol against `ollama_double`, a loopback double of Ollama's
native API built from ollama/ollama ``docs/api.md`` (commit fb30760): "Chat request
(Streaming)" and "Chat request (Streaming with tools)" for the lines and the final
line's usage and durations, ``docs/api/errors.mdx`` for the error body and the
mid-stream error line, ``docs/openapi.yaml``'s ``Logprob`` schema and ollama-python's
``tests/test_client.py::test_client_chat_with_logprobs`` for logprobs, "List Local
Models", "List Running Models" and "Show Model Information" for the model facts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import closed_port
from ollama_double import (
    DOC_FINAL,
    DOC_LOGPROBS,
    DOC_TOOL_LINE,
    WEATHER,
    OllamaDouble,
    cut_mid_line,
    end_without_done,
    error_line,
    expected_logprob,
    http_error,
    line,
    lines,
    raw,
    serve_ollama,
    stall,
    text_stream,
)

from pytest_llmlab import LLM, LLMLabError, ModelSpec
from pytest_llmlab.errors import (
    GenerationTimeout,
    HTTPStatusError,
    ModelNotFound,
    StreamError,
)
from pytest_llmlab.models.base import Message, Request, ToolCall
from pytest_llmlab.models.ollama import (
    OllamaProvider,
    list_ollama_models,
    ollama_base_url,
    show_ollama_model,
)
from pytest_llmlab.models.retry import RetryPolicy

MODEL = "llama3.2"
DISPLAY = f"ollama:{MODEL}"
KEY = "sk-ollama-9Qx7LmW4zR2vB8kT"


@pytest.fixture
def ollama() -> Iterator[OllamaDouble]:
    with serve_ollama() as double:
        yield double


def provider(
    double: OllamaDouble, *, model: str = MODEL, retries: int = 0, **kwargs: Any
) -> OllamaProvider:
    return OllamaProvider(
        model=model,
        display=f"ollama:{model}",
        base_url=kwargs.pop("base_url", double.base_url),
        retry=RetryPolicy(retries, base_delay_s=0.01),
        timeout_s=kwargs.pop("timeout_s", 5.0),
        **kwargs,
    )


def llm(double: OllamaDouble, **kwargs: Any) -> LLM:
    made = provider(double, **kwargs)
    spec = ModelSpec("ollama", made.model)
    return LLM(model_spec=spec, temperature=0.0, provider=made)


def error_of(model: LLM, **kwargs: Any) -> LLMLabError:
    with pytest.raises(LLMLabError) as info:
        model.generate("why is the sky blue?", **kwargs)
    return info.value


# -- the stream ----------------------------------------------------------------------


def test_text_usage_and_server_timings_from_the_documented_final_line(
    ollama: OllamaDouble,
) -> None:
    """docs/api.md "Chat request (Streaming)": content lines, then the final line of
    "Chat request (Streaming with tools)" with its counts and nanosecond durations."""
    ollama.play(lines(line("The"), line(" sky"), DOC_FINAL))
    gen = llm(ollama).generate("why is the sky blue?", logprobs=False)
    assert (gen.text, gen.finish_reason) == ("The sky", "stop")
    assert (gen.usage.prompt_tokens, gen.usage.completion_tokens, gen.usage.reported) == (
        169,
        15,
        True,
    )
    server = gen.timings.server
    assert {k: server[k] for k in ("total_duration", "load_duration", "eval_duration")} == {
        "total_duration": 182242375,
        "load_duration": 41295167,
        "eval_duration": 115959084,
    }
    assert (server["prompt_eval_count"], server["prompt_eval_duration"]) == (169, 24573166)
    assert gen.timings.rates_from == "server"
    assert gen.timings.prefill_tokens_per_s == pytest.approx(169 / 0.024573166)
    assert gen.timings.decode_tokens_per_s == pytest.approx(15 / 0.115959084)
    assert server["predicted_per_second"] == pytest.approx(15 / 0.115959084)
    assert gen.timings.ttft_s is not None and gen.attempts == 1


def test_the_request_goes_to_api_chat_as_ndjson(ollama: OllamaDouble) -> None:
    llm(ollama).generate("hi")
    (chat,) = ollama.chats
    assert chat.method == "POST" and chat.headers["accept"] == "application/x-ndjson"
    assert chat.body["model"] == MODEL and chat.body["stream"] is True
    assert chat.body["messages"] == [{"role": "user", "content": "hi"}]


def test_thinking_becomes_reasoning(ollama: OllamaDouble) -> None:
    """docs/capabilities/thinking.mdx: ``message.thinking`` lines before the answer."""
    ollama.play(text_stream(["Blue", "."], thinking=("Rayleigh", " scattering")))
    gen = llm(ollama).generate("why?", think=True)
    assert (gen.text, gen.reasoning) == ("Blue.", "Rayleigh scattering")
    assert ollama.chats[0].body["think"] is True
    assert gen.usage.completion_tokens == 4  # the double counts every line


def test_logprobs_become_tokens_with_their_alternatives(ollama: OllamaDouble) -> None:
    gen = llm(ollama).generate("hi", top_logprobs=3)
    body = ollama.chats[0].body
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    assert [t.token for t in gen.tokens] == ["The", " sky", " is", " blue"]
    assert [t.logprob for t in gen.tokens] == [expected_logprob(i) for i in range(4)]
    assert [(a.token, a.logprob) for a in gen.tokens[1].top] == [
        (" sky", -0.1),
        ("alt1", -1.1),
        ("alt2", -2.1),
    ]


def test_the_client_librarys_logprobs_entry(ollama: OllamaDouble) -> None:
    """ollama-python's test_client_chat_with_logprobs entry, on a streamed line."""
    ollama.play(lines(line("Hello", logprobs=DOC_LOGPROBS), DOC_FINAL))
    (token,) = llm(ollama).generate("Hi", top_logprobs=2).tokens
    assert (token.token, token.logprob) == ("Hello", -0.1)
    assert [(a.token, a.logprob) for a in token.top] == [("Hello", -0.1), ("Hi", -1.0)]


def test_by_default_token_logprobs_without_alternatives(ollama: OllamaDouble) -> None:
    """The default asks Ollama for 0 alternatives: each token keeps its own logprob."""
    gen = llm(ollama).generate("hi")
    body = ollama.chats[0].body
    assert (body["logprobs"], body["top_logprobs"]) == (True, 0)
    assert [t.logprob for t in gen.tokens] == [expected_logprob(i) for i in range(4)]
    assert all(t.top == [] for t in gen.tokens)


def test_top_logprobs_is_capped_at_ollamas_limit(ollama: OllamaDouble) -> None:
    llm(ollama).generate("hi", top_logprobs=50)
    assert ollama.chats[0].body["top_logprobs"] == 20


def test_no_logprobs_asked_none_sent(ollama: OllamaDouble) -> None:
    gen = llm(ollama).generate("hi", logprobs=False)
    assert "logprobs" not in ollama.chats[0].body and gen.tokens == []


def test_a_documented_tool_call(ollama: OllamaDouble) -> None:
    """docs/api.md "Chat request (Streaming with tools)": a whole call, arguments an
    object, then the final line."""
    ollama.play(lines(DOC_TOOL_LINE, DOC_FINAL))
    gen = llm(ollama).generate("what is the weather in tokyo?", tools=[WEATHER])
    (call,) = gen.tool_calls
    assert (call.name, call.arguments, call.error) == ("get_weather", {"city": "Tokyo"}, None)
    assert json.loads(call.arguments_text) == {"city": "Tokyo"}
    assert gen.finish_reason == "tool_calls" and gen.text == ""
    assert ollama.chats[0].body["tools"] == [WEATHER]


def test_calls_in_separate_lines_stay_separate_and_keep_their_ids(
    ollama: OllamaDouble,
) -> None:
    first = {"id": "call_a", "function": {"index": 0, "name": "f", "arguments": {"x": 1}}}
    second = {"id": "call_b", "function": {"index": 0, "name": "f", "arguments": {"x": 2}}}
    ollama.play(lines(line(tool_calls=[first]), line(tool_calls=[second]), DOC_FINAL))
    gen = llm(ollama).generate("go", tools=[WEATHER])
    assert [(c.id, c.name, c.arguments) for c in gen.tool_calls] == [
        ("call_a", "f", {"x": 1}),
        ("call_b", "f", {"x": 2}),
    ]


def test_logprobs_sent_alone_count_towards_the_next_tool_call(ollama: OllamaDouble) -> None:
    """server/routes.go sends the logprobs of tokens its tool parser holds back in
    lines of their own, before the line with the call."""
    held = [{"token": "{", "logprob": -0.01, "top_logprobs": []}]
    name = [{"token": "get", "logprob": -2.0, "top_logprobs": []}]
    ollama.play(lines(line(logprobs=held), line(logprobs=name), DOC_TOOL_LINE, DOC_FINAL))
    gen = llm(ollama).generate("weather?", tools=[WEATHER])
    (call,) = gen.tool_calls
    assert [t.token for t in call.tokens] == ["{", "get"]
    assert call.min_prob == pytest.approx(2.718281828**-2.0)
    assert [t.token for t in gen.tokens] == ["{", "get"]


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and objects of ``inner``: a named function, because Hypothesis reads the
    source of ``extend`` to see that it recurses, and a multi-line lambda's source is
    not always found (a deprecation error now and then, not a failure of the code)."""
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    arguments=st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            _nested,
            max_leaves=6,
        ),
        max_size=4,
    )
)
def test_any_arguments_object_arrives_as_sent(
    ollama: OllamaDouble, arguments: dict[str, Any]
) -> None:
    call = {"function": {"name": "f", "arguments": arguments}}
    ollama.play(lines(line(tool_calls=[call]), DOC_FINAL))
    (got,) = llm(ollama).generate("go", tools=[WEATHER], logprobs=False).tool_calls
    assert got.arguments == arguments


# -- the request ---------------------------------------------------------------------


def test_options_and_request_fields_in_the_body(ollama: OllamaDouble) -> None:
    llm(ollama).generate(
        "hi",
        max_tokens=64,
        seed=7,
        stop=["\n"],
        top_p=0.9,
        num_ctx=8192,
        num_thread=4,
        keep_alive="10m",
        think="low",
        options={"top_k": 20},
    )
    body = ollama.chats[0].body
    assert body["options"] == {
        "temperature": 0.0,
        "num_predict": 64,
        "seed": 7,
        "stop": ["\n"],
        "top_p": 0.9,
        "num_ctx": 8192,
        "num_thread": 4,
        "top_k": 20,
    }
    assert (body["keep_alive"], body["think"]) == ("10m", "low")


def test_response_format_becomes_format(ollama: OllamaDouble) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    llm(ollama).generate("hi", response_format=response_format)
    llm(ollama).generate("hi", response_format={"type": "json_object"})
    assert [c.body["format"] for c in ollama.chats] == [schema, "json"]
    assert "response_format" not in ollama.chats[0].body["options"]


def test_tool_choice_none_sends_no_tools(ollama: OllamaDouble) -> None:
    llm(ollama).generate("hi", tools=[WEATHER], tool_choice="none")
    llm(ollama).generate("hi", tools=[WEATHER], tool_choice="required")
    first, second = (c.body for c in ollama.chats)
    assert "tools" not in first and second["tools"] == [WEATHER]
    assert "tool_choice" not in second and "tool_choice" not in second["options"]


def test_a_conversation_with_a_tool_result_in_ollamas_form(ollama: OllamaDouble) -> None:
    """docs/api.md "Chat request (With history, with tools)": the assistant's call
    with arguments as an object, the result as a ``tool`` message naming the tool."""
    call = ToolCall(id="call_1", name="get_weather", arguments_text='{"city": "Toronto"}')
    request = Request(
        messages=[
            Message(role="user", content="what is the weather in Toronto?"),
            Message(role="assistant", tool_calls=[call.wire()]),
            Message(role="tool", content="11 degrees celsius", tool_call_id="call_1"),
        ],
        temperature=0.0,
        tools=[WEATHER],
    )
    made = provider(ollama)
    messages = made.request_body(request)["messages"]
    made.close()
    assert messages == [
        {"role": "user", "content": "what is the weather in Toronto?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_1", "function": {"name": "get_weather",
                                              "arguments": {"city": "Toronto"}}}
            ],
        },
        {"role": "tool", "content": "11 degrees celsius", "tool_call_id": "call_1",
         "tool_name": "get_weather"},
    ]  # fmt: skip


# -- errors --------------------------------------------------------------------------


def test_a_missing_model_says_ollama_pull(ollama: OllamaDouble) -> None:
    model = llm(ollama, model="qwen2.5:7b")
    error = error_of(model)
    assert isinstance(error, HTTPStatusError) and error.status_code == 404
    message = str(error)
    assert message.startswith(f"HTTP 404 from {ollama.base_url} for ollama:qwen2.5:7b: ")
    assert "model 'qwen2.5:7b' not found" in message
    assert "`ollama pull qwen2.5:7b`" in message and "\n" not in message


def test_a_missing_model_is_unavailable_at_setup(ollama: OllamaDouble) -> None:
    made = provider(ollama, model="qwen2.5:7b")
    for _ in range(2):  # checked once, raised every time
        with pytest.raises(ModelNotFound, match=r"run `ollama pull qwen2\.5:7b`"):
            made.ensure_available()
    assert sum(r.path == "/api/show" for r in ollama.requests) == 1
    present = provider(ollama)
    present.ensure_available()
    made.close()
    present.close()


def test_a_url_that_is_not_ollamas_root_says_so(ollama: OllamaDouble) -> None:
    error = error_of(llm(ollama, base_url=f"{ollama.base_url}/proxy"))
    assert "404 page not found: is that Ollama's root URL?" in str(error)
    assert "ollama pull" not in str(error)


def test_an_unreachable_server(ollama: OllamaDouble) -> None:
    made = provider(ollama, base_url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(LLMLabError, match=r"cannot reach http://127\.0\.0\.1:\d+ for ollama"):
        made.ensure_available()
    made.close()


def test_an_error_line_mid_stream(ollama: OllamaDouble) -> None:
    """docs/api/errors.mdx "Errors that occur while streaming"."""
    ollama.play(error_line("an error was encountered while running the model", line("Yes")))
    error = error_of(llm(ollama))
    assert isinstance(error, StreamError)
    assert str(error) == (
        f"error event in stream from {ollama.base_url} for {DISPLAY}: "
        "an error was encountered while running the model"
    )


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (end_without_done(), r"ended before its final line \(done: true\) after 2 chunks$"),
        (cut_mid_line(), r"was cut after 1 chunks"),
        (raw(b""), r"ended before its final line \(done: true\) after 0 chunks: the body"),
    ],
    ids=["clean-end", "cut-mid-line", "empty"],
)
def test_a_stream_without_its_done_line_is_cut(
    ollama: OllamaDouble, script: Any, expected: str
) -> None:
    ollama.play(script)
    error = error_of(llm(ollama))
    assert isinstance(error, StreamError)
    assert f"from {ollama.base_url} for {DISPLAY}" in str(error)
    assert re.search(expected, str(error)), str(error)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"message": {"content": 5}, "done": false}\n', "message.content is a number"),
        (b'{"message": {"tool_calls": {}}}\n', "message.tool_calls is an object, not an array"),
        (b'{"done": "yes"}\n', "done is a string, not a boolean"),
        (b"[1]\n", "not an object"),
        (b"{not json\n", "malformed JSON"),
    ],
    ids=["content", "tool-calls", "done", "array", "json"],
)
def test_a_line_of_the_wrong_shape(ollama: OllamaDouble, body: bytes, expected: str) -> None:
    ollama.play(raw(body))
    error = error_of(llm(ollama))
    assert isinstance(error, StreamError) and expected in str(error), str(error)
    assert "\n" not in str(error)


def test_another_content_type(ollama: OllamaDouble) -> None:
    ollama.play(raw(b"<html>hi</html>", "text/html"))
    assert "answered text/html instead of an NDJSON stream" in str(error_of(llm(ollama)))


def test_a_line_over_the_limit(ollama: OllamaDouble) -> None:
    ollama.play(raw(b'{"message": {"content": "' + b"x" * (16 * 1024 * 1024) + b'"}}\n'))
    error = error_of(llm(ollama))
    assert "a line longer than 16 MiB (the limit)" in str(error)


def test_keys_are_masked_in_error_messages(
    ollama: OllamaDouble, fresh_process_redactor: None
) -> None:
    ollama.play(http_error(401, f"invalid key {KEY}"))
    error = error_of(llm(ollama, api_key=KEY))
    assert ollama.chats[0].headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(error) and "invalid key ***" in str(error)


# -- retries -------------------------------------------------------------------------


def test_429_is_retried_and_counted(ollama: OllamaDouble) -> None:
    ollama.play(http_error(429, "busy", retry_after="0"), http_error(429, "busy", retry_after="0"))
    gen = llm(ollama, retries=3).generate("hi")
    assert (gen.text, gen.attempts, len(ollama.chats)) == ("The sky is blue", 3, 3)


def test_retries_are_bounded(ollama: OllamaDouble) -> None:
    ollama.play(*(http_error(429, "busy", retry_after="0") for _ in range(4)))
    error = error_of(llm(ollama, retries=1))
    assert str(error).endswith("busy (after 2 attempts)") and len(ollama.chats) == 2


def test_never_retried_after_the_first_token(ollama: OllamaDouble) -> None:
    model = llm(ollama, retries=3, timeout_s=0.5)
    ollama.play(stall(line("The")))
    error = error_of(model)
    assert isinstance(error, GenerationTimeout) and "after 1 chunks" in str(error)
    assert len(ollama.chats) == 1 and model.generations[0].attempts == 1


# -- model facts ---------------------------------------------------------------------


def test_list_models_from_tags_and_ps(ollama: OllamaDouble) -> None:
    """docs/api.md "List Local Models" and "List Running Models"."""
    models = list_ollama_models(ollama.base_url, timeout_s=5.0)
    assert models == [
        {"name": "deepseek-r1:latest", "size": 4683075271, "family": "qwen2",
         "parameter_size": "7.6B", "quantization": "Q4_K_M", "format": "gguf",
         "loaded": False},
        {"name": "llama3.2:latest", "size": 2019393189, "family": "llama",
         "parameter_size": "3.2B", "quantization": "Q4_K_M", "format": "gguf",
         "loaded": True},
    ]  # fmt: skip
    ollama.state.ps = None  # an older server without /api/ps
    assert [m["loaded"] for m in list_ollama_models(ollama.base_url, timeout_s=5.0)] == [None] * 2


def test_list_models_errors_are_one_line() -> None:
    with pytest.raises(ValueError, match="connection refused"):
        list_ollama_models(f"127.0.0.1:{closed_port()}", timeout_s=2.0)


def test_list_models_of_a_server_without_the_route(ollama: OllamaDouble) -> None:
    ollama.state.tags = {"data": []}
    with pytest.raises(ValueError, match="no 'models' list"):
        list_ollama_models(ollama.base_url, timeout_s=5.0)


def test_show_one_model(ollama: OllamaDouble) -> None:
    """docs/api.md "Show Model Information"."""
    assert show_ollama_model(ollama.base_url, MODEL, timeout_s=5.0) == {
        "family": "llama",
        "parameter_size": "8.0B",
        "quantization": "Q4_0",
        "format": "gguf",
        "parameter_count": 8030261248,
        "context_length": 8192,
    }
    with pytest.raises(ValueError, match=r"HTTP 404 .*not found: run `ollama pull nope`"):
        show_ollama_model(ollama.base_url, "nope", timeout_s=5.0)


def test_model_facts_are_fetched_once(ollama: OllamaDouble) -> None:
    made = provider(ollama)
    made.ensure_available()
    facts = made.model_facts()
    assert facts == {
        "family": "llama",
        "parameter_size": "8.0B",
        "quantization": "Q4_0",
        "format": "gguf",
        "parameter_count": 8030261248,
        "context_length": 8192,
        "runtime": "ollama",
        "runtime_version": "0.12.11",
    }
    assert made.model_facts() == facts
    assert [r.path for r in ollama.requests].count("/api/show") == 1
    assert [r.path for r in ollama.requests].count("/api/version") == 1
    made.close()


def test_model_facts_never_fail(ollama: OllamaDouble) -> None:
    made = provider(ollama, base_url=f"http://127.0.0.1:{closed_port()}")
    assert made.model_facts() == {"runtime": "ollama"}
    made.close()


# -- the base URL --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "url"),
    [
        # ollama-python's _parse_host doctests
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("1.2.3.4", "http://1.2.3.4:11434"),
        (":56789", "http://127.0.0.1:56789"),
        ("http://1.2.3.4", "http://1.2.3.4:80"),
        ("https://example.com:56789", "https://example.com:56789"),
        ("example.com/", "http://example.com:11434"),
        ("example.com:56789/path/", "http://example.com:56789/path"),
        ("[0001:002:003:0004::1]", "http://[0001:002:003:0004::1]:11434"),
        # ours: bind-all addresses on loopback, the OpenAI-compatible /v1 dropped
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:11434/v1", "http://127.0.0.1:11434"),
        ("http://gpu-box:11434/api/", "http://gpu-box:11434"),
        ("https://proxy/ollama/v1", "https://proxy:443/ollama"),
    ],
)
def test_base_url_from_ollama_host(host: str | None, url: str) -> None:
    assert ollama_base_url(host) == url


def test_the_provider_keeps_the_root(ollama: OllamaDouble) -> None:
    made = provider(ollama, base_url=f"{ollama.base_url}/v1/")
    assert made.base_url == ollama.base_url and made.endpoint == ollama.base_url
    assert made.runs_locally and made.probe_path == "/api/tags"
    made.ensure_available()
    assert [r.path for r in ollama.requests] == ["/api/tags", "/api/show"]
    made.close()
