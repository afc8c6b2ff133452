"""Compare two runs and gate on regressions that are real, not noise.

`compare_runs` pairs the records of a baseline and a current run by test: the test id
(which carries the parametrization id), the model and the temperature. For every pair,
and for every model over its paired tests, it reports the change of each `METRICS` entry:

============  =======================================================  =================
metric        per test (over the test's generations)                   change
============  =======================================================  =================
wh_per_1k     mean ``energy.wh_per_1k``                                relative %
joules        mean ``energy.joules``                                   relative %
ttft_p50      median ``ttft_s``                                        relative %
decode_tps    median ``decode_tokens_per_s``                           relative %
cost          mean cost per generation (see `prices.generation_cost`)  relative %
pass_rate     share of runs passed (``run_passed``; else the verdict)  percentage points
============  =======================================================  =================

Model values aggregate the paired tests' values (median for ``ttft_p50`` and
``decode_tps``, mean otherwise); the model's ``pass_rate`` is the share of its paired
tests that passed, by the outcome rule of `pytest_llmlab.report.summary` (the one the
terminal table, the HTML report and the leaderboard use): a test passed (``passed``/
``xpassed``) unless one of its records failed or errored; skipped and xfailed tests
are left out.

A change counts as a regression only when it is both **significant** and **beyond the
threshold** of a `RegressionCheck`, so run-to-run noise does not fail a build:

* per model, relative metrics: the mean of the per-test relative changes
  ``current/baseline - 1`` over the paired tests, with a seeded paired bootstrap 95 %
  confidence interval of that mean; significant when the interval excludes 0 on the
  checked side. Needs `MIN_SAMPLES` paired tests.
* per model, ``pass_rate``: the share of paired tests that passed, and McNemar's exact
  test on the tests that flipped (pass -> fail against fail -> pass, a two-sided
  binomial test at p = 1/2); significant when p < `ALPHA`.
* per test (repeated runs): relative metrics by a two-sample bootstrap over the test's
  generations (`MIN_SAMPLES` on each side); ``pass_rate`` by Fisher's exact test on the
  runs passed.

`parse_compare_fail` reads checks in pytest-benchmark's style: ``wh_per_1k:10%`` fails
when Wh/1k rose by more than 10 % (relative); ``pass_rate:-5%`` when the pass rate fell
by more than 5 percentage points (absolute); the sign gives the direction. A failure
message reads::

    model local:m: wh_per_1k 0.25 -> 0.35 (+40.0%, threshold +10%); 95% CI of the mean
    relative change over 20 paired tests: +38.1%..+41.9%

(one line). Runs on different hardware fingerprints get a warning: their energy and
speed are not comparable.
"""

from __future__ import annotations

import functools
import math
import numbers
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_llmlab.option_values import (
    COMPARE_METRICS,
    RegressionCheck,
    metric_unit,
    parse_compare_fail,
)
from pytest_llmlab.report.prices import Price, generation_cost
from pytest_llmlab.report.summary import energy_of, model_name, verdict_of_test
from pytest_llmlab.stats import bootstrap_ci, finite_or_none, percentile

__all__ = [
    "ALPHA",
    "METRICS",
    "MIN_SAMPLES",
    "Comparison",
    "Evidence",
    "MetricDelta",
    "ModelDelta",
    "PairDelta",
    "RegressionCheck",
    "compare_runs",
    "fisher_exact",
    "mcnemar_exact",
    "parse_compare_fail",
]

#: Significance level of every test (and 1 - ALPHA the confidence of the intervals).
ALPHA = 0.05
#: Fewest paired tests (model level) or generations per side (test level) to test.
MIN_SAMPLES = 3
_RESAMPLES = 2000
_SEED = 0

METRICS = COMPARE_METRICS
_MEDIAN = {"ttft_p50", "decode_tps"}
_RELATIVE = tuple(m for m in METRICS if m != "pass_rate")

