"""Scoring: keywords, exact match, GSM8K numbers, choice letters, BLEU/chrF, similarity,
and the `expect()` checks built on them (`keywords`, `exact_match`, `number`, `choice`,
`bleu`, `chrf`, `similar`, `python`).

BLEU and chrF are checked against the values sacrebleu publishes for its own examples
(github.com/mjpost/sacrebleu, ``README.md`` and ``test/``); each test names its source.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_expect import failure_line, make_gen

from pytest_llmlab.expect import (
    Expectation,
    ExpectationFailed,
    collecting,
    expect,
    load_check,
)
from pytest_llmlab.models.base import Generation
from pytest_llmlab.scoring import (
    choice_letter,
    corpus_bleu,
    corpus_chrf,
    exact_form,
    exact_match,
    final_number,
    keyword_fraction,
    sentence_bleu,
    sentence_chrf,
    similarity,
)

#: sacrebleu README.md, "Using SacreBLEU from Python": three system sentences and two
#: reference streams, given here per hypothesis.
README_HYPS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
README_REFS = [
    ["The dog bit the man.", "The dog had bit the man."],
    ["It was not unexpected.", "No one was surprised."],
    ["The man bit him first.", "The man had bitten the dog."],
]
#: sacrebleu test/test_sentence_bleu.py, the example taken from sacrebleu issue #98.
RO_REF = "producţia de zahăr brut se exprimă în zahăr alb;"
RO_SYS = "Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;"


def gen(text: str) -> Generation:
    """A finished generation whose output is ``text`` (no logprobs needed here)."""
    return make_gen(text, [])


# -- BLEU and chrF against sacrebleu's published values ---------------------------------


def test_sentence_bleu_matches_sacrebleu_s_published_example() -> None:
    """test/test_sentence_bleu.py: ``('exp', None, False, '13a', 8.493)``, the defaults."""
    assert sentence_bleu(RO_SYS, RO_REF) == pytest.approx(8.493, abs=1e-3)
    assert sentence_bleu(RO_SYS, [RO_REF]) == pytest.approx(8.493, abs=1e-3)


def test_sentence_bleu_without_shared_ngrams_is_zero() -> None:
    """test/test_sentence_bleu.py, the example of sacrebleu issue #141: 0.0."""
    assert sentence_bleu("this is a cat", "okay thanks") == 0.0


def test_sentence_bleu_of_an_exact_short_answer_is_100() -> None:
    # Effective order: a two-word answer is not penalised for having no 3- and 4-grams.
    assert sentence_bleu("Paris, France", "Paris, France") == pytest.approx(100.0)
    assert sentence_bleu("Paris, France", "Lyon") == 0.0


def test_corpus_bleu_matches_the_readme() -> None:
    """README.md: ``BLEU = 48.53``; test/test_bleu.py pins it as 48.530827."""
    assert corpus_bleu(README_HYPS, README_REFS) == pytest.approx(48.530827, abs=1e-6)


def test_corpus_bleu_takes_a_variable_number_of_references_per_row() -> None:
    """README.md, "Variable Number of References": the first row's first reference
    removed gives ``BLEU = 29.44``."""
    refs: list[str | list[str]] = [["The dog had bit the man."], *README_REFS[1:]]
    assert corpus_bleu(README_HYPS, refs) == pytest.approx(29.44, abs=5e-3)


def test_corpus_scores_take_one_reference_string_per_row() -> None:
    single = [refs[0] for refs in README_REFS]
    assert corpus_bleu(README_HYPS, single) == corpus_bleu(README_HYPS, [[ref] for ref in single])
    assert corpus_bleu(README_HYPS, single) < corpus_bleu(README_HYPS, README_REFS)


def test_corpus_scores_need_one_reference_row_per_hypothesis() -> None:
    with pytest.raises(ValueError, match="3 hypotheses but 2 references"):
        corpus_bleu(README_HYPS, README_REFS[:2])
    with pytest.raises(ValueError, match="3 hypotheses but 1 references"):
        corpus_chrf(README_HYPS, ["x"])


def test_corpus_chrf_matches_the_readme() -> None:
    """README.md: ``chrF2 = 59.73`` for the same sentences."""
    assert corpus_chrf(README_HYPS, README_REFS) == pytest.approx(59.73, abs=5e-3)


