"""Short summaries of a run: the terminal table, GitHub's job summary, JUnit properties.

* `terminal_table`: one aligned line per model (and a header), like pytest-benchmark's
  table: generations, pass rate, Wh per 1000 output tokens (mean ± half its 95 %
  confidence interval), decode tokens/s, median time to first token, provenance; the
  rows come from `pytest_llmlab.report.summary.model_summary`.
* `points_table`: the leaderboard of prompt suites' points per category.
* `cost_budget_lines`: the session's spend on priced generations per model against
  ``--llm-cost-budget``.
* `github_markdown` and `append_github_summary`: the same as a Markdown table for
  ``$GITHUB_STEP_SUMMARY`` (appended only when that variable is set).
* `junit_properties`: a few short ``(name, value)`` strings of a test's records for
  ``user_properties``, which pytest's JUnit XML writes as ``<property>`` elements.

Model names and notes are untrusted text (a spec, an alias, a server's model id): the
terminal gets them without control characters (no escape sequences, no line breaks),
the Markdown with ``|``, ``\\``, emphasis characters, line breaks and ``<``, ``>``,
``&`` escaped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_llmlab.energy.reading import PROVENANCE_ORDER
from pytest_llmlab.report.leaderboard import LeaderboardRow, format_points
from pytest_llmlab.report.prices import format_usd
from pytest_llmlab.report.summary import ModelRow, energy_of, finite_values
from pytest_llmlab.stats import finite_or_none

__all__ = [
    "GITHUB_SUMMARY_ENV",
    "append_github_summary",
    "cost_budget_lines",
    "github_markdown",
    "junit_properties",
    "markdown_text",
    "points_table",
    "retry_lines",
    "terminal_table",
]

#: The variable GitHub Actions sets to the job summary file of the current step.
GITHUB_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"

_NA = "n/a"
_MAX_NAME = 100  # characters of a model name in a JUnit property


# --------------------------------------------------------------------------- formats


def _digits(value: float, digits: int = 3) -> str:
    """``digits`` significant digits, without an exponent for large values."""
    if abs(value) >= 10**digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def _plain(text: str) -> str:
    """``text`` without control characters (each becomes ``?``): one terminal line."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _pass_rate(row: ModelRow) -> str:
    if row.pass_rate is None:
        return _NA
    return f"{row.pass_rate:.0%} ({row.passed}/{row.tests})"


def _wh_per_1k(row: ModelRow) -> str:
    """``mean ± half-CI``; the mean alone for a single value (no interval)."""
    if row.wh_per_1k_mean is None:
        return _NA
    half = row.wh_per_1k_half_ci
    if row.wh_per_1k_n < 2 or half is None:
        return _digits(row.wh_per_1k_mean)
    return f"{_digits(row.wh_per_1k_mean)} ± {_digits(half, 2)}"


def _tokens_per_s(value: float | None) -> str:
    return _NA if value is None else f"{value:.1f}"


def _seconds(value: float | None) -> str:
    return _NA if value is None else f"{_digits(value)} s"


# --------------------------------------------------------------------------- terminal

_HEADER = ("model", "n", "pass rate", "Wh/1k", "tok/s", "TTFT p50", "provenance")
_RIGHT = (False, True, True, True, True, True, False)


def terminal_table(rows: Sequence[ModelRow]) -> list[str]:
    """A header line and one line per model, columns aligned to their widest cell.

    Text columns (model, provenance) are left-aligned and numbers right-aligned, two
    spaces apart; lines carry no trailing spaces. No rows give no lines.
    """
    if not rows:
        return []
    cells = [_HEADER] + [
        (
            _plain(row.model),
            str(row.n),
            _pass_rate(row),
            _wh_per_1k(row),
            _tokens_per_s(row.decode_tokens_per_s),
            _seconds(row.ttft_p50_s),
            _plain(row.provenance),
        )
        for row in rows
    ]
    return _aligned(cells, _RIGHT)


