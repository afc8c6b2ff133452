"""One outcome rule for every report: which tests passed, which are not counted.

A run with one test passed, one skipped, and one repeated test whose runs failed then
passed (its outcome, decided over the runs, is ``passed``) has 2 of 2 tests passed in
the terminal table, GitHub's job summary, the HTML report, the leaderboard (function
and command) and ``compare``; they once said 2/3 here and 2/2 there.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_llmlab import cli
from pytest_llmlab.report.compare import compare_runs
from pytest_llmlab.report.html import render_html
from pytest_llmlab.report.leaderboard import format_leaderboard, leaderboard
from pytest_llmlab.report.summary import (
    NOT_COUNTED,
    PASSING,
    model_summary,
    outcome_passed,
    verdict_of_test,
    verdicts_by_test,
)
from pytest_llmlab.report.terminal import github_markdown, terminal_table
from pytest_llmlab.stats import finite_or_none

MODEL = "local:m"


def record(test: str, outcome: Any, **extra: Any) -> dict[str, Any]:
    """A record of ``MODEL`` at T=0 with an energy reading."""
    return {
        "test_id": f"tests/test_x.py::{test}[{MODEL}-T0]",
        "outcome": outcome,
        "model": MODEL,
        "temperature": 0.0,
        "prompt_tokens": 40,
        "completion_tokens": 8,
        "ttft_s": 0.1,
        "decode_tokens_per_s": 30.0,
        "tokens_per_s": 20.0,
        "energy": {"wh_per_1k": 0.25, "wh": 0.002, "provenance": "estimated"},
        "run": None,
        "run_passed": None,
        **extra,
    }


def mixed_run() -> list[dict[str, Any]]:
    """One test passed, one skipped, one repeated test whose runs failed then passed."""
    return [
        record("test_pass", "passed"),
        record("test_skip", "skipped", energy=None),
        record("test_repeat", "passed", run=0, run_passed=False),
        record("test_repeat", "passed", run=1, run_passed=True),
    ]


def summary_cells(page: str) -> list[str]:
    """The cell texts of the HTML report's one summary row."""
    table = re.search(r'<table class="summary">(.*?)</table>', page, re.DOTALL)
    assert table is not None, "no summary table"
    body = table.group(1).split("<tbody>", 1)[1]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", body, re.DOTALL)
    return [html.unescape(cell).strip() for cell in cells]


# --------------------------------------------------------------------------- agreement


def test_model_summary_counts_two_of_two() -> None:
    (row,) = model_summary(mixed_run())
    assert (row.model, row.n, row.tests, row.passed, row.pass_rate) == (MODEL, 4, 2, 2, 1.0)


def test_terminal_table_and_github_summary_say_two_of_two() -> None:
    rows = model_summary(mixed_run())
    _header, line = terminal_table(rows)
    assert "100% (2/2)" in line
    assert "(2/3)" not in line
    markdown = github_markdown(rows, title="t")
    assert "| 100% (2/2) |" in markdown
    assert "2/3" not in markdown


def test_html_report_says_two_of_two() -> None:
    page = render_html(mixed_run(), title="t", meter_setup=None, hardware=None)
    cells = summary_cells(page)
    assert cells[:4] == [MODEL, "4", "2", "100% (2/2)"]
    assert "2/3" not in page
    # The charts count the same: the heat map cell and the Pareto point.
    assert f"{MODEL}, T=0: 2/2 tests passed (100%)" in page
    assert f"{MODEL}: 100% of 2 tests passed" in page
    # The embedded table data still holds every generation, the skipped one too.
    island = re.search(r'<script type="application/json" id="llmlab-data">(.*?)</script>', page)
    assert island is not None
    data = json.loads(island.group(1))
    outcome = data["cols"].index("outcome")
    assert [data["keys"][row[outcome]] for row in data["rows"]] == [
        "passed", "skipped", "passed", "passed",
    ]  # fmt: skip


