"""Statistics for repeated LLM samples: pass-rate intervals, verdicts, pass@k, summaries.

Pure Python (``math``, ``statistics``, ``random``); no numpy or scipy.

* `wilson_interval`: the Wilson score interval of a pass rate.
* `verdict` and `decided`: whether k of n runs pass a required rate, and early
  stopping once the remaining runs can no longer change that.
* `pass_at_k` and `pass_hat_k`: the unbiased pass@k and pass^k estimators.
* `describe`, `bootstrap_ci`, `percentile`: summary statistics of a metric with a
  seeded (reproducible) bootstrap confidence interval of its mean.
* `finite_or_none`: a value read from a record as a finite float, or None.

Counts (``successes``, ``n``, ``k`` ...) are ints (not bools, not whole floats); every
bad argument raises ValueError naming the argument and its value.
"""

from __future__ import annotations

import math
import numbers
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MetricStats",
    "PassRule",
    "bootstrap_ci",
    "decided",
    "describe",
    "finite_or_none",
    "pass_at_k",
    "pass_hat_k",
    "percentile",
    "verdict",
    "wilson_interval",
]

#: How a sampled test's pass count is judged against its required pass rate:
#: ``"rate"`` compares the observed rate, ``"wilson"`` the Wilson lower bound.
PassRule = Literal["rate", "wilson"]

_RULES: tuple[str, ...] = ("rate", "wilson")


# --------------------------------------------------------------------------- values


