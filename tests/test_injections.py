"""Context and injections: where they go in the request, the prompt tokens they add
(llama.cpp's own tokenizer, on the real embedded model) and their prefill energy."""

from __future__ import annotations

import time

from loopback import LoopbackServer, stream

from pytest_llmlab import CounterSample
from pytest_llmlab.energy.meters import MeterSet
from pytest_llmlab.llm import LLM, system_text
from pytest_llmlab.models.local import EmbeddedLlamaCpp
from pytest_llmlab.models.openai import OpenAICompatible
from pytest_llmlab.models.spec import parse_spec

CONTEXT = "user: My name is Ada and I live in Lyon.\nassistant: Hello Ada!"
INJECTIONS = [{"description": "persona", "content": "Always answer like a pirate."}]


class TenWatts:
    """A counter meter drawing a steady 10 W, so every window has prefill joules."""

    name = "fake"

    def __init__(self) -> None:
        self.start = time.monotonic_ns()

    def sample(self) -> list[CounterSample]:
        now = time.monotonic_ns()
        return [CounterSample("package-0", 10.0 * (now - self.start) / 1e9, now)]

    def close(self) -> None:
        pass


def test_system_text_order_and_tags() -> None:
    text = system_text("Be brief.", CONTEXT, INJECTIONS)
    assert text == (
        f"Be brief.\n\n<conversation_context>\n{CONTEXT}\n</conversation_context>\n\n"
        "Always answer like a pirate."
    )
    assert system_text(None, None, None) is None
    assert system_text(None, "c") == "<conversation_context>\nc\n</conversation_context>"


def test_injection_tokens_are_counted_by_llama_cpp(embedded: EmbeddedLlamaCpp) -> None:
    llm = LLM(
        model_spec=parse_spec("local:smollm2-135m"),
        temperature=0.0,
        provider=embedded,
        meters=MeterSet([TenWatts()], "fake 10 W"),
    )
    plain = llm.generate("Who am I?", system="Be brief.", max_tokens=4)
    assert plain.injection_tokens is None
    gen = llm.generate(
        "Who am I?", system="Be brief.", context=CONTEXT, injections=INJECTIONS, max_tokens=4
    )
    full = system_text("Be brief.", CONTEXT, INJECTIONS)
    assert full is not None
    expected = (embedded.count_tokens(full) or 0) - (embedded.count_tokens("Be brief.") or 0)
    assert gen.injection_tokens == expected > 20
    # The server saw the extra tokens: its prompt is longer by about that much (the
    # chat template's framing tokens are the same in both requests).
    grown = gen.usage.prompt_tokens - plain.usage.prompt_tokens
    assert abs(grown - expected) <= 2
    llm.close()


def test_injection_joules_are_the_prefill_share(embedded: EmbeddedLlamaCpp) -> None:
    from pytest_llmlab.results import record_from_generation

    llm = LLM(
        model_spec=parse_spec("local:smollm2-135m"),
        temperature=0.0,
        provider=embedded,
        meters=MeterSet([TenWatts()], "fake 10 W"),
    )
    gen = llm.generate("Hi", context=CONTEXT, max_tokens=2, seed=1)
    record = record_from_generation(gen, test_id="t", alias=None, worker="main")
    assert gen.energy is not None and gen.energy.prefill_joules
    assert gen.injection_tokens is not None
    processed = gen.usage.processed_prompt_tokens
    assert record["injection_tokens"] == gen.injection_tokens
    assert (
        record["injection_joules"] == gen.energy.prefill_joules * gen.injection_tokens / processed
    )
    llm.close()


def test_servers_without_a_tokenizer_report_none(server: LoopbackServer) -> None:
    server.play(stream(["Arr"]))
    provider = OpenAICompatible(model="tiny", display="vllm:tiny", base_url=server.base_url)
    llm = LLM(model_spec=parse_spec("vllm:tiny"), temperature=0.0, provider=provider)
    gen = llm.generate("Hi", context=CONTEXT, injections=INJECTIONS)
    assert gen.injection_tokens is None
    system = server.posts[0].body["messages"][0]
    assert system["role"] == "system" and "<conversation_context>" in system["content"]
    assert "context" not in server.posts[0].body  # not leaked into the request body
    llm.close()
    provider.close()
