"""expect(): every check passing and failing, soft collection, capabilities, messages.

Generations are built by hand (`make_gen`), shaped like SmolLM2-135M's answer to the
capital question at temperature 0, so every number below is known exactly.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pytest_llmlab.energy.reading import EnergyReading
from pytest_llmlab.expect import (
    CheckFailure,
    Collector,
    Expectation,
    ExpectationFailed,
    collecting,
    confidence_of,
    expect,
    normalize,
    parse,
)
from pytest_llmlab.models.base import (
    Generation,
    Message,
    Request,
    Timings,
    TokenLogprob,
    TopLogprob,
    Usage,
)

PROMPT = "What is the capital of France? Answer in one word."
ANSWER = "The capital of France is Paris."
MODEL = "local:smollm2-135m"
#: (token, probability, top alternatives): spells ANSWER.
Tokens = Sequence[tuple[str, float, Sequence[tuple[str, float]]]]
PARIS_TOKENS: Tokens = [
    ("The", 0.25, [("The", 0.25), ("I", 0.06), ("A", 0.05)]),
    (" capital", 0.5, [(" capital", 0.5), (" answer", 0.3)]),
    (" of", 0.95, [(" of", 0.95), (" city", 0.03)]),
    (" France", 0.97, [(" France", 0.97)]),
    (" is", 0.9, [(" is", 0.9), (",", 0.05)]),
    (" Paris", 0.8, [(" Paris", 0.8), (" London", 0.1), ("Paris", 0.05)]),
    (".", 0.6, [(".", 0.6), (",", 0.3)]),
]
ESTIMATE_NOTE = "cpu-estimate, 4 W per logical CPU"


def reading(
    provenance: str, *, joules: float = 36.0, completion_tokens: int = 8, note: str | None = None
) -> EnergyReading:
    """An energy reading of the given provenance: 36 J over 8 tokens is 1.25 Wh/1k."""
    if provenance == "unavailable":
        return EnergyReading.unavailable(note or "no meter")
    measured = provenance in {"measured", "measured-apportioned", "integrated"}
    base = EnergyReading(
        joules=joules,
        provenance=provenance,  # type: ignore[arg-type]
        measured=measured,
        note=note,
    )
    return base.derived(
        completion_tokens=completion_tokens, baseline_w=None, grid_gco2_per_kwh=None, kwh_price=None
    )


def make_gen(
    text: str = ANSWER,
    tokens: Tokens = PARIS_TOKENS,
    *,
    prompt: str = PROMPT,
    model: str = MODEL,
    temperature: float = 0.0,
    completion_tokens: int = 8,
    ttft_s: float | None = 0.1,
    total_s: float = 0.5,
    decode_tokens_per_s: float | None = 70.0,
    finish_reason: str = "stop",
    error: str | None = None,
    energy: EnergyReading | None = None,
    logprobs: bool = True,
    top_logprobs: int | None = 5,
) -> Generation:
    """A finished generation as the assembler would build it (asked for 5 alternatives
    per token unless ``top_logprobs`` says otherwise)."""
    return Generation(
        text=text,
        tokens=[
            TokenLogprob(
                token=token,
                logprob=math.log(prob),
                top=[TopLogprob(token=alt, logprob=math.log(p)) for alt, p in top],
            )
            for token, prob, top in tokens
        ],
        usage=Usage(prompt_tokens=42, completion_tokens=completion_tokens),
        timings=Timings(ttft_s=ttft_s, total_s=total_s, decode_tokens_per_s=decode_tokens_per_s),
        finish_reason=finish_reason,
        error=error,
        model=model,
        spec=model,
        provider=model.split(":")[0],
        temperature=temperature,
        request=Request(
            messages=[Message(role="user", content=prompt)],
            temperature=temperature,
            max_tokens=16,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        ),
        energy=energy if energy is not None else reading("measured"),
    )


def word_tokens(text: str, prob: float = 0.9) -> Tokens:
    """Tokens spelling ``text`` word by word, each with one alternative."""
    pieces = re.findall(r"\s*\S+", text)
    return [(piece, prob, [(piece, prob)]) for piece in pieces]


def failure_line(check: Callable[[Expectation], object], gen: Generation | None = None) -> str:
    """The single ``check: message`` line of a check that must fail (no collector)."""
    with pytest.raises(ExpectationFailed) as excinfo:
        check(expect(gen or make_gen()))
    (failure,) = excinfo.value.failures
    return f"{failure.check}: {failure.message}"


def output_line(error: ExpectationFailed) -> str:
    (line,) = [line for line in str(error).splitlines() if line.startswith("  output")]
    return line.strip()


# -- every check, passing and failing -------------------------------------------------

PASSING: list[tuple[str, Callable[[Expectation], object]]] = [
    ("contains", lambda e: e.contains("Paris")),
    ("icontains", lambda e: e.icontains("PARIS")),
    ("not_contains", lambda e: e.not_contains("London")),
    ("contains_all", lambda e: e.contains_all("capital", "Paris")),
    ("contains_any", lambda e: e.contains_any("Rome", "Paris")),
    ("matches", lambda e: e.matches(r"\bparis\b", re.IGNORECASE)),
    ("matches-compiled", lambda e: e.matches(re.compile(r"Par+is\.$"))),
    ("not_matches", lambda e: e.not_matches(r"\d")),
    ("equals", lambda e: e.equals(ANSWER)),
    ("exact", lambda e: e.exact(ANSWER)),
    ("equals_normalized", lambda e: e.equals_normalized("the capital of france is paris")),
    ("starts_with", lambda e: e.starts_with("The capital")),
    ("one_of", lambda e: e.one_of("Paris", "THE capital of France is Paris!")),
    ("one_of-exact", lambda e: e.one_of("Paris", ANSWER, normalized=False)),
    ("max_words", lambda e: e.max_words(6)),
    ("rouge", lambda e: e.rouge("Paris is the capital of France.", min=0.6)),
    ("rouge1", lambda e: e.rouge("capital of France", metric="rouge1", min=0.65)),
    ("confidence", lambda e: e.confidence(0.7, 0.25, 0.25, 1.6, 0.6)),
    ("answer_prob", lambda e: e.answer_prob(" Paris ", min=0.84)),
    ("answer_prob-first", lambda e: e.answer_prob("The", min=0.25)),
    ("ttft", lambda e: e.ttft(max=0.1)),
    ("decode_tokens_per_s", lambda e: e.decode_tokens_per_s(min=70)),
    ("total_s", lambda e: e.total_s(max=0.5)),
    ("completion_tokens", lambda e: e.completion_tokens(max=8)),
    ("finish_reason", lambda e: e.finish_reason("stop")),
    ("wh_per_1k", lambda e: e.wh_per_1k(max=1.3)),
    ("joules", lambda e: e.joules(max=36)),
    ("measured", lambda e: e.measured()),
]

FAILING: list[tuple[Callable[[Expectation], object], str]] = [
    (lambda e: e.contains("Lyon"), "contains('Lyon'): missing 'Lyon'"),
    (lambda e: e.contains("paris"), "contains('paris'): missing 'paris'"),
    (lambda e: e.icontains("LYON"), "icontains('LYON'): missing 'LYON' (ignoring case)"),
    (lambda e: e.not_contains("Paris"), "not_contains('Paris'): found 'Paris' at offset 25"),
    (
        lambda e: e.contains_all("France", "Lyon", "Nice"),
        "contains_all('France', 'Lyon', 'Nice'): missing 'Lyon', 'Nice'",
    ),
    (
        lambda e: e.contains_any("Lyon", "Nice"),
        "contains_any('Lyon', 'Nice'): none of 'Lyon', 'Nice' found",
    ),
    (lambda e: e.matches("paris"), "matches('paris'): no match for /paris/"),
    (
        lambda e: e.matches("lyon", re.IGNORECASE),
        "matches('lyon', flags=re.IGNORECASE): no match for /lyon/",
    ),
    (
        lambda e: e.not_matches("Fr[a-z]+"),
        "not_matches('Fr[a-z]+'): /Fr[a-z]+/ matched 'France' at offset 15",
    ),
    (
        lambda e: e.equals("Paris"),
        (
            "equals('Paris'): expected 'Paris', got 'The capital of France is Paris.' "
            "(first difference at offset 0)"
        ),
    ),
    (
        lambda e: e.exact("The capital of France is Lyon."),
        (
            "exact('The capital of France is Lyon.'): expected 'The capital of France is Lyon.', "
            "got 'The capital of France is Paris.' (first difference at offset 25)"
        ),
    ),
    (
        lambda e: e.equals("The capital of France is Paris. Yes."),
        (
            "equals('The capital of France is Paris. Yes.'): expected "
            "'The capital of France is Paris. Yes.', got 'The capital of France is Paris.' "
            "(first difference at offset 31)"
        ),
    ),
    (
        lambda e: e.equals_normalized("Paris"),
        "equals_normalized('Paris'): normalized 'the capital of france is paris' != 'paris'",
    ),
    (
        lambda e: e.starts_with("Paris"),
        "starts_with('Paris'): starts with 'The capital of France is '",
    ),
    (
        lambda e: e.one_of("Paris", "Lyon"),
        (
            "one_of('Paris', 'Lyon'): normalized 'the capital of france is paris' is none of "
            "'paris', 'lyon'"
        ),
    ),
    (
        lambda e: e.one_of("the capital of france is paris", normalized=False),
        (
            "one_of('the capital of france is paris', normalized=False): "
            "'The capital of France is Paris.' is none of 'the capital of france is paris'"
        ),
    ),
    (lambda e: e.max_words(5), "max_words(5): 6 words > 5"),
    (
        lambda e: e.rouge("Berlin is the capital of Germany.", min=0.6),
        (
            "rouge('Berlin is the capital of Germany.', metric='rougeL', min=0.6): "
            "rougeL F-measure 0.5 < 0.6 against 'Berlin is the capital of Germany.'"
        ),
    ),
    (
        lambda e: e.confidence(min_mean=0.9),
        "confidence(min_mean=0.9): mean token probability 0.71 < 0.9",
    ),
    (
        lambda e: e.confidence(min_mean=0.7101),
        "confidence(min_mean=0.7101): mean token probability 0.71 < 0.7101",
    ),
    (
        lambda e: e.confidence(min_prob=0.3),
        "confidence(min_prob=0.3): token 'The' at position 0 has probability 0.25 < 0.3",
    ),
    (
        lambda e: e.confidence(first_token=0.5),
        "confidence(first_token=0.5): first token 'The' has probability 0.25 < 0.5",
    ),
    (
        lambda e: e.confidence(max_perplexity=1.5),
        "confidence(max_perplexity=1.5): perplexity 1.54 > 1.5",
    ),
    (
        lambda e: e.confidence(max_entropy=0.3),
        "confidence(max_entropy=0.3): mean entropy of the top alternatives 0.429 nats > 0.3",
    ),
    (
        lambda e: e.answer_prob("Paris", min=0.9),
        (
            "answer_prob('Paris', min=0.9): probability of 'Paris' at position 5 is 0.85 < 0.9 "
            "(alternatives: ' Paris' 0.8, ' London' 0.1, 'Paris' 0.05)"
        ),
    ),
    (
        lambda e: e.answer_prob("Lyon", min=0.1),
        (
            "answer_prob('Lyon', min=0.1): 'Lyon' is not among the alternatives at position 0: "
            "'The' 0.25, 'I' 0.06, 'A' 0.05"
        ),
    ),
    (lambda e: e.ttft(max=0.05), "ttft(max=0.05): time to first token 0.1 s > 0.05 s"),
    (
        lambda e: e.decode_tokens_per_s(min=100),
        "decode_tokens_per_s(min=100): decode speed 70 tokens/s < 100",
    ),
    (lambda e: e.total_s(max=0.25), "total_s(max=0.25): total time 0.5 s > 0.25 s"),
    (lambda e: e.completion_tokens(max=4), "completion_tokens(max=4): 8 completion tokens > 4"),
    (lambda e: e.finish_reason("length"), "finish_reason('length'): finish reason is 'stop'"),
    (lambda e: e.wh_per_1k(max=1), "wh_per_1k(max=1): 1.25 Wh per 1k completion tokens > 1"),
    (lambda e: e.joules(max=10), "joules(max=10): 36 J > 10 J"),
]


@pytest.mark.parametrize("check", [check for _, check in PASSING], ids=[n for n, _ in PASSING])
def test_every_check_passes_on_a_good_answer(check: Callable[[Expectation], object]) -> None:
    chain = expect(make_gen())
    assert check(chain) is chain


@pytest.mark.parametrize(
    ("check", "line"), FAILING, ids=[line.split(":")[0] for _, line in FAILING]
)
def test_every_check_fails_with_its_threshold_and_the_observed_value(
    check: Callable[[Expectation], object], line: str
) -> None:
    assert failure_line(check) == line


def test_a_whole_chain_passes_and_returns_itself() -> None:
    chain = expect(make_gen())
    for _, check in PASSING:
        check(chain)
    assert "local:smollm2-135m at T=0" in repr(chain)


def test_an_observed_value_never_prints_equal_to_its_threshold() -> None:
    gen = make_gen("A", [("A", 0.7099, [("A", 0.7099)])])
    assert failure_line(lambda e: e.confidence(min_mean=0.71), gen) == (
        "confidence(min_mean=0.71): mean token probability 0.7099 < 0.71"
    )


def test_equals_ignores_surrounding_whitespace_of_the_output_only() -> None:
    expect(make_gen("\n Paris \n", [])).equals("Paris").exact("Paris").one_of(
        "Paris", normalized=False
    )
    assert failure_line(lambda e: e.equals(" Paris"), make_gen("Paris", [])) == (
        "equals(' Paris'): expected ' Paris', got 'Paris' (first difference at offset 0)"
    )


def test_normalize_casefolds_drops_unicode_punctuation_and_collapses_space() -> None:
    assert normalize("  ¡Hola, «Paris»!\n It's\tfine…  ") == "hola paris its fine"
    assert normalize("STRASSE") == normalize("straße")
    assert normalize("U.S.A.") == "usa"
    expect(make_gen("«Paris» !", [])).equals_normalized("paris").one_of("Lyon", "PARIS")


def test_starts_with_ignores_leading_whitespace() -> None:
    expect(make_gen("\n  Paris.", [])).starts_with("Paris")


def test_max_words_counts_whitespace_separated_words() -> None:
    expect(make_gen("one\ntwo  three", [])).max_words(3)
    assert failure_line(lambda e: e.max_words(2), make_gen("one\ntwo  three", [])) == (
        "max_words(2): 3 words > 2"
    )


def test_rouge_rejects_an_unknown_metric() -> None:
    with pytest.raises(ValueError, match="unknown ROUGE metric 'bleu'"):
        expect(make_gen()).rouge("Paris", metric="bleu")


def test_rouge_stems() -> None:
    # "capitals" and "capital" share a stem: full overlap of the two words.
    expect(make_gen("capitals", [])).rouge("capital", metric="rouge1", min=1.0)


def test_finish_reason_shows_the_error_of_a_failed_generation() -> None:
    gen = make_gen(finish_reason="error", error="stream cut after 3 chunks")
    assert failure_line(lambda e: e.finish_reason("stop"), gen) == (
        "finish_reason('stop'): finish reason is 'error' (error: stream cut after 3 chunks)"
    )


def test_missing_timings_fail_saying_so() -> None:
    gen = make_gen("", [], ttft_s=None, decode_tokens_per_s=None, completion_tokens=0)
    assert failure_line(lambda e: e.ttft(max=1), gen) == (
        "ttft(max=1): no time to first token: no token arrived"
    )
    assert failure_line(lambda e: e.decode_tokens_per_s(min=1), gen) == (
        "decode_tokens_per_s(min=1): decode speed not measured (fewer than 2 completion tokens)"
    )


# -- failure messages ---------------------------------------------------------------------


def test_the_report_groups_a_generation_s_failures_under_one_header() -> None:
    lyon = [*PARIS_TOKENS[:5], (" Lyon", 0.08, [(" Lyon", 0.08)]), PARIS_TOKENS[6]]
    gen = make_gen("The capital of France is Lyon.", lyon)
    with collecting() as checks:
        expect(gen).contains("Paris").confidence(min_mean=0.9)
    with pytest.raises(ExpectationFailed) as excinfo:
        checks.raise_if_failed()
    assert str(excinfo.value) == textwrap.dedent(
        """\
        2 checks failed for local:smollm2-135m at T=0:
          contains('Paris'): missing 'Paris'
          confidence(min_mean=0.9): mean token probability 0.607 < 0.9
          prompt: 'What is the capital of France? Answer in one word.'
          output: 'The capital of France is Lyon.'"""
    )


def test_a_forbidden_substring_is_marked_everywhere_it_occurs() -> None:
    gen = make_gen("Paris. The capital is Paris.", [])
    with pytest.raises(ExpectationFailed) as excinfo:
        expect(gen).not_contains("Paris")
    assert excinfo.value.failures[0].message == "found 'Paris' at offset 0 (2 times)"
    assert output_line(excinfo.value) == "output: '>>>Paris<<<. The capital is >>>Paris<<<.'"


def test_a_regex_match_is_marked() -> None:
    with pytest.raises(ExpectationFailed) as excinfo:
        expect(make_gen()).not_matches(r"[A-Z][a-z]+\.")
    assert output_line(excinfo.value) == "output: 'The capital of France is >>>Paris.<<<'"


def test_the_doubtful_token_is_marked() -> None:
    with pytest.raises(ExpectationFailed) as excinfo:
        expect(make_gen()).confidence(min_prob=0.3)
    assert output_line(excinfo.value) == "output: '>>>The<<< capital of France is Paris.'"
    with pytest.raises(ExpectationFailed) as excinfo:
        expect(make_gen()).answer_prob("Paris", min=0.9)
    assert output_line(excinfo.value) == "output: 'The capital of France is>>> Paris<<<.'"


def test_a_long_output_is_cut_around_the_marked_part() -> None:
    text = "word " * 200 + "SECRET" + " tail" * 200
    with pytest.raises(ExpectationFailed) as excinfo:
        expect(make_gen(text, [])).not_contains("SECRET")
    line = output_line(excinfo.value)
    assert line.startswith(f"output (characters 853-1153 of {len(text)}): 'd word word")
    assert ">>>SECRET<<<" in line
    shown = line.split(": ", 1)[1]
    assert len(shown) == 300 + len(">>><<<") + 2  # the window, the marks, the quotes
    assert abs(shown.index(">>>") - (len(shown) - shown.index("<<<"))) <= 4  # centered


def test_a_long_output_without_a_mark_shows_its_beginning() -> None:
    text = "x" * 1000
    with pytest.raises(ExpectationFailed) as excinfo:
        expect(make_gen(text, [])).contains("Paris")
    assert output_line(excinfo.value) == f"output (characters 0-300 of 1000): '{'x' * 300}'"


def test_a_long_prompt_is_truncated() -> None:
    prompt = "Tell me " + "very " * 40 + "carefully."
    with pytest.raises(ExpectationFailed) as excinfo:
        expect(make_gen(prompt=prompt)).contains("Lyon")
    (line,) = [line for line in str(excinfo.value).splitlines() if "prompt:" in line]
    assert line == f"  prompt: {prompt[:117] + '...'!r}"


def test_the_header_names_the_model_and_temperature() -> None:
    gen = make_gen(model="fast", temperature=0.7)
    with pytest.raises(ExpectationFailed, match=r"^1 check failed for fast at T=0\.7:\n"):
        expect(gen).contains("Lyon")


def test_multi_line_messages_are_indented_under_their_check() -> None:
    with pytest.raises(ExpectationFailed) as excinfo:
        expect(make_gen('{"name": 3}', [])).validates(Item)
    assert str(excinfo.value).splitlines()[1:4] == [
        "  validates(Item): 2 schema errors against Item:",
        "      $.name: Input should be a valid string",
        "      $.price: Field required",
    ]


# -- soft collection ------------------------------------------------------------------------


def test_every_failure_of_every_chain_is_reported_once_at_the_end() -> None:
    paris, other = make_gen(), make_gen("Rome.", [], prompt="Capital of Italy?", temperature=1)
    reached = False
    with collecting() as checks:
        expect(paris).contains("Lyon").max_words(3).contains("Paris")
        expect(other).equals("Roma")
        reached = True  # no check raised inside the block
    assert reached and len(checks.failures) == 3
    with pytest.raises(ExpectationFailed) as excinfo:
        checks.raise_if_failed()
    assert [f.check for f in excinfo.value.failures] == [
        "contains('Lyon')",
        "max_words(3)",
        "equals('Roma')",
    ]
    blocks = str(excinfo.value).split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == [
        "2 checks failed for local:smollm2-135m at T=0:",
        "1 check failed for local:smollm2-135m at T=1:",
    ]
    assert "  prompt: 'Capital of Italy?'" in blocks[1]


def test_two_chains_on_one_generation_share_a_header() -> None:
    gen = make_gen()
    with collecting() as checks:
        expect(gen).contains("Lyon")
        expect(gen).max_words(2).ttft(max=0.01)
    with pytest.raises(ExpectationFailed, match=r"^3 checks failed for local:smollm2-135m"):
        checks.raise_if_failed()


def test_nothing_is_raised_when_every_check_passes() -> None:
    with collecting() as checks:
        expect(make_gen()).contains("Paris")
    checks.raise_if_failed()
    assert checks.failures == [] and checks.skips == []


def test_verify_stops_the_test_with_this_chain_s_failures_only() -> None:
    gen = make_gen()
    with collecting() as checks:
        expect(gen).contains("Lyon")
        chain = expect(gen).max_words(2).contains("Paris")
        with pytest.raises(ExpectationFailed) as excinfo:
            chain.verify()
        assert [f.check for f in excinfo.value.failures] == ["max_words(2)"]
        assert [f.check for f in checks.failures] == ["contains('Lyon')"]
        assert chain.verify() is chain  # nothing left: no second report
        good = expect(gen).contains("Paris")
        assert good.verify() is good


def test_verify_outside_a_collector_is_a_no_op_after_passing_checks() -> None:
    chain = expect(make_gen()).contains("Paris")
    assert chain.verify() is chain


def test_without_a_collector_the_first_failure_raises_at_once() -> None:
    chain = expect(make_gen())
    with pytest.raises(ExpectationFailed):
        chain.contains("Lyon").max_words(1)
    # max_words never ran: the chain stopped at the first failure.


def test_collecting_restores_the_previous_collector() -> None:
    with collecting() as outer:
        with collecting(strict_capabilities=True) as inner:
            expect(make_gen()).contains("Lyon")
        expect(make_gen()).contains("Rome")
        assert inner.strict_capabilities and not outer.strict_capabilities
    assert [f.check for f in inner.failures] == ["contains('Lyon')"]
    assert [f.check for f in outer.failures] == ["contains('Rome')"]
    with pytest.raises(RuntimeError), collecting():
        raise RuntimeError
    with pytest.raises(ExpectationFailed):  # no collector left behind
        expect(make_gen()).contains("Lyon")


def test_a_check_failure_carries_the_generation() -> None:
    gen = make_gen()
    with collecting() as checks:
        expect(gen).contains("Lyon")
    assert checks.failures == [CheckFailure("contains('Lyon')", "missing 'Lyon'", gen)]
    assert checks.failures[0].gen is gen


# -- capabilities --------------------------------------------------------------------------

NO_LOGPROBS = "no logprobs from local:smollm2-135m: the backend does not return them"


def test_confidence_without_logprobs_skips_at_once_outside_a_collector() -> None:
    with pytest.raises(pytest.skip.Exception, match=f"confidence\\(min_mean=0.5\\): {NO_LOGPROBS}"):
        expect(make_gen(tokens=[])).confidence(min_mean=0.5)


def test_confidence_without_logprobs_records_a_skip_in_a_collector() -> None:
    with collecting() as checks:
        expect(make_gen(tokens=[])).confidence(min_mean=0.5).answer_prob("Paris", min=0.5)
    assert checks.failures == []
    assert checks.skips == [
        f"confidence(min_mean=0.5): {NO_LOGPROBS}",
        f"answer_prob('Paris', min=0.5): {NO_LOGPROBS}",
    ]
    with pytest.raises(pytest.skip.Exception) as excinfo:
        checks.raise_if_failed()
    assert (
        excinfo.value.msg == f"confidence(min_mean=0.5): {NO_LOGPROBS} (and 1 more skipped check)"
    )


def test_one_skip_is_reported_without_a_count() -> None:
    checks = Collector()
    checks.skips.append("x: no logprobs")
    with pytest.raises(pytest.skip.Exception) as excinfo:
        checks.raise_if_failed()
    assert excinfo.value.msg == "x: no logprobs"


def test_strict_capabilities_turn_the_skip_into_a_failure() -> None:
    with collecting(strict_capabilities=True) as checks:
        expect(make_gen(tokens=[])).confidence(min_mean=0.5)
    assert checks.skips == []
    with pytest.raises(ExpectationFailed) as excinfo:
        checks.raise_if_failed()
    assert str(excinfo.value).splitlines()[1] == f"  confidence(min_mean=0.5): {NO_LOGPROBS}"


def test_failures_win_over_skips() -> None:
    with collecting() as checks:
        expect(make_gen(tokens=[])).confidence(min_mean=0.5).contains("Lyon")
    with pytest.raises(ExpectationFailed, match="contains"):
        checks.raise_if_failed()


def test_logprobs_switched_off_by_the_request_is_a_failure_not_a_skip() -> None:
    gen = make_gen(tokens=[], logprobs=False)
    assert failure_line(lambda e: e.confidence(min_mean=0.5), gen) == (
        "confidence(min_mean=0.5): no logprobs from local:smollm2-135m: "
        "the request asked for none (logprobs=False)"
    )


def test_an_empty_output_has_no_confidence() -> None:
    assert failure_line(lambda e: e.answer_prob("A", min=0.5), make_gen("", [])) == (
        "answer_prob('A', min=0.5): the output is empty: no tokens to score"
    )


def test_entropy_without_alternatives_is_a_capability_the_rest_still_checked() -> None:
    """Asked for alternatives, the backend sent none: a capability it lacks (skipped)."""
    gen = make_gen(tokens=[(t, p, []) for t, p, _ in PARIS_TOKENS])
    with collecting() as checks:
        expect(gen).confidence(min_mean=0.9, max_entropy=1.0)
    assert [f.check for f in checks.failures] == ["confidence(min_mean=0.9)"]
    assert checks.skips == [
        (
            "confidence(max_entropy=1.0): no top alternatives from local:smollm2-135m: "
            "the backend does not return them"
        )
    ]


def test_one_alternative_per_token_gives_no_entropy() -> None:
    """top_logprobs=1 has no spread to measure: no entropy rather than a certain 0."""
    tokens: Tokens = [(t, p, [(t, p)]) for t, p, _ in PARIS_TOKENS]
    gen = make_gen(tokens=tokens, top_logprobs=1)
    stats = confidence_of(gen)
    assert stats is not None and stats.entropy is None
    with collecting() as checks:
        expect(gen).confidence(max_entropy=1.0)
    assert checks.skips == [
        (
            "confidence(max_entropy=1.0): one top alternative per token from "
            "local:smollm2-135m has no spread: entropy needs top_logprobs of 2 or more"
        )
    ]


@pytest.mark.parametrize(
    "check",
    [lambda e: e.confidence(max_entropy=1.0), lambda e: e.answer_prob("Paris", min=0.5)],
    ids=["entropy", "answer_prob"],
)
def test_alternatives_not_asked_for_fail_with_the_fix(
    check: Callable[[Expectation], object],
) -> None:
    """Alternatives are off by default: a check that reads them fails (not skips, as for
    logprobs=False) and says how to ask, even where confidence itself is fine."""
    gen = make_gen(tokens=[(t, p, []) for t, p, _ in PARIS_TOKENS], top_logprobs=None)
    line = failure_line(check, gen)
    assert line.endswith(
        "no top alternatives from local:smollm2-135m: the request asked for none (they are "
        "off by default: pass top_logprobs=5 to the call or to @pytest.mark.llm)"
    )
    expect(gen).confidence(min_mean=0.2)  # token logprobs are still there


SKIPPING_TEST = """
from pytest_llmlab.expect import collecting, expect
from pytest_llmlab.models.base import Generation, Request, Message

