"""The statistics module: Wilson intervals, verdicts and early stopping, pass@k, summaries."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import statistics
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmlab.stats import (
    MetricStats,
    PassRule,
    bootstrap_ci,
    decided,
    describe,
    pass_at_k,
    pass_hat_k,
    percentile,
    verdict,
    wilson_interval,
)

PROPERTIES = settings(max_examples=100, derandomize=True, database=None, deadline=None)
#: Fewer examples for properties that bootstrap.
BOOTSTRAP_PROPERTIES = settings(PROPERTIES, max_examples=50)

RULES: tuple[PassRule, ...] = ("rate", "wilson")

#: The 97.5 % standard normal quantile, to 16 digits.
Z95 = 1.959963984540054


# --------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe 1998, Statistics in Medicine 17:857, Table I (Wilson score, method 3).
        (0, 10, 0.0, 0.2775),
        (1, 29, 0.0061, 0.1718),
        (81, 263, 0.2553, 0.3662),
        # Symmetric and all-pass cases (hand-computed below and by symmetry with 0/10).
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_published_values(successes: int, n: int, low: float, high: float) -> None:
    got_low, got_high = wilson_interval(successes, n, 0.95)
    assert got_low == pytest.approx(low, abs=1e-4)
    assert got_high == pytest.approx(high, abs=1e-4)


def test_wilson_by_hand_from_the_textbook_form() -> None:
    # 5 of 10: p = 0.5, z^2 = 3.841459; centre = (0.5 + 0.192073) / 1.384146 = 0.5,
    # half = 1.959964 / 1.384146 * sqrt(0.025 + 0.009604) = 0.263407.
    z2 = Z95 * Z95
    p, n = 0.5, 10
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    assert (centre, half) == pytest.approx((0.5, 0.263407), abs=1e-6)
    assert wilson_interval(5, 10) == pytest.approx((centre - half, centre + half), abs=1e-12)

    # 81 of 263 likewise.
    p, n = 81 / 263, 263
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    assert wilson_interval(81, 263) == pytest.approx((centre - half, centre + half), abs=1e-12)


def test_wilson_z_comes_from_the_confidence() -> None:
    # At 90 % z = 1.644854: 0 of 10 gives high = z^2 / (n + z^2).
    z = 1.6448536269514722
    assert wilson_interval(0, 10, 0.90) == pytest.approx((0.0, z * z / (10 + z * z)), abs=1e-12)
    assert wilson_interval(0, 10, 0.95)[1] == pytest.approx(Z95**2 / (10 + Z95**2), abs=1e-12)


def test_wilson_edges_are_exact() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for confidence in (0.5, 0.9, 0.95, 0.99):
        for n in range(1, 200):
            assert wilson_interval(0, n, confidence)[0] == 0.0
            assert wilson_interval(n, n, confidence)[1] == 1.0  # not 0.9999999999999999
    assert 0.0 < wilson_interval(1, 7)[0]
    assert wilson_interval(6, 7)[1] < 1.0


@PROPERTIES
@given(
    n=st.integers(1, 2000),
    data=st.data(),
    confidence=st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99, 0.999]),
)
def test_wilson_interval_shape(n: int, data: st.DataObject, confidence: float) -> None:
    successes = data.draw(st.integers(0, n))
    low, high = wilson_interval(successes, n, confidence)
    assert 0.0 <= low <= successes / n <= high <= 1.0
    assert low < high
    # Symmetry: swapping passes and failures mirrors the interval.
    mirror_low, mirror_high = wilson_interval(n - successes, n, confidence)
    assert (low, high) == pytest.approx((1 - mirror_high, 1 - mirror_low), abs=1e-12)


def test_wilson_widens_with_confidence_and_narrows_with_n() -> None:
    def width(s: int, n: int, c: float) -> float:
        low, high = wilson_interval(s, n, c)
        return high - low

    assert width(30, 100, 0.8) < width(30, 100, 0.95) < width(30, 100, 0.99)
    assert width(300, 1000, 0.95) < width(30, 100, 0.95) < width(3, 10, 0.95)


@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.95, 0.99])
def test_wilson_lower_bound_is_strictly_increasing_in_successes(confidence: float) -> None:
    # The monotonicity `decided` relies on, checked exhaustively for small n.
    for n in range(1, 80):
        lows = [wilson_interval(s, n, confidence)[0] for s in range(n + 1)]
        assert all(a < b for a, b in itertools.pairwise(lows)), n


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 10), "successes must be >= 0, got -1"),
        ((11, 10), "successes must be <= n=10, got 11"),
        ((0, -3), "n must be >= 0, got -3"),
        ((1, 10, 0.0), "confidence .* got 0.0"),
        ((1, 10, 1.0), "confidence .* got 1.0"),
        ((1, 10, 95), "confidence .* got 95"),
        ((1, 10, math.nan), "confidence .* got nan"),
    ],
)
def test_wilson_rejects_bad_arguments(args: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wilson_interval(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1.5, 3), r"successes must be an integer count, got 1\.5"),
        ((1.0, 3), r"successes must be an integer count, got 1\.0"),  # whole, still a float
        ((1, 3.0), r"n must be an integer count, got 3\.0"),
        ((True, 3), "successes must be an integer count, got True"),
        ((0, False), "n must be an integer count, got False"),
        ((1, "3"), "n must be an integer count, got '3'"),
    ],
)
def test_counts_must_be_integers_not_floats_or_bools(
    args: tuple[object, object], message: str
) -> None:
    """wilson_interval(1.5, 3) used to return an interval."""
    with pytest.raises(ValueError, match=message):
        wilson_interval(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        lambda: verdict(2.0, 4, pass_rate=0.5),  # type: ignore[arg-type]
        lambda: decided(1, 0.5, 4, pass_rate=0.5),  # type: ignore[arg-type]
        lambda: decided(1, 0, 4.0, pass_rate=0.5),  # type: ignore[arg-type]
        lambda: pass_at_k(5, 2, True),
        lambda: pass_hat_k(5.0, 2, 1),  # type: ignore[arg-type]
    ],
    ids=["verdict", "decided-failures", "decided-total", "pass-at-k-bool", "pass-hat-k"],
)
def test_every_count_argument_is_checked(call: object) -> None:
    with pytest.raises(ValueError, match="must be an integer count"):
        call()  # type: ignore[operator]


def test_integer_types_other_than_int_are_counts() -> None:
    numpy = pytest.importorskip("numpy")
    assert wilson_interval(numpy.int64(1), numpy.int64(3)) == pytest.approx(wilson_interval(1, 3))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, 2, 1, 2), r"passes cannot exceed runs: 3/2 against 1/2"),
        ((1, 2, 5, 4), r"passes cannot exceed runs: 1/2 against 5/4"),
        ((-1, 2, 1, 2), r"passed_a must be an integer count >= 0, got -1"),
        ((1, -2, 1, 2), r"n_a must be an integer count >= 0, got -2"),
        ((1, 2, 1.0, 2), r"passed_b must be an integer count >= 0, got 1\.0"),
        ((1, 2, 1, True), r"n_b must be an integer count >= 0, got True"),
    ],
)
def test_fisher_exact_rejects_impossible_tables(args: tuple[object, ...], message: str) -> None:
    """fisher_exact(3, 2, 1, 2) (more passes than runs) used to raise KeyError."""
    from pytest_llmlab.report.compare import fisher_exact

    with pytest.raises(ValueError, match=message):
        fisher_exact(*args)  # type: ignore[arg-type]
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(34 / 70)  # valid tables unchanged


# --------------------------------------------------------------------------- verdicts


def test_verdict_rate() -> None:
    assert verdict(8, 10, pass_rate=0.8, rule="rate") is True
    assert verdict(7, 10, pass_rate=0.8, rule="rate") is False
    assert verdict(7, 10, pass_rate=0.7) is True  # "rate" is the default
    assert verdict(2, 3, pass_rate=2 / 3) is True
    assert verdict(0, 5, pass_rate=0.0) is True
    assert verdict(4, 5, pass_rate=1.0) is False
    assert verdict(5, 5, pass_rate=1.0) is True


def test_verdict_wilson_needs_the_lower_bound() -> None:
    # 10/10 at 95 %: lower bound 0.7225.
    assert verdict(10, 10, pass_rate=0.7, rule="wilson", confidence=0.95) is True
    assert verdict(10, 10, pass_rate=0.8, rule="wilson", confidence=0.95) is False
    # 9/10: lower bound 0.5958 < 0.7 although the rate is 0.9.
    assert verdict(9, 10, pass_rate=0.7, rule="wilson") is False
    assert verdict(9, 10, pass_rate=0.7, rule="rate") is True
    # Lower confidence, narrower interval: 9/10 at 50 % has lower bound ~0.80.
    assert verdict(9, 10, pass_rate=0.75, rule="wilson", confidence=0.5) is True


@PROPERTIES
@given(
    n=st.integers(1, 300),
    data=st.data(),
    pass_rate=st.floats(0.0, 1.0),
    confidence=st.sampled_from([0.5, 0.9, 0.95, 0.99]),
)
def test_wilson_verdict_implies_rate_verdict(
    n: int, data: st.DataObject, pass_rate: float, confidence: float
) -> None:
    successes = data.draw(st.integers(0, n))
    if verdict(successes, n, pass_rate=pass_rate, rule="wilson", confidence=confidence):
        assert verdict(successes, n, pass_rate=pass_rate, rule="rate")


def test_decided_rate_examples() -> None:
    assert decided(0, 0, 10, pass_rate=0.8, rule="rate") is None
    assert decided(0, 2, 10, pass_rate=0.8, rule="rate") is None  # 8/10 still possible
    assert decided(0, 3, 10, pass_rate=0.8, rule="rate") is False  # at most 7/10
    assert decided(5, 3, 10, pass_rate=0.8, rule="rate") is False
    assert decided(7, 0, 10, pass_rate=0.8, rule="rate") is None
    assert decided(7, 2, 10, pass_rate=0.8, rule="rate") is None  # the last run decides
    assert decided(8, 0, 10, pass_rate=0.8, rule="rate") is True  # at least 8/10
    assert decided(8, 2, 10, pass_rate=0.8, rule="rate") is True
    assert decided(7, 3, 10, pass_rate=0.8, rule="rate") is False
    assert decided(0, 0, 10, pass_rate=0.0, rule="rate") is True  # nothing required


def test_decided_wilson_examples() -> None:
    # 95 % Wilson at 10 runs: even 10/10 only shows 0.7225, so 0.8 is out of reach.
    assert decided(0, 0, 10, pass_rate=0.8, rule="wilson") is False
    # pass_rate 0.7 needs 10/10: the first failure decides.
    assert decided(0, 0, 10, pass_rate=0.7, rule="wilson") is None
    assert decided(9, 0, 10, pass_rate=0.7, rule="wilson") is None
    assert decided(0, 1, 10, pass_rate=0.7, rule="wilson") is False
    assert decided(10, 0, 10, pass_rate=0.7, rule="wilson") is True


def test_decided_with_no_runs_left_is_the_verdict() -> None:
    for successes in range(11):
        for rule in RULES:
            expected = verdict(successes, 10, pass_rate=0.6, rule=rule)
            got = decided(successes, 10 - successes, 10, pass_rate=0.6, rule=rule)
            assert got is expected


def _final_verdicts(
    prefix: list[bool], total: int, *, pass_rate: float, rule: PassRule, confidence: float
) -> set[bool]:
    """The verdict of every completion of ``prefix`` to ``total`` runs, enumerated."""
    outcomes: set[bool] = set()
    for rest in itertools.product((True, False), repeat=total - len(prefix)):
        runs = [*prefix, *rest]
        outcomes.add(
            verdict(sum(runs), total, pass_rate=pass_rate, rule=rule, confidence=confidence)
        )
    return outcomes


@PROPERTIES
@given(
    total=st.integers(1, 9),
    data=st.data(),
    rule=st.sampled_from(RULES),
    confidence=st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99]),
)
def test_decided_never_disagrees_with_any_completion(
    total: int, data: st.DataObject, rule: PassRule, confidence: float
) -> None:
    # Pass rates on the boundaries (k/total, Wilson bounds) as well as arbitrary ones.
    boundaries = [k / total for k in range(total + 1)]
    boundaries += [wilson_interval(k, total, confidence)[0] for k in range(total + 1)]
    pass_rate = data.draw(st.sampled_from(boundaries) | st.floats(0.0, 1.0))
    runs = data.draw(st.lists(st.booleans(), min_size=total, max_size=total))
    final = verdict(sum(runs), total, pass_rate=pass_rate, rule=rule, confidence=confidence)
    earlier: bool | None = None
    for seen in range(total + 1):
        prefix = runs[:seen]
        successes = sum(prefix)
        got = decided(
            successes,
            seen - successes,
            total,
            pass_rate=pass_rate,
            rule=rule,
            confidence=confidence,
        )
        completions = _final_verdicts(
            prefix, total, pass_rate=pass_rate, rule=rule, confidence=confidence
        )
        if got is None:
            # Open means genuinely open: some completion passes, another fails.
            assert completions == {True, False}
        else:
            # Decided early means every completion gives that verdict...
            assert completions == {got}
            # ...including the one that happened, and it never flips back.
            assert got is final
            assert earlier is None or earlier is got
            earlier = got
    assert earlier is final  # with no runs left it is always decided


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: verdict(0, 0, pass_rate=0.5), "n must be >= 1 to give a verdict, got 0"),
        (lambda: verdict(3, 2, pass_rate=0.5), "successes must be <= n=2, got 3"),
        (lambda: verdict(1, 2, pass_rate=1.5), "pass_rate must be between 0 and 1, got 1.5"),
        (lambda: verdict(1, 2, pass_rate=-0.1), "pass_rate .* got -0.1"),
        (lambda: verdict(1, 2, pass_rate=math.nan), "pass_rate .* got nan"),
        (lambda: verdict(1, 2, pass_rate=0.5, rule="mean"), "rule must be one of .* got 'mean'"),  # type: ignore[arg-type]
        (lambda: verdict(1, 2, pass_rate=0.5, confidence=2.0), "confidence .* got 2.0"),
        (lambda: decided(-1, 0, 5, pass_rate=0.5), "successes must be >= 0, got -1"),
        (lambda: decided(0, -2, 5, pass_rate=0.5), "failures must be >= 0, got -2"),
        (lambda: decided(0, 0, 0, pass_rate=0.5), "total_runs must be >= 1, got 0"),
        (lambda: decided(3, 3, 5, pass_rate=0.5), r"total_runs=5, got 3 \+ 3 = 6"),
        (lambda: decided(0, 0, 5, pass_rate=2.0), "pass_rate .* got 2.0"),
        (lambda: decided(0, 0, 5, pass_rate=0.5, rule="x"), "rule .* got 'x'"),  # type: ignore[arg-type]
    ],
)
def test_verdict_and_decided_reject_bad_arguments(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


# --------------------------------------------------------------------------- pass@k


def _brute_force(n: int, c: int, k: int, *, need_all: bool) -> Fraction:
    """Share of the k-subsets of n samples (the first c passing) with any/all passing."""
    passing = [i < c for i in range(n)]
    subsets = list(itertools.combinations(range(n), k))
    check = all if need_all else any
    hits = sum(1 for subset in subsets if check(passing[i] for i in subset))
    return Fraction(hits, len(subsets))


def test_pass_at_k_matches_enumeration_of_all_k_subsets() -> None:
    for n in range(1, 10):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = _brute_force(n, c, k, need_all=False)
                assert pass_at_k(n, c, k) == pytest.approx(float(expected), abs=1e-12), (n, c, k)


def test_pass_hat_k_matches_enumeration_of_all_k_subsets() -> None:
    for n in range(1, 10):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = _brute_force(n, c, k, need_all=True)
                assert pass_hat_k(n, c, k) == pytest.approx(float(expected), abs=1e-12), (n, c, k)


@PROPERTIES
@given(n=st.integers(1, 1000), data=st.data())
def test_pass_at_k_and_pass_hat_k_match_exact_binomials(n: int, data: st.DataObject) -> None:
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    at_k = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    hat_k = Fraction(math.comb(c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(at_k), rel=1e-9, abs=1e-12)
    assert pass_hat_k(n, c, k) == pytest.approx(float(hat_k), rel=1e-9, abs=1e-300)
    # At least one passes = not all fail.
    assert pass_at_k(n, c, k) == pytest.approx(1 - pass_hat_k(n, n - c, k), abs=1e-12)


@PROPERTIES
@given(n=st.integers(1, 500), data=st.data())
def test_pass_at_1_and_pass_hat_1_are_the_rate(n: int, data: st.DataObject) -> None:
    c = data.draw(st.integers(0, n))
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, rel=1e-12, abs=1e-15)
    assert pass_hat_k(n, c, 1) == pytest.approx(c / n, rel=1e-12, abs=1e-15)


def test_pass_at_k_known_values_and_edges() -> None:
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 3) == 1.0
    assert pass_at_k(10, 6, 5) == 1.0  # n - c = 4 < k: every 5-subset has a pass
    assert pass_at_k(10, 5, 5) == pytest.approx(1 - 1 / 252)  # C(5,5)/C(10,5)
    assert pass_at_k(200, 10, 100) == pytest.approx(
        1 - math.comb(190, 100) / math.comb(200, 100), rel=1e-12
    )
    # Large n: the binomials overflow floats, the product form does not.
    assert math.comb(10_000, 5_000) > 10**3000
    assert 0.0 < pass_at_k(10_000, 1, 5_000) == pytest.approx(0.5)


def test_pass_hat_k_known_values_and_edges() -> None:
    assert pass_hat_k(10, 10, 7) == 1.0
    assert pass_hat_k(10, 3, 4) == 0.0  # fewer passes than draws
    assert pass_hat_k(10, 5, 2) == pytest.approx(20 / 90)  # 5/10 * 4/9
    assert pass_hat_k(10, 9, 10) == 0.0
    assert pass_hat_k(10_000, 9_999, 5_000) == pytest.approx(0.5)


def test_pass_at_k_grows_and_pass_hat_k_shrinks_with_k() -> None:
    at = [pass_at_k(20, 4, k) for k in range(1, 21)]
    hat = [pass_hat_k(20, 16, k) for k in range(1, 21)]
    assert all(a <= b for a, b in itertools.pairwise(at))
    assert all(a >= b for a, b in itertools.pairwise(hat))
    assert at[0] == pytest.approx(0.2)
    assert hat[0] == pytest.approx(0.8)


@pytest.mark.parametrize("function", [pass_at_k, pass_hat_k])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 0, 1), "n must be >= 0, got -1"),
        ((5, -1, 1), "c must be >= 0, got -1"),
        ((5, 1, -1), "k must be >= 0, got -1"),
        ((5, 6, 1), "c must be <= n=5, got 6"),
        ((5, 2, 6), "k must be <= n=5, got 6"),
        ((5, 2, 0), "k must be >= 1, got 0"),
        ((0, 0, 1), "k must be <= n=0, got 1"),
    ],
)
def test_pass_k_rejects_bad_arguments(
    function: object, args: tuple[int, int, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        function(*args)  # type: ignore[operator]


# --------------------------------------------------------------------------- percentile


def _numpy_linear(sorted_values: list[float], q: float) -> float:
    """numpy.percentile(..., method="linear") written out: h = (N-1)q/100, interpolate."""
    h = (len(sorted_values) - 1) * q / 100
    below = math.floor(h)
    above = min(below + 1, len(sorted_values) - 1)
    return sorted_values[below] + (h - below) * (sorted_values[above] - sorted_values[below])


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 0, 1.0),
        ([1, 2, 3, 4], 100, 4.0),
        ([1, 2, 3, 4], 25, 1.75),  # h = 0.75
        ([1, 3, 7, 15], 30, 2.8),  # h = 0.9: 1 + 0.9 * 2
        ([10, 20, 30, 40, 50], 5, 12.0),  # h = 0.2
        ([10, 20, 30, 40, 50], 95, 48.0),  # h = 3.8
        ([10, 20, 30, 40, 50], 50, 30.0),
        ([7.5], 5, 7.5),
        ([7.5], 95, 7.5),
        ([-2, -2, 5], 75, 1.5),  # h = 1.5: -2 + 0.5 * 7
    ],
)
def test_percentile_by_hand(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected, abs=1e-12)


@PROPERTIES
@given(
    values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40),
    q=st.floats(0, 100),
)
def test_percentile_is_the_numpy_linear_definition(values: list[float], q: float) -> None:
    values.sort()
    got = percentile(values, q)
    assert got == pytest.approx(_numpy_linear(values, q), rel=1e-9, abs=1e-6)
    assert values[0] <= got <= values[-1]


@PROPERTIES
@given(values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40))
def test_percentile_ends_and_middle(values: list[float]) -> None:
    values.sort()
    assert percentile(values, 0) == values[0]
    assert percentile(values, 100) == values[-1]
    assert percentile(values, 50) == pytest.approx(statistics.median(values), rel=1e-12, abs=1e-9)
    qs = [0, 5, 25, 50, 75, 95, 100]
    got = [percentile(values, q) for q in qs]
    assert all(a <= b for a, b in itertools.pairwise(got))


@pytest.mark.parametrize(
    ("values", "q", "message"),
    [
        ([], 50, "percentile of no values"),
        ([1.0], -1, "q must be between 0 and 100, got -1"),
        ([1.0], 100.5, "q .* got 100.5"),
        ([1.0], math.nan, "q .* got nan"),
        ([2.0, 1.0], 50, "sorted ascending .* index 0: 2.0 then 1.0"),
        ([1.0, math.nan, 3.0], 50, "sorted ascending without NaN"),
    ],
)
def test_percentile_rejects_bad_input(values: list[float], q: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        percentile(values, q)


# --------------------------------------------------------------------------- describe


def test_describe_known_data() -> None:
    data = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]  # sum of squared deviations 32
    s = describe(data)
    assert s.n == 8
    assert s.mean == 5.0
    assert s.median == 4.5
    assert s.std == pytest.approx(math.sqrt(32 / 7))  # ddof=1, not the population 2.0
    assert s.cv == pytest.approx(math.sqrt(32 / 7) / 5)
    assert (s.min, s.max) == (2.0, 9.0)
    assert s.p5 == pytest.approx(2.7)  # h = 7 * 0.05 = 0.35: 2 + 0.35 * 2
    assert s.p95 == pytest.approx(8.3)  # h = 6.65: 7 + 0.65 * 2
    assert s.confidence == 0.95
    assert s.ci_low < s.mean < s.ci_high
    assert s.min <= s.ci_low and s.ci_high <= s.max


def test_describe_cv_is_none_for_zero_mean_and_signed_otherwise() -> None:
    assert describe([-1.0, 1.0]).cv is None
    negative = describe([-1.0, -3.0])
    assert negative.cv == pytest.approx(-math.sqrt(2) / 2)


def test_describe_one_value() -> None:
    s = describe([3.5])
    assert s == MetricStats(
        n=1, mean=3.5, median=3.5, std=0.0, cv=0.0, min=3.5, max=3.5, p5=3.5, p95=3.5,
        ci_low=3.5, ci_high=3.5, confidence=0.95,
    )  # fmt: skip


def test_describe_identical_values_are_exact() -> None:
    # fsum(6 * x) / 6 rounds to one ulp below x; the mean must not leave the data.
    x = 682.8699668533343
    s = describe([x] * 6)
    assert (s.mean, s.median, s.min, s.max, s.p5, s.p95, s.ci_low, s.ci_high) == (x,) * 8
    assert (s.std, s.cv) == (0.0, 0.0)


@BOOTSTRAP_PROPERTIES
@given(values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30), seed=st.integers(0, 9))
def test_describe_orders_its_statistics(values: list[float], seed: int) -> None:
    s = describe(values, resamples=200, seed=seed)
    assert s.n == len(values)
    assert s.min <= s.p5 <= s.median <= s.p95 <= s.max
    assert s.min <= s.mean <= s.max
    assert s.min <= s.ci_low <= s.ci_high <= s.max
    assert s.std >= 0.0


def test_describe_drops_none_and_nan() -> None:
    s = describe([1.0, None, math.nan, 3.0, float("nan")])
    assert (s.n, s.mean, s.min, s.max) == (2, 2.0, 1.0, 3.0)
    assert describe([None, 4.0]).n == 1
    assert describe([1, 2, 3]).mean == 2.0  # ints are fine


@pytest.mark.parametrize("values", [[], [None], [math.nan, None, float("nan")]])
def test_describe_with_nothing_left_raises(values: list[float | None]) -> None:
    with pytest.raises(ValueError, match="^no values$"):
        describe(values)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": [1.0, math.inf]}, "values must be finite, got inf"),
        ({"values": [-math.inf]}, "values must be finite, got -inf"),
        ({"values": [1.0, 2.0], "confidence": 1.0}, "confidence .* got 1.0"),
        ({"values": [1.0], "confidence": 0.0}, "confidence .* got 0.0"),
        ({"values": [1.0, 2.0], "resamples": 0}, "resamples must be >= 1, got 0"),
    ],
)
def test_describe_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        describe(**kwargs)  # type: ignore[arg-type]


def test_describe_is_frozen() -> None:
    s = describe([1.0, 2.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.mean = 0.0  # type: ignore[misc]


@BOOTSTRAP_PROPERTIES
@given(
    centre=st.floats(-1e3, 1e3),
    offsets=st.lists(st.floats(0, 1e3), min_size=1, max_size=25),
)
def test_bootstrap_ci_contains_the_mean_of_symmetric_data(
    centre: float, offsets: list[float]
) -> None:
    data = [centre + d for d in offsets] + [centre - d for d in offsets]
    s = describe(data, resamples=400)
    assert s.mean == pytest.approx(centre, abs=1e-9)
    assert s.ci_low <= s.mean + 1e-9 and s.mean - 1e-9 <= s.ci_high
    assert s.min <= s.ci_low <= s.ci_high <= s.max


def test_bootstrap_ci_is_reproducible_for_a_seed() -> None:
    rng = random.Random(7)
    data = [rng.lognormvariate(0, 1) for _ in range(50)]
    assert describe(data) == describe(data)
    assert describe(data, seed=3) == describe(data, seed=3)
    first = (describe(data, seed=1).ci_low, describe(data, seed=1).ci_high)
    other = (describe(data, seed=2).ci_low, describe(data, seed=2).ci_high)
    assert first != other  # the seed is really used
    assert bootstrap_ci(data, seed=5) == bootstrap_ci(data, seed=5)
    assert bootstrap_ci(data) == (describe(data).ci_low, describe(data).ci_high)


def test_bootstrap_ci_narrows_with_more_data() -> None:
    base = [1.0, 2.0, 2.5, 4.0, 6.0, 6.5, 7.0, 9.0, 10.0, 12.0]
    widths = []
    for copies in (1, 4, 16):
        s = describe(base * copies, seed=11)
        widths.append(s.ci_high - s.ci_low)
    # Width ~ 1/sqrt(n): each quadrupling roughly halves it.
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] / widths[0] == pytest.approx(0.5, abs=0.1)
    assert widths[2] / widths[1] == pytest.approx(0.5, abs=0.1)


def test_bootstrap_ci_agrees_with_normal_theory() -> None:
    rng = random.Random(42)
    data = [rng.gauss(10.0, 2.0) for _ in range(200)]
    s = describe(data, confidence=0.95)
    n = len(data)
    # The bootstrap standard error of the mean is the plug-in sd / sqrt(n).
    half = Z95 * s.std * math.sqrt((n - 1) / n) / math.sqrt(n)
    assert (s.ci_high - s.ci_low) == pytest.approx(2 * half, rel=0.1)
    assert (s.ci_low + s.ci_high) / 2 == pytest.approx(s.mean, abs=0.1 * half)


def test_bootstrap_ci_widens_with_confidence() -> None:
    data = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0]
    narrow = bootstrap_ci(data, confidence=0.8, seed=0)
    wide = bootstrap_ci(data, confidence=0.99, seed=0)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_bootstrap_ci_of_another_statistic() -> None:
    data = [1.0, 2.0, 3.0, 4.0, 100.0]
    low, high = bootstrap_ci(data, statistics.median, resamples=500)
    assert 1.0 <= low <= 3.0 <= high <= 100.0
    assert bootstrap_ci([2.0], statistics.median) == (2.0, 2.0)
    assert bootstrap_ci([4.0]) == (4.0, 4.0)


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        ([], {}, "^no values$"),
        ([1.0, math.nan], {}, "values must be finite"),
        ([1.0, 2.0], {"resamples": -5}, "resamples must be >= 1, got -5"),
        ([1.0, 2.0], {"confidence": 1.5}, "confidence .* got 1.5"),
    ],
)
def test_bootstrap_ci_rejects_bad_arguments(
    values: list[float], kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(values, **kwargs)  # type: ignore[arg-type]
