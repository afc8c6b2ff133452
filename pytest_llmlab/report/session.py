"""The report session: everything the controller writes about a run.

Registered from ``pytest_configure`` on the controller only (the way pytest registers
its JUnit XML writer and xdist its distributed session), it owns the run's report
state: it appends every record to ``results.jsonl`` as its test reports (under xdist,
for every worker), and at session end runs the energy attribution pass over all
windows, writes ``results.csv`` and ``report.html``, saves and compares the run in the
history (failing the session on a regression), and writes the terminal and GitHub
summaries.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pytest_llmlab.config import Settings
from pytest_llmlab.fingerprint import hardware, hardware_fingerprint
from pytest_llmlab.results import RECORDS_ATTR, JsonlWriter, Record

__all__ = ["ReportSession"]


class ReportSession:
    """Report writing for one session on the controller (a pytest plugin object)."""

    name = "llmlab-report-session"

    def __init__(self, settings: Settings, folder: Path, invocation_dir: Path) -> None:
        self.settings = settings
        self.folder = folder
        self.writer = JsonlWriter(folder / "results.jsonl")
        self._invocation_dir = invocation_dir
        self.records: list[Record] = []
        #: Distinct energy setups seen in records (every worker's), in arrival order.
        self.energy_notes: dict[str, None] = {}
        self.attributed = 0
        self.written: list[Path] = []
        self.history_lines: list[str] = []
        self.history_failures: list[str] = []

    # -- as tests report ----------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for value in getattr(report, RECORDS_ATTR, None) or ():
            if isinstance(value, dict):
                self.writer.write(value)
                self.records.append(value)  # type: ignore[arg-type]  # shipped as JSON
                energy = value.get("energy") or {}
                if isinstance(energy, dict) and energy.get("note"):
                    self.energy_notes.setdefault(str(energy["note"]))

    # -- at the end ---------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Share overlapping windows' energy (xdist workers on one host), rewrite the
        file with the attributed readings, then write the CSV and HTML reports and the
        history."""
        from pytest_llmlab.report.attribution_pass import attribute_records

        self.attributed = attribute_records(self.records)
        if self.attributed:
            self.writer.rewrite(self.records)
        if not self.records:
            return
        # Imported here: pandas and jinja2 cost every pytest start otherwise.
        from pytest_llmlab.report.csvfile import write_csv
        from pytest_llmlab.report.html import write_html

        write_csv(self.records, self.folder / "results.csv")
        write_html(
            self.records,
            self.folder / "report.html",
            title=f"pytest-llmlab: {session.config.rootpath.name}",
            meter_setup="; ".join(self.energy_notes) or None,
            hardware={**hardware(), "fingerprint": hardware_fingerprint()},
        )
        self.written = [self.folder / "results.csv", self.folder / "report.html"]
        self._history(session)

    def _history(self, session: pytest.Session) -> None:
        """Compare with the baseline and save the run (--llm-compare / --llm-save)."""
        settings = self.settings
        save_as = settings.save
        if save_as is None and settings.autosave:
            save_as = time.strftime("auto-%Y%m%d-%H%M%S")
        if settings.compare is None and save_as is None:
            return
        from pytest_llmlab.report.history import session_history
        from pytest_llmlab.report.prices import load_prices

        path = Path(settings.history).expanduser()
        if not path.is_absolute():
            path = self._invocation_dir / path
        outcome = session_history(
            self.records,
            path=path,
            save_as=save_as,
            compare_with=settings.compare,
            checks=settings.compare_fail or (),
            prices=load_prices(settings.prices),
            kwh_price=settings.kwh_price,
            fingerprint=hardware_fingerprint(),
            hardware=hardware(),
        )
        self.history_lines = list(outcome.lines)
        self.history_failures = list(outcome.failures)
        if self.history_failures:
            # pytest exits with session.exitstatus once sessionfinish is done.
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.writer.count:
            return
        write = terminalreporter.write_line
        write(f"llmlab: {self.writer.count} generation(s) recorded in {self.writer.path}")
        for note in self.energy_notes:
            write(f"llmlab energy: {note}")
        if self.attributed:
            write(
                f"llmlab energy: {self.attributed} reading(s) overlapped others on the same "
                "host and were apportioned (measured-apportioned)"
            )
        for path in self.written:
            write(f"llmlab: wrote {path}")
        from pytest_llmlab.report.summary import model_summary
        from pytest_llmlab.report.terminal import append_github_summary, terminal_table

        rows = model_summary(self.records)
        if rows:
            terminalreporter.write_sep("-", "llmlab: models")
            for line in terminal_table(rows):
                write(line)
            try:
                append_github_summary(rows)
            except OSError as exc:
                write(f"llmlab: $GITHUB_STEP_SUMMARY not written: {exc}")
        for line in self.history_lines:
            write(line)
        if self.history_failures:
            terminalreporter.write_sep("=", "llmlab regressions", red=True, bold=True)
            for line in self.history_failures:
                write(line, red=True)

    def close(self) -> None:
        self.writer.close()