def make_gen(text="The capital of France is Paris."):
    request = Request(messages=[Message(role="user", content="Capital?")], temperature=0)
    return Generation(text=text, model="lmstudio:m", spec="lmstudio:m", provider="lmstudio",
                      temperature=0, request=request)

def test_plain():
    expect(make_gen()).contains("Paris").confidence(min_mean=0.5)

def test_collected():
    with collecting() as checks:
        expect(make_gen()).confidence(min_mean=0.5)
        expect(make_gen()).answer_prob("Paris", min=0.5)
    checks.raise_if_failed()

def test_strict():
    with collecting(strict_capabilities=True) as checks:
        expect(make_gen()).confidence(min_mean=0.5)
    checks.raise_if_failed()

def test_hard_failure():
    gen = make_gen("The capital of France is Lyon.")
    expect(gen).contains("Paris")
"""


def test_capability_skips_and_failures_in_a_pytest_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SKIPPING_TEST)
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=0, skipped=2, failed=2)
    reason = "no logprobs from lmstudio:m: the backend does not return them"
    result.stdout.fnmatch_lines(
        [
            (
                f"SKIPPED [[]1[]] test_capability_skips_and_failures_in_a_pytest_run.py:*: "
                f"confidence(min_mean=0.5): {reason}"
            ),
            f"SKIPPED [[]1[]] *: confidence(min_mean=0.5): {reason} (and 1 more skipped check)",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_strict _*",
            "E * 1 check failed for lmstudio:m at T=0:",
            f"E *   confidence(min_mean=0.5): {reason}",
        ]
    )


def test_a_failed_check_points_at_the_test_line_not_at_the_library(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(SKIPPING_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "hard_failure")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            '>       expect(gen).contains("Paris")',
            "E       pytest_llmlab.expect.ExpectationFailed: 1 check failed for lmstudio:m at T=0:",
            "E         contains('Paris'): missing 'Paris'",
            "E         prompt: 'Capital?'",
            "E         output: 'The capital of France is Lyon.'",
        ]
    )
    assert "def _fail" not in result.stdout.str()
    assert "expect.py" not in result.stdout.str()


# -- confidence metrics ----------------------------------------------------------------------


def test_confidence_of_computes_every_metric() -> None:
    stats = confidence_of(make_gen())
    assert stats is not None
    probs = [p for _, p, _ in PARIS_TOKENS]
    assert stats.mean_prob == pytest.approx(sum(probs) / 7)
    assert stats.min_prob == pytest.approx(0.25)
    assert stats.first_token_prob == pytest.approx(0.25)
    assert stats.perplexity == pytest.approx(math.exp(-sum(map(math.log, probs)) / 7))
    assert stats.entropy is not None and 0 < stats.entropy < math.log(3)
    assert confidence_of(make_gen(tokens=[])) is None


def test_entropy_renormalizes_the_top_alternatives() -> None:
    uniform = make_gen("A", [("A", 0.1, [("A", 0.1), ("B", 0.1), ("C", 0.1), ("D", 0.1)])])
    certain = make_gen("A", [("A", 0.5, [("A", 0.5)])])
    mixed = make_gen("AA", [("A", 0.1, [("A", 0.1), ("B", 0.1)]), ("A", 0.5, [("A", 0.5)])])
    stats = [confidence_of(gen) for gen in (uniform, certain, mixed)]
    entropies = [s.entropy if s is not None else None for s in stats]
    assert entropies == pytest.approx([math.log(4), 0.0, math.log(2) / 2])


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=5),
        min_size=1,
        max_size=8,
    )
)
def test_confidence_bounds(positions: list[list[float]]) -> None:
    tokens = [
        (f"t{i}", top[0], [(f"a{j}", p) for j, p in enumerate(top)])
        for i, top in enumerate(positions)
    ]
    stats = confidence_of(make_gen("".join(t for t, _, _ in tokens), tokens))
    assert stats is not None and stats.entropy is not None
    assert 0 < stats.min_prob <= stats.mean_prob <= 1
    assert stats.perplexity >= 1 - 1e-9
    assert 1 / stats.perplexity <= stats.mean_prob + 1e-9  # geometric <= arithmetic mean
    assert -1e-9 <= stats.entropy <= math.log(max(len(top) for top in positions)) + 1e-9


def test_answer_prob_sums_the_spellings_of_the_answer_s_first_token() -> None:
    tokens: Tokens = [(" B", 0.6, [(" B", 0.6), ("B", 0.2), (" C", 0.1)]), (")", 0.9, [(")", 0.9)])]
    gen = make_gen(" B)", tokens)
    expect(gen).answer_prob("B", min=0.8)
    assert failure_line(lambda e: e.answer_prob("B", min=0.81), gen) == (
        "answer_prob('B', min=0.81): probability of 'B' at position 0 is 0.8 < 0.81 "
        "(alternatives: ' B' 0.6, 'B' 0.2, ' C' 0.1)"
    )


def test_answer_prob_of_an_answer_not_given_uses_the_first_position() -> None:
    tokens: Tokens = [(" B", 0.6, [(" B", 0.6), (" C", 0.3)]), (")", 0.9, [(")", 0.9)])]
    gen = make_gen(" B)", tokens)
    expect(gen).answer_prob("C", min=0.3)
    assert failure_line(lambda e: e.answer_prob("C", min=0.5), gen) == (
        "answer_prob('C', min=0.5): probability of 'C' at position 0 is 0.3 < 0.5 "
        "(alternatives: ' B' 0.6, ' C' 0.3)"
    )


def test_answer_prob_without_alternatives_uses_the_chosen_token() -> None:
    gen = make_gen(tokens=[(t, p, []) for t, p, _ in PARIS_TOKENS])
    expect(gen).answer_prob("Paris", min=0.8)
    assert failure_line(lambda e: e.answer_prob("London", min=0.1), gen) == (
        "answer_prob('London', min=0.1): 'London' is not among the alternatives at position 0: "
        "'The' 0.25"
    )


def test_answer_prob_needs_an_answer() -> None:
    with pytest.raises(ValueError, match="non-empty answer"):
        expect(make_gen()).answer_prob("  ", min=0.5)


def test_answer_prob_is_case_sensitive() -> None:
    assert "'paris' is not among the alternatives" in failure_line(
        lambda e: e.answer_prob("paris", min=0.1)
    )


# -- structure ---------------------------------------------------------------------------


class Item(BaseModel):
    name: str
    price: float


class Order(BaseModel):
    customer: str
    items: list[Item]


ORDER_TEXT = (
    'Here is the order:\n```json\n{"customer": "Ann", "items": [{"name": "tea", "price": 2.5}],'
    ' "notes": {"a.b": [true]}}\n```'
)
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["customer"],
    "properties": {"customer": {"type": "string"}, "items": {"type": "array", "maxItems": 0}},
}


def test_is_json_keeps_the_value() -> None:
    chain = expect(make_gen(ORDER_TEXT, [])).is_json()
    assert chain.json["customer"] == "Ann"


def test_is_json_fails_with_the_extraction_error() -> None:
    with pytest.raises(ExpectationFailed) as excinfo:
        expect(make_gen('{"a": 1,}', [])).is_json()
    assert str(excinfo.value).splitlines()[1:4] == [
        "  is_json(): no valid JSON value in the answer (tried 1 {...}/[...] span, the whole text)",
        "    span at line 1 column 1: trailing comma at line 1 column 8: JSON does not allow it",
        '        {"a": 1,}',
    ]


def test_json_and_parsed_before_a_passing_check_say_what_to_call() -> None:
    chain = expect(make_gen())
    with pytest.raises(AttributeError, match=r"call \.is_json\(\) first"):
        _ = chain.json
    with pytest.raises(AttributeError, match=r"call \.validates\(\.\.\.\) first"):
        _ = chain.parsed


def test_validates_a_pydantic_model_and_keeps_the_instance() -> None:
    chain = expect(make_gen(ORDER_TEXT, [])).validates(Order)
    assert isinstance(chain.parsed, Order) and chain.parsed.items[0].price == 2.5
    assert chain.json["notes"] == {"a.b": [True]}


def test_validates_a_json_schema_with_error_paths() -> None:
    chain = expect(make_gen('{"customer": "Ann"}', [])).validates(ORDER_SCHEMA)
    assert chain.parsed == {"customer": "Ann"}
    assert failure_line(lambda e: e.validates(ORDER_SCHEMA), make_gen(ORDER_TEXT, [])) == (
        "validates(<JSON schema>): 1 schema error against the JSON schema:\n"
        "  $.items: [{'name': 'tea', 'price': 2.5}] is expected to be empty"
    )


def test_validates_without_json_fails_once_with_the_extraction_error() -> None:
    with collecting() as checks:
        expect(make_gen()).is_json().validates(Order).field("a", 1)
    messages = [f"{f.check}: {f.message.splitlines()[0]}" for f in checks.failures]
    assert messages == [
        (
            "is_json(): no valid JSON value in the answer "
            "(tried {...}/[...] spans (none found), the whole text)"
        ),
        "validates(Order): no JSON value in the answer (see the failure above)",
        "field('a', 1): no JSON value in the answer (see the failure above)",
    ]


def test_field_follows_paths_into_the_json() -> None:
    chain = expect(make_gen(ORDER_TEXT, []))
    chain.field("customer", "Ann").field("items[0].name", "tea").field("$.items[0].price", 2.5)
    chain.field('notes["a.b"][0]', True).field("items[-1].name", "tea").field("$", chain.json)


@pytest.mark.parametrize(
    ("path", "expected", "message"),
    [
        ("items[0].price", 3, "$.items[0].price is 2.5, expected 3"),
        ("customer", "Bob", "$.customer is 'Ann', expected 'Bob'"),
        ("items[0].nme", "tea", "$.items[0]: no key 'nme' (keys: 'name', 'price')"),
        ("items[3].name", "tea", "$.items[3]: index out of range (1 item)"),
        ("customer[0]", "A", "$.customer is 'Ann', which has no '[0]'"),
        ("items.name", "tea", "$.items is an array, which has no '.name'"),
        ("notes[0]", 1, "$.notes is an object, which has no '[0]'"),
    ],
)
def test_field_failures_say_where_the_path_broke(path: str, expected: Any, message: str) -> None:
    assert failure_line(lambda e: e.field(path, expected), make_gen(ORDER_TEXT, [])) == (
        f"field({path!r}, {expected!r}): {message}"
    )


@pytest.mark.parametrize("path", ["a..b", "a[x]", "a.", "a[0]b"])
def test_a_malformed_path_is_a_usage_error(path: str) -> None:
    with pytest.raises(ValueError, match="malformed JSON path"):
        expect(make_gen(ORDER_TEXT, [])).field(path, 1)


def test_parse_returns_the_instance_or_the_value() -> None:
    order = parse(make_gen(ORDER_TEXT, []), Order)
    assert isinstance(order, Order) and order.customer == "Ann"
    assert parse(make_gen("[1, 2]", [])) == [1, 2]
    assert parse(make_gen('{"customer": "Ann"}', []), ORDER_SCHEMA) == {"customer": "Ann"}


def test_parse_fails_hard_even_inside_a_collector() -> None:
    with collecting() as checks, pytest.raises(ExpectationFailed) as excinfo:
        parse(make_gen('{"items": []}', []), Order)
    assert checks.failures == []
    assert str(excinfo.value).splitlines()[:3] == [
        "1 check failed for local:smollm2-135m at T=0:",
        "  parse(Order): 1 schema error against Order:",
        "      $.customer: Field required",
    ]
    with pytest.raises(ExpectationFailed, match="no valid JSON value"):
        parse(make_gen(), Order)


# -- energy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("provenance", ["measured", "measured-apportioned", "integrated"])
def test_measured_provenances_pass(provenance: str) -> None:
    expect(make_gen(energy=reading(provenance))).measured().joules(max=36).wh_per_1k(max=1.3)


@pytest.mark.parametrize("provenance", ["estimated", "replayed"])
def test_other_provenances_are_not_measured(provenance: str) -> None:
    gen = make_gen(energy=reading(provenance, note=ESTIMATE_NOTE))
    assert failure_line(lambda e: e.measured(), gen) == (
        f"measured(): provenance is {provenance!r}, not measured: {ESTIMATE_NOTE}"
    )


def test_an_estimated_reading_passes_or_fails_on_its_number_and_says_it_is_estimated() -> None:
    gen = make_gen(energy=reading("estimated", note=ESTIMATE_NOTE))
    expect(gen).wh_per_1k(max=2).joules(max=40)
    assert failure_line(lambda e: e.wh_per_1k(max=1), gen) == (
        "wh_per_1k(max=1): 1.25 Wh per 1k completion tokens > 1 "
        f"(estimated reading: {ESTIMATE_NOTE})"
    )
    assert failure_line(lambda e: e.joules(max=10), gen) == (
        f"joules(max=10): 36 J > 10 J (estimated reading: {ESTIMATE_NOTE})"
    )


def test_an_unavailable_reading_fails_every_energy_check_with_the_reason() -> None:
    note = "remote endpoint: this machine's meters cannot see it"
    gen = make_gen(energy=reading("unavailable", note=note))
    assert failure_line(lambda e: e.wh_per_1k(max=100), gen) == (
        f"wh_per_1k(max=100): energy unavailable: {note}"
    )
    assert failure_line(lambda e: e.joules(max=100), gen) == (
        f"joules(max=100): energy unavailable: {note}"
    )
    assert failure_line(lambda e: e.measured(), gen) == (
        f"measured(): provenance is 'unavailable', not measured: {note}"
    )


def test_a_generation_without_a_reading_was_not_metered() -> None:
    gen = make_gen()
    gen.energy = None
    for check in (lambda e: e.joules(max=1), lambda e: e.wh_per_1k(max=1), lambda e: e.measured()):
        assert failure_line(check, gen).endswith(
            ": energy unavailable: this generation was not metered"
        )


def test_wh_per_1k_without_completion_tokens_is_unknown() -> None:
    gen = make_gen(energy=reading("measured", completion_tokens=0))
    assert failure_line(lambda e: e.wh_per_1k(max=1), gen) == (
        "wh_per_1k(max=1): Wh per 1k tokens unknown: no completion tokens"
    )


def test_failing_checks_on_the_embedded_model_are_all_reported(pytester: pytest.Pytester) -> None:
    """Real generations (SmolLM2 at T=0 answers "The capital of France is Paris."):
    every failing check of every chain in the test is reported once, at the end, with
    the model, temperature, prompt and marked output; the test body runs to its end."""
    pytester.makepyfile(
        """
        from pytest_llmlab.expect import expect

        def test_many_failures(llm):
            gen = llm.generate("What is the capital of France? Answer in one word.", max_tokens=16)
            expect(gen).contains("Lyon").not_contains("Paris").max_words(2)
            expect(gen).completion_tokens(max=1).finish_reason("length")
            expect(gen).confidence(min_mean=0.999)
            print("body reached its end")
        """
    )
    result = pytester.runpytest("--llm-baseline-s=0", "-p", "no:cacheprovider", "-rP")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "body reached its end" in text
    result.stdout.fnmatch_lines(
        [
            "6 checks failed for local:smollm2-135m at T=0:",
            "*contains('Lyon'): missing 'Lyon'*",
            "*not_contains('Paris'): found 'Paris'*",
            "*max_words(2): 6 words > 2*",
            "*completion_tokens(max=1): *",
            "*finish_reason('length'): *",
            "*confidence(min_mean=0.999): *",
            "*prompt: 'What is the capital of France? Answer in one word.'*",
            "*output: 'The capital of France is >>>Paris<<<.'*",
        ]
    )
    assert text.count("checks failed for") == 1
    assert "plugin.py" not in text and "Traceback" not in text
    assert "During handling" not in text
