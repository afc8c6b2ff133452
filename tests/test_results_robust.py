"""Building a record never raises: an uncomputable metric is null, the record stays."""

from __future__ import annotations

import importlib
import json
import math

import pytest

from pytest_llmlab import Generation, Message, Request, TokenLogprob, TopLogprob, Usage
from pytest_llmlab.expect import confidence_of, expect
from pytest_llmlab.results import dumps_record, record_from_generation


def generation(logprobs: list[float]) -> Generation:
    tokens = [
        TokenLogprob(token=f"t{i}", logprob=lp, top=[TopLogprob(token=f"t{i}", logprob=lp)])
        for i, lp in enumerate(logprobs)
    ]
    return Generation(
        text="".join(t.token for t in tokens),
        model="vllm:m",
        spec="vllm:m",
        provider="vllm",
        temperature=0.0,
        request=Request(messages=[Message(role="user", content="hi")], temperature=0.0),
        tokens=tokens,
        usage=Usage(prompt_tokens=3, completion_tokens=len(tokens)),
    )


def test_minus_9999_logprobs_give_infinite_perplexity_not_overflow() -> None:
    """vLLM sends -9999 for -inf: exp(9999) overflows a float."""
    conf = confidence_of(generation([-0.1, -9999.0, -9999.0]))
    assert conf is not None
    assert conf.perplexity == math.inf
    assert conf.min_prob == 0.0 and conf.first_token_prob == pytest.approx(math.exp(-0.1))


def test_record_of_such_a_generation_is_built_and_written_with_null_perplexity() -> None:
    record = record_from_generation(
        generation([-9999.0] * 4), test_id="t::x", alias=None, worker="main"
    )
    line = json.loads(dumps_record(record))
    assert line["confidence"]["perplexity"] is None
    assert line["confidence"]["min_prob"] == 0.0


def test_a_failing_metric_is_null_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    # The package root's `expect` is the function: reach the module itself.
    expect_module = importlib.import_module("pytest_llmlab.expect")

    def broken(gen: Generation) -> None:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(expect_module, "confidence_of", broken)
    with pytest.warns(RuntimeWarning, match="confidence metrics of vllm:m not computed"):
        record = record_from_generation(
            generation([-0.5]), test_id="t::x", alias=None, worker="main"
        )
    assert record["confidence"] is None and record["output"] == "t0"


def test_confidence_check_on_infinite_perplexity_fails_cleanly() -> None:
    with pytest.raises(AssertionError, match="perplexity"):
        expect(generation([-9999.0])).confidence(max_perplexity=10)
