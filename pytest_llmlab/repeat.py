"""Repeated runs: run a test body N times and decide by its pass rate.

``@pytest.mark.llm(runs=10, pass_rate=0.8)`` (or ``--llm-runs`` / ``--llm-pass-rate``)
runs the body ten times with fresh generations. The rule decides what "the pass rate is
met" means:

- ``rate``: passed / runs >= pass_rate;
- ``wilson``: the Wilson lower bound of the pass rate at ``--llm-confidence`` must reach
  pass_rate: stricter, so a lucky streak of a few runs does not pass;
- ``pass@k``: the estimated chance that at least one of k samples passes reaches
  pass_rate (the code-generation metric);
- ``pass^k``: the estimated chance that k samples all pass reaches pass_rate (the
  reliability metric of tau-bench).

With early stopping (default) the runs stop as soon as the verdict can no longer
change whatever the remaining runs give.

`repeat_plan` reads the plan from the marker and the session's options;
`run_test_body` runs an LLM test's body under it: each run collects its soft
`expect` checks, and a failed assertion, ``pytest.fail`` or check is a failed run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llmlab.expect import ExpectationFailed, collecting
from pytest_llmlab.option_values import parse_pass_rule
from pytest_llmlab.stats import pass_at_k, pass_hat_k, verdict, wilson_interval

if TYPE_CHECKING:
    from pytest_llmlab.config import Settings
    from pytest_llmlab.llm import LLM

__all__ = [
    "REPEAT_KEYS",
    "RepeatPlan",
    "RepeatResult",
    "RunOutcome",
    "repeat_failure",
    "repeat_plan",
    "run_repeated",
    "run_test_body",
]

#: The ``@pytest.mark.llm`` keywords that shape repeated runs.
REPEAT_KEYS = ("runs", "pass_rate", "pass_rule", "confidence", "early_stop")


@dataclass(frozen=True, slots=True)
class RepeatPlan:
    """How many runs, and the rule that decides the test from their outcomes."""

    runs: int = 1
    pass_rate: float = 1.0
    rule: str = "rate"
    k: int = 1
    confidence: float = 0.95
    early_stop: bool = True

    def describe_rule(self) -> str:
        if self.rule == "wilson":
            return f"Wilson lower bound at {self.confidence:.0%} >= {self.pass_rate:g}"
        if self.rule == "pass@k":
            return f"pass@{self.k} >= {self.pass_rate:g}"
        if self.rule == "pass^k":
            return f"pass^{self.k} >= {self.pass_rate:g}"
        return f"pass rate >= {self.pass_rate:g}"

    def met(self, passed: int, n: int) -> bool:
        """Whether `passed` of `n` runs meets the rule."""
        if n == 0:
            return False
        if self.rule in ("rate", "wilson"):
            return verdict(
                passed, n, pass_rate=self.pass_rate, rule=self.rule,  # type: ignore[arg-type]
                confidence=self.confidence,
            )  # fmt: skip
        k = min(self.k, n)
        estimate = pass_at_k(n, passed, k) if self.rule == "pass@k" else pass_hat_k(n, passed, k)
        return estimate >= self.pass_rate

    def decided(self, passed: int, failed: int) -> bool | None:
        """The final verdict if the remaining runs cannot change it, else None.

        Every rule here is monotone in the number of passes for a fixed number of
        runs, so it is enough to check the two extremes: all remaining runs pass, or
        all fail."""
        remaining = self.runs - passed - failed
        best = self.met(passed + remaining, self.runs)
        worst = self.met(passed, self.runs)
        return best if best == worst else None


@dataclass(slots=True)
class RunOutcome:
    """What one run of the body gave."""

    passed: bool
    failure: str | None = None


@dataclass(slots=True)
class RepeatResult:
    """The runs made under a plan, and the verdict they give."""

    plan: RepeatPlan
    outcomes: list[RunOutcome] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def n(self) -> int:
        return len(self.outcomes)

    @property
    def passed(self) -> int:
        return sum(1 for o in self.outcomes if o.passed)

    @property
    def ok(self) -> bool:
        """The verdict over the runs made (the full plan, when stopped early)."""
        if self.stopped_early:
            decision = self.plan.decided(self.passed, self.n - self.passed)
            return bool(decision)
        return self.plan.met(self.passed, self.n)

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.passed, self.n, self.plan.confidence)

    def summary(self) -> str:
        """``7/10 passed (70%, 95% CI 0.40-0.89); rule: pass rate >= 0.8``."""
        low, high = self.interval
        early = f", stopped early after {self.n} of {self.plan.runs}" if self.stopped_early else ""
        text = (
            f"{self.passed}/{self.n} passed ({self.passed / self.n:.0%}, "
            f"{self.plan.confidence:.0%} CI {low:.2f}-{high:.2f}{early}); "
            f"rule: {self.plan.describe_rule()}"
        )
        if self.plan.rule in ("pass@k", "pass^k") and self.n:
            k = min(self.plan.k, self.n)
            text += (
                f"; pass@{k} {pass_at_k(self.n, self.passed, k):.2f}, "
                f"pass^{k} {pass_hat_k(self.n, self.passed, k):.2f}"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            "runs": self.n,
            "planned_runs": self.plan.runs,
            "passed": self.passed,
            "pass_rate": self.passed / self.n if self.n else None,
            "ci_low": low,
            "ci_high": high,
            "rule": self.plan.describe_rule(),
            "ok": self.ok,
            "stopped_early": self.stopped_early,
        }


def run_repeated(plan: RepeatPlan, run_once: Callable[[int], RunOutcome]) -> RepeatResult:
    """Call `run_once(index)` up to ``plan.runs`` times, stopping early when decided."""
    result = RepeatResult(plan)
    for index in range(plan.runs):
        result.outcomes.append(run_once(index))
        if plan.early_stop and index + 1 < plan.runs:
            decision = plan.decided(result.passed, result.n - result.passed)
            if decision is not None:
                result.stopped_early = True
                break
    return result


def repeat_plan(settings: Settings, marker: Mapping[str, Any]) -> RepeatPlan:
    """The test's plan: ``@pytest.mark.llm`` keywords over the session's options.

    A bad marker value is a ValueError naming the keyword.
    """
    rule, k = settings.pass_rule
    if "pass_rule" in marker:
        rule, k = parse_pass_rule(str(marker["pass_rule"]))
    runs = marker.get("runs", settings.runs)
    pass_rate = marker.get("pass_rate", settings.pass_rate)
    confidence = marker.get("confidence", settings.confidence)
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise ValueError(f"runs={runs!r} must be a whole number >= 1")
    if not isinstance(pass_rate, int | float) or not 0.0 <= pass_rate <= 1.0:
        raise ValueError(f"pass_rate={pass_rate!r} must be between 0 and 1")
    if not isinstance(confidence, float) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be strictly between 0 and 1")
    return RepeatPlan(
        runs=runs,
        pass_rate=float(pass_rate),
        rule=rule,
        k=k,
        confidence=confidence,
        early_stop=bool(marker.get("early_stop", not settings.no_early_stop)),
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return first if len(first) <= 200 else first[:197] + "..."


def run_test_body(
    body: Callable[..., object],
    funcargs: Mapping[str, Any],
    *,
    plan: RepeatPlan,
    llm: LLM | None,
    strict_capabilities: bool,
    on_run_end: Callable[[bool], None] = lambda passed: None,
) -> RepeatResult | None:
    """Run ``body(**funcargs)`` under ``plan``; fail the test (``pytest.fail``) when
    a single run fails its soft checks or the repeated runs miss the rule.

    Returns the result of repeated runs (None for a single run). ``on_run_end(passed)``
    is called after each of several runs, so the caller can mark that run's records.
    """
    __tracebackhide__ = True

    def run_once(index: int) -> None:
        __tracebackhide__ = True
        if llm is not None and plan.runs > 1:
            llm.run_index, llm.seed_offset = index, index
        with collecting(strict_capabilities=strict_capabilities) as checks:
            body(**funcargs)
        failed: str | None = None
        try:
            checks.raise_if_failed()
        except ExpectationFailed as exc:
            failed = str(exc)
        if failed is not None:  # outside the except: no chained copy of the report
            # The report is the whole message: no frame of this runner to show.
            pytest.fail(failed, pytrace=False)

    if plan.runs == 1:
        run_once(0)
        return None

    def attempt(index: int) -> RunOutcome:
        """An assertion or ``pytest.fail`` is a failed run; anything else (an
        unreachable endpoint, a skip) ends the test as usual."""
        try:
            run_once(index)
            outcome = RunOutcome(passed=True)
        except (AssertionError, pytest.fail.Exception) as exc:
            outcome = RunOutcome(passed=False, failure=_one_line(exc))
        on_run_end(outcome.passed)
        return outcome

    return run_repeated(plan, attempt)


def repeat_failure(result: RepeatResult) -> str | None:
    """The failure text of repeated runs that missed the rule, else None."""
    if result.ok:
        return None
    failures = [f"  run {i + 1}: {o.failure}" for i, o in enumerate(result.outcomes) if o.failure]
    return "\n".join([f"repeated sampling failed: {result.summary()}", *failures[:10]])
