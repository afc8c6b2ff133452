"""Parsed forms of option values that settings and the features using them share.

`pytest_llmlab.config` turns every ``--llm-*`` / ``llm_*`` / ``LLMLAB_*`` value into one
of these while the command line is parsed; the feature that uses a value (the meters,
repeated runs, regression gates, prices) imports its type from here. This module
imports nothing but the pure `pytest_llmlab.stats`, so settings never import a feature.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from pytest_llmlab.stats import finite_or_none

__all__ = [
    "COMPARE_METRICS",
    "METER_CHOICES",
    "RECORD_MODES",
    "Price",
    "RecordMode",
    "RegressionCheck",
    "metric_unit",
    "parse_compare_fail",
    "parse_meter_choice",
    "parse_pass_rule",
    "parse_prices_option",
    "parse_record_mode",
    "price_number",
    "split_list",
]

#: ``--llm-record``: live; record what has no cassette yet; record all again; replay only.
RecordMode = Literal["off", "new", "all", "none"]
RECORD_MODES: tuple[RecordMode, ...] = ("off", "new", "all", "none")


def parse_record_mode(raw: str) -> RecordMode:
    """One of `RECORD_MODES`, any case."""
    for mode in RECORD_MODES:
        if raw.strip().lower() == mode:
            return mode
    raise ValueError(f"{raw!r} is not one of {', '.join(RECORD_MODES)}")


#: What ``--llm-meter`` accepts (a comma list of the hardware ones and ``estimate``).
METER_CHOICES = ("auto", "rapl", "nvml", "estimate", "none")

#: ``[0-9]``, not ``\d``: ``\d`` also matches other scripts' digits (Arabic-Indic...).
_PASS_RULE = re.compile(r"(rate|wilson|pass@([0-9]+)|pass\^([0-9]+))")


def split_list(values: str | list[str] | tuple[str, ...]) -> list[str]:
    """Split comma- or newline-separated option values into stripped, non-empty items."""
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        for line in item.splitlines():
            out.extend(part.strip() for part in line.split(",") if part.strip())
    return out


def parse_meter_choice(raw: str) -> tuple[str, ...]:
    """``auto`` | ``none`` | ``estimate`` | a comma list of ``rapl``, ``nvml``, ``estimate``."""
    items = tuple(dict.fromkeys(p.strip().lower() for p in raw.split(",") if p.strip()))
    if not items:
        raise ValueError("no meter given")
    for item in items:
        if item not in METER_CHOICES:
            raise ValueError(f"unknown meter {item!r} (choose from {', '.join(METER_CHOICES)})")
    if len(items) > 1 and ({"auto", "none"} & set(items)):
        raise ValueError(f"{'/'.join(sorted({'auto', 'none'} & set(items)))} cannot be combined")
    return items


def parse_pass_rule(raw: str) -> tuple[str, int]:
    """``rate`` | ``wilson`` | ``pass@K`` | ``pass^K`` -> (rule, k), K >= 1."""
    text = raw.strip().lower()
    match = _PASS_RULE.fullmatch(text)
    if not match:
        raise ValueError(f"{raw!r} is not a pass rule (rate, wilson, pass@K, pass^K)")
    digits = match.group(2) or match.group(3)
    if digits is None:
        return text, 1
    k = int(digits)
    if k < 1:
        raise ValueError(f"{raw!r}: K must be at least 1 (pass@K and pass^K look at K of the runs)")
    return ("pass@k" if match.group(2) else "pass^k"), k


# -- regression gates (--llm-compare-fail) ----------------------------------------------

#: The metrics a comparison reports and a gate may name, with their description.
COMPARE_METRICS: dict[str, str] = {
    "wh_per_1k": "mean Wh per 1000 output tokens",
    "joules": "mean joules per generation",
    "ttft_p50": "median time to first token (s)",
    "decode_tps": "median decode tokens/s",
    "cost": "mean cost per generation",
    "pass_rate": "share of tests passed (percentage points)",
}

_CHECK = re.compile(r"^([a-z0-9_]+):([+-]?)(\d+(?:\.\d*)?|\.\d+)%$")


def metric_unit(metric: str) -> str:
    """How a change of ``metric`` is written: percentage points for ``pass_rate``."""
    return " pp" if metric == "pass_rate" else "%"


class _Evidence(Protocol):
    def shows(self, direction: int) -> bool: ...


class _Delta(Protocol):
    @property
    def change(self) -> float | None: ...

    @property
    def evidence(self) -> _Evidence: ...


@dataclass(frozen=True, slots=True)
class RegressionCheck:
    """``metric`` must not move in ``direction`` (+1 rise, -1 fall) by more than
    ``limit`` (percent, or percentage points for ``pass_rate``)."""

    metric: str
    limit: float
    direction: int

    def __str__(self) -> str:
        return f"{self.metric}:{'+' if self.direction > 0 else '-'}{self.limit:g}%"

    def threshold(self) -> str:
        return f"{'+' if self.direction > 0 else '-'}{self.limit:g}{metric_unit(self.metric)}"

    def violated_by(self, delta: _Delta) -> bool:
        """Beyond the limit in the checked direction, and significant."""
        if delta.change is None or delta.change * self.direction <= self.limit:
            return False
        return delta.evidence.shows(self.direction)


def parse_compare_fail(text: str) -> list[RegressionCheck]:
    """Parse ``"wh_per_1k:10%,pass_rate:-5%"`` into checks (comma or newline separated).

    ``METRIC:N%`` or ``METRIC:+N%`` fails when the metric rises by more than N;
    ``METRIC:-N%`` when it falls by more than N. N is relative percent, except for
    ``pass_rate``, where it is absolute percentage points. A malformed item or an
    unknown metric is a ValueError naming the item and listing the metrics.
    """
    valid = ", ".join(COMPARE_METRICS)
    checks: list[RegressionCheck] = []
    items = split_list(text)
    if not items:
        raise ValueError(f"no regression check given (expected METRIC:N%; metrics: {valid})")
    for item in items:
        match = _CHECK.match(item.replace(" ", ""))
        if match is None:
            raise ValueError(
                f"regression check {item!r} is not METRIC:[+|-]N% (such as wh_per_1k:10% or "
                f"pass_rate:-5%); metrics: {valid}"
            )
        metric, sign, number = match.groups()
        if metric not in COMPARE_METRICS:
            raise ValueError(
                f"regression check {item!r}: unknown metric {metric!r}; metrics: {valid}"
            )
        check = RegressionCheck(metric, float(number), -1 if sign == "-" else 1)
        if check not in checks:
            checks.append(check)
    return checks


# -- prices (llm_prices) -----------------------------------------------------------------


class Price(NamedTuple):
    """Price per million tokens: ``input`` (prompt) and ``output`` (completion)."""

    input: float
    output: float


def price_number(where: str, value: object) -> float:
    """``value`` as a finite float >= 0; a ValueError naming ``where`` otherwise."""
    number = finite_or_none(value)
    if number is None or number < 0:
        raise ValueError(f"{where}: {value!r} is not a finite number >= 0")
    return number


def parse_prices_option(text: str) -> dict[str, Price]:
    """Parse ``"model=in/out,model2=in/out"`` (USD per million tokens) into a table.

    Items are separated by commas or newlines; a model may carry its provider
    (``openai:gpt-4o=2.5/10``). A malformed item is a ValueError naming it.
    """
    table: dict[str, Price] = {}
    for item in split_list(text):
        model, sep, pair = item.rpartition("=")
        inp, slash, out = pair.partition("/")
        if not sep or not slash or not model.strip():
            raise ValueError(
                f"price {item!r} is not MODEL=INPUT/OUTPUT (USD per million tokens, "
                "such as gpt-4o=2.5/10)"
            )
        numbers: list[float] = []
        for part in (inp, out):
            try:
                number = float(part)
            except ValueError:
                raise ValueError(f"price {item!r}: {part.strip()!r} is not a number") from None
            numbers.append(price_number(f"price {item!r}", number))
        table[model.strip()] = Price(numbers[0], numbers[1])
    return table
