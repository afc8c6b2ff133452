"""Repeated sampling: run a test body N times and decide by its pass rate.

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
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_llmlab.stats import pass_at_k, pass_hat_k, verdict, wilson_interval

__all__ = ["RunOutcome", "SamplingPlan", "SamplingResult", "parse_pass_rule", "run_repeated"]

_RULE = re.compile(r"^(rate|wilson|pass@(\d+)|pass\^(\d+))$")


def parse_pass_rule(raw: str) -> tuple[str, int]:
    """``rate`` | ``wilson`` | ``pass@K`` | ``pass^K`` -> (rule, k)."""
    text = raw.strip().lower()
    match = _RULE.match(text)
    if not match:
        raise ValueError(f"{raw!r} is not a pass rule (rate, wilson, pass@K, pass^K)")
    if match.group(2):
        return "pass@k", int(match.group(2))
    if match.group(3):
        return "pass^k", int(match.group(3))
    return text, 1


@dataclass(frozen=True, slots=True)
class SamplingPlan:
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
class SamplingResult:
    plan: SamplingPlan
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


def run_repeated(plan: SamplingPlan, run_once: Callable[[int], RunOutcome]) -> SamplingResult:
    """Call `run_once(index)` up to ``plan.runs`` times, stopping early when decided."""
    result = SamplingResult(plan)
    for index in range(plan.runs):
        result.outcomes.append(run_once(index))
        if plan.early_stop and index + 1 < plan.runs:
            decision = plan.decided(result.passed, result.n - result.passed)
            if decision is not None:
                result.stopped_early = True
                break
    return result
