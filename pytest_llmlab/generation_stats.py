"""Statistics over many generations (`Samples`, `PassRate`).

One generation of a stochastic model is an anecdote. ``llm.sample(prompt, n=10)``
returns `Samples`: the generations plus, for any metric, mean / median / std / CV / p5 /
p95 / min / max and a bootstrap confidence interval of the mean, so a test can gate on
``samples.wh_per_1k.ci_high <= 0.5`` instead of on one noisy reading. ``llm.samples()``
gives the same view of every generation the test has made so far (across ``runs`` too).

The user-facing names ``llm.sample()`` and `Samples` are kept from the first release;
inside the package "sample" otherwise means one meter reading (`CounterSample`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from pytest_llmlab.models.base import Generation
from pytest_llmlab.stats import MetricStats, describe, pass_at_k, pass_hat_k, wilson_interval

__all__ = ["METRICS", "PassRate", "Samples"]


def _energy(attribute: str) -> Callable[[Generation], float | None]:
    def get(gen: Generation) -> float | None:
        value = getattr(gen.energy, attribute, None) if gen.energy is not None else None
        return float(value) if value is not None else None

    return get


def _confidence(attribute: str) -> Callable[[Generation], float | None]:
    def get(gen: Generation) -> float | None:
        from pytest_llmlab.expect import confidence_of

        conf = confidence_of(gen)
        value = getattr(conf, attribute, None) if conf is not None else None
        return float(value) if value is not None else None

    return get


#: Every metric `Samples` describes: name -> how to read it off a Generation.
METRICS: dict[str, Callable[[Generation], float | None]] = {
    "wh_per_1k": _energy("wh_per_1k"),
    "wh": _energy("wh"),
    "joules": _energy("joules"),
    "net_joules": _energy("net_joules"),
    "avg_power_w": _energy("avg_power_w"),
    "ttft_s": lambda g: g.timings.ttft_s,
    "total_s": lambda g: g.timings.total_s,
    "prefill_tokens_per_s": lambda g: g.timings.prefill_tokens_per_s,
    "decode_tokens_per_s": lambda g: g.timings.decode_tokens_per_s,
    "prompt_tokens": lambda g: float(g.usage.prompt_tokens),
    "completion_tokens": lambda g: float(g.usage.completion_tokens),
    "mean_prob": _confidence("mean_prob"),
    "min_prob": _confidence("min_prob"),
    "first_token_prob": _confidence("first_token_prob"),
    "perplexity": _confidence("perplexity"),
    "entropy": _confidence("entropy"),
}


@dataclass(frozen=True, slots=True)
class PassRate:
    """k of n generations satisfied a predicate, with a Wilson interval and pass@k."""

    passed: int
    n: int
    confidence: float

    @property
    def rate(self) -> float:
        return self.passed / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.passed, self.n, self.confidence)

    @property
    def ci_low(self) -> float:
        return self.interval[0]

    @property
    def ci_high(self) -> float:
        return self.interval[1]

    def pass_at(self, k: int) -> float:
        """pass@k: the chance at least one of k samples passes (unbiased estimate)."""
        return pass_at_k(self.n, self.passed, k)

    def pass_all(self, k: int) -> float:
        """pass^k: the chance k samples all pass (unbiased estimate)."""
        return pass_hat_k(self.n, self.passed, k)

    def __str__(self) -> str:
        low, high = self.interval
        return (
            f"{self.passed}/{self.n} passed ({self.rate:.0%}, "
            f"{self.confidence:.0%} Wilson interval {low:.2f}-{high:.2f})"
        )


class Samples(Sequence[Generation]):
    """Generations with statistics: ``samples.ttft_s.median``, ``samples.wh_per_1k.ci_high``.

    Every name in `METRICS` is an attribute returning `MetricStats`; generations where
    the metric is missing (no energy reading, no logprobs) are left out of it, and a
    metric no generation has raises ValueError naming it.
    """

    def __init__(
        self,
        generations: Sequence[Generation],
        *,
        confidence: float = 0.95,
        resamples: int = 2000,
        seed: int = 0,
    ) -> None:
        # A list is kept by reference, so `llm.samples()` stays a live view.
        self._generations = generations if isinstance(generations, list) else list(generations)
        self.confidence = confidence
        self.resamples = resamples
        self.seed = seed

    @overload
    def __getitem__(self, index: int) -> Generation: ...

    @overload
    def __getitem__(self, index: slice) -> Samples: ...

    def __getitem__(self, index: int | slice) -> Generation | Samples:
        if isinstance(index, slice):
            return Samples(self._generations[index], confidence=self.confidence)
        return self._generations[index]

    def __len__(self) -> int:
        return len(self._generations)

    def __iter__(self) -> Iterator[Generation]:
        return iter(self._generations)

    def __repr__(self) -> str:
        return f"<Samples n={len(self)}>"

    @property
    def texts(self) -> list[str]:
        return [g.text for g in self._generations]

    def values(self, metric: str | Callable[[Generation], float | None]) -> list[float]:
        """The metric's finite values, one per generation that has it."""
        read = METRICS[metric] if isinstance(metric, str) else metric
        out: list[float] = []
        for gen in self._generations:
            value = read(gen)
            if value is not None and math.isfinite(value):
                out.append(float(value))
        return out

    def describe(self, metric: str | Callable[[Generation], float | None]) -> MetricStats:
        """Summary statistics and a bootstrap interval of the mean of one metric."""
        if isinstance(metric, str) and metric not in METRICS:
            raise AttributeError(f"no metric {metric!r} (known: {', '.join(sorted(METRICS))})")
        values = self.values(metric)
        if not values:
            name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
            raise ValueError(f"none of the {len(self)} generations has a value for {name}")
        return describe(
            values, confidence=self.confidence, resamples=self.resamples, seed=self.seed
        )

    def __getattr__(self, name: str) -> MetricStats:
        if name in METRICS:
            return self.describe(name)
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def pass_rate(self, predicate: Callable[[Generation], Any]) -> PassRate:
        """How many generations satisfy `predicate` (truthy, or no AssertionError)."""
        from pytest_llmlab.expect import collecting

        passed = 0
        for gen in self._generations:
            # A collector of its own: `expect` checks inside the predicate decide this
            # generation only, instead of failing the surrounding test.
            try:
                with collecting() as checks:
                    ok = predicate(gen)
                checks.raise_if_failed()
            except AssertionError:
                ok = False
            passed += 1 if (ok is None or ok) else 0
        return PassRate(passed=passed, n=len(self), confidence=self.confidence)
