"""The first test a user writes: run it with `pytest examples/`."""

import pytest

from pytest_llmlab import LLM


def test_capital(llm: LLM) -> None:
    gen = llm.generate("What is the capital of France? Answer in one word.", max_tokens=16)
    assert "Paris" in gen.text


@pytest.mark.llm(temperatures=[0], max_tokens=24, seed=7)
def test_answer_is_streamed(llm: LLM) -> None:
    chunks = list(llm.stream("Name a primary colour. One word."))
    assert chunks, "no text streamed"
    gen = llm.generate("Name a primary colour. One word.")
    assert gen.usage.completion_tokens > 0
    assert gen.timings.ttft_s is not None and gen.timings.ttft_s <= gen.timings.total_s
