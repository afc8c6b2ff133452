"""The ``lmstudio:`` provider against `lmstudio_double`, a loopback double of LM Studio's
REST API built from lmstudio-ai/docs ``1_developer/2_rest/endpoints.mdx`` (commit
86cb996): the ``GET /api/v0/models`` example list, and the ``stats``, ``model_info``,
``runtime`` and ``usage`` of the ``POST /api/v0/chat/completions`` example answer, sent
in the stream's final chunk; ``/v1`` for the fallback when ``/api/v0`` is a 404."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from lmstudio_double import (
    DOC_STATS,
    MODEL,
    LMStudioDouble,
    end_without_done,
    http_error,
    serve_lmstudio,
    text_stream,
)
from loopback import closed_port

from pytest_llmlab import LLM, LLMLabError, ModelSpec, cli
from pytest_llmlab.errors import EndpointUnreachable, HTTPStatusError, StreamError
from pytest_llmlab.models.lmstudio import (
    LMStudioProvider,
    LMStudioStream,
    list_lmstudio_models,
)
from pytest_llmlab.models.registry import ProviderPool
from pytest_llmlab.models.retry import RetryPolicy

DISPLAY = f"lmstudio:{MODEL}"
CHAT = "POST /api/v0/chat/completions"


@pytest.fixture
def lmstudio() -> Iterator[LMStudioDouble]:
    with serve_lmstudio() as double:
        yield double


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def provider(base_url: str, **kwargs: Any) -> LMStudioProvider:
    return LMStudioProvider(
        model=MODEL,
        display=DISPLAY,
        base_url=base_url,
        retry=RetryPolicy(0),
        timeout_s=5.0,
        deadline_s=0,
        **kwargs,
    )


@pytest.fixture
def llm(lmstudio: LMStudioDouble) -> Iterator[LLM]:
    made = provider(lmstudio.base_url)
    model = LLM(model_spec=ModelSpec("lmstudio", MODEL), temperature=0.0, provider=made)
    made.ensure_available()
    yield model
    model.close()
    made.close()


def error_of(model: LLM) -> LLMLabError:
    with pytest.raises(LLMLabError) as info:
        model.generate("why is the sky blue?")
    return info.value


# -- the native API ------------------------------------------------------------------


def test_native_stream_maps_the_documented_stats_into_server_timings(
    lmstudio: LMStudioDouble, llm: LLM
) -> None:
    """The example answer's ``stats`` become ``timings.server``, its tokens/s the
    decode rate, prompt tokens over the time to first token the prefill rate."""
    gen = llm.generate("why is the sky blue?")
    assert (gen.text, gen.finish_reason) == ("The sky is blue", "stop")
    assert (gen.usage.prompt_tokens, gen.usage.completion_tokens) == (24, 53)
    server = gen.timings.server
    assert {k: server[k] for k in DOC_STATS} == DOC_STATS
    assert gen.timings.rates_from == "server"
    assert gen.timings.decode_tokens_per_s == pytest.approx(DOC_STATS["tokens_per_second"])
    assert gen.timings.prefill_tokens_per_s == pytest.approx(24 / 0.111)
    assert lmstudio.paths == ["GET /v1/models", "GET /api/v0/models", CHAT]


def test_model_facts_reach_the_generation(lmstudio: LMStudioDouble, llm: LLM) -> None:
    """Every generation has what ``/api/v0/models`` lists for the model plus the
    ``model_info`` and ``runtime`` its own answer carried (facts are read when the
    generation ends)."""
    listed = {"arch": "granite", "quantization": "Q4_K_M", "format": "gguf",
              "max_context_length": 4096}  # fmt: skip
    answered = {
        "context_length": 4096,
        "runtime": "llama.cpp-mac-arm64-apple-metal-advsimd",
        "runtime_version": "1.3.0",
    }
    first = llm.generate("why is the sky blue?")
    assert first.backend == {**listed, **answered}
    second = llm.generate("and the sea?")
    assert second.backend == first.backend


def test_a_stream_without_stats_keeps_the_client_rates(lmstudio: LMStudioDouble, llm: LLM) -> None:
    """lmstudio-bug-tracker#676: LM Studio 0.3.x streams sent no ``stats``."""
    lmstudio.play(text_stream(extras=False))
    gen = llm.generate("why is the sky blue?")
    assert gen.text == "The sky is blue"
    assert (gen.timings.rates_from, gen.timings.server) == ("client", {})
    assert "runtime" not in gen.backend


def test_usage_after_the_stats_still_gives_the_prefill_rate(lmstudio: LMStudioDouble) -> None:
    """Stats in one chunk, usage (with cached prompt tokens) in a later one."""
    made = provider(lmstudio.base_url)
    stream = LMStudioStream(made, {})
    first = stream._mapped({"choices": [], "stats": dict(DOC_STATS)})
    assert "prompt_per_second" not in first["timings"]
    usage = {"prompt_tokens": 24, "prompt_tokens_details": {"cached_tokens": 4}}
    later = stream._mapped({"choices": [], "usage": usage})
    assert later["timings"]["prompt_per_second"] == pytest.approx(20 / 0.111)
    assert later["timings"]["predicted_per_second"] == DOC_STATS["tokens_per_second"]
    made.close()


# -- the fallback --------------------------------------------------------------------


