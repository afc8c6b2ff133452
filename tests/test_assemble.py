"""Unit tests of `ThinkSplitter` and `GenerationAssembler` on hand-built chunk dicts.

The chunks follow the OpenAI ``chat.completion.chunk`` streaming format; no server is
involved, and time comes from an injected fake clock.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmlab.models.assemble import GenerationAssembler, ThinkSplitter
from pytest_llmlab.models.base import Message, Request, TokenLogprob, TopLogprob


def split_whole(text: str) -> tuple[str, str]:
    splitter = ThinkSplitter()
    answer, reasoning = splitter.feed(text)
    tail_answer, tail_reasoning = splitter.flush()
    return answer + tail_answer, reasoning + tail_reasoning


def split_chunks(chunks: list[str]) -> tuple[str, str]:
    splitter = ThinkSplitter()
    answer: list[str] = []
    reasoning: list[str] = []
    for chunk in chunks:
        a, r = splitter.feed(chunk)
        answer.append(a)
        reasoning.append(r)
    a, r = splitter.flush()
    return "".join(answer) + a, "".join(reasoning) + r


# -- ThinkSplitter --------------------------------------------------------------------


def test_think_block_goes_to_reasoning() -> None:
    """Text inside ``<think>...</think>`` is reasoning; the rest is the answer."""
    assert split_whole("<think>step 1, step 2</think>Paris") == ("Paris", "step 1, step 2")


def test_whitespace_after_close_is_dropped() -> None:
    """Blank lines a model puts after ``</think>`` do not start the answer."""
    assert split_whole("<think>hmm</think>\n\n  Paris is it.") == ("Paris is it.", "hmm")


def test_whitespace_after_close_dropped_across_chunks() -> None:
    """Whitespace-only chunks after ``</think>`` are dropped until real text arrives."""
    assert split_chunks(["<think>hmm</think>", "\n", " \n", "  Paris", " rocks"]) == (
        "Paris rocks",
        "hmm",
    )


def test_leading_whitespace_without_think_is_kept() -> None:
    """Only whitespace after a closing tag is dropped, not an answer's own indentation."""
    assert split_whole("  indented") == ("  indented", "")
    assert split_whole("a\n\n b") == ("a\n\n b", "")


def test_unclosed_think_at_end_goes_to_reasoning() -> None:
    """A stream cut inside a think block leaves everything after ``<think>`` as reasoning."""
    assert split_whole("Sure. <think>still thinking") == ("Sure. ", "still thinking")
    assert split_chunks(["<think>half", " a thought</thi"]) == ("", "half a thought</thi")


def test_partial_open_tag_at_end_is_answer() -> None:
    """A tail that only looks like the start of ``<think>`` is answer text once it ends."""
    assert split_chunks(["x <thi"]) == ("x <thi", "")
    splitter = ThinkSplitter()
    assert splitter.feed("x <thi") == ("x ", "")  # held back: it could still become a tag
    assert splitter.flush() == ("<thi", "")


def test_tag_like_text_that_is_no_tag() -> None:
    """``<th`` followed by something else is released as plain answer text."""
    assert split_chunks(["a <th", "e> b <", "/p>"]) == ("a <the> b </p>", "")
    assert split_chunks(["<think>x </thin", "g> y"]) == ("", "x </thing> y")


@pytest.mark.parametrize(
    "text",
    [
        "<think>reason</think>answer",
        "pre<think>a</think>\n\nmid<think>b</think> post",
        "a<b<thi<think><</think></think>>",
        "<think></think>",
        "x</think>y<think>z",
    ],
)
def test_every_split_position(text: str) -> None:
    """Cutting the text in two at every position, or char by char, changes nothing."""
    whole = split_whole(text)
    for cut in range(len(text) + 1):
        assert split_chunks([text[:cut], text[cut:]]) == whole, cut
    assert split_chunks(list(text)) == whole


_pieces = st.sampled_from(
    [
        *("<think>", "</think>", "<think>r</think>\n\n "),
        *("<", "</", "<th", "</thi", "think", ">", "/"),
        *(" ", "\n", "\n\n ", "a", "Paris"),
    ]
)


@settings(max_examples=80, derandomize=True, database=None, deadline=None)
@given(st.lists(_pieces, max_size=14).map("".join), st.data())
def test_property_any_chunking_matches_whole(text: str, data: st.DataObject) -> None:
    """Any chunking of a text gives the same (answer, reasoning) as feeding it whole."""
    cut_here = data.draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    bounds = [0, *(i for i, cut in enumerate(cut_here) if cut), len(text)]
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert "".join(chunks) == text
    assert split_chunks(chunks) == split_whole(text)


