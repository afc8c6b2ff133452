"""The session's spend on priced generations, and its cost budget (``--llm-cost-budget``).

A priced generation is one whose model has a token price (`has_token_price`: the
user's ``llm_prices``, or genai-prices for a cloud provider's model); local and
self-hosted models cost their energy and are never held back. Every recorded
generation is priced (`price_record`: its ``cost``, ``cost_source``, ``price_date``)
and, under a budget, adds its cost to the session's ledger. Once the ledger's total
reaches the budget no new priced generation starts: `CostBudget.check`, called when a
test's model is bound and again before each generation, skips the test with
``cost budget of $X reached: $Y spent``. Generations already streaming finish and are
recorded (they may carry the total past the budget); the controller's report then
fails the session and shows spent vs budget per model.

Under pytest-xdist the budget is the whole session's, not each worker's: the ledger is
one small JSON file, ``<report dir>/.spool/<run id>/spend.json`` (``{model: USD}``),
shared by the controller and its workers, which learn the folder and the run id from
the controller as they do for their spools. An update takes an exclusive
``fcntl.flock`` on ``spend.lock`` beside it, reads the total, adds, writes a new file
and renames it over the old one, so no addition is lost and a reader (no lock needed)
sees the old total or the new one, never half of either. Both files go with the
run's spool at session end. Without a report folder (a worker whose controller writes
no reports) the ledger is the process's own, in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import final

import pytest

from pytest_llmlab.models.spec import ModelSpec
from pytest_llmlab.option_values import Price
from pytest_llmlab.report.folder import spool_path
from pytest_llmlab.report.prices import format_usd, has_token_price, price_record
from pytest_llmlab.results import Record
from pytest_llmlab.stats import finite_or_none

__all__ = ["LEDGER_NAME", "CostBudget", "budget_reason", "ledger_path"]

#: The ledger's file name in the run's spool folder.
LEDGER_NAME = "spend.json"
_LOCK_NAME = "spend.lock"


def ledger_path(folder: Path, run_id: str) -> Path:
    """The ledger of run ``run_id`` in report folder ``folder``: beside its spools."""
    return spool_path(folder, run_id, "main").with_name(LEDGER_NAME)


def budget_reason(budget: float, spent: float) -> str:
    """Why a test skipped: ``cost budget of $0.50 reached: $0.5021 spent``."""
    return f"cost budget of {format_usd(budget)} reached: {format_usd(spent)} spent"


@final
class CostBudget:
    """One process's view of the session's spend and budget (see the module docstring).

    ``budget`` None: no budget; records are still priced, nothing is counted.
    ``prices`` is the user's table (``llm_prices``); ``ledger`` the shared file, None
    for one in memory.
    """

    def __init__(
        self, budget: float | None, prices: Mapping[str, Price], ledger: Path | None = None
    ) -> None:
        self.budget = budget
        self.prices = dict(prices)
        self.ledger = ledger
        self._memory: dict[str, float] = {}
        self._priced: dict[str, bool] = {}

    def priced(self, spec: ModelSpec) -> bool:
        """Whether ``spec``'s generations count against the budget."""
        found = self._priced.get(spec.display)
        if found is None:
            found = has_token_price(spec.spec, self.prices, display=spec.display)
            self._priced[spec.display] = found
        return found

    def check(self, spec: ModelSpec) -> None:
        """Skip the running test when ``spec`` is priced and the budget is spent."""
        if self.budget is None or not self.priced(spec):
            return
        spent = math.fsum(self.spent().values())
        if spent >= self.budget:
            # Reported at the test, not at the plugin line that raised it.
            raise pytest.skip.Exception(budget_reason(self.budget, spent), _use_item_location=True)

    def charge(self, record: Record) -> None:
        """Price a new record and, under a budget, add its cost to the ledger."""
        price_record(record, self.prices)
        cost = finite_or_none(record["cost"])
        if self.budget is None or cost is None or cost <= 0 or record.get("replayed"):
            return  # a replay cost nothing this run
        model = record["model"]
        if self.ledger is None:
            self._memory[model] = self._memory.get(model, 0.0) + cost
            return
        with self._locked():
            spent = _read(self.ledger)
            spent[model] = spent.get(model, 0.0) + cost
            _write(self.ledger, spent)

    def spent(self) -> dict[str, float]:
        """USD spent per model (display name) so far in the session."""
        if self.ledger is None:
            return dict(self._memory)
        return _read(self.ledger)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        assert self.ledger is not None
        self.ledger.parent.mkdir(parents=True, exist_ok=True)
        with (self.ledger.parent / _LOCK_NAME).open("a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            yield  # closing the file releases the lock


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict):
        raise TypeError(f"pytest-llmlab: {path} is not a spend ledger (a JSON object)")
    spent: dict[str, float] = {}
    for model, value in data.items():
        number = finite_or_none(value)
        if number is not None:
            spent[str(model)] = number
    return spent


def _write(path: Path, spent: Mapping[str, float]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with partial.open("w", encoding="utf-8") as out:
        json.dump(spent, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
