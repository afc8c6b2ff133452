"""The report session: everything the controller writes about a run.

Registered from ``pytest_configure`` on the controller only (the way pytest registers
its JUnit XML writer and xdist its distributed session), it owns the run's report
state: it holds the report folder's lock (`ReportFolder`), appends every record to
``results.jsonl`` as its test reports (under xdist, for every worker; the records of a
test whose worker died come from that worker's spool), and at session end reads the
records back from disk, runs the energy attribution pass over all windows, writes
``results.csv`` and ``report.html``, saves and compares the run in the history
(failing the session on a regression), and writes the terminal and GitHub summaries.
Records are not kept in memory during the run. SIGTERM is handled like Ctrl-C, so a
CI job that is cancelled still writes every report.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llmlab.config import Settings
from pytest_llmlab.fingerprint import hardware, hardware_fingerprint
from pytest_llmlab.report.folder import ReportFolder, spool_path
from pytest_llmlab.report.interrupts import Interrupts
from pytest_llmlab.results import (
    RECORDS_ATTR,
    JsonlWriter,
    crashed_test_records,
    record_key,
    reported_records,
)

if TYPE_CHECKING:
    from pytest_llmlab.report.leaderboard import LeaderboardRow
    from pytest_llmlab.report.summary import ModelRow

#: What xdist's report of a test whose worker died has as its phase.
_CRASH_PHASE = "???"

__all__ = ["ReportSession"]


class ReportSession:
    """Report writing for one session on the controller (a pytest plugin object)."""

    name = "llmlab-report-session"

    def __init__(
        self, settings: Settings, folder: ReportFolder, run_id: str, invocation_dir: Path
    ) -> None:
        """``folder`` must be acquired already (see `ReportFolder.acquire`)."""
        self.settings = settings
        self.folder = folder
        self.run_id = run_id
        self.writer = JsonlWriter(folder.path / "results.jsonl")
        self._invocation_dir = invocation_dir
        #: Distinct energy setups seen in records (every worker's), in arrival order.
        self.energy_notes: dict[str, None] = {}
        self.recovered = 0
        #: `record_key` of every record written: what a spool holds beyond it is missing.
        self._written_keys: set[tuple[object, ...]] = set()
        #: Readings attribution changed, by provenance (see `attribute_records`).
        self.attributed: Counter[str] = Counter()
        self.written: list[Path] = []
        self.history_lines: list[str] = []
        self.retry_lines: list[str] = []
        #: Spent vs ``--llm-cost-budget`` (`terminal.cost_budget_lines`); reached or not.
        self.cost_lines: list[str] = []
        self.budget_reached = False
        self.history_failures: list[str] = []
        self.rows: list[ModelRow] = []
        #: The leaderboard when prompt suites ran (points per category), else empty.
        self.board: list[LeaderboardRow] = []
        self.interrupts = Interrupts()
        #: Under ``--llm-resume``: the earlier runs' generations merged for this run
        #: to reuse, and how many (None: nothing to resume from).
        self.reuse: tuple[Path, int] | None = None

    @classmethod
    def start(cls, config: pytest.Config, settings: Settings) -> ReportSession | None:
        """Lock the report folder, register a new session as a plugin and take over
        SIGTERM; None for ``--help``/``--version``. A folder that cannot be used is a
        `pytest.UsageError` naming it."""
        from pytest_llmlab.config import report_dir
        from pytest_llmlab.report.folder import ReportFolderError, new_run_id

        if config.option.help or config.option.version:
            return None
        folder = ReportFolder(report_dir(settings, config.invocation_params.dir))
        try:
            folder.acquire()
        except ReportFolderError as exc:
            raise pytest.UsageError(f"pytest-llmlab: {exc}") from None
        session = cls(settings, folder, new_run_id(), config.invocation_params.dir)
        session.reuse = session._reuse(config)
        config.pluginmanager.register(session, cls.name)
        session.interrupts.install()
        if config.pluginmanager.hasplugin("html"):
            from pytest_llmlab.report.pytest_html import PytestHtmlColumns

            config.pluginmanager.register(PytestHtmlColumns(), "llmlab-pytest-html")
        return session

    def _reuse(self, config: pytest.Config) -> tuple[Path, int] | None:
        """What this run reuses, copied into its spool before the first record moves
        the earlier runs' files aside: ``--llm-rescore``'s file, or under
        ``--llm-resume`` the generations earlier runs in the folder finished."""
        from pytest_llmlab.report.folder import copy_generations, merge_earlier_generations

        if self.settings.rescore is not None:
            source = self._invocation_dir / Path(self.settings.rescore).expanduser()
            try:
                return copy_generations(source, self.folder.path, self.run_id)
            except OSError as exc:
                raise pytest.UsageError(
                    f"pytest-llmlab: --llm-rescore={self.settings.rescore}: cannot read it "
                    f"({exc.strerror or type(exc).__name__})"
                ) from None
        if self.settings.resume:
            return merge_earlier_generations(self.folder.path, self.run_id)
        return None

    # -- workers ------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Tell each xdist worker the run id and where to spool (builtin types only)."""
        node.workerinput["llmlab_run_id"] = self.run_id
        node.workerinput["llmlab_report_dir"] = str(self.folder.path)
        node.workerinput["llmlab_reuse"] = str(self.reuse[0]) if self.reuse else None

    # -- as tests report ----------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Write the report's records, then drop them from it: pytest keeps every
        report until the session ends (for its summary), and the records are on disk.
        Last, so that other plugins (pytest-html's columns) have seen them."""
        records: list[Any] = list(getattr(report, RECORDS_ATTR, None) or ())
        if records:
            setattr(report, RECORDS_ATTR, [])
        if report.when == _CRASH_PHASE:  # its worker died: what did it spool?
            worker = getattr(getattr(getattr(report, "node", None), "gateway", None), "id", None)
            if worker is not None:
                spool = spool_path(self.folder.path, self.run_id, str(worker))
                records = list(crashed_test_records(spool, report.nodeid, report.longreprtext))
                self.recovered += len(records)
        for value in records:
            if isinstance(value, dict):
                self._write(value)

    def _write(self, record: dict[str, Any]) -> None:
        if not self.folder.held:  # released at collection: no test here should record
            raise RuntimeError(
                f"pytest-llmlab: a record arrived after {self.folder.path} was released"
            )
        with self.interrupts.critical():
            self.folder.start_run(self.run_id)  # the previous run's files move aside once
            self.writer.write(record)
            self._written_keys.add(record_key(record))
        energy = record.get("energy") or {}
        if isinstance(energy, dict) and energy.get("note"):
            self.energy_notes.setdefault(str(energy["note"]))

    def _recover_reported(self) -> None:
        """Write the finished records that workers spooled but whose reports never
        reached this process (an interrupted controller stops reading them)."""
        spools = self.folder.path / ".spool" / self.run_id
        if not spools.is_dir():
            return
        for spool in sorted(spools.glob("*.jsonl")):
            for record in reported_records(spool):
                if record_key(record) not in self._written_keys:
                    self._write(dict(record))
                    self.recovered += 1

    # -- at the end ---------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Share overlapping windows' energy (xdist workers on one host), rewrite the
        file with the attributed readings, then write the CSV and HTML reports and the
        history."""
        self._recover_reported()
        self.writer.close()
        if not self.writer.count:
            return
        from pytest_llmlab.report.attribution_pass import attribute_records
        from pytest_llmlab.report.folder import merge_run_generations
        from pytest_llmlab.report.load import load_records

        # Every worker is down by now: all records are in the file, spools are spent.
        merge_run_generations(self.folder.path, self.run_id)
        self.folder.remove_spool(self.run_id)
        records = load_records(self.writer.path)
        self.attributed = attribute_records(records)
        if self.attributed:
            self.writer.rewrite(records)
        # Imported here: pandas and jinja2 cost every pytest start otherwise.
        from pytest_llmlab.report.csvfile import write_csv
        from pytest_llmlab.report.html import write_html

        folder = self.folder.path
        write_csv(records, folder / "results.csv")
        write_html(
            records,
            folder / "report.html",
            title=f"pytest-llmlab: {session.config.rootpath.name} (run {self.run_id})",
            meter_setup="; ".join(self.energy_notes) or None,
            hardware={**hardware(), "fingerprint": hardware_fingerprint()},
        )
        self.written = [folder / "results.csv", folder / "report.html"]
        from pytest_llmlab.report.metrics import write_metrics_csv

        metrics = write_metrics_csv(folder / "metrics.csv", records)
        if metrics is not None:
            self.written.append(metrics)
        self._history(session, records)
        from pytest_llmlab.report.summary import model_summary

        self.rows = model_summary(records)
        from pytest_llmlab.report.terminal import retry_lines

        self.retry_lines = retry_lines(records)
        self._cost_budget(session, records)
        if any(record.get("max_points") is not None for record in records):
            from pytest_llmlab.report.leaderboard import leaderboard
            from pytest_llmlab.report.prices import load_prices

            self.board = leaderboard(
                records, prices=load_prices(self.settings.prices), kwh_price=self.settings.kwh_price
            )

    def _cost_budget(self, session: pytest.Session, records: list[dict[str, Any]]) -> None:
        """Spent vs ``--llm-cost-budget``; a reached budget fails the session."""
        if self.settings.cost_budget is None:
            return
        from pytest_llmlab.report.terminal import cost_budget_lines

        self.cost_lines, self.budget_reached = cost_budget_lines(records, self.settings.cost_budget)
        if self.budget_reached and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _history(self, session: pytest.Session, records: list[dict[str, Any]]) -> None:
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
            records,
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
        if self.recovered:
            write(
                f"llmlab: {self.recovered} record(s) recovered from worker spools (a worker "
                "died, or the session stopped before it read their reports)"
            )
        if self.attributed:
            counts = ", ".join(f"{n} {p}" for p, n in sorted(self.attributed.items()))
            write(
                f"llmlab energy: {self.attributed.total()} reading(s) overlapped others on "
                f"the same host and got their share of the energy ({counts})"
            )
        for line in self.retry_lines:
            write(line)
        for line in self.cost_lines:
            write(line, red=self.budget_reached)
        for path in self.written:
            write(f"llmlab: wrote {path}")
        from pytest_llmlab.report.terminal import (
            append_github_summary,
            points_table,
            terminal_table,
        )

        rows = self.rows
        if rows:
            terminalreporter.write_sep("-", "llmlab: models")
            for line in terminal_table(rows):
                write(line)
            try:
                append_github_summary(rows)
            except OSError as exc:
                write(f"llmlab: $GITHUB_STEP_SUMMARY not written: {exc}")
        if self.board:
            terminalreporter.write_sep("-", "llmlab: points by category")
            for line in points_table(self.board):
                write(line)
        for line in self.history_lines:
            write(line)
        if self.history_failures:
            terminalreporter.write_sep("=", "llmlab regressions", red=True, bold=True)
            for line in self.history_failures:
                write(line, red=True)

    def close(self) -> None:
        """Close the file, release the folder and restore the signal handlers."""
        self.writer.close()
        self.folder.release()
        self.interrupts.restore()
