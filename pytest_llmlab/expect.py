"""Fluent checks on a Generation: ``expect(gen).contains("Paris").confidence(min_mean=0.5)``.

Checks fail softly inside an LLM test: the plugin runs the test body under `collecting`,
every failing check of every chain is recorded, and all of them are reported together
when the test ends, grouped per generation with its model, temperature, prompt and
output. Outside a collector (plain Python, or a test the plugin does not wrap) a failing
check raises `ExpectationFailed` at once.

A check the backend cannot support (confidence without logprobs) skips the test, or
fails it under ``strict_capabilities``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import importlib
import importlib.util
import math
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Self

import pytest
from pydantic import BaseModel

from pytest_llmlab.energy.reading import EnergyReading
from pytest_llmlab.errors import LLMLabError
from pytest_llmlab.extract import (
    JSONExtractionError,
    SchemaValidationError,
    extract_json,
    validate,
)
from pytest_llmlab.models.base import CHECK_TOP_LOGPROBS, Generation, ToolCall
from pytest_llmlab.scoring import (
    DEFAULT_CHOICES,
    SIMILARITY_MODEL,
    choice_letter,
    exact_form,
    final_number,
    keyword_fraction,
    rouge_f,
    sentence_bleu,
    sentence_chrf,
    similarity,
)

__all__ = [
    "CheckFailure",
    "Collector",
    "Confidence",
    "Expectation",
    "ExpectationFailed",
    "collecting",
    "confidence_of",
    "expect",
    "load_check",
    "load_object",
    "normalize",
    "parse",
]

#: How much of the prompt and of the output a failure message shows.
PROMPT_CHARS = 120
OUTPUT_CHARS = 300
#: Provenances whose numbers come from meters, not from a model of the hardware.
_MEASURED = frozenset({"measured", "measured-apportioned", "integrated"})
_ROUGE = re.compile(r"rouge[1-9]|rougeL|rougeLsum")
_PATH_PART = re.compile(r"""\.?([^.\[\]]+)|\[(-?\d+)\]|\[(["'])(.*?)\3\]""")
_UNSET: Any = object()
#: What an `Expectation.python` check is: ``check(generation, case) -> bool | str | None``.
PythonCheck = Callable[[Generation, Any], object]


def _hide(excinfo: Any) -> bool:
    """`__tracebackhide__`: a failed check points at the test's line, not at this module."""
    return bool(excinfo.errisinstance((ExpectationFailed, pytest.skip.Exception)))


__tracebackhide__ = _hide


# -- failures, collection ---------------------------------------------------------------


@dataclasses.dataclass
class CheckFailure:
    """One failed check: its label with thresholds, what was observed, the generation.

    ``spans`` are ``(start, end)`` offsets in ``gen.text`` that the report marks as
    ``>>>found<<<`` (a forbidden substring, a regex match, a doubtful token).
    """

    check: str
    message: str
    gen: Generation
    spans: tuple[tuple[int, int], ...] = ()


class ExpectationFailed(LLMLabError, AssertionError):
    """One or more checks failed; the message lists them grouped per generation."""

    def __init__(self, failures: Sequence[CheckFailure]) -> None:
        self.failures = list(failures)
        super().__init__(render_failures(self.failures))


class Collector:
    """The failures and capability skips of one test run.

    ``strict_capabilities`` turns a check the backend cannot support (confidence
    without logprobs) into a failure instead of a skip.
    """

    def __init__(self, *, strict_capabilities: bool = False) -> None:
        self.strict_capabilities = strict_capabilities
        self.failures: list[CheckFailure] = []
        self.skips: list[str] = []

    def raise_if_failed(self) -> None:
        """Raise `ExpectationFailed` with every failure; else skip if a check could not run."""
        if self.failures:
            raise ExpectationFailed(self.failures)
        if self.skips:
            more = len(self.skips) - 1
            tail = f" (and {more} more skipped check{'s' if more != 1 else ''})" if more else ""
            pytest.skip(self.skips[0] + tail)


_COLLECTOR: contextvars.ContextVar[Collector | None] = contextvars.ContextVar(
    "pytest_llmlab_collector", default=None
)


@contextmanager
def collecting(*, strict_capabilities: bool = False) -> Iterator[Collector]:
    """Collect failing checks in the block instead of raising them; yields the Collector.

    Call `Collector.raise_if_failed` after the block to report them (the plugin does,
    at the end of every LLM test). The collector is a context variable: checks run in
    other threads do not see it and raise at once.
    """
    collector = Collector(strict_capabilities=strict_capabilities)
    token = _COLLECTOR.set(collector)
    try:
        yield collector
    finally:
        _COLLECTOR.reset(token)


# -- rendering --------------------------------------------------------------------------


def _truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in ``...`` when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any, limit: int = 40) -> str:
    """A repr for check labels, cut when long."""
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, re.Pattern):
        value = value.pattern
    return _truncate(repr(value), limit)


def _label(name: str, *args: Any, **kwargs: Any) -> str:
    """``name(arg, key=value)`` as failure messages show a check."""
    shown = [_short(arg) for arg in args]
    shown += [f"{key}={_short(value)}" for key, value in kwargs.items() if value is not None]
    return f"{name}({', '.join(shown)})"


def _target(model_or_schema: type[BaseModel] | dict[str, Any]) -> str:
    """A model by its class name, a schema as ``<JSON schema>``, for check labels."""
    if isinstance(model_or_schema, type):
        return model_or_schema.__name__
    return "<JSON schema>"


def _against(reference: str | Sequence[str]) -> str:
    """``'ref'``, or ``2 references``, for similarity failure messages."""
    if isinstance(reference, str):
        return repr(_truncate(reference, 80))
    if len(reference) == 1:
        return repr(_truncate(reference[0], 80))
    return f"{len(reference)} references"


def _num(observed: float, threshold: float) -> str:
    """The observed value in 3 significant digits, more when that would equal the threshold."""
    text = f"{observed:.3g}"
    return f"{observed:.6g}" if text == f"{threshold:g}" else text