def test_leaderboard_says_two_of_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (row,) = leaderboard(mixed_run())
    assert (row.total, row.total_tests) == (2, 2)
    assert "| 2/2 | 2/2 |" in format_leaderboard([row], "md")
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in mixed_run()), encoding="utf-8")
    assert cli.main(["leaderboard", str(path), "--format", "json"]) == 0
    (board,) = json.loads(capsys.readouterr().out)
    assert (board["model"], board["total"], board["total_tests"]) == (MODEL, 2, 2)


def test_compare_pass_rate_per_model_is_two_of_two() -> None:
    comparison = compare_runs(mixed_run(), mixed_run())
    (model,) = comparison.models
    delta = model.deltas["pass_rate"]
    assert (model.model, delta.baseline, delta.current, delta.change) == (MODEL, 100.0, 100.0, 0.0)
    assert "over 2 paired tests" in delta.evidence.text  # the skipped test is left out


def test_compare_counts_a_test_by_all_its_records() -> None:
    """A teardown error after a passing call fails the test, whichever record is last."""
    base = [record("t", "passed"), record("u", "passed")]
    current = [record("t", "error"), record("t", "passed"), record("u", "passed")]
    delta = compare_runs(base, current).models[0].deltas["pass_rate"]
    assert (delta.baseline, delta.current) == (100.0, 50.0)
    (row,) = model_summary(current)
    assert (row.tests, row.passed) == (2, 1)


# --------------------------------------------------------------------------- the rule


def test_outcome_sets() -> None:
    assert {"passed", "xpassed"} == PASSING
    assert {"skipped", "xfailed", "deselected"} == NOT_COUNTED


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("passed", True),
        ("xpassed", True),
        ("skipped", None),
        ("xfailed", None),
        ("deselected", None),
        ("failed", False),
        ("error", False),
        (None, False),
        ("", False),
        ("PASSED", False),
        ("weird", False),
        (1, False),
        (["passed"], False),  # unhashable: a hand-edited file
    ],
)
def test_outcome_passed(outcome: Any, expected: bool | None) -> None:
    assert outcome_passed(outcome) is expected


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        (["passed"], True),
        (["xpassed"], True),
        (["xfailed"], None),
        (["skipped", "skipped"], None),
        (["skipped", "passed"], True),
        (["xfailed", "xpassed"], True),
        (["passed", "error"], False),
        (["error", "passed"], False),
        (["xfailed", "failed"], False),
        (["passed", None], False),
        ([None], False),
        ([], None),
    ],
)
def test_test_verdict(outcomes: list[Any], expected: bool | None) -> None:
    assert verdict_of_test(outcomes) is expected


def test_test_verdicts_by_test_id() -> None:
    records: list[dict[str, Any]] = [
        {"test_id": "a", "outcome": "xfailed"},
        {"test_id": "b", "outcome": "xpassed"},
        {"test_id": "c", "outcome": "error"},
        {"test_id": "d", "outcome": None},
        {"test_id": "e"},
        {"test_id": "f", "outcome": "passed", "run_passed": False},
        {"test_id": "b", "outcome": "skipped"},
        {"test_id": "g", "outcome": "passed"},
        {"test_id": "g", "outcome": "failed"},
    ]
    assert verdicts_by_test(records) == {
        "b": True,
        "c": False,
        "d": False,
        "e": False,
        "f": True,  # run_passed is a detail of one run, not the test's verdict
        "g": False,
    }
    assert list(verdicts_by_test(records)) == ["b", "c", "d", "e", "f", "g"]  # first seen
    assert verdicts_by_test([]) == {}


# --------------------------------------------------------------------------- numbers


class Float(float):
    pass


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1.0),
        (0, 0.0),
        (-2.5, -2.5),
        (Float(0.5), 0.5),
        (10**300, 1e300),
        (10**400, None),  # beyond floats
        (True, None),
        (False, None),
        (math.nan, None),
        (math.inf, None),
        (-math.inf, None),
        ("1.5", None),
        (None, None),
        ([1.0], None),
        (1j, None),
    ],
)
def test_finite_or_none(value: object, expected: float | None) -> None:
    result = finite_or_none(value)
    assert result == expected
    if expected is not None:
        assert type(result) is float
