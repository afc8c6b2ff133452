"""Records as a table: the CSV columns (`records_frame`) and per-model summaries.

`records_frame` flattens each record (one generation) into one row of `CSV_COLUMNS`:
the record's own fields, its ``energy`` reading (components, GPU statistics, carbon,
cost) and its ``confidence`` metrics. A field a record lacks (no energy reading, no
logprobs, no GPU) is a missing value, an empty cell in the CSV. Columns are typed:
nullable integers (``Int64``), floats (NaN for missing), nullable booleans
(``boolean``) and nullable strings (``string``); a column whose values do not fit its
type (a hand-edited file) is kept as objects rather than rejected.

`model_summary` condenses the records into one `ModelRow` per model (its display name,
in first-seen order): generations, pass rate over distinct tests, Wh per 1000 output
tokens with a bootstrap confidence interval, decode speed, time to first token, cost
and the provenance of the energy figures. It is pure Python: only `records_frame`
needs pandas, imported on first use so loading the plugin stays fast.
"""

from __future__ import annotations

import importlib
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any

from pytest_llmlab.energy.reading import PROVENANCE_ORDER
from pytest_llmlab.stats import describe, percentile

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped]

__all__ = [
    "BOOTSTRAP_DRAWS",
    "BOOTSTRAP_MAX_N",
    "CSV_COLUMNS",
    "PASSING",
    "ModelRow",
    "model_summary",
    "provenance_mix",
    "records_frame",
]

#: The columns of ``results.csv``, in order (see `records_frame`).
CSV_COLUMNS: tuple[str, ...] = (
    "test_id",
    "suite",
    "category",
    "model",
    "alias",
    "spec",
    "provider",
    "temperature",
    "run",
    "outcome",
    "run_passed",
    "prompt_tokens",
    "completion_tokens",
    "ttft_s",
    "total_s",
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "tokens_per_s",
    "finish_reason",
    "joules",
    "cpu_joules",
    "cpu_provenance",
    "dram_joules",
    "dram_provenance",
    "gpu_joules",
    "gpu_provenance",
    "wh",
    "wh_per_1k",
    "prefill_joules",
    "decode_joules",
    "provenance",
    "measured",
    "low_confidence",
    "baseline_w",
    "net_joules",
    "gross_joules",
    "gpu_util_avg",
    "gpu_util_max",
    "gpu_mem_avg_mb",
    "gpu_mem_peak_mb",
    "gpu_temp_avg_c",
    "gpu_temp_max_c",
    "gpu_power_avg_w",
    "gpu_power_max_w",
    "mean_prob",
    "min_prob",
    "first_token_prob",
    "perplexity",
    "entropy",
    "cost",
    "gco2e",
    "host",
    "worker",
    "fingerprint",
    "cpu_model",
)

#: Upper bound on bootstrap draws (resamples x values) per model in `model_summary`:
#: 2000 resamples up to 500 generations, fewer beyond (200 at 5000).
BOOTSTRAP_DRAWS = 1_000_000
#: Above this many values the interval of the mean is the normal one (see `ModelRow`):
#: the bootstrap would cost seconds per model and give the same interval.
BOOTSTRAP_MAX_N = 5_000

_INT = "Int64"
_FLOAT = "float64"
_BOOL = "boolean"
_TEXT = "string"