# test/test_chrf.py, ``test_cases_effective_order``. sacrebleu computes them with beta=3;
# hypothesis and reference have equal n-gram counts in each, so precision equals recall
# and the F-score is the same for every beta, including the default 2 used here.
CHRF_EFFECTIVE_ORDER = [
    ("a", "a", 100.0),
    ("", "reference", 0.0),
    ("a b c", "a b c", 100.0),
    ("a b c", "abc", 100.0),
    ("", "c", 0.0),
    ("aa", "ab", 25.0),
]


@pytest.mark.parametrize(("hypothesis", "reference", "score"), CHRF_EFFECTIVE_ORDER)
def test_sentence_chrf_matches_sacrebleu_s_published_cases(
    hypothesis: str, reference: str, score: float
) -> None:
    assert sentence_chrf(hypothesis, reference) == pytest.approx(score, abs=1e-4)
    assert sentence_chrf(hypothesis, [reference]) == pytest.approx(score, abs=1e-4)


def test_corpus_chrf_pools_statistics_over_sentences() -> None:
    """test/test_chrf.py, ``test_cases_effective_order``: ``(["a", "b"], ["a", "c"], 50.0)``."""
    assert corpus_chrf(["a", "b"], ["a", "c"]) == pytest.approx(50.0, abs=1e-4)


def test_chrf_plus_plus_also_scores_words() -> None:
    # chrF ignores whitespace, so "a b c" against "abc" is 100 (published above); chrF++
    # adds word n-grams, and the words "a", "b", "c" are not the word "abc".
    assert sentence_chrf("a b c", "abc", word_order=2) < 100.0
    assert sentence_chrf("a b c", "a b c", word_order=2) == pytest.approx(100.0)
    assert corpus_chrf(["a b c"], ["abc"], word_order=2) < corpus_chrf(["a b c"], ["abc"])


# -- GSM8K numbers ----------------------------------------------------------------------

#: GSM8K train answers as the dataset writes them: reasoning with <<calculator>> notes,
#: then the answer line ``#### N``.
GSM8K_NATALIA = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
    "#### 72"
)
GSM8K_WENG = (
    "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
    "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n"
    "#### 10"
)

NUMBERS = [
    (GSM8K_NATALIA, 72.0),
    (GSM8K_WENG, 10.0),
    (GSM8K_WENG.rsplit("\n", 1)[0], 10.0),  # no answer line: the last number, "10."
    ("#### 1,000", 1000.0),
    ("####-3", -3.0),
    ("#### 72\n\nQuestion: Tom has 5 apples.", 72.0),  # the marker wins over later numbers
    ("So the total is $1,234.50.", 1234.5),
    ("She has 18 apples left.", 18.0),
    ("The temperature fell to -5 degrees.", -5.0),
    ("It costs -$12.", -12.0),
    ("5 - 3 = 2", 2.0),
    ("a range of 5-3", 3.0),  # a dash between numbers is not a sign
    ("x = .5", 0.5),
    ("The numbers are 3,4,5", 5.0),
    ("About 50% of them.", 50.0),
    ("H2O, no answer", None),
    ("I don't know.", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "number"), NUMBERS, ids=[repr(t[-24:]) for t, _ in NUMBERS])
def test_final_number_scores_like_gsm8k(text: str, number: float | None) -> None:
    assert final_number(text) == number


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(
    st.integers(min_value=-(10**9), max_value=10**9),
    st.text(alphabet=st.characters(categories=["L", "Zs"]), max_size=30),
)
def test_the_last_number_is_read_back_with_thousands_commas(value: int, prefix: str) -> None:
    assert final_number(f"{prefix} 7 then {value:,}.") == value
    assert final_number(f"{prefix} #### {value}\n and 99") == value


# -- multiple choice --------------------------------------------------------------------

CAPITALS = {"A": "London", "B": "Paris", "C": "Rome", "D": "Berlin"}
CHOICES = [
    ("B", "B"),
    ("(B)", "B"),
    ("B.", "B"),
    ("B) Paris", "B"),
    ("B: Paris", "B"),
    ("**B**", "B"),
    ("Answer: B", "B"),
    ("**Answer:** D", "D"),
    ("The answer is B", "B"),
    ("The correct answer is (C).", "C"),
    ("the correct option is D, because", "D"),
    ("answer: b.", "B"),  # another case where the letter stands apart
    ("b)", "B"),
    ("Answer: A. Wait, no: the answer is C.", "C"),  # the last statement wins
    ("A. London\nThe answer is B", "B"),  # a statement wins over a leading letter
    ("I would pick (C) here", "C"),
    ("Either (A) or (B)", None),  # two bracketed letters: no choice
    ("A dog is not a capital.", None),  # the article is not a letter
    ("The answer is a bit tricky.", None),  # nor in running text
    ("The answer is 23", None),
    ("E", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "letter"), CHOICES, ids=[repr(t) for t, _ in CHOICES])