Key = tuple[str, str, float | None]


# --------------------------------------------------------------------------- exact tests


def mcnemar_exact(pass_to_fail: int, fail_to_pass: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs at 1/2."""
    n = pass_to_fail + fail_to_pass
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(pass_to_fail, fail_to_pass) + 1))
    return min(1.0, 2 * tail / (1 << n))


def fisher_exact(passed_a: int, n_a: int, passed_b: int, n_b: int) -> float:
    """Two-sided Fisher exact p-value of ``passed_a/n_a`` against ``passed_b/n_b``.

    Sums the hypergeometric probabilities of every table with the same margins that is
    no more likely than the observed one. Raises ValueError unless every argument is an
    integer count and each side passed at most its runs.
    """
    counts = {"passed_a": passed_a, "n_a": n_a, "passed_b": passed_b, "n_b": n_b}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{name} must be an integer count >= 0, got {value!r}")
    if passed_a > n_a or passed_b > n_b:
        raise ValueError(f"passes cannot exceed runs: {passed_a}/{n_a} against {passed_b}/{n_b}")
    total, passes = n_a + n_b, passed_a + passed_b
    low, high = max(0, passes - n_b), min(passes, n_a)
    weights = {x: math.comb(n_a, x) * math.comb(n_b, passes - x) for x in range(low, high + 1)}
    observed = weights[passed_a]
    extreme = sum(w for w in weights.values() if w <= observed)
    return min(1.0, extreme / math.comb(total, passes))


# --------------------------------------------------------------------------- evidence


@dataclass(frozen=True, slots=True)
class Evidence:
    """Whether a change is more than noise: a CI (in %) or a p-value, and its wording."""

    ci: tuple[float, float] | None
    p_value: float | None
    text: str

    def shows(self, direction: int) -> bool:
        """Significant in ``direction`` (+1 a rise, -1 a fall)?"""
        if self.ci is not None:
            return self.ci[0] > 0 if direction > 0 else self.ci[1] < 0
        return self.p_value is not None and self.p_value < ALPHA


def _pct(value: float, unit: str = "%") -> str:
    return f"{value:+.1f}{unit}"


def _paired_evidence(changes: Sequence[float]) -> Evidence:
    n = len(changes)
    if n < MIN_SAMPLES:
        return Evidence(None, None, f"{n} paired tests, {MIN_SAMPLES} needed for a CI")
    low, high = bootstrap_ci(changes, confidence=1 - ALPHA, resamples=_RESAMPLES, seed=_SEED)
    return Evidence(
        (low * 100, high * 100),
        None,
        f"{1 - ALPHA:.0%} CI of the mean relative change over {n} paired tests: "
        f"{_pct(low * 100)}..{_pct(high * 100)}",
    )


def _two_sample_evidence(
    base: Sequence[float], cur: Sequence[float], statistic: Callable[[Sequence[float]], float]
) -> Evidence:
    if min(len(base), len(cur)) < MIN_SAMPLES:
        return Evidence(
            None, None, f"{len(base)} vs {len(cur)} generations, {MIN_SAMPLES} needed for a CI"
        )
    rng = random.Random(_SEED)
    replicates = []
    for _ in range(_RESAMPLES):
        denominator = statistic(rng.choices(base, k=len(base)))
        numerator = statistic(rng.choices(cur, k=len(cur)))
        if denominator != 0:
            replicates.append((numerator / denominator - 1) * 100)
    if not replicates:
        return Evidence(None, None, "baseline is 0")
    replicates.sort()
    tail = 100 * ALPHA / 2
    low, high = percentile(replicates, tail), percentile(replicates, 100 - tail)
    return Evidence(
        (low, high),
        None,
        f"{1 - ALPHA:.0%} CI of the relative change over {len(base)} vs {len(cur)} "
        f"generations: {_pct(low)}..{_pct(high)}",
    )


# --------------------------------------------------------------------------- deltas


@dataclass(frozen=True)
class MetricDelta:
    """One metric before and after. ``change`` is in percent (relative) or, for
    ``pass_rate``, percentage points; None when either side lacks the metric.
    ``evidence`` is computed on first use (a bootstrap is not free)."""

    metric: str
    baseline: float | None
    current: float | None
    change: float | None
    _evidence: Callable[[], Evidence] = field(repr=False, compare=False)

    @functools.cached_property
    def evidence(self) -> Evidence:
        return self._evidence()

    def values(self) -> str:
        """``0.2556 -> 0.3578`` (``100.0% -> 60.0%`` for the pass rate)."""
        return f"{_value(self.metric, self.baseline)} -> {_value(self.metric, self.current)}"


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}%" if metric == "pass_rate" else f"{value:.4g}"


@dataclass(frozen=True, slots=True)
class PairDelta:
    """One test on one model and temperature, in both runs."""

    test_id: str
    model: str
    temperature: float | None
    baseline_outcome: str | None
    current_outcome: str | None
    deltas: dict[str, MetricDelta]

    @property
    def label(self) -> str:
        temperature = "" if self.temperature is None else f", T={self.temperature:g}"
        return f"test {self.test_id} ({self.model}{temperature})"


@dataclass(frozen=True, slots=True)
class ModelDelta:
    """One model over its paired tests."""

    model: str
    n_pairs: int
    deltas: dict[str, MetricDelta]

    @property
    def label(self) -> str:
        return f"model {self.model}"


# --------------------------------------------------------------------------- samples


@dataclass
class _Samples:
    """What one test contributes: per-generation metric values, its runs passed, the
    outcomes of its records (the last one shown) and so its verdict."""

    values: dict[str, list[float]]
    runs: dict[int, bool]
    outcomes: list[Any] = field(default_factory=list)

    @property
    def outcome(self) -> str | None:
        """The last record's outcome, for display."""
        last = self.outcomes[-1] if self.outcomes else None
        return None if last is None else str(last)

    @property
    def verdict(self) -> bool | None:
        """Whether the test passed (`verdict_of_test`); None when it is not counted."""
        return verdict_of_test(self.outcomes)

    def pass_counts(self) -> tuple[int, int] | None:
        if self.runs:
            return sum(self.runs.values()), len(self.runs)
        return None if self.verdict is None else (int(self.verdict), 1)

    def value(self, metric: str) -> float | None:
        if metric == "pass_rate":
            counts = self.pass_counts()
            return None if counts is None else 100.0 * counts[0] / counts[1]
        values = self.values[metric]
        if not values:
            return None
        return statistics.median(values) if metric in _MEDIAN else statistics.fmean(values)


def _gather(
    records: Sequence[Mapping[str, Any]], prices: Mapping[str, Price], kwh_price: float | None
) -> dict[Key, _Samples]:
    tests: dict[Key, _Samples] = {}
    for record in records:
        temperature = finite_or_none(record.get("temperature"))
        key = (str(record.get("test_id")), model_name(record), temperature)
        samples = tests.get(key)
        if samples is None:
            samples = tests[key] = _Samples({m: [] for m in _RELATIVE}, {})
        energy = energy_of(record)
        readings = {
            "wh_per_1k": energy.get("wh_per_1k"),
            "joules": energy.get("joules"),
            "ttft_p50": record.get("ttft_s"),
            "decode_tps": record.get("decode_tokens_per_s"),
            "cost": generation_cost(record, prices, kwh_price)[0],
        }
        for metric, raw in readings.items():
            value = finite_or_none(raw)
            if value is not None:
                samples.values[metric].append(value)
        run, run_passed = record.get("run"), record.get("run_passed")
        if isinstance(run, int) and isinstance(run_passed, bool):
            samples.runs[run] = run_passed
        samples.outcomes.append(record.get("outcome"))
    return tests


# --------------------------------------------------------------------------- comparing


def _pair_delta(metric: str, base: _Samples, cur: _Samples) -> MetricDelta:
    before, after = base.value(metric), cur.value(metric)
    change: float | None = None
    if metric == "pass_rate":
        if before is not None and after is not None:
            change = after - before
        counts = base.pass_counts(), cur.pass_counts()

        def evidence() -> Evidence:
            a, b = counts
            if a is None or b is None:
                return Evidence(None, None, "no outcome to test")
            p = fisher_exact(a[0], a[1], b[0], b[1])
            return Evidence(
                None, p, f"Fisher exact p={p:.2g} ({a[0]}/{a[1]} -> {b[0]}/{b[1]} runs passed)"
            )
    else:
        if before is not None and after is not None and before != 0:
            change = (after / before - 1) * 100
        statistic = statistics.median if metric in _MEDIAN else statistics.fmean

        def evidence() -> Evidence:
            return _two_sample_evidence(base.values[metric], cur.values[metric], statistic)

    return MetricDelta(metric, before, after, change, evidence)


def _model_delta(metric: str, pairs: Sequence[tuple[_Samples, _Samples]]) -> MetricDelta:
    if metric == "pass_rate":
        flips = [0, 0]
        passes = [0, 0]
        n = 0
        for base, cur in pairs:
            was, now = base.verdict, cur.verdict
            if was is None or now is None:
                continue
            n += 1
            passes[0] += was
            passes[1] += now
            if was != now:
                flips[0 if was else 1] += 1
        if n == 0:
            return MetricDelta(metric, None, None, None, lambda: Evidence(None, None, "no tests"))
        p = mcnemar_exact(flips[0], flips[1])
        text = (
            f"McNemar exact p={p:.2g} ({flips[0]} pass->fail, {flips[1]} fail->pass "
            f"over {n} paired tests)"
        )
        before_rate, after_rate = 100.0 * passes[0] / n, 100.0 * passes[1] / n
        return MetricDelta(
            metric, before_rate, after_rate, after_rate - before_rate,
            lambda: Evidence(None, p, text),
        )  # fmt: skip
    befores, afters, changes = [], [], []
    for base, cur in pairs:
        before, after = base.value(metric), cur.value(metric)
        if before is None or after is None or before == 0:
            continue
        befores.append(before)
        afters.append(after)
        changes.append(after / before - 1)
    if not changes:
        return MetricDelta(metric, None, None, None, lambda: Evidence(None, None, "no values"))
    aggregate = statistics.median if metric in _MEDIAN else statistics.fmean
    return MetricDelta(
        metric, aggregate(befores), aggregate(afters), statistics.fmean(changes) * 100,
        lambda: _paired_evidence(changes),
    )  # fmt: skip


def _fingerprints(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    seen: dict[str, str] = {}
    for record in records:
        fingerprint = record.get("fingerprint")
        if isinstance(fingerprint, str) and fingerprint:
            seen.setdefault(fingerprint, str(record.get("cpu_model") or "unknown CPU"))
    return seen


def _hardware_warning(
    base: Sequence[Mapping[str, Any]], cur: Sequence[Mapping[str, Any]]
) -> str | None:
    before, after = _fingerprints(base), _fingerprints(cur)
    if not before or not after or set(before) == set(after):
        return None

    def name(prints: dict[str, str]) -> str:
        return ", ".join(f"{fp} ({cpu})" for fp, cpu in sorted(prints.items()))

    return (
        f"the runs come from different hardware: baseline {name(before)}, current "
        f"{name(after)}; energy and speed changes may be the machine, not the code"
    )


@dataclass(frozen=True, slots=True)
class Comparison:
    """The result of `compare_runs`: per test and per model deltas, and warnings."""

    pairs: list[PairDelta]
    models: list[ModelDelta]
    only_baseline: list[Key]
    only_current: list[Key]
    warnings: list[str]

    def failures(self, checks: Sequence[RegressionCheck]) -> list[str]:
        """One line per regression, models first, then tests; empty when none."""
        lines: list[str] = []
        subjects: list[ModelDelta | PairDelta] = [*self.models, *self.pairs]
        for subject in subjects:
            for check in checks:
                delta = subject.deltas[check.metric]
                if check.violated_by(delta):
                    assert delta.change is not None
                    lines.append(
                        f"{subject.label}: {check.metric} {delta.values()} "
                        f"({_pct(delta.change, metric_unit(check.metric))}, threshold "
                        f"{check.threshold()}); {delta.evidence.text}"
                    )
        return lines

    def table(self) -> list[str]:
        """Terminal lines: every paired test's changes, then each model's summary."""
        shown = [m for m in METRICS if any(p.deltas[m].change is not None for p in self.pairs)]
        header = ["test", "model", "T", "outcome", *shown]
        rows = [header]
        for pair in self.pairs:
            outcome = str(pair.baseline_outcome)
            if pair.current_outcome != pair.baseline_outcome:
                outcome += f"->{pair.current_outcome}"
            temperature = "" if pair.temperature is None else f"{pair.temperature:g}"
            changes = []
            for metric in shown:
                change = pair.deltas[metric].change
                changes.append("n/a" if change is None else _pct(change, metric_unit(metric)))
            rows.append([pair.test_id, pair.model, temperature, outcome, *changes])
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        if not self.pairs:
            lines = ["no test ran in both runs: nothing to compare"]
        for model in self.models:
            lines.append(f"{model.label} ({model.n_pairs} paired tests):")
            for delta in model.deltas.values():
                if delta.change is None:
                    lines.append(f"  {delta.metric:<11} {delta.values()}")
                    continue
                lines.append(
                    f"  {delta.metric:<11} {delta.values()} "
                    f"({_pct(delta.change, metric_unit(delta.metric))}); {delta.evidence.text}"
                )
        return lines


def compare_runs(
    baseline_records: Sequence[Mapping[str, Any]],
    current_records: Sequence[Mapping[str, Any]],
    *,
    prices: Mapping[str, Price] | None = None,
    kwh_price: float | None = None,
) -> Comparison:
    """Pair two runs' records by test and compute every metric's change.

    ``prices`` and ``kwh_price`` price the generations for the ``cost`` metric (see
    `prices.generation_cost`); without them the cost each record carries is used.
    """
    table = prices or {}
    base, cur = (
        _gather(baseline_records, table, kwh_price),
        _gather(current_records, table, kwh_price),
    )
    keys = [key for key in base if key in cur]
    pairs = [
        PairDelta(
            test_id=key[0],
            model=key[1],
            temperature=key[2],
            baseline_outcome=base[key].outcome,
            current_outcome=cur[key].outcome,
            deltas={m: _pair_delta(m, base[key], cur[key]) for m in METRICS},
        )
        for key in keys
    ]
    by_model: dict[str, list[tuple[_Samples, _Samples]]] = {}
    for key in keys:
        by_model.setdefault(key[1], []).append((base[key], cur[key]))
    models = [
        ModelDelta(model, len(group), {m: _model_delta(m, group) for m in METRICS})
        for model, group in by_model.items()
    ]
    only_baseline = [key for key in base if key not in cur]
    only_current = [key for key in cur if key not in base]
    warnings: list[str] = []
    hardware = _hardware_warning(baseline_records, current_records)
    if hardware is not None:
        warnings.append(hardware)
    if not keys:
        warnings.append("no test ran in both runs: nothing to compare")
    if only_baseline or only_current:
        warnings.append(
            f"{len(only_baseline)} test(s) only in the baseline and {len(only_current)} only "
            "in the current run were not compared"
        )
    return Comparison(pairs, models, only_baseline, only_current, warnings)