def finite_or_none(value: object) -> float | None:
    """``value`` as a finite float, or None when it is no such number.

    Ints and floats (and their subclasses) count; booleans, text, None and other
    types do not, nor NaN, the infinities or an int too large for a float. For
    numbers read from records (``results.jsonl`` may be edited by hand).
    """
    if isinstance(value, float):
        number = float(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond floats
            return None
    else:
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------- checks


def _check_count(name: str, value: int) -> None:
    """Raise ValueError unless ``value`` is a non-negative count: an integer (numpy's
    too), not a bool, not a float even if whole (``1.0`` is a measurement, not a count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer count, got {value!r}")  # noqa: TRY004
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _check_confidence(confidence: float) -> None:
    """Raise ValueError unless ``0 < confidence < 1`` (NaN fails too)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")


def _check_successes(successes: int, n: int) -> None:
    """Raise ValueError unless ``0 <= successes <= n``."""
    _check_count("n", n)
    _check_count("successes", successes)
    if successes > n:
        raise ValueError(f"successes must be <= n={n}, got {successes!r}")


def _z(confidence: float) -> float:
    """The two-sided standard normal quantile ``z = Φ⁻¹((1 + confidence) / 2)``."""
    return statistics.NormalDist().inv_cdf((1.0 + confidence) / 2.0)


# --------------------------------------------------------------------------- Wilson


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of a binomial proportion.

    With ``p̂ = s/n`` and ``z = Φ⁻¹((1 + confidence)/2)`` (1.959964 at 95 %)::

        centre = (p̂ + z²/(2n)) / (1 + z²/n)
        half   = z / (1 + z²/n) · √(p̂(1 − p̂)/n + z²/(4n²))
        (low, high) = (centre − half, centre + half)

    computed in the equivalent count form ``(s + z²/2 ± z·√(s(n − s)/n + z²/4)) / (n + z²)``.
    Unlike the Wald interval it stays inside [0, 1] and is not degenerate at 0/n or n/n:
    ``low`` is exactly 0.0 when ``successes == 0`` and ``high`` exactly 1.0 when
    ``successes == n``. With no trials (``n == 0``) nothing is known: ``(0.0, 1.0)``.

    References: E. B. Wilson, "Probable inference, the law of succession, and
    statistical inference", JASA 22 (1927) 209-212; R. G. Newcombe, "Two-sided
    confidence intervals for the single proportion", Statistics in Medicine 17 (1998)
    857-872; L. D. Brown, T. T. Cai, A. DasGupta, "Interval estimation for a binomial
    proportion", Statistical Science 16 (2001) 101-133.

    Raises ValueError for negative counts, ``successes > n``, or a confidence outside
    the open interval (0, 1).
    """
    _check_successes(successes, n)
    _check_confidence(confidence)
    if n == 0:
        return (0.0, 1.0)
    z = _z(confidence)
    z2 = z * z
    denominator = n + z2
    centre = successes + z2 / 2.0
    half = z * math.sqrt(successes * (n - successes) / n + z2 / 4.0)
    low = 0.0 if successes == 0 else max(0.0, (centre - half) / denominator)
    high = 1.0 if successes == n else min(1.0, (centre + half) / denominator)
    return (low, high)


# --------------------------------------------------------------------------- verdicts


def _check_rule(rule: str) -> None:
    """Raise ValueError unless ``rule`` is a `PassRule`."""
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {', '.join(map(repr, _RULES))}, got {rule!r}")


def _check_pass_rate(pass_rate: float) -> None:
    """Raise ValueError unless ``0 <= pass_rate <= 1`` (NaN fails too)."""
    if not 0.0 <= pass_rate <= 1.0:
        raise ValueError(f"pass_rate must be between 0 and 1, got {pass_rate!r}")


def verdict(
    successes: int,
    n: int,
    *,
    pass_rate: float,
    rule: PassRule = "rate",
    confidence: float = 0.95,
) -> bool:
    """Whether ``successes`` passes out of ``n`` runs meet ``pass_rate`` under ``rule``.

    * ``"rate"``: ``successes / n >= pass_rate``. The division is correctly rounded,
      so a rate written as the same fraction (``0.8`` for 8 of 10) compares equal.
    * ``"wilson"``: the lower bound of `wilson_interval` at ``confidence`` is
      ``>= pass_rate``: the pass rate is shown to be at least ``pass_rate`` with that
      confidence. Stricter than ``"rate"`` (the lower bound never exceeds ``s/n``); with
      few runs a high ``pass_rate`` is unreachable (10 of 10 at 95 % gives 0.7225).

    ``confidence`` is ignored by ``"rate"`` but still validated. Raises ValueError for
    ``n < 1``, ``successes`` outside ``[0, n]``, ``pass_rate`` outside ``[0, 1]``, an
    unknown rule, or a bad confidence.
    """
    _check_successes(successes, n)
    if n < 1:
        raise ValueError(f"n must be >= 1 to give a verdict, got {n!r}")
    _check_pass_rate(pass_rate)
    _check_rule(rule)
    _check_confidence(confidence)
    if rule == "rate":
        return successes / n >= pass_rate
    return wilson_interval(successes, n, confidence)[0] >= pass_rate


def decided(
    successes: int,
    failures: int,
    total_runs: int,
    *,
    pass_rate: float,
    rule: PassRule = "rate",
    confidence: float = 0.95,
) -> bool | None:
    """Early stopping: the final `verdict` if the remaining runs cannot change it, else None.

    After ``successes + failures`` of ``total_runs`` runs, ``r = total_runs − successes
    − failures`` remain. The final success count lies in ``[successes, successes + r]``;
    the two extremes are *all remaining fail* and *all remaining pass*. If both give the
    same verdict, that is the verdict at ``total_runs`` whatever the remaining runs
    give, and it is returned; otherwise None (still open, and genuinely so: one
    completion passes, another fails).

    The extremes bound every outcome because the verdict is monotone in the success
    count for fixed ``n = total_runs``: ``s/n`` trivially, and the Wilson lower bound
    because it is strictly increasing in ``s`` for fixed ``n`` and ``z`` (a standard
    property of the score interval; see Brown, Cai & DasGupta 2001). So a verdict
    that holds at both extremes holds at every count in between.

    With ``r == 0`` this is just ``verdict(successes, total_runs, ...)``. Raises
    ValueError for negative counts, ``total_runs < 1``, ``successes + failures >
    total_runs``, and the argument errors of `verdict`.
    """
    _check_count("successes", successes)
    _check_count("failures", failures)
    _check_count("total_runs", total_runs)
    if total_runs < 1:
        raise ValueError(f"total_runs must be >= 1, got {total_runs!r}")
    if successes + failures > total_runs:
        raise ValueError(
            f"successes + failures must be <= total_runs={total_runs}, "
            f"got {successes} + {failures} = {successes + failures}"
        )
    remaining = total_runs - successes - failures
    worst = verdict(successes, total_runs, pass_rate=pass_rate, rule=rule, confidence=confidence)
    best = verdict(
        successes + remaining, total_runs, pass_rate=pass_rate, rule=rule, confidence=confidence
    )
    return worst if worst == best else None


# --------------------------------------------------------------------------- pass@k


def _check_pass_k(n: int, c: int, k: int) -> None:
    """Raise ValueError unless ``0 <= c <= n`` and ``1 <= k <= n``."""
    _check_count("n", n)
    _check_count("c", c)
    _check_count("k", k)
    if c > n:
        raise ValueError(f"c must be <= n={n}, got {c!r}")
    if k > n:
        raise ValueError(f"k must be <= n={n}, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k: the chance that at least one of k samples passes, from c passes in n.

    The unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models
    Trained on Code", arXiv:2107.03374, eq. 1): draw k of the n samples without
    replacement; the chance that none of them passes is ``C(n−c, k) / C(n, k)``, so::

        pass@k = 1 − C(n − c, k) / C(n, k)

    Binomials overflow floats quickly, so the ratio is computed as a product of factors
    in (0, 1], with the fewer of ``c`` or ``k`` factors::

        C(n−c, k)/C(n, k) = ∏_{i=n−c+1}^{n} (1 − k/i)        (Chen et al.'s form)
                          = ∏_{i=0}^{k−1} (n − c − i)/(n − i)

    Exactly 1.0 when ``n − c < k`` (every k-subset holds a pass); ``pass_at_k(n, c, 1)
    == c/n`` up to rounding. Raises ValueError for negative arguments, ``c > n``,
    ``k > n`` or ``k < 1``.
    """
    _check_pass_k(n, c, k)
    if n - c < k:
        return 1.0
    none_pass = 1.0
    if c <= k:
        for i in range(n - c + 1, n + 1):
            none_pass *= 1.0 - k / i
    else:
        for i in range(k):
            none_pass *= (n - c - i) / (n - i)
    return 1.0 - none_pass


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k: the chance that k i.i.d. samples *all* pass, from c passes in n.

    The reliability metric of tau-bench (Yao et al. 2024, "τ-bench: A Benchmark for
    Tool-Agent-User Interaction in Real-World Domains", arXiv:2406.12045), estimated
    without bias by drawing k of the n samples without replacement::

        pass^k = C(c, k) / C(n, k) = ∏_{i=0}^{k−1} (c − i)/(n − i)

    (a product of factors in [0, 1], so no overflow). 0.0 when ``c < k``; 1.0 when
    ``c == n``; ``pass_hat_k(n, c, 1) == c/n``. It is the complement of pass@k for
    failures: ``pass_hat_k(n, c, k) == 1 − pass_at_k(n, n − c, k)``. Raises ValueError
    like `pass_at_k`.
    """
    _check_pass_k(n, c, k)
    if c < k:
        return 0.0
    all_pass = 1.0
    for i in range(k):
        all_pass *= (c - i) / (n - i)
    return all_pass


# --------------------------------------------------------------------------- summaries


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (``0 <= q <= 100``) of ascending ``sorted_values``.

    Linear interpolation between order statistics, the definition of numpy's default
    ``method="linear"`` (Hyndman & Fan 1996, definition 7; also Excel's PERCENTILE.INC
    and ``statistics.quantiles(method="inclusive")``). With ``x₀ <= … <= x_{N−1}``::

        h = (N − 1) · q/100,   j = ⌊h⌋,   g = h − j
        percentile = x_j + g · (x_{j+1} − x_j)       (x_j alone when j = N − 1)

    so q = 0 gives the minimum, q = 100 the maximum and q = 50 the median. As in numpy
    the interpolation is evaluated from the nearer end (``x_{j+1} − (1 − g)(x_{j+1} −
    x_j)`` when g >= 0.5), which keeps it exact at the order statistics.

    Reference: R. J. Hyndman, Y. Fan, "Sample quantiles in statistical packages",
    The American Statistician 50 (1996) 361-365.

    Raises ValueError for an empty input, ``q`` outside ``[0, 100]``, or values that are
    not sorted ascending (NaN counts as unsorted).
    """
    count = len(sorted_values)
    if count == 0:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be between 0 and 100, got {q!r}")
    for i in range(count - 1):
        if not sorted_values[i] <= sorted_values[i + 1]:
            raise ValueError(
                f"sorted_values must be sorted ascending without NaN; at index {i}: "
                f"{sorted_values[i]!r} then {sorted_values[i + 1]!r}"
            )
    h = (count - 1) * (q / 100.0)
    j = min(math.floor(h), count - 1)
    g = h - j
    low = sorted_values[j]
    high = sorted_values[min(j + 1, count - 1)]
    diff = high - low
    return low + diff * g if g < 0.5 else high - diff * (1.0 - g)


def _check_resamples(resamples: int) -> None:
    """Raise ValueError unless ``resamples >= 1``."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples!r}")


def _mean(values: Sequence[float]) -> float:
    """The arithmetic mean ``Σx / n``, kept inside ``[min, max]`` of the values.

    `statistics.fmean` (``math.fsum(values) / n``) rounds twice, so it can land one
    unit in the last place outside the data: six copies of 682.8699668533343 average
    to 682.8699668533342. Clamping to the data's range (which always contains the
    true mean) fixes that, so identical values have exactly that mean.
    """
    return min(max(statistics.fmean(values), min(values)), max(values))


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[Sequence[float]], float] = _mean,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int | None = 0,
) -> tuple[float, float]:
    """Bootstrap percentile confidence interval ``(low, high)`` of ``statistic(values)``.

    Draws ``resamples`` samples of ``len(values)`` values with replacement from
    ``values`` (``random.Random(seed).choices``), evaluates ``statistic`` (by default
    the mean, ``math.fsum(x)/n`` clamped to the sample's range) on each, and
    returns the `percentile` ``100·(1 − confidence)/2`` and ``100·(1 + confidence)/2``
    of those replicates (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993,
    ch. 13). The same ``seed`` always gives the same interval; ``seed=None`` seeds from
    the OS instead. Cost: ``resamples · len(values)`` draws.

    One value gives ``(statistic([v]),) * 2``: every resample is that value. The values
    must be finite numbers (`describe` cleans them first). Raises ValueError for an
    empty or non-finite input, a bad confidence, or ``resamples < 1``.
    """
    data = list(values)
    if not data:
        raise ValueError("no values")
    if not all(math.isfinite(v) for v in data):
        raise ValueError("values must be finite")
    _check_confidence(confidence)
    _check_resamples(resamples)
    if len(data) == 1:
        only = statistic(data)
        return (only, only)
    rng = random.Random(seed)
    size = len(data)
    replicates = sorted(statistic(rng.choices(data, k=size)) for _ in range(resamples))
    tail = 100.0 * (1.0 - confidence) / 2.0
    return (percentile(replicates, tail), percentile(replicates, 100.0 - tail))


@dataclass(frozen=True, slots=True)
class MetricStats:
    """Summary statistics of one metric over repeated samples (see `describe`).

    ``std`` is the sample standard deviation (ddof=1, 0.0 for one value); ``cv`` the
    coefficient of variation ``std / mean`` (None when the mean is 0); ``p5``/``p95``
    `percentile` 5 and 95 (numpy's "linear" definition); ``ci_low``/``ci_high`` the
    bootstrap percentile interval of the mean at ``confidence``.
    """

    n: int
    mean: float
    median: float
    std: float
    cv: float | None
    min: float
    max: float
    p5: float
    p95: float
    ci_low: float
    ci_high: float
    confidence: float


def _clean(values: Sequence[float | None]) -> list[float]:
    """The values as floats, without None and NaN; ValueError for ±inf."""
    cleaned = [float(v) for v in values if v is not None and not math.isnan(v)]
    for value in cleaned:
        if math.isinf(value):
            raise ValueError(f"values must be finite, got {value!r}")
    return cleaned


def describe(
    values: Sequence[float | None],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int | None = 0,
) -> MetricStats:
    """Summarise a metric's values: `MetricStats` with a bootstrap CI of the mean.

    None and NaN entries are dropped first (a sample without the metric, such as a
    generation without an energy reading) and ``n`` counts what remains; infinite
    values raise ValueError, and so does an input with nothing left:
    ``ValueError("no values")``.

    * ``mean``: ``math.fsum(values) / n`` (`statistics.fmean`), clamped to
      ``[min, max]`` against rounding; ``median``: `statistics.median`.
    * ``std``: `statistics.stdev`, ``√(Σ(x − x̄)² / (n − 1))``; 0.0 when n == 1.
    * ``cv``: ``std / mean``, None when ``mean == 0`` (signed like the mean).
    * ``p5``, ``p95``: `percentile` (linear interpolation, numpy's default).
    * ``ci_low``, ``ci_high``: `bootstrap_ci` of the mean with ``confidence``,
      ``resamples`` and ``seed`` (fixed by default, so reports are reproducible); both
      equal the value when n == 1.
    """
    _check_confidence(confidence)
    _check_resamples(resamples)
    data = _clean(values)
    if not data:
        raise ValueError("no values")
    ordered = sorted(data)
    mean = _mean(data)
    std = statistics.stdev(data) if len(data) > 1 else 0.0
    ci_low, ci_high = bootstrap_ci(
        data, _mean, confidence=confidence, resamples=resamples, seed=seed
    )
    return MetricStats(
        n=len(data),
        mean=mean,
        median=statistics.median(ordered),
        std=std,
        cv=std / mean if mean != 0 else None,
        min=ordered[0],
        max=ordered[-1],
        p5=percentile(ordered, 5.0),
        p95=percentile(ordered, 95.0),
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
    )
