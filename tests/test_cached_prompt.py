"""Cached prompt tokens end to end through the HTTP client and into the record.

The server is `tests/loopback.py`, a protocol double of the OpenAI streaming format (not
a model): its usage chunk carries ``prompt_tokens_details.cached_tokens`` as OpenAI
documents for prompt caching. The real llama.cpp prompt cache is in
`tests/test_local_model.py`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clients import Binder
from loopback import LoopbackServer, stream

from pytest_llmlab.results import RECORD_FIELDS, record_from_generation


@pytest.fixture
def binder() -> Iterator[Binder]:
    with Binder() as made:
        yield made


def test_openai_cached_tokens_reach_the_generation_and_the_record(
    server: LoopbackServer, binder: Binder
) -> None:
    server.play(stream(["Hi", " there", "!"], prompt_tokens=1500, cached_tokens=1280))
    gen = binder(server.base_url).llm.generate("Say hello.")
    assert gen.usage.prompt_tokens == 1500 and gen.usage.cached_prompt_tokens == 1280
    ttft = gen.timings.ttft_s
    assert ttft is not None and ttft > 0
    # Over the 220 tokens processed, not the 1500 sent.
    assert gen.timings.prefill_tokens_per_s == pytest.approx(220 / ttft)
    assert gen.timings.rates_from == "client"  # OpenAI sends no timing block
    record = record_from_generation(gen, test_id="t", alias=None, worker="main")
    assert record["cached_prompt_tokens"] == 1280
    assert record["prefill_tokens_per_s"] == pytest.approx(220 / ttft)
    assert record["rates_from"] == "client"
    assert tuple(record) == RECORD_FIELDS


def test_a_server_without_cache_details_gives_none(server: LoopbackServer, binder: Binder) -> None:
    server.play(stream(["Hi"], prompt_tokens=30))
    gen = binder(server.base_url).llm.generate("Say hello.")
    record = record_from_generation(gen, test_id="t", alias=None, worker="main")
    assert record["cached_prompt_tokens"] is None
    ttft = gen.timings.ttft_s
    assert ttft is not None
    assert record["prefill_tokens_per_s"] == pytest.approx(30 / ttft)
