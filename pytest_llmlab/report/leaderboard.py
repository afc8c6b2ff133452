"""A leaderboard of models: points per group of tests, speed, energy and cost.

`leaderboard` scores every model over the records of a run by
`pytest_llmlab.report.summary.points_by_test`: a Python test is worth 1 point, scored
when it passed by the outcome rule of `pytest_llmlab.report.summary` (the terminal
table's and the HTML report's); a prompt-suite case is worth its ``points`` (partial
credit where its checks carry points); a skipped or xfailed test counts for nothing.
Groups come from ``by``:

* ``"test"``: the test function (the test id without its parametrization);
* ``"file"``: the test file (the test id before ``::``);
* any other name: that record field (``category``, ``suite``, ``provider``,
  ``temperature`` ...), and ``"all"`` where a record lacks it.

Beside the points (and the most possible) each row has the totals, the mean
``tokens_per_s`` over the model's generations, its mean ``energy.wh_per_1k``
(`model_summary`'s), and the summed cost (`prices.generation_cost`; None when no
generation could be priced). Rows are ranked by total points (most first), then Wh/1k
(least first, unknown last), then name.

`format_leaderboard` writes the rows as Markdown (cells escaped for ``|``, HTML and
control characters), CSV (text that a spreadsheet would run as a formula gets a leading
``'``, `pytest_llmlab.redact.csv_cell`) or JSON.
"""

from __future__ import annotations

import csv
import html
import io
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_llmlab.redact import csv_cell, terminal_safe
from pytest_llmlab.report.prices import Price, generation_cost
from pytest_llmlab.report.summary import (
    finite_values,
    is_judge_call,
    model_name,
    model_summary,
    points_by_test,
)

__all__ = [
    "FORMATS",
    "LeaderboardRow",
    "format_leaderboard",
    "format_points",
    "group_of",
    "leaderboard",
]

#: The output formats of `format_leaderboard`.
FORMATS: tuple[str, ...] = ("md", "csv", "json")


@dataclass(frozen=True, slots=True)
class LeaderboardRow:
    """One model's line: points and tests (that ran) per group, then the totals."""

    model: str
    points: dict[str, float]
    tests: dict[str, int]
    tokens_per_s: float | None
    wh_per_1k: float | None
    cost: float | None
    #: The most points each group could give (its tests' worth).
    max_points: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.points.values())

    @property
    def max_total(self) -> float:
        return sum(self.max_points.values())

    @property
    def total_tests(self) -> int:
        return sum(self.tests.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "points": self.points,
            "tests": self.tests,
            "max_points": self.max_points,
            "total": self.total,
            "max_total": self.max_total,
            "total_tests": self.total_tests,
            "tokens_per_s": self.tokens_per_s,
            "wh_per_1k": self.wh_per_1k,
            "cost": self.cost,
        }


def group_of(record: Mapping[str, Any], by: str) -> str:
    """The group a record's test belongs to (see the module docstring)."""
    test_id = str(record.get("test_id", ""))
    if by == "test":
        return test_id.partition("[")[0]
    if by == "file":
        return test_id.partition("::")[0]
    value = record.get(by)
    if value is None or value == "":
        return "all"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def leaderboard(
    records: Sequence[Mapping[str, Any]],
    by: str = "category",
    *,
    prices: Mapping[str, Price] | None = None,
    kwh_price: float | None = None,
) -> list[LeaderboardRow]:
    """One `LeaderboardRow` per model, best first."""
    table = prices or {}
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        if not is_judge_call(record):
            groups.setdefault(model_name(record), []).append(record)
    rows = []
    for summary in model_summary(records):
        group = groups[summary.model]
        test_groups = {str(r.get("test_id")): group_of(r, by) for r in group}
        points: dict[str, float] = {}
        most: dict[str, float] = {}
        counted: dict[str, int] = {}
        for test, (earned, worth) in points_by_test(group).items():
            name = test_groups[test]
            points[name] = points.get(name, 0.0) + earned
            most[name] = most.get(name, 0.0) + worth
            counted[name] = counted.get(name, 0) + 1
        rates = finite_values(r.get("tokens_per_s") for r in group)
        costs = [generation_cost(r, table, kwh_price)[0] for r in group]
        priced = [c for c in costs if c is not None]
        rows.append(
            LeaderboardRow(
                model=summary.model,
                points=dict(sorted(points.items())),
                tests=dict(sorted(counted.items())),
                tokens_per_s=statistics.fmean(rates) if rates else None,
                wh_per_1k=summary.wh_per_1k_mean,
                cost=sum(priced) if priced else None,
                max_points=dict(sorted(most.items())),
            )
        )
    inf = float("inf")
    rows.sort(key=lambda r: (-r.total, inf if r.wh_per_1k is None else r.wh_per_1k, r.model))
    return rows