def _excerpt(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """The ``output:`` line: the text (around the first span when long), spans marked."""
    if spans:
        start, end = spans[0]
        lo = max(0, min(start - (OUTPUT_CHARS - (end - start)) // 2, len(text) - OUTPUT_CHARS))
    else:
        lo = 0
    hi = min(len(text), lo + OUTPUT_CHARS)
    shown = text[lo:hi]
    for start, end in sorted(spans, reverse=True):
        if start >= lo and end <= hi:
            shown = f"{shown[: start - lo]}>>>{shown[start - lo : end - lo]}<<<{shown[end - lo :]}"
    where = f" (characters {lo}-{hi} of {len(text)})" if hi - lo < len(text) else ""
    return f"output{where}: {shown!r}"


def _indent(message: str) -> str:
    """Continuation lines of a multi-line message, indented under their check."""
    return message.replace("\n", "\n    ")


def render_failures(failures: Sequence[CheckFailure]) -> str:
    """Failures grouped per generation, each group under one header::

        2 checks failed for local:smollm2-135m at T=0:
          contains('Paris'): missing 'Paris'
          confidence(min_mean=0.9): mean token probability 0.62 < 0.9
          prompt: 'What is the capital of France? Answer in one word.'
          output: 'The capital of France is Lyon.'

    The output is cut to `OUTPUT_CHARS` around the first marked span, the prompt to
    `PROMPT_CHARS`.
    """
    groups: dict[int, list[CheckFailure]] = {}
    for failure in failures:
        groups.setdefault(id(failure.gen), []).append(failure)
    blocks = []
    for group in groups.values():
        gen = group[0].gen
        count = len(group)
        checks = f"{count} check{'s' if count != 1 else ''}"
        lines = [f"{checks} failed for {gen.model} at T={gen.temperature:g}:"]
        lines += [f"  {failure.check}: {_indent(failure.message)}" for failure in group]
        lines.append(f"  prompt: {_truncate(gen.request.prompt, PROMPT_CHARS)!r}")
        spans = [span for failure in group for span in failure.spans]
        lines.append(f"  {_excerpt(gen.text, spans)}")
        if gen.tool_calls:
            lines.append(f"  tool calls: {_calls_shown(gen.tool_calls)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _calls_shown(calls: Sequence[ToolCall], limit: int = 3) -> str:
    """``get_weather({"city": "Paris"}), ...`` for failure messages: the first calls,
    each cut to 80 characters."""
    shown = ", ".join(_truncate(str(call), 80) for call in calls[:limit])
    more = len(calls) - limit
    return shown + (f" and {more} more" if more > 0 else "")


# -- text helpers -----------------------------------------------------------------------


def normalize(text: str) -> str:
    """Text as `Expectation.equals_normalized` compares it.

    Case-folded, every punctuation character (Unicode category ``P*``: ``.,;:!?'"-``,
    brackets, ``«»``, ``¿``...) removed, whitespace runs collapsed to one space, and the
    ends stripped: ``"  Paris, France!"`` becomes ``"paris france"``.
    """
    kept = "".join(
        char for char in text.casefold() if not unicodedata.category(char).startswith("P")
    )
    return " ".join(kept.split())


def _occurrences(text: str, needle: str) -> list[tuple[int, int]]:
    """Non-overlapping ``(start, end)`` spans of ``needle`` in ``text``."""
    spans = []
    start = text.find(needle)
    while needle and start >= 0:
        spans.append((start, start + len(needle)))
        start = text.find(needle, start + len(needle))
    return spans


def _token_spans(gen: Generation) -> list[tuple[int, int]] | None:
    """Each token's span in ``gen.text``, or None when the tokens do not spell the text."""
    if "".join(token.token for token in gen.tokens) != gen.text:
        return None
    spans, offset = [], 0
    for token in gen.tokens:
        spans.append((offset, offset + len(token.token)))
        offset += len(token.token)
    return spans


def _items(count: int) -> str:
    """``1 item``, ``2 items``."""
    return f"{count} item{'s' if count != 1 else ''}"


def _kind(value: Any) -> str:
    """What a JSON value is, for path errors: an array, an object, or the value itself."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return _short(value)


def _parse_path(path: str) -> list[str | int]:
    """``"a.b[0].c"`` (or ``$.a["x.y"]``) as keys and indices; ValueError when malformed."""
    rest = path.removeprefix("$")
    parts: list[str | int] = []
    position = 0
    while position < len(rest):
        match = _PATH_PART.match(rest, position)
        if match is None or (match.group(1) is not None and position and rest[position] != "."):
            raise ValueError(f"malformed JSON path {path!r} at character {position}")
        name, index, _, quoted = match.groups()
        parts.append(int(index) if index is not None else quoted if quoted is not None else name)
        position = match.end()
    return parts


def _json_equal(got: Any, expected: Any) -> bool:
    """Equal as JSON values: ``1 == 1.0``, but ``true`` is not ``1``."""
    if isinstance(got, bool) or isinstance(expected, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(expected, dict):
        return (
            isinstance(got, dict)
            and got.keys() == expected.keys()
            and all(_json_equal(got[k], v) for k, v in expected.items())
        )
    if isinstance(expected, list | tuple):
        return (
            isinstance(got, list | tuple)
            and len(got) == len(expected)
            and all(_json_equal(g, e) for g, e in zip(got, expected, strict=True))
        )
    return bool(got == expected)


def _contains_json(got: Any, expected: Any, where: str = "$") -> str | None:
    """Why ``got`` does not contain ``expected`` (None when it does): every key of an
    expected object is in ``got`` with a value that contains the expected one, at any
    depth; other values (arrays included) must be `_json_equal`."""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"{where} is {_kind(got)}, expected an object"
        for key, value in expected.items():
            if key not in got:
                keys = ", ".join(map(repr, got)) or "none"
                return f"{where}: no key {key!r} (keys: {keys})"
            problem = _contains_json(got[key], value, f"{where}.{key}")
            if problem is not None:
                return problem
        return None
    if _json_equal(got, expected):
        return None
    return f"{where} is {_short(got, 80)}, expected {_short(expected, 80)}"


def load_object(spec: str, what: str = "python check", form: str = "module:attribute") -> Any:
    """What ``"module:attribute"`` names (``"pkg.mod:Class.method"`` too).

    A ValueError starting with ``what`` and ``spec`` when it is malformed, its module
    cannot be imported, or the name is not in it.
    """
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name.strip() or not name.strip():
        raise ValueError(f"{what} {spec!r}: expected {form!r}")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(
            f"{what} {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for part in name.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(
                f"{what} {spec!r}: {module_name!r} has no attribute {name!r}"
            ) from None
    return found


def load_check(spec: str) -> PythonCheck:
    """The function ``"module:function"`` names; a ValueError naming ``spec`` when it
    cannot be loaded (`load_object`) or is not callable."""
    found = load_object(spec, form="module:function")
    if not callable(found):
        raise ValueError(  # noqa: TRY004  # one error type for every bad spec
            f"python check {spec!r}: {spec.partition(':')[2]!r} is a "
            f"{type(found).__name__}, not callable"
        )
    return found  # type: ignore[no-any-return]


def _call_problem(
    call: ToolCall, schema: dict[str, Any] | None, arguments: dict[str, Any] | None
) -> str | None:
    """Why ``call`` fails `Expectation.tool_call`'s argument conditions, or None."""
    if call.arguments is None:
        return call.error or "the arguments did not parse"
    if schema is not None:
        try:
            validate(call.arguments, schema)
        except SchemaValidationError as exc:
            return str(exc)
    if arguments is not None:
        problem = _contains_json(call.arguments, arguments)
        if problem is not None:
            return f"arguments {problem}"
    return None


def _check_name(check: PythonCheck | str) -> str:
    """``module:function`` for a python check, as its label and failures name it."""
    if isinstance(check, str):
        return check
    module = getattr(check, "__module__", None)
    name = getattr(check, "__qualname__", None) or type(check).__name__
    return f"{module}:{name}" if module else name


# -- confidence -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Confidence:
    """What a generation's token log-probabilities say about it.

    - ``mean_prob``: mean of the tokens' probabilities.
    - ``min_prob``: the lowest token probability (the most doubtful token).
    - ``first_token_prob``: the first token's probability (often the decision itself).
    - ``perplexity``: ``exp(-mean logprob)``; 1 is certain, higher is less sure.
    - ``entropy``: mean over positions of the entropy (nats) of the top alternatives,
      renormalized to sum to 1. An approximation: the probability mass outside the top
      k is ignored, so it is close on confident positions and too low on flat ones;
      None when the backend sent no alternatives or the request asked for one only
      (top alternatives are asked for with ``top_logprobs``).
    """

    mean_prob: float
    min_prob: float
    first_token_prob: float
    perplexity: float
    entropy: float | None


def _entropy(probs: Sequence[float]) -> float:
    """Entropy (nats) of the distribution ``probs`` renormalized."""
    total = sum(probs)
    return -sum(p / total * math.log(p / total) for p in probs if p > 0)


#: The largest x with a finite math.exp(x).
_MAX_EXP = math.log(sys.float_info.max)


def confidence_of(gen: Generation) -> Confidence | None:
    """The `Confidence` of a generation, or None when it has no logprobs."""
    if not gen.tokens:
        return None
    probs = [token.prob for token in gen.tokens]
    # One alternative asked for has no spread to measure (its renormalized entropy is 0
    # whatever the model's doubt); one sent when more were asked is a certain position.
    spread = gen.request.alternatives != 1
    entropies = [
        _entropy([alt.prob for alt in token.top]) for token in gen.tokens if token.top and spread
    ]
    mean_logprob = sum(token.logprob for token in gen.tokens) / len(gen.tokens)
    return Confidence(
        mean_prob=sum(probs) / len(probs),
        min_prob=min(probs),
        first_token_prob=probs[0],
        # A logprob of -9999 (what vLLM sends for -inf) gives an infinite perplexity,
        # not an OverflowError; records carry it as null.
        perplexity=math.exp(-mean_logprob) if -mean_logprob < _MAX_EXP else math.inf,
        entropy=sum(entropies) / len(entropies) if entropies else None,
    )


# -- the chain --------------------------------------------------------------------------


def expect(gen: Generation) -> Expectation:
    """Start a chain of checks on ``gen``: ``expect(gen).contains("Paris")``."""
    return Expectation(gen)


def parse(gen: Generation, model_or_schema: type[BaseModel] | dict[str, Any] | None = None) -> Any:
    """The JSON value of ``gen.text``, validated: a model instance, or the value.

    ``model_or_schema`` is a pydantic model class (returns its instance), a JSON schema
    dict (returns the value) or None (returns the value unchecked). Always a hard
    failure: raises `ExpectationFailed` with the generation's context at once, even
    inside a collector (there is nothing to return).
    """
    check = f"parse({_target(model_or_schema) if model_or_schema is not None else ''})"
    try:
        value = extract_json(gen.text)
        return value if model_or_schema is None else validate(value, model_or_schema)
    except (JSONExtractionError, SchemaValidationError) as exc:
        raise ExpectationFailed([CheckFailure(check, str(exc), gen)]) from None


class Expectation:
    """Checks on one generation; every check returns the chain itself.

    Failures go to the active `Collector` (reported together at the end of the test),
    or raise `ExpectationFailed` at once outside one. `verify` stops the test here.
    """

    def __init__(self, gen: Generation) -> None:
        self.gen = gen
        self._recorded: list[tuple[Collector, CheckFailure]] = []
        self._json: Any = _UNSET
        self._json_error: str | None = None
        self._json_error_shown = False
        self._parsed: Any = _UNSET
        #: The verdicts of the last `judge` check of this chain (a `JudgeResult`).
        self.judge_result: Any = None

    def __repr__(self) -> str:
        return f"expect({self.gen.model} at T={self.gen.temperature:g}: {_short(self.gen.text)})"

    # -- plumbing --

    def _fail(self, check: str, message: str, spans: Sequence[tuple[int, int]] = ()) -> None:
        """Record a failure in the active collector, or raise it when there is none."""
        failure = CheckFailure(check, message, self.gen, tuple(spans))
        collector = _COLLECTOR.get()
        if collector is None:
            raise ExpectationFailed([failure])
        collector.failures.append(failure)
        self._recorded.append((collector, failure))

    def fail(self, check: str, message: str) -> None:
        """Record a failure of ``check`` (a custom check's verdict) like a built-in one."""
        self._fail(check, message)

    @property
    def failures(self) -> list[CheckFailure]:
        """This chain's failures so far (those `verify` has not taken out)."""
        return [failure for _, failure in self._recorded]

    def _unsupported(self, check: str, reason: str) -> None:
        """A check the backend cannot support: skip, or fail under strict capabilities."""
        collector = _COLLECTOR.get()
        if collector is None:
            pytest.skip(f"{check}: {reason}")
        if collector.strict_capabilities:
            self._fail(check, reason)
        else:
            collector.skips.append(f"{check}: {reason}")

    def _no_logprobs(self, check: str) -> bool:
        """True (after skipping or failing) when the generation has no tokens to score."""
        if self.gen.tokens:
            return False
        model = self.gen.model
        if not self.gen.request.logprobs:
            self._fail(
                check, f"no logprobs from {model}: the request asked for none (logprobs=False)"
            )
        elif not self.gen.text:
            self._fail(check, "the output is empty: no tokens to score")
        else:
            self._unsupported(check, f"no logprobs from {model}: the backend does not return them")
        return True

    def _no_alternatives(self, check: str) -> bool:
        """True (after failing) when the request asked for no top alternatives and none
        came: they are off by default (`Request`), so the test must ask for them."""
        if self.gen.request.alternatives or any(token.top for token in self.gen.tokens):
            return False
        self._fail(
            check,
            f"no top alternatives from {self.gen.model}: the request asked for none (they "
            f"are off by default: pass top_logprobs={CHECK_TOP_LOGPROBS} to the call or to "
            "@pytest.mark.llm)",
        )
        return True

    def _extracted(self, check: str) -> tuple[bool, Any]:
        """``(True, value)`` for the answer's JSON, else ``(False, None)`` after failing."""
        if self._json is _UNSET and self._json_error is None:
            try:
                self._json = extract_json(self.gen.text)
            except JSONExtractionError as exc:
                self._json_error = str(exc)
        if self._json_error is None:
            return True, self._json
        if self._json_error_shown:
            self._fail(check, "no JSON value in the answer (see the failure above)")
        else:
            self._json_error_shown = True
            self._fail(check, self._json_error)
        return False, None

    def verify(self) -> Self:
        """Stop the test here if a check of this chain failed so far.

        Raises `ExpectationFailed` with this chain's failures and takes them out of the
        collector (so they are not reported twice); does nothing when they all passed.
        """
        mine = [failure for _, failure in self._recorded]
        for collector, failure in self._recorded:
            collector.failures = [f for f in collector.failures if f is not failure]
        self._recorded.clear()
        if mine:
            raise ExpectationFailed(mine)
        return self

    @property
    def json(self) -> Any:
        """The JSON value found by `is_json`, `validates` or `field`."""
        if self._json is _UNSET:
            raise AttributeError("no JSON value: call .is_json() first (and it must pass)")
        return self._json

    @property
    def parsed(self) -> Any:
        """What `validates` returned: the model instance, or the JSON value for a schema."""
        if self._parsed is _UNSET:
            raise AttributeError("nothing parsed: call .validates(...) first (and it must pass)")
        return self._parsed

    # -- content --

    def contains(self, s: str) -> Self:
        """The output contains ``s`` (case-sensitive)."""
        if s not in self.gen.text:
            self._fail(_label("contains", s), f"missing {s!r}")
        return self

    def icontains(self, s: str) -> Self:
        """The output contains ``s``, ignoring case (both sides case-folded)."""
        if s.casefold() not in self.gen.text.casefold():
            self._fail(_label("icontains", s), f"missing {s!r} (ignoring case)")
        return self

    def not_contains(self, s: str) -> Self:
        """The output does not contain ``s`` (case-sensitive); found places are marked."""
        spans = _occurrences(self.gen.text, s)
        if spans:
            times = f" ({len(spans)} times)" if len(spans) > 1 else ""
            self._fail(
                _label("not_contains", s), f"found {s!r} at offset {spans[0][0]}{times}", spans
            )
        return self

    def contains_all(self, *ss: str) -> Self:
        """The output contains every one of ``ss`` (case-sensitive)."""
        missing = [s for s in ss if s not in self.gen.text]
        if missing:
            self._fail(_label("contains_all", *ss), f"missing {', '.join(map(repr, missing))}")
        return self

    def contains_any(self, *ss: str) -> Self:
        """The output contains at least one of ``ss`` (case-sensitive)."""
        if not any(s in self.gen.text for s in ss):
            self._fail(_label("contains_any", *ss), f"none of {', '.join(map(repr, ss))} found")
        return self

    def matches(self, regex: str | re.Pattern[str], flags: int = 0) -> Self:
        """`re.search` finds ``regex`` (a string with ``flags``, or a compiled pattern)."""
        pattern = re.compile(regex, flags) if isinstance(regex, str) else regex
        if pattern.search(self.gen.text) is None:
            self._fail(
                _label("matches", regex, flags=flags or None), f"no match for /{pattern.pattern}/"
            )
        return self

    def not_matches(self, regex: str | re.Pattern[str], flags: int = 0) -> Self:
        """`re.search` finds no ``regex`` in the output; matches are marked."""
        pattern = re.compile(regex, flags) if isinstance(regex, str) else regex
        found = list(pattern.finditer(self.gen.text))
        if found:
            first = found[0]
            self._fail(
                _label("not_matches", regex, flags=flags or None),
                f"/{pattern.pattern}/ matched {first.group()!r} at offset {first.start()}",
                [match.span() for match in found],
            )
        return self

    def equals(self, s: str) -> Self:
        """The output, surrounding whitespace stripped, is exactly ``s``."""
        self._equals("equals", s)
        return self

    def exact(self, reference: str) -> Self:
        """Alias of `equals`."""
        self._equals("exact", reference)
        return self

    def _equals(self, name: str, expected: str) -> None:
        got = self.gen.text.strip()
        if got != expected:
            at = next(
                (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None
            )
            at = min(len(got), len(expected)) if at is None else at
            self._fail(
                _label(name, expected),
                f"expected {expected!r}, got {_truncate(got, 80)!r} "
                f"(first difference at offset {at})",
            )

    def equals_normalized(self, s: str) -> Self:
        """The output equals ``s`` once both are `normalize`-d (case, punctuation, spaces)."""
        got, want = normalize(self.gen.text), normalize(s)
        if got != want:
            self._fail(
                _label("equals_normalized", s), f"normalized {_truncate(got, 80)!r} != {want!r}"
            )
        return self

    def starts_with(self, s: str) -> Self:
        """The output, leading whitespace stripped, starts with ``s`` (case-sensitive)."""
        got = self.gen.text.lstrip()
        if not got.startswith(s):
            self._fail(_label("starts_with", s), f"starts with {got[: len(s) + 20]!r}")
        return self

    def one_of(self, *options: str, normalized: bool = True) -> Self:
        """The output is one of ``options``: compared `normalize`-d, or stripped and exact."""
        got = normalize(self.gen.text) if normalized else self.gen.text.strip()
        wanted = [normalize(option) if normalized else option for option in options]
        if got not in wanted:
            how = "normalized " if normalized else ""
            self._fail(
                _label("one_of", *options, normalized=None if normalized else False),
                f"{how}{_truncate(got, 80)!r} is none of {', '.join(map(repr, wanted))}",
            )
        return self

    def max_words(self, n: int) -> Self:
        """The output has at most ``n`` words (whitespace-separated)."""
        count = len(self.gen.text.split())
        if count > n:
            self._fail(_label("max_words", n), f"{count} words > {n}")
        return self

    # -- structure --

    def is_json(self) -> Self:
        """The answer holds a JSON value (`extract_json`); it is kept as ``.json``."""
        self._extracted(_label("is_json"))
        return self

    def validates(self, model_or_schema: type[BaseModel] | dict[str, Any]) -> Self:
        """The answer's JSON validates against a pydantic model or a JSON schema dict.

        The result (`validate`: the model instance, or the value) is kept as ``.parsed``;
        every schema error is listed with its JSON path.
        """
        check = f"validates({_target(model_or_schema)})"
        ok, value = self._extracted(check)
        if ok:
            try:
                self._parsed = validate(value, model_or_schema)
            except SchemaValidationError as exc:
                self._fail(check, str(exc))
        return self

    def field(self, path: str, expected: Any) -> Self:
        """The value at ``path`` (``"a.b[0].c"``, ``$`` optional) of the answer's JSON
        equals ``expected``. Extracts the JSON itself when no check did yet."""
        check = _label("field", path, expected)
        parts = _parse_path(path)
        ok, value = self._extracted(check)
        if not ok:
            return self
        where = "$"
        for part in parts:
            step = f"[{part}]" if isinstance(part, int) else f".{part}"
            if isinstance(part, int) and isinstance(value, list):
                if not -len(value) <= part < len(value):
                    self._fail(check, f"{where}{step}: index out of range ({_items(len(value))})")
                    return self
                value = value[part]
            elif isinstance(part, str) and isinstance(value, dict):
                if part not in value:
                    keys = ", ".join(map(repr, value)) or "none"
                    self._fail(check, f"{where}: no key {part!r} (keys: {keys})")
                    return self
                value = value[part]
            else:
                self._fail(check, f"{where} is {_kind(value)}, which has no {step!r}")
                return self
            where += step
        if value != expected:
            self._fail(check, f"{where} is {_short(value, 80)}, expected {_short(expected, 80)}")
        return self

    # -- similarity --

    def rouge(self, reference: str, metric: str = "rougeL", min: float = 0.5) -> Self:
        """ROUGE F-measure of the output against ``reference`` is at least ``min``.

        ``metric``: ``rouge1``..``rouge9`` (n-gram overlap), ``rougeL`` (longest common
        subsequence) or ``rougeLsum``; scored by ``rouge-score`` with Porter stemming.
        """
        if not _ROUGE.fullmatch(metric):
            raise ValueError(
                f"unknown ROUGE metric {metric!r}: rouge1..rouge9, rougeL or rougeLsum"
            )
        score = rouge_f(self.gen.text, reference, metric)
        if score < min:
            self._fail(
                _label("rouge", reference, metric=metric, min=min),
                f"{metric} F-measure {_num(score, min)} < {min:g} "
                f"against {_truncate(reference, 80)!r}",
            )
        return self

    def bleu(self, reference: str | Sequence[str], min: float) -> Self:
        """Sentence BLEU of the output against ``reference`` (or several) is at least ``min``.

        On sacrebleu's 0-100 scale (`pytest_llmlab.scoring.sentence_bleu`: ``13a``
        tokens, case-sensitive, exponential smoothing, effective order).
        """
        score = sentence_bleu(self.gen.text, reference)
        if score < min:
            self._fail(
                _label("bleu", reference, min=min),
                f"BLEU {_num(score, min)} < {min:g} against {_against(reference)}",
            )
        return self

    def chrf(self, reference: str | Sequence[str], min: float, word_order: int = 0) -> Self:
        """Sentence chrF of the output against ``reference`` (or several) is at least ``min``.

        On sacrebleu's 0-100 scale; ``word_order=2`` adds word bigrams: chrF++.
        """
        score = sentence_chrf(self.gen.text, reference, word_order=word_order)
        if score < min:
            name = {0: "chrF", 2: "chrF++"}.get(word_order, f"chrF (word order {word_order})")
            self._fail(
                _label("chrf", reference, min=min, word_order=word_order or None),
                f"{name} {_num(score, min)} < {min:g} against {_against(reference)}",
            )
        return self

    def similar(self, reference: str, min: float = 0.8) -> Self:
        """Semantic similarity of the output to ``reference`` is at least ``min``.

        Cosine similarity (-1 to 1) of static embeddings from ``wordllama``, whose
        weights ship in its wheel (offline, no download): paraphrases score about 0.9,
        unrelated text near 0. Without the ``similar`` extra the check is skipped
        (failed under strict capabilities).
        """
        check = _label("similar", reference, min=min)
        if importlib.util.find_spec("wordllama") is None:
            self._unsupported(check, "needs wordllama: pip install 'pytest-llmlab[similar]'")
            return self
        score = similarity(self.gen.text, reference)
        if score < min:
            self._fail(
                check,
                f"similarity {_num(score, min)} < {min:g} against "
                f"{_truncate(reference, 80)!r} ({SIMILARITY_MODEL})",
            )
        return self

    # -- scoring --

    def keywords(self, words: Sequence[str], min_fraction: float = 1.0) -> Self:
        """At least ``min_fraction`` of ``words`` occur in the output, ignoring case.

        Whole words (``"cat"`` is not in ``"category"``), no stemming; see
        `pytest_llmlab.scoring.keyword_fraction`.
        """
        wanted = [words] if isinstance(words, str) else list(words)
        if not wanted:
            raise ValueError("keywords() needs at least one keyword")
        fraction, missing = keyword_fraction(self.gen.text, wanted)
        if fraction < min_fraction:
            found = len(wanted) - len(missing)
            self._fail(
                _label("keywords", wanted, min_fraction=min_fraction),
                f"{found} of {len(wanted)} keywords ({_num(fraction, min_fraction)} < "
                f"{min_fraction:g}): missing {', '.join(map(repr, missing))}",
            )
        return self

    def exact_match(self, reference: str) -> Self:
        """The output equals ``reference`` ignoring case, spacing and punctuation at the ends.

        See `pytest_llmlab.scoring.exact_form`: ``" **Paris.**"`` matches ``"paris"``,
        ``"-5"`` does not match ``"5"``.
        """
        got, want = exact_form(self.gen.text), exact_form(reference)
        if got != want:
            self._fail(
                _label("exact_match", reference),
                f"normalized {_truncate(got, 80)!r} != {_truncate(want, 80)!r}",
            )
        return self

    def number(self, equals: float, tolerance: float = 0) -> Self:
        """The answer's final number is ``equals``, within ``tolerance``.

        Extracted the way GSM8K is scored (`pytest_llmlab.scoring.final_number`): the
        number after ``####``, else the last number in the output.
        """
        check = _label("number", equals, tolerance=tolerance or None)
        got = final_number(self.gen.text)
        if got is None:
            self._fail(check, "no number in the output")
        elif abs(got - equals) > tolerance:
            within = (
                f" (off by {abs(got - equals):g} > tolerance {tolerance:g})" if tolerance else ""
            )
            self._fail(check, f"final number {got:g} != {equals:g}{within}")
        return self

    def choice(
        self, answer: str, choices: Sequence[str] | Mapping[str, str] = DEFAULT_CHOICES
    ) -> Self:
        """The multiple-choice letter the output picks is ``answer``.

        ``choices``: the letters, or a mapping of letter to choice text (then an answer
        that only gives the text counts too); extracted by
        `pytest_llmlab.scoring.choice_letter` (``"B"``, ``"(B)"``, ``"Answer: B"``,
        ``"The answer is B"``...).
        """
        letters = list(choices)
        if answer not in letters:
            raise ValueError(f"choice(): answer {answer!r} is not one of {', '.join(letters)}")
        shown = None if list(choices) == list(DEFAULT_CHOICES) else letters
        check = _label("choice", answer, choices=shown)
        got = choice_letter(self.gen.text, choices)
        if got is None:
            self._fail(check, f"no choice among {', '.join(letters)} found in the output")
        elif got != answer:
            self._fail(check, f"chose {got!r}, expected {answer!r}")
        return self

    def judge(
        self,
        rubric: str,
        model: str,
        min_score: float = 4,
        samples: int = 1,
        temperature: float | None = None,
        max_tokens: int = 128,
    ) -> Self:
        """An LLM judge (`pytest_llmlab.judge`) scores the answer 1-5 against ``rubric``;
        the median of ``samples`` verdicts must reach ``min_score``.

        ``model`` is any model spec. With several samples the judge runs at
        ``temperature`` (default 0.7; 0 for one sample) with seeds 0, 1, ..., and its
        agreement with itself is reported. `judge_result` holds the verdicts.
        """
        from pytest_llmlab.judge import JudgeRequest, current_runner, judge_messages, run_judge

        if samples < 1:
            raise ValueError(f"judge samples={samples!r} must be >= 1")
        label = _label("judge", _truncate(rubric, 60), model=model, min_score=min_score)
        runner = current_runner()
        if runner is None:
            self._fail(label, "no judge here: judge checks run inside an LLM test or suite case")
            return self
        request = JudgeRequest(
            model=model,
            messages=judge_messages(rubric, self.gen.request.prompt, self.gen.text),
            samples=samples,
            temperature=temperature if temperature is not None else (0.0 if samples == 1 else 0.7),
            max_tokens=max_tokens,
            judged=self.gen.model,
        )
        result = run_judge(runner, request)
        self.judge_result = result
        if result.score is None:
            self._fail(label, "; ".join(result.errors) or "the judge gave no verdict")
        elif result.score < min_score:
            agreed = f", agreement {result.agreement:.0%}" if samples > 1 else ""
            self._fail(
                label,
                f"judge score {result.score:g} < {min_score:g} (scores "
                f"{list(result.scores)}{agreed}): {result.reasons[0]}",
            )
        return self

    def python(self, check: PythonCheck | str, case: Any = None) -> Self:
        """A user function passes: ``check(generation, case)``.

        ``check`` is a callable or a ``"module:function"`` string (`load_check`; a
        ValueError when it cannot be loaded). True or None passes, False fails, a
        string is the failure message; any other value counts by its truth. An
        exception in the function is a failure naming it and the exception.
        """
        function = load_check(check) if isinstance(check, str) else check
        name = _check_name(check)
        label = _label("python", name)
        try:
            result = function(self.gen, case)
        except Exception as exc:  # noqa: BLE001  # a user's bug fails the check, naming it
            self._fail(label, f"{name} raised {type(exc).__name__}: {exc}")
            return self
        if isinstance(result, str):
            self._fail(label, result or f"{name} returned an empty message")
        elif result is not None and not result:
            self._fail(label, f"{name} returned {result!r}")
        return self

    # -- confidence --

    def confidence(
        self,
        min_mean: float | None = None,
        min_prob: float | None = None,
        first_token: float | None = None,
        max_perplexity: float | None = None,
        max_entropy: float | None = None,
    ) -> Self:
        """The token probabilities clear every threshold given (see `Confidence`).

        ``min_mean``: mean token probability; ``min_prob``: every token's probability;
        ``first_token``: the first token's probability; ``max_perplexity``:
        ``exp(-mean logprob)``; ``max_entropy``: mean entropy (nats) of the top
        alternatives (the request must ask for them: ``top_logprobs``). Each threshold
        missed is one failure; the doubtful token is marked. Without logprobs the check
        is skipped (failed under strict capabilities).
        """
        given = {
            "min_mean": min_mean,
            "min_prob": min_prob,
            "first_token": first_token,
            "max_perplexity": max_perplexity,
            "max_entropy": max_entropy,
        }
        if self._no_logprobs(_label("confidence", **given)):
            return self
        stats = confidence_of(self.gen)
        assert stats is not None
        spans = _token_spans(self.gen)
        tokens = self.gen.tokens
        if min_mean is not None and stats.mean_prob < min_mean:
            self._fail(
                _label("confidence", min_mean=min_mean),
                f"mean token probability {_num(stats.mean_prob, min_mean)} < {min_mean:g}",
            )
        if min_prob is not None and stats.min_prob < min_prob:
            worst = next(i for i, t in enumerate(tokens) if t.prob == stats.min_prob)
            self._fail(
                _label("confidence", min_prob=min_prob),
                f"token {tokens[worst].token!r} at position {worst} has probability "
                f"{_num(stats.min_prob, min_prob)} < {min_prob:g}",
                [spans[worst]] if spans else (),
            )
        if first_token is not None and stats.first_token_prob < first_token:
            self._fail(
                _label("confidence", first_token=first_token),
                f"first token {tokens[0].token!r} has probability "
                f"{_num(stats.first_token_prob, first_token)} < {first_token:g}",
                [spans[0]] if spans else (),
            )
        if max_perplexity is not None and stats.perplexity > max_perplexity:
            self._fail(
                _label("confidence", max_perplexity=max_perplexity),
                f"perplexity {_num(stats.perplexity, max_perplexity)} > {max_perplexity:g}",
            )
        if max_entropy is not None:
            check = _label("confidence", max_entropy=max_entropy)
            if self._no_alternatives(check):
                pass
            elif stats.entropy is None:
                self._unsupported(
                    check,
                    f"one top alternative per token from {self.gen.model} has no spread: "
                    "entropy needs top_logprobs of 2 or more"
                    if self.gen.request.alternatives == 1
                    else f"no top alternatives from {self.gen.model}: the backend does not "
                    "return them",
                )
            elif stats.entropy > max_entropy:
                self._fail(
                    check,
                    f"mean entropy of the top alternatives {_num(stats.entropy, max_entropy)} "
                    f"nats > {max_entropy:g}",
                )
        return self

    def answer_prob(self, answer: str, min: float) -> Self:
        """The model gave ``answer`` (stripped, case-sensitive) probability at least ``min``.

        Scored where the answer's first token appears in the output: the probability of
        the alternatives at that position that spell that token (``"Paris"`` and
        ``" Paris"`` both count). When the output does not contain the answer, the first
        position's alternatives are used, and one of them must spell the whole answer:
        fails when none does. Reads the alternatives, so the request must ask for them
        (``top_logprobs``; a suite case with this check does); when the backend sends
        none, the chosen token alone. Without logprobs: skipped (failed under strict
        capabilities).
        """
        check = _label("answer_prob", answer, min=min)
        wanted = answer.strip()
        if not wanted:
            raise ValueError("answer_prob() needs a non-empty answer")
        if self._no_logprobs(check) or self._no_alternatives(check):
            return self
        tokens = self.gen.tokens
        joined = "".join(token.token for token in tokens)
        position, piece, offset, found = 0, wanted, 0, False
        for index, token in enumerate(tokens):
            stripped = token.token.strip()
            rest = joined[offset:].lstrip()
            if stripped and wanted.startswith(stripped) and rest.startswith(wanted):
                position, piece, found = index, stripped, True
                break
            offset += len(token.token)
        token = tokens[position]
        alternatives = {alt.token: alt.prob for alt in token.top}
        alternatives.setdefault(token.token, token.prob)
        prob = sum(p for text, p in alternatives.items() if text.strip() == piece)
        listed = ", ".join(
            f"{text!r} {p:.2g}" for text, p in sorted(alternatives.items(), key=lambda kv: -kv[1])
        )
        if prob == 0.0:
            self._fail(
                check, f"{wanted!r} is not among the alternatives at position {position}: {listed}"
            )
        elif prob < min:
            spans = _token_spans(self.gen)
            self._fail(
                check,
                f"probability of {wanted!r} at position {position} is {_num(prob, min)} < {min:g} "
                f"(alternatives: {listed})",
                [spans[position]] if found and spans else (),
            )
        return self

    # -- tool calls --

    def tool_call(
        self,
        name: str,
        arguments_schema: dict[str, Any] | None = None,
        min_confidence: float | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> Self:
        """The model called ``name``, with arguments that parse to a JSON object and
        meet every condition given; one such call among the calls of ``name`` passes.

        ``arguments_schema``: a JSON schema the arguments validate against (each error
        listed with its path). ``arguments``: the arguments contain these: every key
        given is there with a value that contains the one given, objects compared this
        way at any depth, anything else (arrays too) equal as JSON (``1 == 1.0``, but
        ``true`` is not ``1``); keys not given may hold anything. ``min_confidence``:
        the call's lowest token probability (`ToolCall.min_prob`) reaches it. The lowest,
        not the mean: one doubtful token (the city, the function) decides what the call
        does, and the near-certain JSON punctuation around it would lift a mean over
        any threshold. Without logprobs for the call's tokens the confidence part is
        skipped (failed under strict capabilities).
        """
        shown = [_short(name)]
        if arguments_schema is not None:
            shown.append("arguments_schema=<JSON schema>")
        if arguments is not None:
            shown.append(f"arguments={_short(arguments)}")
        if min_confidence is not None:
            shown.append(f"min_confidence={min_confidence:g}")
        check = f"tool_call({', '.join(shown)})"
        named = [call for call in self.gen.tool_calls if call.name == name]
        if not named:
            self._fail(check, self._no_call_named(name))
            return self
        qualified: list[ToolCall] = []
        reasons: list[str] = []
        for call in named:
            problem = _call_problem(call, arguments_schema, arguments)
            if problem is None:
                qualified.append(call)
            else:
                reasons.append(
                    problem if len(named) == 1 else f"{_truncate(str(call), 80)}: {problem}"
                )
        if not qualified:
            self._fail(check, "\n".join(reasons))
            return self
        if min_confidence is not None:
            self._tool_confidence(check, name, qualified, min_confidence)
        return self

    def _no_call_named(self, name: str) -> str:
        """The failure message when no call has ``name``."""
        offered = [
            tool["function"]["name"]
            for tool in self.gen.request.tools or ()
            if isinstance(tool.get("function"), dict) and "name" in tool["function"]
        ]
        hint = ""
        if offered and name not in offered:
            hint = f" ({name!r} is not among the tools offered: {', '.join(offered)})"
        if self.gen.tool_calls:
            return (
                f"no call to {name!r}{hint}; the model called {_calls_shown(self.gen.tool_calls)}"
            )
        if not self.gen.request.tools:
            return f"no tool call: the request offered no tools (pass tools=[...]){hint}"
        return f"no tool call: the model answered in text{hint}"

    def _tool_confidence(
        self, check: str, name: str, calls: Sequence[ToolCall], min_confidence: float
    ) -> None:
        """Pass when one of ``calls`` has a lowest token probability >= the threshold."""
        scored = [call for call in calls if call.min_prob is not None]
        if not scored:
            if not self.gen.request.logprobs:
                self._fail(
                    check,
                    f"no logprobs from {self.gen.model}: the request asked for none "
                    "(logprobs=False)",
                )
            else:
                self._unsupported(
                    check,
                    f"no logprobs for the tokens of the call to {name!r} from "
                    f"{self.gen.model}: the backend does not return them for tool calls",
                )
            return
        best = max(scored, key=lambda call: call.min_prob or 0.0)
        low = best.min_prob
        assert low is not None and best.mean_prob is not None
        if low < min_confidence:
            worst = min(best.tokens, key=lambda token: token.prob)
            self._fail(
                check,
                f"lowest token probability of the call {_num(low, min_confidence)} < "
                f"{min_confidence:g} (token {worst.token!r}; mean {best.mean_prob:.3g} over "
                f"{len(best.tokens)} tokens): {_truncate(str(best), 80)}",
            )

    def no_tool_call(self) -> Self:
        """The model called no tool."""
        calls = self.gen.tool_calls
        if calls:
            count = f"{len(calls)} tool{'s' if len(calls) != 1 else ''}"
            self._fail(_label("no_tool_call"), f"called {count}: {_calls_shown(calls)}")
        return self

    # -- speed and size --

    def ttft(self, max: float) -> Self:
        """Time to first token is at most ``max`` seconds."""
        value = self.gen.timings.ttft_s
        if value is None:
            self._fail(_label("ttft", max=max), "no time to first token: no token arrived")
        elif value > max:
            self._fail(
                _label("ttft", max=max), f"time to first token {_num(value, max)} s > {max:g} s"
            )
        return self

    def decode_tokens_per_s(self, min: float) -> Self:
        """Decode speed (tokens/s after the first token) is at least ``min``."""
        value = self.gen.timings.decode_tokens_per_s
        check = _label("decode_tokens_per_s", min=min)
        if value is None:
            self._fail(check, "decode speed not measured (fewer than 2 completion tokens)")
        elif value < min:
            self._fail(check, f"decode speed {_num(value, min)} tokens/s < {min:g}")
        return self

    def total_s(self, max: float) -> Self:
        """The whole request took at most ``max`` seconds."""
        value = self.gen.timings.total_s
        if value > max:
            self._fail(_label("total_s", max=max), f"total time {_num(value, max)} s > {max:g} s")
        return self

    def completion_tokens(self, max: int) -> Self:
        """At most ``max`` completion tokens (``usage.completion_tokens``)."""
        value = self.gen.usage.completion_tokens
        if value > max:
            self._fail(_label("completion_tokens", max=max), f"{value} completion tokens > {max}")
        return self

    def finish_reason(self, expected: str) -> Self:
        """The finish reason is ``expected`` (``"stop"``, ``"length"``...)."""
        got = self.gen.finish_reason
        if got != expected:
            error = f" (error: {self.gen.error})" if self.gen.error else ""
            self._fail(_label("finish_reason", expected), f"finish reason is {got!r}{error}")
        return self

    # -- energy --

    def _reading(self, check: str) -> EnergyReading | None:
        """The energy reading, or None after failing because there is none."""
        reading = self.gen.energy
        if reading is None:
            self._fail(check, "energy unavailable: this generation was not metered")
            return None
        if reading.joules is None or reading.provenance == "unavailable":
            self._fail(check, f"energy unavailable: {reading.note or 'no reason given'}")
            return None
        return reading

    @staticmethod
    def _basis(reading: EnergyReading) -> str:
        """`` (estimated reading: <note>)`` for a number not from meters, else ``""``."""
        if reading.provenance in _MEASURED:
            return ""
        return f" ({reading.provenance} reading: {reading.note or 'no note'})"

    def wh_per_1k(self, max: float) -> Self:
        """Energy per 1000 completion tokens is at most ``max`` Wh (any provenance)."""
        check = _label("wh_per_1k", max=max)
        reading = self._reading(check)
        if reading is None:
            return self
        value = reading.wh_per_1k
        if value is None:
            self._fail(
                check, f"Wh per 1k tokens unknown: no completion tokens{self._basis(reading)}"
            )
        elif value > max:
            self._fail(
                check,
                f"{_num(value, max)} Wh per 1k completion tokens > {max:g}{self._basis(reading)}",
            )
        return self

    def joules(self, max: float) -> Self:
        """The generation's gross energy is at most ``max`` joules (any provenance)."""
        check = _label("joules", max=max)
        reading = self._reading(check)
        if reading is not None and reading.joules is not None and reading.joules > max:
            self._fail(check, f"{_num(reading.joules, max)} J > {max:g} J{self._basis(reading)}")
        return self

    def measured(self) -> Self:
        """The energy comes from meters: measured, measured-apportioned or integrated."""
        reading = self.gen.energy
        if reading is None:
            self._fail(_label("measured"), "energy unavailable: this generation was not metered")
        elif reading.provenance not in _MEASURED:
            self._fail(
                _label("measured"),
                f"provenance is {reading.provenance!r}, not measured: {reading.note or 'no note'}",
            )
        return self
