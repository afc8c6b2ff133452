"""Model, Wh/1k, tokens/s and energy-source columns in pytest-html's results table.

Registered only when pytest-html is installed. Its cells are HTML strings; every value
here comes from records (model names are user text) and is escaped.
"""

from __future__ import annotations

import html

import pytest

__all__ = ["PytestHtmlColumns"]


class PytestHtmlColumns:
    """A pytest plugin object adding four columns after pytest-html's third."""

    HEADERS = ("Model", "Wh/1k", "tok/s", "Energy source")
    _PROPERTIES = ("llm_model", "llm_wh_per_1k", "llm_tokens_per_s", "llm_provenance")

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        at = min(3, len(cells))
        cells[at:at] = [f'<th class="sortable">{name}</th>' for name in self.HEADERS]

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        # The test's short `junit_properties`, which the plugin puts in the item's
        # user_properties (shared by its reports): the records themselves leave the
        # report once written.
        props = {str(k): str(v) for k, v in report.user_properties if str(k) in self._PROPERTIES}
        at = min(3, len(cells))
        cells[at:at] = [f"<td>{html.escape(props.get(name, ''))}</td>" for name in self._PROPERTIES]