# -- GenerationAssembler --------------------------------------------------------------


class FakeClock:
    """An injectable ``clock_ns``: returns `now`, which the test moves forward."""

    def __init__(self, start_ns: int = 5_000_000_000) -> None:
        self.now = start_ns
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * 1e9)


def chunk(
    content: str | None = None,
    *,
    reasoning: str | None = None,
    role: str | None = None,
    finish_reason: str | None = None,
    logprobs: list[dict[str, Any]] | None = None,
    index: int = 0,
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` as OpenAI-compatible servers stream it."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": index,
                "delta": delta,
                "logprobs": {"content": logprobs} if logprobs is not None else None,
                "finish_reason": finish_reason,
            }
        ],
    }


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def lp(token: str, logprob: float, top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [{"token": t, "logprob": v, "bytes": None} for t, v in (top or [])],
    }


def assembler(
    clock: FakeClock | None = None, temperature: float = 0.2, top_logprobs: int | None = 5
) -> GenerationAssembler:
    """An assembler for a request asking for ``top_logprobs`` alternatives per token."""
    request = Request(
        messages=[Message(role="user", content="hi")],
        temperature=temperature,
        top_logprobs=top_logprobs,
    )
    return GenerationAssembler(
        request=request,
        model="alias",
        spec="vllm:m",
        provider="vllm",
        clock_ns=clock or FakeClock(),
    )


def test_text_finish_reason_and_identity() -> None:
    """Content deltas make the text; the last finish_reason wins; ids are passed on."""
    asm = assembler()
    assert asm.add(chunk("", role="assistant")) == ""
    assert asm.add(chunk("Hel")) == "Hel"
    assert asm.add(chunk("lo")) == "lo"
    assert asm.add(chunk(finish_reason="length")) == ""
    gen = asm.finish()
    assert gen.text == "Hello"
    assert gen.finish_reason == "length"
    assert (gen.model, gen.spec, gen.provider, gen.temperature) == ("alias", "vllm:m", "vllm", 0.2)
    assert gen.request.prompt == "hi"
    assert gen.error is None


def test_finish_reason_override() -> None:
    """`finish(finish_reason=...)` replaces the server's reason (``cancelled``)."""
    asm = assembler()
    asm.add(chunk("a", finish_reason="stop"))
    assert asm.finish(finish_reason="cancelled").finish_reason == "cancelled"


def test_usage_reported_by_server() -> None:
    """A usage chunk with empty choices gives the token counts, marked reported."""
    asm = assembler()
    asm.add(chunk("a"))
    asm.add(chunk("b", finish_reason="stop"))
    asm.add(usage_chunk(12, 2))
    usage = asm.finish().usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reported) == (12, 2, True)
    assert usage.total_tokens == 14


def test_usage_counted_from_content_chunks_when_not_reported() -> None:
    """No usage and no logprobs: one token per content chunk, ``reported`` False."""
    asm = assembler()
    for text in ["", "a", "b", "c"]:
        asm.add(chunk(text))
    usage = asm.finish().usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reported) == (0, 3, False)


def test_usage_counted_from_logprob_tokens_when_not_reported() -> None:
    """No usage but logprobs: the logprob entries are the token count."""
    asm = assembler()
    asm.add(chunk("ab", logprobs=[lp("a", -0.1), lp("b", -0.2)]))
    asm.add(chunk("c", logprobs=[lp("c", -0.3)]))
    usage = asm.finish().usage
    assert (usage.completion_tokens, usage.reported) == (3, False)


def test_usage_without_completion_count_falls_back() -> None:
    """A usage block lacking completion_tokens is not trusted."""
    asm = assembler()
    asm.add(chunk("a"))
    asm.add({"choices": [], "usage": {"prompt_tokens": 4}})
    usage = asm.finish().usage
    assert (usage.completion_tokens, usage.reported) == (1, False)


def test_reasoning_content_deltas_and_think_tags() -> None:
    """``reasoning_content`` (and ``reasoning``) deltas and ``<think>`` text are reasoning."""
    asm = assembler()
    asm.add(chunk(reasoning="  First, "))
    asm.add({"choices": [{"index": 0, "delta": {"reasoning": "consider. "}}]})
    asm.add(chunk("<think>more</th"))
    asm.add(chunk("ink>\n\nAnswer"))
    gen = asm.finish()
    assert gen.text == "Answer"
    assert gen.reasoning == "First, consider. more"


def test_held_back_tail_is_flushed_at_finish() -> None:
    """A tail held back as a possible tag reaches the text at the end."""
    asm = assembler()
    assert asm.add(chunk("1 <")) == "1 "
    assert asm.text == "1 "
    assert asm.finish().text == "1 <"


def test_logprobs_parsed_with_top_alternatives() -> None:
    """``logprobs.content`` entries become TokenLogprob with their top alternatives."""
    asm = assembler()
    asm.add(chunk("Par", logprobs=[lp("Par", -0.01, [("Par", -0.01), ("Lon", -4.6)])]))
    asm.add(chunk("is", logprobs=[lp("is", -0.5, [("is", -0.5)])]))
    tokens = asm.finish().tokens
    assert tokens == [
        TokenLogprob(
            token="Par",
            logprob=-0.01,
            top=[TopLogprob(token="Par", logprob=-0.01), TopLogprob(token="Lon", logprob=-4.6)],
        ),
        TokenLogprob(token="is", logprob=-0.5, top=[TopLogprob(token="is", logprob=-0.5)]),
    ]
    assert tokens[1].prob == pytest.approx(math.exp(-0.5))
    assert tokens[0].top[1].prob == pytest.approx(math.exp(-4.6))


@pytest.mark.parametrize("asked", [None, 0], ids=["default", "zero"])
def test_alternatives_not_asked_for_are_dropped(asked: int | None) -> None:
    """The one alternative a server is asked for by default (llama.cpp sends no logprob
    for 0) is not kept: ``top`` is empty, the token's own logprob stays."""
    asm = assembler(top_logprobs=asked)
    asm.add(chunk("Par", logprobs=[lp("Par", -0.01, [("Par", -0.01)])]))
    assert [(t.token, t.logprob, t.top) for t in asm.finish().tokens] == [("Par", -0.01, [])]


def test_logprob_entries_without_numbers_are_skipped() -> None:
    """Entries or alternatives whose logprob is missing or null are left out."""
    asm = assembler()
    entries = [
        lp("a", -1.0, [("a", -1.0)])
        | {"top_logprobs": [{"token": "x"}, {"token": "a", "logprob": -1}]},
        {"token": "b", "logprob": None},
        {"token": "c"},
        "junk",
    ]
    asm.add(chunk("abc", logprobs=entries))  # type: ignore[arg-type]
    tokens = asm.finish().tokens
    assert [(t.token, t.logprob) for t in tokens] == [("a", -1.0)]
    assert [(t.token, t.logprob) for t in tokens[0].top] == [("a", -1.0)]


def test_other_choice_indexes_are_ignored() -> None:
    """Only choice 0 is assembled (n>1 streams interleave choices)."""
    asm = assembler()
    asm.add(chunk("mine"))
    asm.add(chunk("theirs", index=1, finish_reason="length"))
    gen = asm.finish()
    assert gen.text == "mine"
    assert gen.finish_reason is None


def test_timings_from_fake_clock() -> None:
    """ttft, total, prefill = prompt/ttft and decode = (completion-1)/(total-ttft)."""
    clock = FakeClock()
    start = clock.now
    asm = assembler(clock)
    clock.advance(0.1)
    asm.add(chunk("", role="assistant"))  # a role chunk is not the first token
    assert asm.first_token_ns is None
    clock.advance(0.15)  # first token at 0.25 s
    asm.add(chunk("a"))
    for text in ["b", "c", "d", "e"]:
        clock.advance(0.25)
        asm.add(chunk(text))
    asm.add(chunk(finish_reason="stop"))
    asm.add(usage_chunk(50, 5))
    clock.advance(0.75)  # finished at 2.0 s
    timings = asm.finish().timings
    assert timings.started_ns == start
    assert timings.first_token_ns == start + 250_000_000
    assert timings.finished_ns == start + 2_000_000_000
    assert timings.ttft_s == pytest.approx(0.25)
    assert timings.total_s == pytest.approx(2.0)
    assert timings.prefill_tokens_per_s == pytest.approx(50 / 0.25)
    assert timings.decode_tokens_per_s == pytest.approx((5 - 1) / (2.0 - 0.25))


def test_first_token_may_be_reasoning() -> None:
    """A reasoning delta is the first token as much as content is."""
    clock = FakeClock()
    asm = assembler(clock)
    clock.advance(0.4)
    asm.add(chunk(reasoning="hmm"))
    clock.advance(0.6)
    asm.add(chunk("ok"))
    clock.advance(1.0)
    assert asm.finish().timings.ttft_s == pytest.approx(0.4)


def test_timings_without_tokens_or_usage() -> None:
    """No token: no ttft and no rates. Counted usage has no prompt, so no prefill rate."""
    clock = FakeClock()
    asm = assembler(clock)
    clock.advance(1.5)
    timings = asm.finish().timings
    assert timings.ttft_s is None
    assert timings.total_s == pytest.approx(1.5)
    assert timings.prefill_tokens_per_s is None and timings.decode_tokens_per_s is None

    clock = FakeClock()
    asm = assembler(clock)
    clock.advance(0.5)
    asm.add(chunk("a"))
    clock.advance(0.5)
    asm.add(chunk("b"))
    clock.advance(0.5)
    gen = asm.finish()
    assert gen.usage.reported is False
    assert gen.timings.prefill_tokens_per_s is None
    assert gen.timings.decode_tokens_per_s == pytest.approx((2 - 1) / 1.0)


def test_single_token_has_no_decode_rate() -> None:
    """With one completion token there is nothing decoded after the first token."""
    clock = FakeClock()
    asm = assembler(clock)
    clock.advance(0.2)
    asm.add(chunk("a"))
    asm.add(usage_chunk(10, 1))
    clock.advance(0.3)
    timings = asm.finish().timings
    assert timings.decode_tokens_per_s is None
    assert timings.prefill_tokens_per_s == pytest.approx(10 / 0.2)


def test_server_timings_kept_when_plain() -> None:
    """llama.cpp's ``timings`` block is kept, minus values that are not plain JSON."""
    asm = assembler()
    asm.add(chunk("a"))
    asm.add(
        {
            "choices": [],
            "timings": {
                "prompt_n": 5,
                "predicted_per_second": 41.5,
                "cache": "hit",
                "nan": float("nan"),
                "inf": float("inf"),
                "nested": {"x": 1},
            },
        }
    )
    assert asm.finish().timings.server == {
        "prompt_n": 5,
        "predicted_per_second": 41.5,
        "cache": "hit",
    }


# -- cached prompt tokens and the server's own rates -----------------------------------


def timed(
    usage: dict[str, Any], timings: dict[str, Any] | None = None
) -> tuple[GenerationAssembler, FakeClock]:
    """A stream with its first token at 0.5 s and its end at 2.5 s, then `usage` (and a
    llama.cpp ``timings`` object) in the last chunk."""
    clock = FakeClock()
    asm = assembler(clock)
    clock.advance(0.5)
    asm.add(chunk("a"))
    for text in "bcd":
        clock.advance(0.5)
        asm.add(chunk(text))
    asm.add(chunk(finish_reason="stop"))
    last: dict[str, Any] = {"choices": [], "usage": usage}
    if timings is not None:
        last["timings"] = timings
    asm.add(last)
    clock.advance(0.5)
    return asm, clock


def test_openai_cached_tokens_are_not_prefill_work() -> None:
    """OpenAI's ``usage.prompt_tokens_details.cached_tokens``: the prefill rate is over
    the prompt tokens actually processed, and the cached count is kept."""
    usage = {
        "prompt_tokens": 1200,
        "completion_tokens": 4,
        "total_tokens": 1204,
        "prompt_tokens_details": {"cached_tokens": 1024},
    }
    asm, _ = timed(usage)
    gen = asm.finish()
    assert gen.usage.prompt_tokens == 1200
    assert gen.usage.cached_prompt_tokens == 1024
    assert gen.usage.processed_prompt_tokens == 176
    assert gen.timings.prefill_tokens_per_s == pytest.approx(176 / 0.5)
    assert gen.timings.decode_tokens_per_s == pytest.approx(3 / 2.0)
    assert gen.timings.rates_from == "client"


def test_llama_cpp_cache_n_counts_when_usage_has_no_details() -> None:
    """llama.cpp's ``timings.cache_n`` is the cached count where usage lacks one."""
    asm, _ = timed({"prompt_tokens": 37, "completion_tokens": 4}, {"cache_n": 24, "prompt_n": 13})
    gen = asm.finish()
    assert gen.usage.cached_prompt_tokens == 24
    assert gen.timings.prefill_tokens_per_s == pytest.approx(13 / 0.5)
    assert gen.timings.rates_from == "client"


def test_no_cache_information_leaves_the_whole_prompt() -> None:
    asm, _ = timed({"prompt_tokens": 40, "completion_tokens": 4})
    gen = asm.finish()
    assert gen.usage.cached_prompt_tokens is None
    assert gen.usage.processed_prompt_tokens == 40
    assert gen.timings.prefill_tokens_per_s == pytest.approx(40 / 0.5)


def test_server_rates_are_preferred_and_say_so() -> None:
    """llama.cpp timed the work itself: its ``prompt_per_second`` and
    ``predicted_per_second`` are the rates, and ``rates_from`` is ``server``."""
    timings = {
        "cache_n": 24,
        "prompt_n": 13,
        "prompt_ms": 37.356,
        "prompt_per_second": 348.0,
        "predicted_n": 4,
        "predicted_ms": 40.0,
        "predicted_per_second": 100.0,
    }
    usage = {
        "prompt_tokens": 37,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 24},
    }
    asm, _ = timed(usage, timings)
    gen = asm.finish()
    assert gen.timings.prefill_tokens_per_s == 348.0
    assert gen.timings.decode_tokens_per_s == 100.0
    assert gen.timings.rates_from == "server"
    assert gen.usage.cached_prompt_tokens == 24
    assert gen.timings.server["cache_n"] == 24


@pytest.mark.parametrize(
    "timings",
    [
        {"prompt_per_second": 348.0},  # one rate only: both come from the client
        {"prompt_per_second": 348.0, "predicted_per_second": float("inf")},
        {"prompt_per_second": -1.0, "predicted_per_second": 100.0},
        {"prompt_per_second": True, "predicted_per_second": 100.0},
        {"prompt_per_second": "fast", "predicted_per_second": 100.0},
        {"prompt_per_second": 0, "predicted_per_second": 100.0},
    ],
)
def test_server_rates_that_are_not_two_positive_numbers_are_not_used(
    timings: dict[str, Any],
) -> None:
    asm, _ = timed({"prompt_tokens": 20, "completion_tokens": 4}, timings)
    t = asm.finish().timings
    assert t.rates_from == "client"
    assert t.prefill_tokens_per_s == pytest.approx(20 / 0.5)
    assert t.decode_tokens_per_s == pytest.approx(3 / 2.0)


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ({"cached_tokens": 50}, 20),  # more than the prompt: clamped to it
        ({"cached_tokens": -3}, None),
        ({"cached_tokens": "10"}, None),
        ({"cached_tokens": True}, None),
        ({"audio_tokens": 0}, None),
        ("not an object", None),
    ],
)
def test_odd_cached_counts(details: object, expected: int | None) -> None:
    asm, _ = timed({"prompt_tokens": 20, "completion_tokens": 4, "prompt_tokens_details": details})
    gen = asm.finish()
    assert gen.usage.cached_prompt_tokens == expected
    assert gen.usage.processed_prompt_tokens == 20 - (expected or 0)
    if expected == 20:
        assert gen.timings.prefill_tokens_per_s is None  # nothing was processed


# -- the one-pass reading of the common chunk ------------------------------------------


def _common(**choice: Any) -> dict[str, Any]:
    """The chunk nearly every token comes in, with ``choice``'s fields replaced."""
    base = chunk("Hi", logprobs=[lp("Hi", -0.25, [("Hi", -0.25), ("Ho", -2.5)])])
    base["choices"][0].update(choice)
    return base


def _entry(**fields: Any) -> dict[str, Any]:
    """A chunk whose one logprobs entry has ``fields`` replaced (None: removed)."""
    entry = lp("Hi", -0.25, [("Hi", -0.25), ("Ho", -2.5)])
    for key, value in fields.items():
        if value is None:
            entry.pop(key)
        else:
            entry[key] = value
    return chunk("Hi", logprobs=[entry])


#: Chunks at and around the common shape: each is read in one pass or, when it is not
#: the common shape, field by field; the two must take the same.
NEAR_COMMON = {
    "common": _common(),
    "no-index": {"choices": [{"delta": {"content": "Hi"}}]},
    "index-true": _common(index=True),
    "index-one": _common(index=1),
    "index-float": _common(index=0.0),
    "finished": _common(finish_reason="stop"),
    "finish-number": _common(finish_reason=3),
    "no-delta": _common(delta=None),
    "delta-string": _common(delta="oops"),
    "content-number": _common(delta={"content": 7}),
    "role-only": _common(delta={"role": "assistant"}),
    "reasoning": _common(delta={"reasoning_content": "hmm"}),
    "think-tags": _common(delta={"content": "<think>a</think>b"}),
    "tool-call": _common(delta={"tool_calls": [{"index": 0, "function": {"name": "f"}}]}),
    "logprobs-string": _common(logprobs="x"),
    "logprobs-content-null": _common(logprobs={"content": None}),
    "logprobs-content-number": _common(logprobs={"content": 3}),
    "entry-string": _common(logprobs={"content": ["junk"]}),
    "logprob-int": _entry(logprob=-1),
    "logprob-bool": _entry(logprob=True),
    "logprob-string": _entry(logprob="x"),
    "logprob-missing": _entry(logprob=None),
    "token-missing": _entry(token=None),
    "token-number": _entry(token=7),
    "top-missing": _entry(top_logprobs=None),
    "top-string": _entry(top_logprobs="x"),
    "top-entry-string": _entry(top_logprobs=["x"]),
    "top-logprob-missing": _entry(top_logprobs=[{"token": "x"}, {"token": "a", "logprob": -1}]),
    "top-logprob-string": _entry(top_logprobs=[{"token": "a", "logprob": "-1"}]),
    "top-token-number": _entry(top_logprobs=[{"token": 5, "logprob": -1.0}]),
    "two-choices": {"choices": [_common()["choices"][0], _common(index=1)["choices"][0]]},
    "no-choices": {"choices": []},
    "usage": _common() | usage_chunk(3, 1),
    "timings": _common() | {"timings": {"predicted_per_second": 10.0}},
    "usage-string": _common() | {"usage": "many"},
    "not-an-object": [_common()],
}


def _taken(asm: GenerationAssembler, chunks: list[Any]) -> tuple[Any, ...]:
    """What the assembler made of ``chunks``: each add's text or error, then the whole."""
    added: list[str] = []
    for item in chunks:
        try:
            added.append(asm.add(item))
        except ValueError as exc:
            added.append(f"error: {exc}")
    gen = asm.finish()
    return (
        added,
        gen.text,
        gen.reasoning,
        [(t.token, t.logprob, t.alternatives) for t in gen.tokens],
        [(c.name, c.tokens) for c in gen.tool_calls],
        gen.usage,
        gen.finish_reason,
        gen.timings.first_token_ns,
        gen.timings.server,
    )


@pytest.mark.parametrize("top_logprobs", [5, None], ids=["alternatives", "none-asked"])
@pytest.mark.parametrize("name", list(NEAR_COMMON))
def test_one_pass_reading_takes_what_field_by_field_reading_takes(
    name: str, top_logprobs: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common chunk is checked and read in one pass (`_add_common`); any other is
    left whole to `chunk_problem` and the field-by-field reading. A chunk before and
    after the one under test, with the one-pass reading on and off, takes the same
    texts, errors, tokens and timings."""
    chunks = [_common(), NEAR_COMMON[name], _common()]
    fast = assembler(FakeClock(), top_logprobs=top_logprobs)
    slow = assembler(FakeClock(), top_logprobs=top_logprobs)
    monkeypatch.setattr(slow, "_add_common", lambda chunk: None)
    assert _taken(fast, chunks) == _taken(slow, chunks)


def test_the_common_chunk_is_read_in_one_pass() -> None:
    """The shape of nearly every chunk takes the one pass (not the field-by-field
    reading): the comparison above covers both readings."""
    asm = assembler()
    assert asm._add_common(_common()) == "Hi"
    assert asm._add_common(_entry(logprob=-1)) == "Hi"
    assert asm._add_common(_common(delta={"role": "assistant"}, logprobs=None)) == ""
    for name in ("finished", "tool-call", "logprob-string", "usage", "index-true"):
        assert asm._add_common(NEAR_COMMON[name]) is None, name
    assert [(t.token, t.alternatives) for t in asm.finish().tokens] == [
        ("Hi", (("Hi", -0.25), ("Ho", -2.5))),
        ("Hi", (("Hi", -0.25), ("Ho", -2.5))),
    ]
