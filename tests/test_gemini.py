"""The ``gemini:`` provider against its loopback double (`gemini_double`).

The streams follow the Gemini API reference (ai.google.dev/api/generate-content,
"models.streamGenerateContent", ``alt=sse``): one ``GenerateContentResponse`` per
``data:`` event, cumulative ``usageMetadata`` on each, the last with ``finishReason``,
no ``[DONE]``. Field names and enums are python-genai's (``google/genai/types.py``);
the in-stream error frame is the one in python-genai's
``tests/client/test_async_stream.py``; the usage example is the reference's
``UsageMetadata`` with thinking tokens (``thoughtsTokenCount``) and a cache
(``cachedContentTokenCount``), whose ``totalTokenCount`` is prompt + candidates +
thoughts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gemini_double import (
    KEY,
    MODEL,
    GeminiDouble,
    cut,
    end,
    http_error,
    response,
    serve_gemini,
    stall,
    stream,
)

from pytest_llmlab.errors import (
    GenerationTimeout,
    HTTPStatusError,
    MissingAPIKey,
    StreamError,
)
from pytest_llmlab.llm import LLM
from pytest_llmlab.models.assemble import GenerationAssembler
from pytest_llmlab.models.base import Generation, Message, Request
from pytest_llmlab.models.gemini import (
    API_KEY_ENVS,
    DEFAULT_BASE_URL,
    GeminiProvider,
    finish_reason,
    usage_from_metadata,
)
from pytest_llmlab.models.retry import RetryPolicy
from pytest_llmlab.models.spec import parse_spec

SPEC = f"gemini:{MODEL}"


@pytest.fixture
def double() -> Iterator[GeminiDouble]:
    with serve_gemini() as running:
        yield running


def provider(double: GeminiDouble, **kwargs: Any) -> GeminiProvider:
    return GeminiProvider(
        model=MODEL,
        display=SPEC,
        base_url=double.base_url,
        api_key=kwargs.pop("api_key", KEY),
        timeout_s=kwargs.pop("timeout_s", 5.0),
        **kwargs,
    )


def generate(double: GeminiDouble, request: Request | None = None, **kwargs: Any) -> Generation:
    """One generation through the provider's chunks and the shared assembler."""
    gemini = provider(double, **kwargs)
    request = request or Request(messages=[Message(role="user", content="hi")], temperature=0.0)
    assembler = GenerationAssembler(request=request, model=MODEL, spec=SPEC, provider="gemini")
    try:
        for chunk in gemini.stream_chunks(request):
            assembler.add(chunk)
    finally:
        gemini.close()
    return assembler.finish()


USAGE = {
    "promptTokenCount": 12,
    "candidatesTokenCount": 5,
    "thoughtsTokenCount": 40,
    "cachedContentTokenCount": 8,
    "totalTokenCount": 57,
}


# -- text, reasoning, usage ------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_text_streams_and_ends_with_the_body(double: GeminiDouble, newline: str) -> None:
    double.play(
        stream(
            response("The sky", usage={"promptTokenCount": 12, "totalTokenCount": 12}),
            response(" is blue.", finish="STOP", usage=USAGE),
            newline=newline,
        )
    )
    gen = generate(double)
    assert (gen.text, gen.finish_reason) == ("The sky is blue.", "stop")
    assert gen.timings.ttft_s is not None and gen.timings.server == {}


def test_a_last_event_without_its_blank_line_still_counts(double: GeminiDouble) -> None:
    """The body ends right after the final data line: the whole JSON is that response
    (a cut one never parses, see `test_a_cut_stream_is_a_stream_error`)."""
    double.play(stream(response("Hi"), response("!", finish="STOP"), final_blank_line=False))
    assert generate(double).text == "Hi!"


def test_thought_parts_are_reasoning(double: GeminiDouble) -> None:
    double.play(
        stream(
            response(thought="Rayleigh scattering. "),
            response(thought="Short answer.", text="Blue."),
            response(finish="STOP", usage=USAGE),
        )
    )
    gen = generate(double)
    assert (gen.reasoning, gen.text) == ("Rayleigh scattering. Short answer.", "Blue.")


def test_usage_counts_thoughts_as_output_and_keeps_the_cache(double: GeminiDouble) -> None:
    double.play(stream(response("a", usage={"promptTokenCount": 12}),
                       response("b", finish="STOP", usage=USAGE)))  # fmt: skip
    usage = generate(double).usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (12, 45)
    assert usage.cached_prompt_tokens == 8 and usage.processed_prompt_tokens == 4
    assert usage.reported and usage.total_tokens == USAGE["totalTokenCount"]