def test_choice_letter_like_mmlu_and_arc(text: str, letter: str | None) -> None:
    assert choice_letter(text) == letter
    assert choice_letter(text, ("A", "B", "C", "D")) == letter


def test_arc_numbered_choices() -> None:
    assert choice_letter("The answer is 2.", ("1", "2", "3", "4")) == "2"
    assert choice_letter("(3)", ("1", "2", "3", "4")) == "3"
    assert choice_letter("The answer is 23", ("1", "2", "3", "4")) is None
    assert choice_letter("E", ("A", "B", "C", "D", "E")) == "E"


def test_choice_text_counts_when_the_choices_are_mapped() -> None:
    assert choice_letter("Paris", CAPITALS) == "B"
    assert choice_letter("The capital of France is Paris.", CAPITALS) == "B"
    assert choice_letter("The capital of France is Paris.") is None
    assert choice_letter("Paris or Rome?", CAPITALS) is None  # two choices named
    assert choice_letter("Parisian food", CAPITALS) is None  # whole words only
    assert choice_letter("Answer: C. Paris", CAPITALS) == "C"  # the letter comes first


# -- keywords and exact match -----------------------------------------------------------


def test_keyword_fraction_ignores_case_and_respects_word_boundaries() -> None:
    text = "Paris's museums: the category of C++ code, New\n York."
    fraction, missing = keyword_fraction(text, ["paris", "cat", "C++", "new york", "museum"])
    assert missing == ["cat", "museum"]
    assert fraction == pytest.approx(3 / 5)
    assert keyword_fraction(text, []) == (1.0, [])
    assert keyword_fraction(text, "PARIS") == (1.0, [])


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True), min_size=1, max_size=8))
def test_every_word_of_a_text_is_one_of_its_keywords(words: list[str]) -> None:
    text = " ".join(words) + "."
    assert keyword_fraction(text.upper(), words) == (1.0, [])


def test_exact_form_strips_only_the_ends() -> None:
    assert exact_form("  **Paris.**\n") == "paris"
    assert exact_form("`The   Answer`!") == "the answer"
    assert exact_form("3.5.") == "3.5"
    assert exact_form("-5") == "-5"
    assert exact_form(".5") == ".5"
    assert exact_match("U.S.A.", "u.s.a")
    assert not exact_match("3.5", "35")
    assert not exact_match("-5", "5")
    assert not exact_match("Paris France", "Paris, France")


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9]+( [A-Za-z0-9]+)*", fullmatch=True))
def test_exact_match_ignores_case_spacing_and_end_punctuation(answer: str) -> None:
    assert exact_match(f"  {answer.upper().replace(' ', '   ')}!!\n", f'"{answer}"')
    assert not exact_match(answer + "x", answer)


# -- the expect() checks ----------------------------------------------------------------


PASSING: list[tuple[str, str, Callable[[Expectation], object]]] = [
    ("keywords", "Paris is the capital of France.", lambda e: e.keywords(["paris", "FRANCE"])),
    (
        "keywords-fraction",
        "Paris is the capital.",
        lambda e: e.keywords(["paris", "france"], min_fraction=0.5),
    ),
    ("exact_match", " **Paris.**", lambda e: e.exact_match("paris")),
    ("number", GSM8K_NATALIA, lambda e: e.number(72)),
    ("number-tolerance", "about 3.14", lambda e: e.number(3.1416, tolerance=0.01)),
    ("choice", "The answer is (B).", lambda e: e.choice("B")),
    ("choice-text", "It is Paris.", lambda e: e.choice("B", CAPITALS)),
    ("bleu", RO_SYS, lambda e: e.bleu(RO_REF, min=8)),
    ("bleu-references", RO_SYS, lambda e: e.bleu([RO_REF, RO_SYS], min=99)),
    ("chrf", "aa", lambda e: e.chrf("ab", min=25)),
    ("chrf++", "a b c", lambda e: e.chrf("a b c", min=99, word_order=2)),
    ("python-true", "Paris", lambda e: e.python(lambda g, case: g.text == "Paris")),
    ("python-none", "Paris", lambda e: e.python(lambda g, case: None)),
]


