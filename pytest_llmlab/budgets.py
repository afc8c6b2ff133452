"""Session-wide budgets every generation is held to: energy and time to first token.

``--llm-energy-budget=WH`` fails a test with a generation above WH per 1000 output
tokens, ``--llm-ttft-budget=S`` one whose first token took longer than S seconds. The
failure names each offending generation; a budget held against an estimate says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pytest_llmlab.results import Record

if TYPE_CHECKING:
    from pytest_llmlab.config import Settings

__all__ = ["budget_failure", "budget_lines"]


def _where(record: Record) -> str:
    where = f"{record['model']} T={record['temperature']:g}"
    if record.get("run") is not None:
        where += f" run {int(record['run'] or 0) + 1}"
    return where


def budget_lines(settings: Settings, records: Iterable[Record]) -> list[str]:
    """One line per generation above ``--llm-energy-budget`` or ``--llm-ttft-budget``."""
    lines: list[str] = []
    energy_budget, ttft_budget = settings.energy_budget, settings.ttft_budget
    for record in records:
        if record.get("judge_for"):
            continue  # a judge's generation is not the tested model's
        where = _where(record)
        energy = record.get("energy") or {}
        if energy_budget is not None:
            value = energy.get("wh_per_1k")
            if value is None:
                lines.append(
                    f"{where}: no Wh/1k to hold to --llm-energy-budget={energy_budget:g} "
                    f"({energy.get('note') or 'energy unavailable'})"
                )
            elif value > energy_budget:
                label = "" if energy.get("measured") else (
                    f" (estimated reading: {energy.get('note')})"
                )  # fmt: skip
                lines.append(
                    f"{where}: {value:.4g} Wh/1k > --llm-energy-budget={energy_budget:g}{label}"
                )
        ttft = record.get("ttft_s")
        if ttft_budget is not None and ttft is not None and ttft > ttft_budget:
            lines.append(f"{where}: TTFT {ttft:.3f} s > --llm-ttft-budget={ttft_budget:g}")
    return lines


def budget_failure(settings: Settings, records: Iterable[Record]) -> str | None:
    """The failure text of a test whose generations broke a budget, else None."""
    lines = budget_lines(settings, records)
    if not lines:
        return None
    return "\n".join(["budget exceeded:", *(f"  {line}" for line in lines)])