def test_usage_mapping_keeps_the_server_object() -> None:
    usage = usage_from_metadata(USAGE)
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 40}
    assert usage["usage_metadata"] == USAGE
    bare = usage_from_metadata({"promptTokenCount": 3})
    assert (bare["completion_tokens"], "prompt_tokens_details" in bare) == (0, False)


@pytest.mark.parametrize(
    ("gemini", "openai"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "malformed_function_call"),
        ("OTHER", "other"),
    ],
)
def test_finish_reasons(double: GeminiDouble, gemini: str, openai: str) -> None:
    double.play(stream(response("x", finish=gemini)))
    assert generate(double).finish_reason == openai
    assert finish_reason("STOP", called_tools=True) == "tool_calls"


# -- logprobs ----------------------------------------------------------------------


def test_logprobs_become_tokens_with_alternatives(double: GeminiDouble) -> None:
    steps = [("Blue", -0.1, [("Blue", -0.1), ("Azure", -2.5)]), (".", -0.01, [(".", -0.01)])]
    double.play(stream(response("Blue.", finish="STOP", logprobs=steps)))
    request = Request(
        messages=[Message(role="user", content="colour?")],
        temperature=0.0,
        top_logprobs=2,
        params={"gemini_logprobs": True},
    )
    gen = generate(double, request)
    assert [(t.token, t.logprob) for t in gen.tokens] == [("Blue", -0.1), (".", -0.01)]
    assert [(a.token, a.logprob) for a in gen.tokens[0].top] == [("Blue", -0.1), ("Azure", -2.5)]
    config = double.posts[0].body["generationConfig"]
    assert (config["responseLogprobs"], config["logprobs"]) == (True, 2)


def test_chosen_token_logprobs_without_alternatives(double: GeminiDouble) -> None:
    """``gemini_logprobs`` without ``top_logprobs``: ``responseLogprobs`` only (the
    chosen candidates), no ``logprobs`` count; any candidates sent are not kept."""
    steps = [("Blue", -0.1, [("Blue", -0.1), ("Azure", -2.5)])]
    double.play(stream(response("Blue", finish="STOP", logprobs=steps)))
    request = Request(
        messages=[Message(role="user", content="colour?")],
        temperature=0.0,
        params={"gemini_logprobs": True},
    )
    gen = generate(double, request)
    config = double.posts[0].body["generationConfig"]
    assert config["responseLogprobs"] is True and "logprobs" not in config
    assert [(t.token, t.logprob, t.top) for t in gen.tokens] == [("Blue", -0.1, [])]


def test_logprobs_are_not_asked_for_by_default(double: GeminiDouble) -> None:
    generate(double)  # Request.logprobs is True by default
    config = double.posts[0].body["generationConfig"]
    assert "responseLogprobs" not in config and "logprobs" not in config
    off = Request(
        messages=[Message(role="user", content="x")],
        temperature=0.0,
        logprobs=False,
        params={"gemini_logprobs": True},
    )
    generate(double, off)
    assert "responseLogprobs" not in double.posts[1].body["generationConfig"]


def test_a_400_to_a_logprobs_request_says_why(double: GeminiDouble) -> None:
    double.play(http_error(400, "Logprobs is not enabled for models/gemini-2.5-flash"))
    request = Request(
        messages=[Message(role="user", content="x")],
        temperature=0.0,
        params={"gemini_logprobs": True},
    )
    with pytest.raises(HTTPStatusError, match=r"not enabled .*gemini_logprobs: true"):
        generate(double, request)


# -- the request ------------------------------------------------------------------


def test_request_body_roles_system_and_generation_config(double: GeminiDouble) -> None:
    request = Request(
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="Hi"),
            Message(role="assistant", content="Hello!"),
            Message(role="user", content="Sky colour?"),
        ],
        temperature=0.3,
        max_tokens=64,
        seed=7,
        stop=["\n\n"],
        params={
            "top_p": 0.9,
            "top_k": 20,
            "thinking_budget": 512,
            "include_thoughts": True,
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}],
        },
    )
    generate(double, request)
    (post,) = double.posts
    assert post.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    assert post.headers["x-goog-api-key"] == KEY and "authorization" not in post.headers
    body = post.body
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}]},
        {"role": "model", "parts": [{"text": "Hello!"}]},
        {"role": "user", "parts": [{"text": "Sky colour?"}]},
    ]
    assert body["generationConfig"] == {
        "temperature": 0.3,
        "maxOutputTokens": 64,
        "seed": 7,
        "stopSequences": ["\n\n"],
        "topP": 0.9,
        "topK": 20,
        "thinkingConfig": {"thinkingBudget": 512, "includeThoughts": True},
    }
    assert body["safetySettings"][0]["threshold"] == "OFF"
    assert set(body) == {"contents", "systemInstruction", "generationConfig", "safetySettings"}