# Where each column comes from: (source, key, dtype). Sources: "record" (top level),
# "energy", "cpu"/"dram"/"gpu" (energy components), "gpu_stats", "confidence".
_SOURCES: dict[str, tuple[str, str, str]] = {
    "test_id": ("record", "test_id", _TEXT),
    "suite": ("record", "suite", _TEXT),
    "category": ("record", "category", _TEXT),
    "model": ("record", "model", _TEXT),
    "alias": ("record", "alias", _TEXT),
    "spec": ("record", "spec", _TEXT),
    "provider": ("record", "provider", _TEXT),
    "temperature": ("record", "temperature", _FLOAT),
    "run": ("record", "run", _INT),
    "outcome": ("record", "outcome", _TEXT),
    "run_passed": ("record", "run_passed", _BOOL),
    "prompt_tokens": ("record", "prompt_tokens", _INT),
    "completion_tokens": ("record", "completion_tokens", _INT),
    "ttft_s": ("record", "ttft_s", _FLOAT),
    "total_s": ("record", "total_s", _FLOAT),
    "prefill_tokens_per_s": ("record", "prefill_tokens_per_s", _FLOAT),
    "decode_tokens_per_s": ("record", "decode_tokens_per_s", _FLOAT),
    "tokens_per_s": ("record", "tokens_per_s", _FLOAT),
    "finish_reason": ("record", "finish_reason", _TEXT),
    "joules": ("energy", "joules", _FLOAT),
    "cpu_joules": ("cpu", "joules", _FLOAT),
    "cpu_provenance": ("cpu", "provenance", _TEXT),
    "dram_joules": ("dram", "joules", _FLOAT),
    "dram_provenance": ("dram", "provenance", _TEXT),
    "gpu_joules": ("gpu", "joules", _FLOAT),
    "gpu_provenance": ("gpu", "provenance", _TEXT),
    "wh": ("energy", "wh", _FLOAT),
    "wh_per_1k": ("energy", "wh_per_1k", _FLOAT),
    "prefill_joules": ("energy", "prefill_joules", _FLOAT),
    "decode_joules": ("energy", "decode_joules", _FLOAT),
    "provenance": ("energy", "provenance", _TEXT),
    "measured": ("energy", "measured", _BOOL),
    "low_confidence": ("energy", "low_confidence", _BOOL),
    "baseline_w": ("energy", "baseline_w", _FLOAT),
    "net_joules": ("energy", "net_joules", _FLOAT),
    "gross_joules": ("energy", "gross_joules", _FLOAT),
    "gpu_util_avg": ("gpu_stats", "util_avg", _FLOAT),
    "gpu_util_max": ("gpu_stats", "util_max", _FLOAT),
    "gpu_mem_avg_mb": ("gpu_stats", "mem_avg_mb", _FLOAT),
    "gpu_mem_peak_mb": ("gpu_stats", "mem_peak_mb", _FLOAT),
    "gpu_temp_avg_c": ("gpu_stats", "temp_avg_c", _FLOAT),
    "gpu_temp_max_c": ("gpu_stats", "temp_max_c", _FLOAT),
    "gpu_power_avg_w": ("gpu_stats", "power_avg_w", _FLOAT),
    "gpu_power_max_w": ("gpu_stats", "power_max_w", _FLOAT),
    "mean_prob": ("confidence", "mean_prob", _FLOAT),
    "min_prob": ("confidence", "min_prob", _FLOAT),
    "first_token_prob": ("confidence", "first_token_prob", _FLOAT),
    "perplexity": ("confidence", "perplexity", _FLOAT),
    "entropy": ("confidence", "entropy", _FLOAT),
    "cost": ("energy", "cost", _FLOAT),
    "gco2e": ("energy", "gco2e", _FLOAT),
    "host": ("record", "host", _TEXT),
    "worker": ("record", "worker", _TEXT),
    "fingerprint": ("record", "fingerprint", _TEXT),
    "cpu_model": ("record", "cpu_model", _TEXT),
}
assert tuple(_SOURCES) == CSV_COLUMNS

_EMPTY: dict[str, Any] = {}


def _dicts(values: Iterable[Any]) -> list[dict[str, Any]]:
    """Each value if it is a dict, else an empty one (None, or a hand-edited oddity)."""
    return [v if isinstance(v, dict) else _EMPTY for v in values]


def _pandas() -> Any:
    """The pandas module, imported on first use (it takes most of a second)."""
    return importlib.import_module("pandas")


_NONE = type(None)
# The Python types each column type takes as is (None is missing).
_ACCEPTS: dict[str, frozenset[type]] = {
    _FLOAT: frozenset({float, int, _NONE}),
    _INT: frozenset({int, _NONE}),
    _BOOL: frozenset({bool, _NONE}),
    _TEXT: frozenset({str, _NONE}),
}


def _typed(values: list[Any], dtype: str) -> Any:
    """A column of ``dtype`` from plain values, or of objects (the values unchanged)
    when any value is of another type (``"8"`` or ``True`` among integers)."""
    import numpy  # a pandas dependency

    if set(map(type, values)) <= _ACCEPTS[dtype]:
        try:
            if dtype == _FLOAT:
                return numpy.array(values, dtype=float)
            return _pandas().array(values, dtype=dtype)
        except (OverflowError, TypeError, ValueError):  # an integer beyond 64 bits
            pass
    objects = numpy.empty(len(values), dtype=object)
    objects[:] = values  # element by element: a list value stays one cell
    return _pandas().array(objects, dtype=object)


