"""An LLM as judge: a rubric, a judge model, a score from 1 to 5, parsed strictly.

``expect(gen).judge("Is the answer polite and correct?", model="local:qwen2.5-1.5b",
min_score=4, samples=3)`` asks the judge model to grade ``gen``'s answer to its prompt
against the rubric. The judge must answer a JSON object ``{"score": 1..5, "reason":
"..."}``: the request constrains it to that schema where the backend supports it
(OpenAI's ``response_format`` JSON schema, which llama.cpp's server turns into a
grammar), and the answer is parsed strictly: anything else is a failed check saying
what the judge said, never a guessed score.

With ``samples > 1`` the judge grades the same answer that many times (seeds 0, 1, ...
at ``temperature`` 0.7 unless given), the check holds the median score to
``min_score``, and the judge's agreement with itself (the share of samples that gave
the modal score) is part of the verdict: a judge that disagrees with itself is a
signal in its own right.

Judge generations are recorded and metered as records of their own, with
``judge_for`` naming the judged model; summaries, pass rates and the leaderboard leave
them out, so they never count in the judged model's energy or points. The plugin makes
the judge available while an LLM test or suite case runs (`judging`); outside one
(plain Python) the check fails saying so.
"""

from __future__ import annotations

import contextvars
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pytest_llmlab.extract import JSONExtractionError, SchemaValidationError, extract_json, validate
from pytest_llmlab.models.base import Generation

__all__ = [
    "MAX_SCORE",
    "MIN_SCORE",
    "VERDICT_SCHEMA",
    "JudgeRequest",
    "JudgeResult",
    "JudgeRunner",
    "agreement",
    "current_runner",
    "judge_messages",
    "judging",
    "parse_verdict",
    "response_format",
    "run_judge",
]

MIN_SCORE = 1
MAX_SCORE = 5
#: What the judge must answer.
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": MIN_SCORE, "maximum": MAX_SCORE},
        "reason": {"type": "string"},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}

_INSTRUCTIONS = (
    "You are a strict grader. Grade the ANSWER to the QUESTION against the RUBRIC on a "
    f"scale from {MIN_SCORE} (fails the rubric) to {MAX_SCORE} (fully meets it). Reply "
    'with a JSON object only: {"score": <integer>, "reason": "<one sentence>"}.'
)


def judge_messages(rubric: str, question: str, answer: str) -> list[dict[str, str]]:
    """The judge's conversation. The answer is fenced so the judged model's text reads
    as data to grade, not as instructions to the judge."""
    return [
        {"role": "system", "content": _INSTRUCTIONS},
        {
            "role": "user",
            "content": (
                f"RUBRIC:\n{rubric}\n\nQUESTION:\n{question}\n\n"
                f"ANSWER (between the markers):\n<<<ANSWER\n{answer}\nANSWER>>>"
            ),
        },
    ]


def response_format() -> dict[str, Any]:
    """OpenAI-style structured output constraining the judge to `VERDICT_SCHEMA`, its
    reason bounded to 200 characters so a grammar-constrained judge always closes the
    object within its max_tokens (a small model otherwise repeats itself until cut)."""
    properties = {**VERDICT_SCHEMA["properties"], "reason": {"type": "string", "maxLength": 200}}
    schema = {**VERDICT_SCHEMA, "properties": properties}
    return {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "schema": schema, "strict": True},
    }


def parse_verdict(text: str) -> tuple[int, str]:
    """``(score, reason)`` from the judge's answer; ValueError saying what is wrong."""
    try:
        value = extract_json(text)
    except JSONExtractionError:
        raise ValueError(f"the judge did not answer JSON: {text[:200]!r}") from None
    try:
        validate(value, VERDICT_SCHEMA)
    except SchemaValidationError as exc:
        raise ValueError(f"the judge's verdict does not fit the schema: {exc}") from None
    return int(value["score"]), str(value["reason"])


def agreement(scores: Sequence[int]) -> float:
    """The share of scores equal to the most common one (1.0: the judge agrees with
    itself every time)."""
    if not scores:
        raise ValueError("no scores")
    return Counter(scores).most_common(1)[0][1] / len(scores)


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """What the check asks of the judge model."""

    model: str
    messages: list[dict[str, str]]
    samples: int
    temperature: float
    max_tokens: int
    #: The judged model's display name (the judge records' ``judge_for``).
    judged: str


@dataclass(frozen=True, slots=True)
class JudgeResult:
    """The judge's verdicts on one answer."""

    model: str
    scores: tuple[int, ...]
    reasons: tuple[str, ...]
    #: Samples whose answer did not parse, with why.
    errors: tuple[str, ...] = ()

    @property
    def score(self) -> float | None:
        """The median score, or None when no sample parsed."""
        return statistics.median(self.scores) if self.scores else None

    @property
    def agreement(self) -> float | None:
        return agreement(self.scores) if self.scores else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "scores": list(self.scores),
            "score": self.score,
            "agreement": self.agreement,
            "reasons": list(self.reasons),
            "errors": list(self.errors),
        }


#: Runs a judge request: one Generation per sample, recorded as judge calls.
JudgeRunner = Callable[[JudgeRequest], list[Generation]]

_RUNNER: contextvars.ContextVar[JudgeRunner | None] = contextvars.ContextVar(
    "pytest_llmlab_judge", default=None
)


@contextmanager
def judging(runner: JudgeRunner) -> Iterator[None]:
    """Make ``runner`` the judge of checks in the block (the plugin wraps every LLM
    test body and suite case in it)."""
    token = _RUNNER.set(runner)
    try:
        yield
    finally:
        _RUNNER.reset(token)


def current_runner() -> JudgeRunner | None:
    return _RUNNER.get()


def run_judge(runner: JudgeRunner, request: JudgeRequest) -> JudgeResult:
    """Ask the judge, parse every sample strictly."""
    scores: list[int] = []
    reasons: list[str] = []
    errors: list[str] = []
    for generation in runner(request):
        if generation.error is not None:
            errors.append(f"the judge's generation failed: {generation.error}")
            continue
        try:
            score, reason = parse_verdict(generation.text)
        except ValueError as exc:
            cut = generation.finish_reason == "length"
            errors.append(
                f"the judge's answer was cut at max_tokens={request.max_tokens}: {exc}"
                if cut
                else str(exc)
            )
            continue
        scores.append(score)
        reasons.append(reason)
    return JudgeResult(request.model, tuple(scores), tuple(reasons), tuple(errors))