def test_response_format_becomes_a_json_schema(double: GeminiDouble) -> None:
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "v", "schema": schema}}
    request = Request(
        messages=[Message(role="user", content="x")],
        temperature=0.0,
        params={"response_format": fmt, "generation_config": {"candidateCount": 1}},
    )
    generate(double, request)
    config = double.posts[0].body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == schema and config["candidateCount"] == 1


PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}}
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": PARAMETERS,
    },
}


def test_tools_history_and_results_are_mapped(double: GeminiDouble) -> None:
    call = {"id": "call_0", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    request = Request(
        messages=[
            Message(role="user", content="Weather in Paris?"),
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id="call_0", content='{"temp_c": 21}'),
            Message(role="tool", tool_call_id="call_0", content="sunny"),
        ],
        temperature=0.0,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    generate(double, request)
    body = double.posts[0].body
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Weather in a city",
        "parametersJsonSchema": PARAMETERS}]}]  # fmt: skip
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    assert body["contents"][1:] == [
        {"role": "model",
         "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}},
            {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
        ]},
    ]  # fmt: skip


@pytest.mark.parametrize(("choice", "mode"), [("auto", "AUTO"), ("none", "NONE"),
                                              ("required", "ANY")])  # fmt: skip
def test_tool_choice_modes(double: GeminiDouble, choice: str, mode: str) -> None:
    request = Request(messages=[Message(role="user", content="x")], temperature=0.0,
                      tools=[WEATHER], tool_choice=choice)  # fmt: skip
    generate(double, request)
    assert double.posts[0].body["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


# -- tool calls ---------------------------------------------------------------------


def test_function_calls_become_tool_calls(double: GeminiDouble) -> None:
    paris = {"name": "get_weather", "args": {"city": 'Paris "Île" \\ ok'}}
    rome = {"name": "get_weather", "args": {"city": "Rome"}, "id": "server-id-7"}
    double.play(
        stream(
            response(calls=[paris]),
            response(calls=[rome, {"name": "now"}], finish="STOP", usage=USAGE),
        )
    )
    gen = generate(double)
    assert gen.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in gen.tool_calls] == [
        ("call_0", "get_weather", {"city": 'Paris "Île" \\ ok'}),
        ("server-id-7", "get_weather", {"city": "Rome"}),
        ("call_2", "now", {}),
    ]
    assert json.loads(gen.tool_calls[0].arguments_text) == paris["args"]


def test_tool_call_confidence_from_logprobs(double: GeminiDouble) -> None:
    steps: list[tuple[str, float, list[tuple[str, float]]]] = [
        ("{", -0.01, []),
        ("Paris", -0.7, []),
    ]
    double.play(stream(response(calls=[{"name": "get_weather", "args": {"city": "Paris"}}],
                                finish="STOP", logprobs=steps)))  # fmt: skip
    (call,) = generate(double).tool_calls
    assert call.min_prob == pytest.approx(0.4966, abs=1e-3)


# -- errors ----------------------------------------------------------------------------


def test_blocked_prompt_names_the_reason(double: GeminiDouble) -> None:
    double.play(stream(response(block_reason="PROHIBITED_CONTENT")))
    with pytest.raises(StreamError, match=r"for gemini:.*blocked the prompt: blockReason "
                                          r"PROHIBITED_CONTENT$"):  # fmt: skip
        generate(double)


def test_error_frame_inside_the_stream(double: GeminiDouble) -> None:
    error = {"error": {"code": 500, "message": "Error", "status": "INTERNAL"}}
    double.play(stream(response("test"), error))
    with pytest.raises(StreamError, match=r"error event in stream from .*: INTERNAL: Error$"):
        generate(double)


def test_end_without_a_finish_reason_is_a_stream_error(double: GeminiDouble) -> None:
    double.play(end(response("Hel"), response("lo")))
    with pytest.raises(StreamError, match=r"ended without a finishReason after 2 chunks$"):
        generate(double)


def test_an_empty_body_is_a_stream_error(double: GeminiDouble) -> None:
    double.play(end())
    with pytest.raises(StreamError, match=r"after 0 chunks: the body was empty$"):
        generate(double)


def test_a_cut_stream_is_a_stream_error(double: GeminiDouble) -> None:
    double.play(cut(response("Hel")))
    with pytest.raises(StreamError, match=r"was cut after 1 chunks"):
        generate(double)


