"""The names under which the plugin keeps its state in pytest, and the marker it
registers: what every pytest start needs, so this module imports nothing heavy (the
plugin imports the rest only when a session uses it; see ``bench/startup.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_llmlab.resources import SessionResources
    from pytest_llmlab.results import PendingRecords

__all__ = ["MARKER_HELP", "RECORDS", "RECORDS_ATTR", "REPEAT_ATTR", "RESOURCES"]

#: The process's providers, meters and settings (`SessionResources`), in ``config.stash``.
RESOURCES: pytest.StashKey[SessionResources] = pytest.StashKey()
#: An LLM item's records while it runs, in ``item.stash``.
RECORDS: pytest.StashKey[PendingRecords] = pytest.StashKey()
#: The report attributes that carry an item's records and its repeat summary (to the
#: controller under xdist).
RECORDS_ATTR = "llmlab_records"
REPEAT_ATTR = "llmlab_sampling"

#: The ``llm`` marker's line in ``pytest --markers`` (its keywords: `cases.MARKER_KEYS`).
MARKER_HELP = (
    "llm(models=[...], temperatures=[...], max_tokens=None, system=None, context=None, "
    "injections=None, seed=None, stop=None, runs=1, pass_rate=1.0, pass_rule='rate', confidence=0.95, "
    "early_stop=True, **params): run this test on these models/temperatures instead of "
    "the session's, with these generation defaults, repeated and decided by pass rate"
)