def test_without_api_v0_it_streams_from_v1(lmstudio: LMStudioDouble) -> None:
    lmstudio.state.native = False
    made = provider(lmstudio.base_url)
    model = LLM(model_spec=ModelSpec("lmstudio", MODEL), temperature=0.0, provider=made)
    made.ensure_available()
    gen = model.generate("why is the sky blue?")
    assert (gen.text, gen.usage.prompt_tokens) == ("The sky is blue", 24)
    assert (gen.timings.rates_from, gen.timings.server, gen.backend) == ("client", {}, {})
    model.generate("again")
    assert lmstudio.paths == [
        "GET /v1/models",
        "GET /api/v0/models",  # asked once
        "POST /v1/chat/completions",
        "POST /v1/chat/completions",
    ]
    model.close()
    made.close()


def test_the_pool_builds_the_lmstudio_provider(lmstudio: LMStudioDouble) -> None:
    pool = ProviderPool(base_urls={"lmstudio": lmstudio.base_url}, timeout_s=5.0)
    built = pool.get(ModelSpec("lmstudio", MODEL))
    assert isinstance(built, LMStudioProvider) and built.native
    pool.close()


# -- errors --------------------------------------------------------------------------


def test_a_missing_model_is_one_line_naming_model_and_endpoint(
    lmstudio: LMStudioDouble, llm: LLM
) -> None:
    lmstudio.play(http_error(404, "Model 'nope' not found"))
    error = error_of(llm)
    message = str(error)
    assert isinstance(error, HTTPStatusError) and error.status_code == 404
    assert message.startswith(f"HTTP 404 from {lmstudio.base_url} for {DISPLAY}: ")
    assert "Model 'nope' not found" in message and "llmlab models list" in message
    assert "\n" not in message


def test_a_stream_cut_before_done_is_a_stream_error(lmstudio: LMStudioDouble, llm: LLM) -> None:
    lmstudio.play(end_without_done("I", " can"))
    error = error_of(llm)
    assert isinstance(error, StreamError)
    assert str(error) == (
        f"stream from {lmstudio.base_url} for {DISPLAY} ended before [DONE] after 2 chunks"
    )


def test_a_closed_port_is_unreachable_in_one_line() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    made = provider(url)
    with pytest.raises(EndpointUnreachable) as info:
        made.ensure_available()
    assert str(info.value) == f"cannot reach {url} for {DISPLAY}: connection refused"
    made.close()


# -- models list ---------------------------------------------------------------------


def test_list_lmstudio_models_reads_api_v0_models(
    lmstudio: LMStudioDouble, no_proxy_env: None
) -> None:
    models = list_lmstudio_models(lmstudio.base_url, timeout_s=5.0)
    assert [m["id"] for m in models] == [
        "qwen2-vl-7b-instruct",
        "meta-llama-3.1-8b-instruct",
        "text-embedding-nomic-embed-text-v1.5",
        MODEL,
    ]
    assert models[1] == {
        "id": "meta-llama-3.1-8b-instruct",
        "type": "llm",
        "publisher": "lmstudio-community",
        "arch": "llama",
        "quantization": "Q4_K_M",
        "state": "not-loaded",
        "max_context_length": 131072,
    }


def test_list_lmstudio_models_falls_back_to_v1_ids(
    lmstudio: LMStudioDouble, no_proxy_env: None
) -> None:
    lmstudio.state.native = False
    models = list_lmstudio_models(lmstudio.base_url, timeout_s=5.0)
    assert models[-1] == {"id": MODEL, "type": None, "publisher": None, "arch": None,
                          "quantization": None, "state": None, "max_context_length": None}  # fmt: skip
    assert len(models) == 4
    assert lmstudio.paths == ["GET /api/v0/models", "GET /v1/models"]


def test_list_lmstudio_models_says_why_not(lmstudio: LMStudioDouble, no_proxy_env: None) -> None:
    lmstudio.state.models = {"object": "list"}
    with pytest.raises(ValueError, match=r"^the answer is not an LM Studio model list"):
        list_lmstudio_models(lmstudio.base_url, timeout_s=5.0)
    with pytest.raises(ValueError, match=r"^connection refused$"):
        list_lmstudio_models(f"http://127.0.0.1:{closed_port()}/v1", timeout_s=5.0)


def test_cli_lists_lmstudio_models_with_their_facts(
    lmstudio: LMStudioDouble,
    no_proxy_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LLMLAB_LMSTUDIO_BASE_URL", lmstudio.base_url)
    assert cli.main(["models", "list", "--endpoint", "lmstudio"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 4 and err == ""
    assert lines[0].split("\t") == [
        "qwen2-vl-7b-instruct", "vlm", "mlx-community", "qwen2_vl", "4bit", "not-loaded", "32768"
    ]  # fmt: skip
    assert lines[3].split("\t") == [
        MODEL, "llm", "lmstudio-community", "granite", "Q4_K_M", "loaded", "4096"
    ]  # fmt: skip


def test_cli_falls_back_to_v1_model_ids(
    lmstudio: LMStudioDouble,
    no_proxy_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lmstudio.state.native = False
    monkeypatch.setenv("LLMLAB_LMSTUDIO_BASE_URL", lmstudio.base_url)
    assert cli.main(["models", "list", "--endpoint", "lmstudio"]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[-1] == MODEL
    assert lmstudio.paths == ["GET /api/v0/models", "GET /v1/models"]