def test_malformed_frames_are_stream_errors(double: GeminiDouble) -> None:
    double.play(stream("{not json"), stream('{"candidates": {"x": 1}}'))
    with pytest.raises(StreamError, match="malformed JSON"):
        generate(double)
    with pytest.raises(StreamError, match="candidates is an object, not an array"):
        generate(double)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Invalid JSON payload received."),
        (401, "Request had invalid authentication credentials."),
        (404, f"models/{MODEL} is not found for API version v1beta"),
    ],
)
def test_http_errors_are_one_line_naming_model_and_endpoint(
    double: GeminiDouble, status: int, message: str
) -> None:
    double.play(http_error(status, message, echo_key=True))
    with pytest.raises(HTTPStatusError) as info:
        generate(double)
    text = str(info.value)
    assert text.startswith(f"HTTP {status} from {double.base_url} for {SPEC}: {message}")
    assert KEY not in text and "***" in text and "\n" not in text
    assert info.value.status_code == status


def test_a_wrong_key_is_refused_and_masked(double: GeminiDouble) -> None:
    with pytest.raises(HTTPStatusError, match="API key not valid"):
        generate(double, api_key="fake-gemini-wrong-key")
    assert double.posts[0].headers["x-goog-api-key"] == "fake-gemini-wrong-key"


def test_the_key_never_travels_in_the_url(double: GeminiDouble) -> None:
    gemini = provider(double)
    gemini.ensure_available()
    generate(double)
    assert double.key_in_query == [] and all("key=" not in p.path for p in double.posts)
    gemini.close()


def test_the_double_refuses_a_key_in_the_url() -> None:
    """The guard of `serve_gemini` can fail: a request with ``?key=`` is refused and
    recorded (a double of its own: the guard would fail this test at exit)."""
    double = GeminiDouble().start()
    try:
        path = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse&key={KEY}"
        answer = httpx.post(
            double.base_url.removesuffix("/v1beta") + path,
            json={},
            headers={"x-goog-api-key": KEY},
        )
    finally:
        double.stop()
    assert answer.status_code == 400 and double.key_in_query == [path]


def test_a_missing_key_names_both_variables(double: GeminiDouble) -> None:
    gemini = provider(double, api_key=None)
    with pytest.raises(MissingAPIKey, match="set GEMINI_API_KEY or GOOGLE_API_KEY"):
        gemini.ensure_available()
    assert API_KEY_ENVS == ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    assert GeminiProvider(model=MODEL, display=SPEC).cloud_provider == "google"
    assert GeminiProvider(model=MODEL, display=SPEC).base_url == DEFAULT_BASE_URL


# -- retries, and the provider behind LLM ----------------------------------------------


def model(double: GeminiDouble, retries: int, **kwargs: Any) -> LLM:
    gemini = provider(double, retry=RetryPolicy(retries, base_delay_s=0.01), **kwargs)
    return LLM(model_spec=parse_spec("vllm:" + MODEL), temperature=0.0, provider=gemini)


def test_generate_through_llm(double: GeminiDouble) -> None:
    double.play(stream(response(thought="hmm"), response("Paris.", finish="STOP", usage=USAGE)))
    gen = model(double, retries=0).generate("Capital of France?", system="One word.")
    assert (gen.text, gen.reasoning, gen.attempts) == ("Paris.", "hmm", 1)
    assert gen.usage.completion_tokens == 45
    assert double.posts[0].body["systemInstruction"] == {"parts": [{"text": "One word."}]}


def test_429_is_retried_with_retry_after_and_counted(double: GeminiDouble) -> None:
    double.play(
        http_error(429, "Resource has been exhausted", retry_after="0"),
        http_error(429, "Resource has been exhausted", retry_after="0"),
    )
    gen = model(double, retries=3).generate("hi")
    assert (gen.text, gen.attempts, len(double.posts)) == ("Hello, world", 3, 3)


def test_retries_are_bounded(double: GeminiDouble) -> None:
    double.play(*(http_error(429, "Resource has been exhausted") for _ in range(4)))
    llm = model(double, retries=1)
    with pytest.raises(HTTPStatusError, match=r"HTTP 429 .*exhausted \(after 2 attempts\)$"):
        llm.generate("hi")
    assert len(double.posts) == 2


def test_never_retried_after_the_first_token(double: GeminiDouble) -> None:
    double.play(stall(response("Hel")))
    llm = model(double, retries=3, timeout_s=0.5)
    with pytest.raises(GenerationTimeout, match=r"no data from .* after 1 chunks"):
        llm.generate("hi")
    assert len(double.posts) == 1 and llm.generations[0].attempts == 1
