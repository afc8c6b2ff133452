"""Scoring an answer against a reference: pure functions, one implementation each.

`expect()`'s checks and the suites' checks and metrics call these; nothing here knows
about pytest or generations.

- `keyword_fraction`: the share of expected keywords in the answer.
- `exact_form` / `exact_match`: the normalized comparison of a short answer.
- `final_number`: the answer's number, the way GSM8K is scored.
- `choice_letter`: the chosen letter of a multiple-choice answer (MMLU, ARC).
- `sentence_bleu`, `sentence_chrf`, `corpus_bleu`, `corpus_chrf`: BLEU and chrF by
  ``sacrebleu``, the reference implementation, on its 0-100 scale.
- `similarity`: semantic similarity from a small static embedding model.

Similarity uses ``wordllama`` (the ``similar`` extra), chosen because its wheel ships its
weights: ``l2_supercat`` at 256 dimensions, 16 MB of token embeddings pooled into one
vector per text, so it works offline with no download, loads in half a second and scores
on a CPU in milliseconds. ``model2vec``, the other small static-embedding library,
downloads its models from the Hugging Face hub on first use, so it cannot run offline.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CHOICES",
    "SIMILARITY_MODEL",
    "choice_letter",
    "corpus_bleu",
    "corpus_chrf",
    "exact_form",
    "exact_match",
    "final_number",
    "keyword_fraction",
    "rouge_f",
    "sentence_bleu",
    "sentence_chrf",
    "similarity",
]

#: The letters of a four-way multiple-choice question (MMLU, most of ARC).
DEFAULT_CHOICES = ("A", "B", "C", "D")
#: What `similarity` scores with, as failure messages name it.
SIMILARITY_MODEL = "wordllama l2_supercat-256"

# -- keywords ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _keyword_pattern(word: str) -> re.Pattern[str]:
    """``word`` case-insensitively, any whitespace run for a space, word-bounded at ends
    that are word characters."""
    body = r"\s+".join(re.escape(part) for part in word.split())
    start = r"(?<!\w)" if re.match(r"\w", word) else ""
    end = r"(?!\w)" if re.search(r"\w$", word) else ""
    return re.compile(start + body + end, re.IGNORECASE)


def keyword_fraction(text: str, words: Sequence[str]) -> tuple[float, list[str]]:
    """The share of ``words`` found in ``text``, and the missing ones in their order.

    A keyword is found when it occurs ignoring case, as a whole word: ``"cat"`` is not in
    ``"category"``, but ``"Paris"`` is in ``"Paris's"`` and ``"C++"`` in ``"C++ code"``
    (the boundary applies only at a keyword's ends that are letters or digits). A space
    inside a keyword matches any run of whitespace. No stemming: ``"run"`` is not in
    ``"running"``. No keywords at all is a fraction of 1.0.
    """
    wanted = [words] if isinstance(words, str) else list(words)
    missing = [word for word in wanted if not _keyword_pattern(word).search(text)]
    fraction = 1.0 if not wanted else (len(wanted) - len(missing)) / len(wanted)
    return fraction, missing


# -- exact match ------------------------------------------------------------------------


def _trimmed(char: str) -> bool:
    """Whether ``char`` is cut from the ends of an answer: whitespace, punctuation, ```."""
    return char.isspace() or char == "`" or unicodedata.category(char).startswith("P")


def exact_form(text: str) -> str:
    """``text`` as `exact_match` compares it.

    Case-folded, whitespace runs collapsed to one space, and whitespace and punctuation
    (Unicode category ``P*``, and backticks) stripped from both ends, so ``" **Paris.**"``
    is ``"paris"``. Punctuation inside is kept (``"3.5"`` is not ``"35"``, ``"U.S"`` not
    ``"US"``), and so is a leading ``-`` or ``.`` before a digit: ``"-5"`` is not ``"5"``.
    Unlike `pytest_llmlab.expect.normalize`, which removes all punctuation.
    """
    chars = " ".join(text.casefold().split())
    start, end = 0, len(chars)
    while end > start and _trimmed(chars[end - 1]):
        end -= 1
    while start < end and _trimmed(chars[start]):
        if chars[start] in "-." and start + 1 < end and chars[start + 1].isdigit():
            break
        start += 1
    return chars[start:end]


def exact_match(prediction: str, reference: str) -> bool:
    """Whether ``prediction`` and ``reference`` have the same `exact_form`."""
    return exact_form(prediction) == exact_form(reference)


# -- GSM8K numbers ----------------------------------------------------------------------

#: A number as answers write it: ``-$1,234.50``, ``42``, ``.5``. Not inside a word
#: (``H2O``) and not the tail of another number (``3.14.15``); ``5-3`` is 5 and 3.
_NUMBER = (
    r"(?<![\w.])(?P<sign>-)?\$?"
    r"(?P<digits>[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
    r"(?![0-9])"
)
_NUMBER_RE = re.compile(_NUMBER)
_MARKED_RE = re.compile(r"####\s*" + _NUMBER)


def final_number(text: str) -> float | None:
    """The answer's number, the way GSM8K scores it; None when the text has no number.

    The number after the first ``####`` marker (GSM8K's answer line, ``#### 72``) when
    there is one, else the last number in the text (lm-evaluation-harness's
    "flexible-extract": ``"... so she has 18 apples."`` is 18). Thousands commas
    (``1,234``), a minus sign (``-5``, ``-$5``), decimals (``3.50``), a dollar sign and a
    trailing full stop are understood; ``%`` and units are ignored (``50%`` is 50).
    Fractions and words are not evaluated: ``1/2`` is 2, ``twelve`` is no number.
    """
    match = _MARKED_RE.search(text)
    if match is None:
        match = next(reversed(list(_NUMBER_RE.finditer(text))), None)
    if match is None:
        return None
    value = float(match.group("digits").replace(",", ""))
    return -value if match.group("sign") else value


# -- multiple choice --------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _choice_patterns(letters: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    """The answer-statement, leading-letter and bracketed-letter patterns for ``letters``."""
    alts = "|".join(re.escape(letter) for letter in sorted(letters, key=len, reverse=True))
    letter = rf"(?P<open>[(\[]\s*)?(?P<letter>{alts})(?P<close>\s*[)\]])?(?!\w)"
    statement = (
        r"(?:\banswer\b|\bcorrect\s+(?:option|choice|letter)\b)[\s*_:]*"
        r"(?:(?:is|was|would\s+be|should\s+be|will\s+be)(?!\w)[\s*_:]*|=\s*)?"
        rf"(?:(?:option|choice|letter)\s+)?{letter}"
    )
    return (
        re.compile(statement, re.IGNORECASE),
        re.compile(r"\A[\s*_#>]*" + letter, re.IGNORECASE),
        re.compile(rf"[(\[]\s*(?P<letter>{alts})\s*[)\]]", re.IGNORECASE),
    )


def _delimited(text: str, match: re.Match[str]) -> bool:
    """Whether a matched letter stands apart: bracketed, or followed by ``.`` ``:`` ``*``,
    a line end or the end of the text (``"B."``, ``"(B)"``, ``"B"``; not ``"A dog"``)."""
    if match.group("open") or match.group("close"):
        return True
    rest = text[match.end() :]
    return not rest.strip() or rest[0] in ".:*\n" or rest.lstrip(" \t").startswith("\n")


def _letter_of(letters: Sequence[str], found: str, *, delimited: bool) -> str | None:
    """The choice ``found`` names: the same case, or another case when delimited."""
    if found in letters:
        return found
    if delimited:
        return next((c for c in letters if c.casefold() == found.casefold()), None)
    return None


def choice_letter(
    text: str, choices: Sequence[str] | Mapping[str, str] = DEFAULT_CHOICES
) -> str | None:
    """The choice an answer picks (MMLU/ARC style), as spelled in ``choices``; or None.

    ``choices`` lists the letters (``"A".."D"``; ARC also uses ``"1".."4"``), or maps
    each letter to its text. The first rule that finds a choice wins:

    1. An answer statement, the last one in the text (a model that corrects itself
       means the later one): ``"Answer: B"``, ``"The answer is (B)"``, ``"the correct
       option is B"``, ``"**Answer:** B"``.
    2. A letter opening the answer on its own: ``"B"``, ``"B."``, ``"(B) Paris"``,
       ``"B: Paris"``, ``"**B**"`` (but not the article in ``"A dog..."``).
    3. Exactly one distinct bracketed letter anywhere: ``"I'd pick (C) here"``.
    4. With a mapping, the answer's text matching exactly one choice's text
       (`exact_match`), else containing exactly one choice's text as whole words:
       ``"The capital is Paris."`` picks the choice ``"Paris"``.

    Letters match in the case ``choices`` gives; another case only where the letter
    stands apart (``"answer: b."``, ``"(b)"``), never in running text (``"the answer
    is a bit..."``).
    """
    letters = list(choices)
    statement, leading, bracketed = _choice_patterns(tuple(letters))
    found = None
    for match in statement.finditer(text):
        hit = _letter_of(letters, match.group("letter"), delimited=_delimited(text, match))
        found = hit or found
    if found is not None:
        return found
    opening = leading.match(text)
    if opening is not None and _delimited(text, opening):
        hit = _letter_of(letters, opening.group("letter"), delimited=True)
        if hit is not None:
            return hit
    named = {
        _letter_of(letters, m.group("letter"), delimited=True) for m in bracketed.finditer(text)
    }
    named.discard(None)
    if len(named) == 1:
        return named.pop()
    if isinstance(choices, Mapping):
        return _choice_by_text(text, choices)
    return None


def _choice_by_text(text: str, choices: Mapping[str, str]) -> str | None:
    """Rule 4 of `choice_letter`: the one choice whose text the answer is, or contains."""
    answer = exact_form(text)
    equal = [letter for letter, option in choices.items() if exact_form(option) == answer]
    if len(equal) == 1:
        return equal[0]
    contained = [
        letter
        for letter, option in choices.items()
        if exact_form(option) and _keyword_pattern(exact_form(option)).search(answer)
    ]
    return contained[0] if len(contained) == 1 else None


# -- BLEU and chrF ----------------------------------------------------------------------


@functools.cache
def _rouge_scorer(metric: str) -> Any:
    """One stemming scorer per metric (building one loads NLTK's stemmer)."""
    from rouge_score import rouge_scorer  # type: ignore[import-untyped]

    return rouge_scorer.RougeScorer([metric], use_stemmer=True)


def rouge_f(hypothesis: str, reference: str, metric: str = "rougeL") -> float:
    """The ROUGE F-measure (0-1) of ``hypothesis`` against ``reference``: Google's
    ``rouge-score`` with Porter stemming; ``metric`` is ``rouge1``..``rouge9``,
    ``rougeL`` or ``rougeLsum``."""
    return float(_rouge_scorer(metric).score(reference, hypothesis)[metric].fmeasure)


def _references(references: str | Sequence[str]) -> list[str]:
    """One reference or several, as a list."""
    return [references] if isinstance(references, str) else list(references)


def _streams(
    hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]
) -> list[list[str | None]]:
    """Per-hypothesis references as sacrebleu's reference streams, None where a row has
    fewer references than another."""
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: one per hypothesis"
        )
    rows = [_references(row) for row in references]
    width = max((len(row) for row in rows), default=0)
    return [[row[i] if i < len(row) else None for row in rows] for i in range(width)]


