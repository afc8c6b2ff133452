"""One summary per model, and the one rule for whether a test passed.

Every report counts tests and summarises models here, so they agree: the terminal
table and GitHub's job summary (`pytest_llmlab.report.terminal`), ``report.html``, the
leaderboard and ``llmlab compare``.

**Outcomes**, as pytest counts them (`outcome_passed`): a record whose ``outcome`` is
``passed`` or ``xpassed`` (`PASSING`) passed; ``skipped``, ``xfailed`` (pytest reports
an expected failure as a skip) and ``deselected`` (`NOT_COUNTED`) are not counted;
``failed``, ``error``, and a missing or unknown outcome failed. A test (one
``test_id``) with several records failed when any record failed, else passed when any
record passed, and is not counted when none of them is (`verdict_of_test`,
`verdicts_by_test`). The records of a repeated test carry the test's decided outcome;
``run_passed`` belongs to one run and plays no part in the verdict.

**Models** (`model_summary`): one `ModelRow` per model (its display name,
``record["model"]``, in first-seen order) with the generations, the pass rate over its
counted tests, Wh per 1000 output tokens (mean, 95 % confidence interval, quartiles),
total Wh, decode speed, time to first token, cost, carbon and where the energy figures
come from (`provenance_mix`).

**Intervals** of the mean Wh/1k, all by `pytest_llmlab.stats.describe`
(`mean_interval`): a seeded bootstrap for models with up to `BOOTSTRAP_MAX_N`
readings, sharing `BOOTSTRAP_DRAWS` (resamples x values) among the models of one
summary (`interval_plan`); above it the normal interval ``mean ± 1.96·s/√n``, which the
bootstrap interval of a mean approaches for large n, so the cost stays bounded.

Pure Python: loading this module does not import pandas.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_llmlab.energy.reading import PROVENANCE_ORDER
from pytest_llmlab.stats import MetricStats, describe, finite_or_none, percentile

__all__ = [
    "BOOTSTRAP_DRAWS",
    "BOOTSTRAP_MAX_N",
    "CONFIDENCE",
    "NOT_COUNTED",
    "PASSING",
    "ModelRow",
    "energy_of",
    "finite_values",
    "interval_plan",
    "is_judge_call",
    "mean_interval",
    "model_name",
    "model_summary",
    "outcome_passed",
    "points_by_test",
    "provenance_mix",
    "verdict_of_test",
    "verdicts_by_test",
]

#: Outcomes of a test that passed.
PASSING = frozenset({"passed", "xpassed"})
#: Outcomes of a test that is not counted: neither passed nor failed.
NOT_COUNTED = frozenset({"skipped", "xfailed", "deselected"})

#: Above this many readings a model's Wh/1k interval is the normal approximation.
BOOTSTRAP_MAX_N = 2000
#: Bootstrap draws (resamples x values) shared by all models of one summary.
BOOTSTRAP_DRAWS = 2_000_000
#: The confidence of the Wh/1k intervals.
CONFIDENCE = 0.95
_MIN_RESAMPLES = 200
_MAX_RESAMPLES = 2000
_Z = statistics.NormalDist().inv_cdf((1 + CONFIDENCE) / 2)  # 1.959963984540054

_EMPTY: Mapping[str, Any] = {}


# --------------------------------------------------------------------------- outcomes


def outcome_passed(outcome: object) -> bool | None:
    """True for a `PASSING` outcome, None for a `NOT_COUNTED` one, False for any
    other (``failed``, ``error``, None, an unknown value)."""
    if isinstance(outcome, str):
        if outcome in PASSING:
            return True
        if outcome in NOT_COUNTED:
            return None
    return False


def verdict_of_test(outcomes: Iterable[object]) -> bool | None:
    """The verdict of one test from the outcomes of its records: False when any
    record failed, else True when any passed, else None (not counted)."""
    verdict: bool | None = None
    for outcome in outcomes:
        passed = outcome_passed(outcome)
        if passed is False:
            return False
        if passed:
            verdict = True
    return verdict


def verdicts_by_test(records: Iterable[Mapping[str, Any]]) -> dict[str, bool]:
    """Test id -> whether the test passed (`verdict_of_test` of its records' outcomes),
    in first-seen order; tests that are not counted are absent."""
    outcomes: dict[str, list[object]] = {}
    for record in records:
        outcomes.setdefault(str(record.get("test_id")), []).append(record.get("outcome"))
    verdicts = {test: verdict_of_test(seen) for test, seen in outcomes.items()}
    return {test: verdict for test, verdict in verdicts.items() if verdict is not None}


def is_judge_call(record: Mapping[str, Any]) -> bool:
    """Whether the record is an LLM judge's generation (``judge_for`` set): metered and
    kept in the files, but no test's result and no model's score."""
    return bool(record.get("judge_for"))


def points_by_test(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """Test id -> ``(points scored, most possible)``, for the counted tests
    (`verdicts_by_test`), in first-seen order.

    A Python test is worth 1 point, scored when it passed. A prompt-suite case is worth
    its ``max_points``; it scores the mean over its runs of each run's ``points``, when
    its checks carry points of their own (partial credit, whatever the outcome), else
    only when the test passed (a case that met its checks but broke a budget scores 0).
    """
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        if not is_judge_call(record):
            grouped.setdefault(str(record.get("test_id")), []).append(record)
    verdicts = verdicts_by_test(r for rs in grouped.values() for r in rs)
    scores: dict[str, tuple[float, float]] = {}
    for test, passed in verdicts.items():
        group = grouped[test]
        most = [float(r["max_points"]) for r in group if r.get("max_points") is not None]
        if not most:
            scores[test] = (1.0 if passed else 0.0, 1.0)
            continue
        partial = any(
            check.get("points") is not None for r in group for check in r.get("checks") or ()
        )
        if not partial and not passed:
            scores[test] = (0.0, max(most))
            continue
        earned = [float(r.get("points") or 0.0) for r in group if r.get("max_points") is not None]
        scores[test] = (statistics.fmean(earned), max(most))
    return scores


# --------------------------------------------------------------------------- fields


def model_name(record: Mapping[str, Any]) -> str:
    """The model's display name, ``"?"`` when a record has none."""
    model = record.get("model")
    return "?" if model is None else str(model)


def energy_of(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The record's energy reading, or an empty mapping (None or not a dict)."""
    energy = record.get("energy")
    return energy if isinstance(energy, Mapping) else _EMPTY


def finite_values(values: Iterable[object]) -> list[float]:
    """The finite numbers among ``values`` (`finite_or_none`), as floats."""
    return [v for v in map(finite_or_none, values) if v is not None]


def provenance_mix(records: Iterable[Mapping[str, Any]]) -> str:
    """``"estimated"`` when every reading has one provenance, else counts from the
    strongest provenance to the weakest: ``"measured 8, estimated 2"``. A record
    without an energy reading counts as ``unavailable``."""
    counts: dict[str, int] = {}
    for record in records:
        name = str(energy_of(record).get("provenance") or "unavailable")
        counts[name] = counts.get(name, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    rank = {str(p): i for i, p in enumerate(PROVENANCE_ORDER)}
    ordered = sorted(counts, key=lambda p: rank.get(p, len(rank)))  # stable: seen order
    return ", ".join(f"{p} {counts[p]}" for p in ordered)


# --------------------------------------------------------------------------- intervals


def interval_plan(sizes: Mapping[str, int]) -> dict[str, int]:
    """Bootstrap resamples per model from its number of readings (0: the normal
    interval).

    Models above `BOOTSTRAP_MAX_N` readings use the normal interval; the others share
    `BOOTSTRAP_DRAWS` (resamples x values), each getting the same number of resamples
    between 200 and 2000. Should even 200 be too many, the largest models move to the
    normal interval until the rest fit, so the cost stays bounded for any input.
    """
    boot = {m for m, n in sizes.items() if 1 < n <= BOOTSTRAP_MAX_N}
    total = sum(sizes[m] for m in boot)
    for model in sorted(boot, key=lambda m: (-sizes[m], m)):
        if total * _MIN_RESAMPLES <= BOOTSTRAP_DRAWS:
            break
        boot.discard(model)
        total -= sizes[model]
    resamples = max(_MIN_RESAMPLES, min(_MAX_RESAMPLES, BOOTSTRAP_DRAWS // max(total, 1)))
    return {m: (resamples if m in boot or n <= 1 else 0) for m, n in sizes.items()}


def mean_interval(values: Sequence[float], resamples: int) -> MetricStats:
    """`describe` of ``values`` at `CONFIDENCE` with ``resamples`` bootstrap
    resamples; with ``resamples`` 0 the same statistics with the normal interval of
    the mean, ``mean ± z·s/√n``, instead (for large samples)."""
    if resamples:
        return describe(values, confidence=CONFIDENCE, resamples=resamples)
    stats = describe(values, confidence=CONFIDENCE, resamples=1)
    half = _Z * stats.std / math.sqrt(stats.n)
    return dataclasses.replace(stats, ci_low=stats.mean - half, ci_high=stats.mean + half)


# --------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class ModelRow:
    """The summary of one model's records (see `model_summary`).

    ``n`` counts generations (records), ``tests`` the counted tests (distinct test
    ids, see `verdicts_by_test`) and ``passed`` those that passed. ``wh_per_1k_*``
    summarise the ``wh_per_1k_n`` generations with an energy figure (None without
    any): the mean and its 95 % interval (`mean_interval`, with
    ``wh_per_1k_resamples`` bootstrap resamples, 0 for the normal interval), the
    quartiles, and every `MetricStats` figure in ``wh_per_1k_stats``. ``total_wh``
    sums ``wh`` over the ``wh_n`` readings that have it. ``decode_tokens_per_s`` is a
    median, ``ttft_p50_s`` and ``ttft_p95_s`` percentiles with linear interpolation;
    ``cost`` sums the records' token prices (``cost``) or, for the others, their
    energy's cost; ``gco2e`` sums over the readings that have it. ``provenance``
    is `provenance_mix`.
    """

    model: str
    temperatures: tuple[float, ...]
    n: int
    tests: int
    passed: int
    wh_per_1k_n: int
    wh_per_1k_mean: float | None
    wh_per_1k_ci_low: float | None
    wh_per_1k_ci_high: float | None
    decode_tokens_per_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    cost: float | None
    gco2e: float | None
    provenance: str
    wh_per_1k_stats: MetricStats | None = None
    wh_per_1k_q1: float | None = None
    wh_per_1k_q3: float | None = None
    wh_per_1k_resamples: int = 0
    total_wh: float | None = None
    wh_n: int = 0

    @property
    def pass_rate(self) -> float | None:
        """``passed / tests``; None without counted tests."""
        return self.passed / self.tests if self.tests else None

    @property
    def wh_per_1k_half_ci(self) -> float | None:
        """Half the width of the Wh/1k confidence interval (the ``±`` of the tables)."""
        if self.wh_per_1k_ci_low is None or self.wh_per_1k_ci_high is None:
            return None
        return (self.wh_per_1k_ci_high - self.wh_per_1k_ci_low) / 2.0

    @property
    def ci_method(self) -> str:
        """``"bootstrap"`` or ``"normal"``: how the Wh/1k interval was computed."""
        return "bootstrap" if self.wh_per_1k_resamples else "normal"


def _summarise(
    model: str, records: list[Mapping[str, Any]], wh_per_1k: list[float], resamples: int
) -> ModelRow:
    verdicts = verdicts_by_test(records)
    energies = [energy_of(r) for r in records]
    temperatures = dict.fromkeys(finite_values(r.get("temperature") for r in records))
    stats = mean_interval(wh_per_1k, resamples) if wh_per_1k else None
    ordered = sorted(wh_per_1k)
    wh = finite_values(e.get("wh") for e in energies)
    decode = finite_values(r.get("decode_tokens_per_s") for r in records)
    ttft = sorted(finite_values(r.get("ttft_s") for r in records))
    # A cloud generation's price at its tokens (the record's ``cost``), else what its
    # energy cost (``energy.cost``): the one figure the leaderboard and budgets use too.
    costs = finite_values(
        r.get("cost") if r.get("cost") is not None else e.get("cost")
        for r, e in zip(records, energies, strict=True)
    )
    carbon = finite_values(e.get("gco2e") for e in energies)
    return ModelRow(
        model=model,
        temperatures=tuple(temperatures),
        n=len(records),
        tests=len(verdicts),
        passed=sum(verdicts.values()),
        wh_per_1k_n=len(wh_per_1k),
        wh_per_1k_mean=None if stats is None else stats.mean,
        wh_per_1k_ci_low=None if stats is None else stats.ci_low,
        wh_per_1k_ci_high=None if stats is None else stats.ci_high,
        decode_tokens_per_s=statistics.median(decode) if decode else None,
        ttft_p50_s=percentile(ttft, 50.0) if ttft else None,
        ttft_p95_s=percentile(ttft, 95.0) if ttft else None,
        cost=math.fsum(costs) if costs else None,
        gco2e=math.fsum(carbon) if carbon else None,
        provenance=provenance_mix(records),
        wh_per_1k_stats=stats,
        wh_per_1k_q1=percentile(ordered, 25.0) if ordered else None,
        wh_per_1k_q3=percentile(ordered, 75.0) if ordered else None,
        wh_per_1k_resamples=resamples if stats is not None else 0,
        total_wh=math.fsum(wh) if wh else None,
        wh_n=len(wh),
    )


def model_summary(records: Iterable[Mapping[str, Any]]) -> list[ModelRow]:
    """One `ModelRow` per model (`model_name`), in the order the models first
    appear. Records that are not mappings are ignored, and so are an LLM judge's
    (`is_judge_call`)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        if isinstance(record, Mapping) and not is_judge_call(record):
            groups.setdefault(model_name(record), []).append(record)
    wh = {m: finite_values(energy_of(r).get("wh_per_1k") for r in g) for m, g in groups.items()}
    plan = interval_plan({m: len(values) for m, values in wh.items()})
    return [_summarise(m, g, wh[m], plan[m]) for m, g in groups.items()]