def _groups(rows: Sequence[LeaderboardRow]) -> list[str]:
    return sorted({group for row in rows for group in row.tests})


def _md(text: str) -> str:
    """A Markdown table cell: HTML escaped, ``|`` escaped, on one line, no control
    characters (it is printed to a terminal)."""
    escaped = html.escape(text, quote=False).replace("|", "\\|")
    return terminal_safe(" ".join(escaped.split()))


def _csv_line(cells: Sequence[object]) -> str:
    """One CSV row ending in ``\\n``. Written with a ``\\r\\n`` terminator, so the csv
    module quotes a cell holding a lone ``\\r`` too (with ``\\n`` it would not, and a
    reader would take that ``\\r`` for a line break)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue()[:-2] + "\n"


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def format_points(value: float) -> str:
    """Points as written: ``3``, ``2.5``, ``0.333``."""
    return f"{value:.3g}" if value != int(value) else f"{int(value)}"


def format_leaderboard(rows: Sequence[LeaderboardRow], fmt: str = "md") -> str:
    """The rows as ``"md"`` (a Markdown table), ``"csv"`` or ``"json"``.

    Markdown cells read ``points/most possible``; CSV has a ``GROUP`` (points), a
    ``GROUP max`` and a ``GROUP tests`` column per group; JSON is a list of
    `LeaderboardRow.to_dict`. Unknown values are empty (Markdown, CSV) or null (JSON).
    """
    groups = _groups(rows)
    if fmt == "json":
        return json.dumps([row.to_dict() for row in rows], indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        group_columns = [c for g in groups for c in (g, f"{g} max", f"{g} tests")]
        lines = [
            _csv_line(
                [csv_cell(c) for c in ["model", *group_columns, "total", "max", "tests"]]
                + ["tokens_per_s", "wh_per_1k", "cost"]
            )
        ]
        for row in rows:
            counts = [
                c
                for g in groups
                for c in (
                    format_points(row.points[g]) if g in row.points else "",
                    format_points(row.max_points[g]) if g in row.max_points else "",
                    row.tests.get(g, ""),
                )
            ]
            lines.append(
                _csv_line(
                    [csv_cell(row.model), *counts]
                    + [format_points(row.total), format_points(row.max_total), row.total_tests]
                    + ["" if v is None else v for v in (row.tokens_per_s, row.wh_per_1k, row.cost)]
                )
            )
        return "".join(lines)
    if fmt != "md":
        raise ValueError(f"unknown leaderboard format {fmt!r}; formats: {', '.join(FORMATS)}")
    header = ["Model", *groups, "Total", "tokens/s", "Wh/1k", "Cost"]
    lines = [
        "| " + " | ".join(_md(h) for h in header) + " |",
        "|---" + "|---:" * (len(header) - 1) + "|",
    ]
    for row in rows:
        cells = [
            f"{format_points(row.points[g])}/{format_points(row.max_points[g])}"
            if g in row.tests
            else ""
            for g in groups
        ]
        cells += [
            f"{format_points(row.total)}/{format_points(row.max_total)}",
            _num(row.tokens_per_s, 3),
            _num(row.wh_per_1k),
            _num(row.cost),
        ]
        lines.append("| " + " | ".join([_md(row.model), *cells]) + " |")
    return "\n".join(lines) + "\n"