def records_frame(records: Sequence[dict[str, Any]]) -> pandas.DataFrame:
    """One row per record with the columns `CSV_COLUMNS`, in that order.

    Columns are built whole from lists (no row-by-row appends): 100k records take a
    second or two. ``suite`` and ``category`` come from record keys of
    those names when a record has them; every value a record lacks is missing (NaN,
    ``<NA>`` or None by column type).
    """
    sources: dict[str, list[dict[str, Any]]] = {"record": _dicts(records)}
    sources["energy"] = _dicts(r.get("energy") for r in sources["record"])
    for part in ("cpu", "dram", "gpu", "gpu_stats"):
        sources[part] = _dicts(e.get(part) for e in sources["energy"])
    sources["confidence"] = _dicts(r.get("confidence") for r in sources["record"])
    columns = {
        name: _typed(list(map(dict.get, sources[source], repeat(key))), dtype)
        for name, (source, key, dtype) in _SOURCES.items()
    }
    return _pandas().DataFrame(columns, columns=list(CSV_COLUMNS))


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True, slots=True)
class ModelRow:
    """The summary of one model's generations (see `model_summary`).

    ``n`` counts generations (records), ``tests`` distinct test ids and ``passed`` those
    that passed. ``wh_per_1k_*`` summarise the generations with an energy figure
    (``wh_per_1k_n`` of them; None without any): the mean and its 95 % confidence
    interval, by `pytest_llmlab.stats.describe` (seeded bootstrap; up to 2000
    resamples, fewer above 500 values, at least 200); above `BOOTSTRAP_MAX_N` values
    the normal interval ``mean ± 1.96·std/√n``, which the bootstrap interval of a mean
    approaches for large n. ``decode_tokens_per_s`` is a median, ``ttft_p50_s`` and
    ``ttft_p95_s`` percentiles with linear interpolation; ``cost`` and ``gco2e`` are
    sums over the readings that have them. ``provenance`` says where the energy figures
    come from: ``"estimated"``, or ``"measured 8, estimated 2"`` for a mix.
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

    @property
    def pass_rate(self) -> float | None:
        """``passed / tests``; None without tests."""
        return self.passed / self.tests if self.tests else None

    @property
    def wh_per_1k_half_ci(self) -> float | None:
        """Half the width of the Wh/1k confidence interval (the ``±`` of the tables)."""
        if self.wh_per_1k_ci_low is None or self.wh_per_1k_ci_high is None:
            return None
        return (self.wh_per_1k_ci_high - self.wh_per_1k_ci_low) / 2.0


_Z95 = statistics.NormalDist().inv_cdf(0.975)  # 1.959963984540054

#: Outcomes that count a test as passed.
PASSING = frozenset({"passed", "xpassed"})


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, NaN, text, booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond floats
        return None
    return number if math.isfinite(number) else None


def _numbers(
    records: Iterable[dict[str, Any]], get: Callable[[dict[str, Any]], Any]
) -> list[float]:
    return [v for v in (_number(get(r)) for r in records) if v is not None]


def _energy(record: dict[str, Any]) -> dict[str, Any]:
    energy = record.get("energy")
    return energy if isinstance(energy, dict) else _EMPTY


def provenance_mix(records: Iterable[dict[str, Any]]) -> str:
    """``"estimated"`` when every reading has one provenance, else counts from the
    strongest provenance to the weakest: ``"measured 8, estimated 2"``. A record
    without an energy reading counts as ``unavailable``."""
    counts: dict[str, int] = {}
    for record in records:
        name = str(_energy(record).get("provenance") or "unavailable")
        counts[name] = counts.get(name, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    rank = {str(p): i for i, p in enumerate(PROVENANCE_ORDER)}
    ordered = sorted(counts, key=lambda p: rank.get(p, len(rank)))  # stable: seen order
    return ", ".join(f"{p} {counts[p]}" for p in ordered)


def _summarise(model: str, records: list[dict[str, Any]]) -> ModelRow:
    # A test passes when every record of it carries a passing outcome (a teardown
    # error after a passing call fails it).
    verdicts: dict[str, bool] = {}
    for record in records:
        test = str(record.get("test_id"))
        verdicts[test] = verdicts.get(test, True) and record.get("outcome") in PASSING
    temperatures: dict[float, None] = {}
    for t in _numbers(records, lambda r: r.get("temperature")):
        temperatures.setdefault(t)
    wh = _numbers(records, lambda r: _energy(r).get("wh_per_1k"))
    mean = low = high = None
    if len(wh) > BOOTSTRAP_MAX_N:
        summary = describe(wh, resamples=1)  # mean and std; the interval is set below
        half = _Z95 * summary.std / math.sqrt(summary.n)
        mean, low, high = summary.mean, summary.mean - half, summary.mean + half
    elif wh:
        summary = describe(wh, resamples=min(2000, BOOTSTRAP_DRAWS // len(wh)))
        mean, low, high = summary.mean, summary.ci_low, summary.ci_high
    decode = _numbers(records, lambda r: r.get("decode_tokens_per_s"))
    ttft = sorted(_numbers(records, lambda r: r.get("ttft_s")))
    costs = _numbers(records, lambda r: _energy(r).get("cost"))
    carbon = _numbers(records, lambda r: _energy(r).get("gco2e"))
    return ModelRow(
        model=model,
        temperatures=tuple(temperatures),
        n=len(records),
        tests=len(verdicts),
        passed=sum(verdicts.values()),
        wh_per_1k_n=len(wh),
        wh_per_1k_mean=mean,
        wh_per_1k_ci_low=low,
        wh_per_1k_ci_high=high,
        decode_tokens_per_s=statistics.median(decode) if decode else None,
        ttft_p50_s=percentile(ttft, 50.0) if ttft else None,
        ttft_p95_s=percentile(ttft, 95.0) if ttft else None,
        cost=math.fsum(costs) if costs else None,
        gco2e=math.fsum(carbon) if carbon else None,
        provenance=provenance_mix(records),
    )


def model_summary(records: Iterable[dict[str, Any]]) -> list[ModelRow]:
    """One `ModelRow` per model (its display name, ``record["model"]``), in the order
    the models first appear. Records that are not dicts are ignored."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if isinstance(record, dict):
            groups.setdefault(str(record.get("model")), []).append(record)
    return [_summarise(model, group) for model, group in groups.items()]