@pytest.mark.parametrize(
    ("text", "check"), [(t, c) for _, t, c in PASSING], ids=[n for n, _, _ in PASSING]
)
def test_every_scoring_check_passes_on_a_good_answer(
    text: str, check: Callable[[Expectation], object]
) -> None:
    chain = expect(gen(text))
    assert check(chain) is chain


def not_lyon(gen: Generation, case: Any) -> str:
    """A python check failing with its own message."""
    return "not Lyon"


def says_nothing(gen: Generation, case: Any) -> str:
    """A python check failing with an empty message."""
    return ""


FAILING: list[tuple[str, Callable[[Expectation], object], str]] = [
    (
        "Paris is lovely.",
        lambda e: e.keywords(["paris", "france", "capital"]),
        (
            "keywords(['paris', 'france', 'capital'], min_fraction=1.0): "
            "1 of 3 keywords (0.333 < 1): missing 'france', 'capital'"
        ),
    ),
    (
        "Paris is lovely.",
        lambda e: e.keywords(["paris", "france"], min_fraction=0.75),
        (
            "keywords(['paris', 'france'], min_fraction=0.75): "
            "1 of 2 keywords (0.5 < 0.75): missing 'france'"
        ),
    ),
    (
        "Paris, France.",
        lambda e: e.exact_match("Paris"),
        "exact_match('Paris'): normalized 'paris, france' != 'paris'",
    ),
    (
        GSM8K_NATALIA,
        lambda e: e.number(71),
        "number(71): final number 72 != 71",
    ),
    (
        "about 3.2",
        lambda e: e.number(3.1416, tolerance=0.01),
        (
            "number(3.1416, tolerance=0.01): final number 3.2 != 3.1416 "
            "(off by 0.0584 > tolerance 0.01)"
        ),
    ),
    ("I cannot say.", lambda e: e.number(42), "number(42): no number in the output"),
    (
        "The answer is C.",
        lambda e: e.choice("B"),
        "choice('B'): chose 'C', expected 'B'",
    ),
    (
        "I cannot say.",
        lambda e: e.choice("2", ("1", "2", "3", "4")),
        "choice('2', choices=['1', '2', '3', '4']): no choice among 1, 2, 3, 4 found in the output",
    ),
    (
        RO_SYS,
        lambda e: e.bleu(RO_REF, min=10),
        (
            f"bleu('producţia de zahăr brut se exprimă î..., min=10): BLEU 8.49 < 10 "
            f"against {RO_REF!r}"
        ),
    ),
    (
        RO_SYS,
        lambda e: e.bleu([RO_REF, "x"], min=10),
        (
            "bleu(['producţia de zahăr brut se exprimă ..., min=10): BLEU 8.49 < 10 "
            "against 2 references"
        ),
    ),
    ("aa", lambda e: e.chrf("ab", min=30), "chrf('ab', min=30): chrF 25 < 30 against 'ab'"),
    (
        "Paris",
        lambda e: e.python(not_lyon),
        "python('test_scoring:not_lyon'): not Lyon",
    ),
]


@pytest.mark.parametrize(
    ("text", "check", "line"),
    FAILING,
    ids=[f"{line.split('(')[0]}-{i}" for i, (_, _, line) in enumerate(FAILING)],
)
def test_every_scoring_check_fails_with_its_threshold_and_the_observed_value(
    text: str, check: Callable[[Expectation], object], line: str
) -> None:
    assert failure_line(check, gen(text)) == line


def test_chrf_plus_plus_is_named_in_its_failure() -> None:
    line = failure_line(lambda e: e.chrf("abc", min=99, word_order=2), gen("a b c"))
    assert re.fullmatch(
        r"chrf\('abc', min=99, word_order=2\): chrF\+\+ [\d.]+ < 99 against 'abc'", line
    ), line


def test_scoring_checks_reject_impossible_arguments() -> None:
    with pytest.raises(ValueError, match="at least one keyword"):
        expect(gen("x")).keywords([])
    with pytest.raises(ValueError, match=r"answer 'E' is not one of A, B, C, D"):
        expect(gen("E")).choice("E")


def test_failing_scoring_checks_are_collected_together() -> None:
    with collecting() as checks:
        expect(gen("The answer is C. #### 7")).choice("B").number(8).keywords(["answer"])
    assert [failure.check for failure in checks.failures] == ["choice('B')", "number(8)"]


# -- python checks ----------------------------------------------------------------------