def _aligned(cells: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Rows of cells in columns as wide as their widest cell, two spaces apart."""
    widths = [max(len(line[i]) for line in cells) for i in range(len(right))]
    return [
        "  ".join(
            cell.rjust(width) if align else cell.ljust(width)
            for cell, width, align in zip(line, widths, right, strict=True)
        ).rstrip()
        for line in cells
    ]


def points_table(rows: Sequence[LeaderboardRow]) -> list[str]:
    """The leaderboard in the terminal: ``points/most possible`` per category, the
    total, then tokens/s and Wh/1k; best model first. No rows give no lines."""
    if not rows:
        return []
    groups = sorted({group for row in rows for group in row.tests})
    header = ("model", *(_plain(g) for g in groups), "total", "tok/s", "Wh/1k")
    cells: list[Sequence[str]] = [header]
    for row in rows:
        cells.append(
            (
                _plain(row.model),
                *(
                    f"{format_points(row.points[g])}/{format_points(row.max_points[g])}"
                    if g in row.tests
                    else "-"
                    for g in groups
                ),
                f"{format_points(row.total)}/{format_points(row.max_total)}",
                _tokens_per_s(row.tokens_per_s),
                "-" if row.wh_per_1k is None else _digits(row.wh_per_1k),
            )
        )
    return _aligned(cells, (False, *(True for _ in groups), True, True, True))


# --------------------------------------------------------------------------- markdown

_MARKDOWN_PUNCTUATION = "\\`*_[]~|"
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def markdown_text(text: str) -> str:
    """``text`` safe inside a Markdown table cell: one line, nothing interpreted.

    Line breaks and other control characters become spaces; ``\\ ` * _ [ ] ~ |`` get a
    backslash (a ``|`` would end the cell); ``& < >`` become HTML entities (no tag, no
    entity of the model's making reaches the page).
    """
    out: list[str] = []
    for char in text:
        if not char.isprintable():
            out.append(" ")
        elif char in _MARKDOWN_PUNCTUATION:
            out.append("\\" + char)
        else:
            out.append(_HTML.get(char, char))
    return "".join(out)


_MD_HEADER = (
    "model",
    "generations",
    "tests passed",
    "Wh/1k (95% CI)",
    "decode tok/s",
    "TTFT p50",
    "TTFT p95",
    "cost",
    "provenance",
)
_MD_ALIGN = (":---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", ":---")


def _md_wh(row: ModelRow) -> str:
    if row.wh_per_1k_mean is None:
        return _NA
    low, high = row.wh_per_1k_ci_low, row.wh_per_1k_ci_high
    if row.wh_per_1k_n < 2 or low is None or high is None:
        return _digits(row.wh_per_1k_mean)
    return f"{_digits(row.wh_per_1k_mean)} ({_digits(low)}–{_digits(high)})"


def _md_cost(value: float | None) -> str:
    return _NA if value is None else f"{value:.4g}"


def github_markdown(rows: Sequence[ModelRow], *, title: str) -> str:
    """A Markdown section: ``### title`` and a table with one row per model.

    Every text cell (and the title) goes through `markdown_text`; numbers are
    formatted here. Ends with a newline.
    """
    lines = [f"### {markdown_text(title)}", ""]
    if not rows:
        lines.append("No generations were recorded.")
        return "\n".join(lines) + "\n"
    lines.append("| " + " | ".join(_MD_HEADER) + " |")
    lines.append("| " + " | ".join(_MD_ALIGN) + " |")
    for row in rows:
        cells = (
            markdown_text(row.model),
            str(row.n),
            _pass_rate(row),
            _md_wh(row),
            _tokens_per_s(row.decode_tokens_per_s),
            _seconds(row.ttft_p50_s),
            _seconds(row.ttft_p95_s),
            _md_cost(row.cost),
            markdown_text(row.provenance),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def append_github_summary(
    rows: Sequence[ModelRow],
    env: Mapping[str, str] = os.environ,
    *,
    title: str = "pytest-llmlab",
) -> Path | None:
    """Append `github_markdown` to the file named by ``$GITHUB_STEP_SUMMARY``.

    Returns the file, or None (nothing written) when the variable is unset or empty or
    there are no rows. An unwritable file raises OSError.
    """
    name = env.get(GITHUB_SUMMARY_ENV)
    if not name or not rows:
        return None
    path = Path(name)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(github_markdown(rows, title=title) + "\n")
    return path


# --------------------------------------------------------------------------- JUnit


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def junit_properties(
    records: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> list[tuple[str, str]]:
    """Short string properties of a test's generations for JUnit XML.

    ``records`` is one record or the records of one test (its repeated runs); numbers
    are means over those that have them:

    * ``llm_model``: the display name (of the first record), at most 100 characters,
      without control characters;
    * ``llm_temperature``: ``0.7``;
    * ``llm_wh_per_1k``: Wh per 1000 output tokens, 4 significant digits;
    * ``llm_tokens_per_s``: decode tokens/s, one decimal;
    * ``llm_provenance``: the weakest provenance of the readings (``unavailable``
      without any);
    * ``llm_generations``: how many records.

    A number no record has is an empty string. No records give no properties.
    """
    group = [records] if isinstance(records, Mapping) else list(records)
    if not group:
        return []
    first = group[0]
    model = _plain(str(first.get("model") or ""))
    if len(model) > _MAX_NAME:
        model = model[: _MAX_NAME - 1] + "…"
    energies = [energy_of(r) for r in group]
    temperature = finite_or_none(first.get("temperature"))
    wh = _mean(finite_values(e.get("wh_per_1k") for e in energies))
    decode = _mean(finite_values(r.get("decode_tokens_per_s") for r in group))
    provenances = [str(e["provenance"]) for e in energies if e.get("provenance")]
    weakest = max(provenances, key=_weakness) if provenances else "unavailable"
    return [
        ("llm_model", model),
        ("llm_temperature", "" if temperature is None else f"{temperature:g}"),
        ("llm_wh_per_1k", "" if wh is None else f"{wh:.4g}"),
        ("llm_tokens_per_s", "" if decode is None else f"{decode:.1f}"),
        ("llm_provenance", _plain(weakest)[:40]),
        ("llm_generations", str(len(group))),
    ]


def _weakness(provenance: str) -> int:
    """Rank in `PROVENANCE_ORDER` (higher is weaker); an unknown name is weakest."""
    try:
        return PROVENANCE_ORDER.index(provenance)
    except ValueError:
        return len(PROVENANCE_ORDER)


def retry_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per model whose requests were retried (``--llm-retries``): how many
    retries, over how many generations."""
    retries: dict[str, int] = {}
    generations: dict[str, int] = {}
    for record in records:
        attempts = record.get("attempts")
        if isinstance(attempts, int) and attempts > 1:
            model = _plain(str(record.get("model")))
            retries[model] = retries.get(model, 0) + attempts - 1
            generations[model] = generations.get(model, 0) + 1
    return [
        f"llmlab: {model}: {count} retr{'y' if count == 1 else 'ies'} over "
        f"{generations[model]} generation(s) after 429/503/529 or a reset (--llm-retries)"
        for model, count in retries.items()
    ]


def cost_budget_lines(
    records: Sequence[Mapping[str, Any]], budget: float
) -> tuple[list[str], bool]:
    """Spent vs ``--llm-cost-budget``: a line for the session, then one per model with
    priced generations (their ``cost``, judges' included), most spent first; and
    whether the budget was reached."""
    spent: dict[str, list[float]] = {}
    for record in records:
        cost = finite_or_none(record.get("cost"))
        if cost is not None:
            spent.setdefault(_plain(str(record.get("model"))), []).append(cost)
    totals = {model: math.fsum(costs) for model, costs in spent.items()}
    total = math.fsum(totals.values())
    reached = total >= budget
    if reached:
        head = (
            f"llmlab cost budget: {format_usd(budget)} reached, {format_usd(total)} spent on "
            "priced generations (--llm-cost-budget): tests that needed another skipped"
        )
    else:
        head = (
            f"llmlab cost budget: {format_usd(total)} of {format_usd(budget)} spent on "
            "priced generations (--llm-cost-budget)"
        )
    lines = [head]
    for model, amount in sorted(totals.items(), key=lambda item: -item[1]):
        share = amount / budget * 100.0
        lines.append(
            f"  {model}: {format_usd(amount)} of {format_usd(budget)} ({share:.0f}%) in "
            f"{len(spent[model])} generation(s)"
        )
    return lines, reached