def sentence_bleu(hypothesis: str, references: str | Sequence[str]) -> float:
    """Sentence-level BLEU of ``hypothesis`` against one or more references, 0-100.

    sacrebleu's ``sentence_bleu`` with its defaults: ``13a`` tokenization, case-sensitive,
    exponential smoothing and effective order (n-gram orders the sentence is too short
    for are left out), so a short exact answer scores 100.
    """
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, _references(references)).score)


def sentence_chrf(hypothesis: str, references: str | Sequence[str], word_order: int = 0) -> float:
    """Sentence-level chrF of ``hypothesis`` against one or more references, 0-100.

    sacrebleu's chrF: character 6-grams, beta 2, whitespace ignored; ``word_order=2``
    adds word uni- and bigrams, which is chrF++.
    """
    import sacrebleu

    score = sacrebleu.sentence_chrf(hypothesis, _references(references), word_order=word_order)
    return float(score.score)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Corpus-level BLEU, 0-100: n-gram counts summed over all hypotheses first.

    ``references[i]`` is the reference (or the list of references) of ``hypotheses[i]``;
    rows may have different numbers of references. sacrebleu's ``corpus_bleu`` defaults.
    """
    import sacrebleu

    streams = _streams(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams).score)  # type: ignore[arg-type]


def corpus_chrf(
    hypotheses: Sequence[str], references: Sequence[str | Sequence[str]], word_order: int = 0
) -> float:
    """Corpus-level chrF (chrF++ with ``word_order=2``), 0-100; references as `corpus_bleu`."""
    import sacrebleu

    streams = _streams(hypotheses, references)
    score = sacrebleu.corpus_chrf(list(hypotheses), streams, word_order=word_order)  # type: ignore[arg-type]
    return float(score.score)


# -- similarity -------------------------------------------------------------------------


@functools.cache
def _embedder() -> Any:
    """The WordLlama model from the weights inside the installed wheel, never downloaded.

    The package's own folder is passed as the cache folder: wordllama 0.4 looks for its
    bundled tokenizer under ``tokenizer/`` but ships it under ``tokenizers/``, which is
    where a cache folder keeps it.
    """
    import wordllama  # type: ignore[import-untyped, unused-ignore]

    return wordllama.WordLlama.load(
        config="l2_supercat",
        dim=256,
        cache_dir=Path(wordllama.__file__).parent,
        disable_download=True,
    )


def similarity(text: str, reference: str) -> float:
    """Cosine similarity of the two texts' embeddings (`SIMILARITY_MODEL`), -1 to 1.

    Paraphrases score about 0.9 and above, unrelated sentences near 0. Needs the
    ``similar`` extra (``wordllama``); raises ``ModuleNotFoundError`` without it.
    """
    return float(_embedder().similarity(text, reference))