def _user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's module of checks on sys.path; its name."""
    (tmp_path / "my_checks.py").write_text(
        textwrap.dedent(
            """
            def mentions_case_word(gen, case):
                if case["word"] not in gen.text:
                    return f"no {case['word']!r} in the answer"
                return True

            def broken(gen, case):
                return 1 / 0

            class Checks:
                @staticmethod
                def short(gen, case):
                    return len(gen.text) < 10

            NOT_CALLABLE = 3
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_checks", raising=False)
    return "my_checks"


def test_a_python_check_by_name_gets_the_generation_and_the_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _user_module(tmp_path, monkeypatch)
    expect(gen("Paris")).python(f"{module}:mentions_case_word", {"word": "Paris"})
    expect(gen("Paris")).python(f"{module}:Checks.short")
    line = failure_line(
        lambda e: e.python(f"{module}:mentions_case_word", case={"word": "Lyon"}), gen("Paris")
    )
    assert line == "python('my_checks:mentions_case_word'): no 'Lyon' in the answer"


def test_a_python_check_that_returns_false_or_raises_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _user_module(tmp_path, monkeypatch)
    long_answer = gen("Paris is the capital of France.")
    assert failure_line(lambda e: e.python(f"{module}:Checks.short"), long_answer) == (
        "python('my_checks:Checks.short'): my_checks:Checks.short returned False"
    )
    assert failure_line(lambda e: e.python(f"{module}:broken"), long_answer) == (
        "python('my_checks:broken'): my_checks:broken raised ZeroDivisionError: division by zero"
    )
    assert failure_line(lambda e: e.python(says_nothing), long_answer) == (
        "python('test_scoring:says_nothing'): test_scoring:says_nothing returned an empty message"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "python check 'no_colon': expected 'module:function'"),
        ("my_checks:", "python check 'my_checks:': expected 'module:function'"),
        (
            "no_such_module_here:f",
            (
                "python check 'no_such_module_here:f': cannot import 'no_such_module_here': "
                "ModuleNotFoundError: No module named 'no_such_module_here'"
            ),
        ),
        (
            "my_checks:missing",
            "python check 'my_checks:missing': 'my_checks' has no attribute 'missing'",
        ),
        (
            "my_checks:NOT_CALLABLE",
            "python check 'my_checks:NOT_CALLABLE': 'NOT_CALLABLE' is a int, not callable",
        ),
    ],
)
def test_a_python_check_that_cannot_be_loaded_is_a_value_error_naming_it(
    spec: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _user_module(tmp_path, monkeypatch)
    with pytest.raises(ValueError) as excinfo:
        load_check(spec)
    assert str(excinfo.value) == message
    with pytest.raises(ValueError, match=re.escape(message)):
        expect(gen("x")).python(spec)


# -- similarity -------------------------------------------------------------------------


def test_similarity_ranks_a_paraphrase_above_unrelated_text() -> None:
    pytest.importorskip("wordllama")
    reference = "The capital of France is Paris."
    paraphrase = similarity("Paris is the capital city of France.", reference)
    unrelated = similarity("I like eating bananas for breakfast.", reference)
    assert similarity(reference, reference) == pytest.approx(1.0)
    assert 0.8 < paraphrase < 1.0
    assert unrelated < 0.3
    expect(gen("Paris is the capital city of France.")).similar(reference)


def test_similar_fails_with_the_score_and_the_model() -> None:
    pytest.importorskip("wordllama")
    line = failure_line(
        lambda e: e.similar("The capital of France is Paris.", min=0.8),
        gen("I like eating bananas for breakfast."),
    )
    assert re.fullmatch(
        r"similar\('The capital of France is Paris.', min=0.8\): similarity -?[\d.]+ < 0.8 "
        r"against 'The capital of France is Paris.' \(wordllama l2_supercat-256\)",
        line,
    ), line


def test_similar_without_wordllama_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wordllama", None)  # find_spec answers None
    hint = "similar('Paris', min=0.8): needs wordllama: pip install 'pytest-llmlab[similar]'"
    with pytest.raises(pytest.skip.Exception) as skipped:
        expect(gen("Paris")).similar("Paris")
    assert skipped.value.msg == hint
    with collecting() as checks:
        expect(gen("Paris")).similar("Paris")
    assert checks.skips == [hint]
    with collecting(strict_capabilities=True) as checks:
        expect(gen("Paris")).similar("Paris")
    with pytest.raises(ExpectationFailed) as failed:
        checks.raise_if_failed()
    assert str(failed.value).splitlines()[1] == f"  {hint}"
