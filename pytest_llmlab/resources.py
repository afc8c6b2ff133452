"""What one pytest process holds for its LLM tests: providers, meters, the baseline.

`SessionResources` is built at configure time from the settings and kept in
``config.stash``. Providers start on first use; meters are chosen on first use too, so
a session without LLM tests starts no sampler thread; the idle baseline is measured
once, after the first local model has loaded. Everything is closed at session end.

A calibration (``--llm-energy-coefficients``) is read at configure time: a missing or
broken file is a usage error; one measured on other hardware, or for none of the
session's models, is a `CalibrationWarning` (on the controller only: once a session).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llmlab.config import Settings, report_dir

# Built at every pytest start: the modules behind providers, meters and records are
# imported when a session first needs them (bench/startup.py).
if TYPE_CHECKING:
    from pytest_llmlab.cassettes import Cassettes, ItemTape, RunGenerations
    from pytest_llmlab.energy.calibration import CalibratedMeter
    from pytest_llmlab.energy.meters import MeterSet
    from pytest_llmlab.models.registry import ProviderPool
    from pytest_llmlab.prefetch import Prefetcher
    from pytest_llmlab.results import Spool
    from pytest_llmlab.spend import CostBudget

#: The item's `ItemTape`: its judge's requests share the sample counts of its own.
_ITEM_TAPE = pytest.StashKey["ItemTape"]()

__all__ = ["CalibrationWarning", "SessionResources", "announcer"]


class CalibrationWarning(pytest.PytestWarning):
    """The energy calibration in use was measured on other hardware, or for another
    model: its estimates describe that box, or that model."""


def announcer(config: pytest.Config) -> Callable[[str], None]:
    """Print one line to the terminal even while pytest captures output."""

    def announce(message: str) -> None:
        reporter = config.pluginmanager.getplugin("terminalreporter")
        capture = config.pluginmanager.getplugin("capturemanager")
        if reporter is None:
            print(message, file=sys.stderr)
        elif capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(message)
        else:
            reporter.write_line(message)

    return announce


def sanitize_report(report: pytest.TestReport) -> None:
    """Mask secrets in an LLM test's failure text and captured output, and escape the
    control characters in them, before the terminal, JUnit XML or pytest-html see
    them: server and model text (an echoed key, ``\x1b[2J``) can reach both."""
    from pytest_llmlab.redact import redact_text, terminal_safe

    if report.longrepr is not None:
        text = report.longreprtext
        safe = terminal_safe(redact_text(text))
        if safe != text:
            report.longrepr = safe  # plain text: pytest prints it as given
    report.sections = [
        (title, terminal_safe(redact_text(content))) for title, content in report.sections
    ]


class SessionResources:
    """The process's providers and meters, for the settings of this session."""

    def __init__(
        self,
        settings: Settings,
        config: pytest.Config,
        *,
        run_id: str | None = None,
        spool: Spool | None = None,
        report_folder: Path | None = None,
    ) -> None:
        """``run_id`` names the run in every record; ``spool`` (xdist workers) logs
        each finished generation at once, for the controller to recover on a crash;
        ``report_folder`` (the controller's, for workers) holds the spend ledger."""
        self.settings = settings
        self.run_id = run_id
        self.spool = spool
        self._report_folder = report_folder
        self._cost_budget: CostBudget | None = None
        #: This process's xdist worker id (``gw0``...), or ``main``: from the
        #: controller's workerinput, not the environment, which a pytest run started
        #: from inside a worker inherits.
        self.worker = str(getattr(config, "workerinput", {}).get("workerid", "main"))
        self.announce = announcer(config)
        self._pool: ProviderPool | None = None
        self._config = config
        self._meters: MeterSet | None = None
        self._baseline_done = False
        self._calibrated: CalibratedMeter | None = None
        self._calibration_read = False
        self._run_generations: RunGenerations | None = None
        #: What `bind_run` was given, until the first LLM item opens it.
        self._run_binding: tuple[str | None, Path | None, Path | None] | None = None
        self._prefetcher: Prefetcher | None = None
        self._prefetcher_closed = False
        self._cassettes: Cassettes | None = None
        if settings.record != "off":
            from pytest_llmlab.cassettes import Cassettes

            self._cassettes = Cassettes(
                mode=settings.record,
                folder=settings.cassette_dir,
                speed=settings.replay_speed,
                rootdir=config.rootpath,
            )

    @property
    def pool(self) -> ProviderPool:
        """The process's providers, built on first use (none start before theirs)."""
        if self._pool is None:
            from pytest_llmlab.models.registry import ProviderPool

            settings = self.settings
            self._pool = ProviderPool(
                base_urls=settings.base_urls,
                timeout_s=settings.timeout,
                deadline_s=settings.deadline,
                threads=settings.threads,
                ctx=settings.ctx,
                retries=settings.retries,
                concurrency=settings.concurrency,
                announce=self.announce,
            )
        return self._pool

    @classmethod
    def for_worker(cls, settings: Settings, config: pytest.Config) -> SessionResources:
        """An xdist worker's resources: the run id and spool the controller sent."""
        from pytest_llmlab.report.folder import spool_path
        from pytest_llmlab.results import Spool

        workerinput: dict[str, Any] = getattr(config, "workerinput", {})
        run_id = workerinput.get("llmlab_run_id")
        folder = workerinput.get("llmlab_report_dir")
        if not run_id or not folder:  # a controller without a report session
            resources = cls(settings, config)
            resources.bind_run(None, None, None)
            return resources
        worker = str(workerinput.get("workerid", "gw"))
        spool = Spool(spool_path(Path(folder), run_id, worker))
        resources = cls(settings, config, run_id=run_id, spool=spool, report_folder=Path(folder))
        reuse = workerinput.get("llmlab_reuse")
        resources.bind_run(run_id, Path(folder), Path(reuse) if reuse else None)
        return resources

    @property
    def cost_budget(self) -> CostBudget:
        """The session's spend and ``--llm-cost-budget`` (`pytest_llmlab.spend`), built
        on first use: the controller's run id is known only after configure."""
        if self._cost_budget is None:
            from pytest_llmlab.spend import CostBudget, ledger_path

            folder = self._report_folder
            if folder is None and not hasattr(self._config, "workerinput"):
                folder = report_dir(self.settings, self._config.invocation_params.dir)
            ledger = ledger_path(folder, self.run_id) if folder and self.run_id else None
            self._cost_budget = CostBudget(
                self.settings.cost_budget, self.settings.prices or {}, ledger
            )
        return self._cost_budget

    def check(self) -> None:
        """Raise `pytest.UsageError` now for settings this machine cannot honour: an
        unknown grid zone, or an explicit hardware meter it lacks (a usage error, not a
        surprise in the middle of the run)."""
        if self.settings.grid_zone:
            from pytest_llmlab.energy.cloud import zone_intensity

            try:
                zone_intensity(self.settings.grid_zone)
            except ValueError as exc:
                raise pytest.UsageError(f"pytest-llmlab: --llm-grid-zone: {exc}") from None
        self.calibrated_meter()
        if set(self.settings.meter) - {"auto", "none", "estimate"}:
            from pytest_llmlab.energy.meters import MeterSelectionError

            try:
                self.meters()
            except MeterSelectionError as exc:
                raise pytest.UsageError(f"pytest-llmlab: {exc}") from None

    def meters(self) -> MeterSet:
        """The process's meters, chosen on first use (plugin meters included)."""
        if self._meters is None:
            from pytest_llmlab.energy.meters import MeterSet

            extra = [
                meter
                for found in self._config.hook.pytest_llmlab_make_meters(config=self._config)
                for meter in found
            ]
            self._meters = MeterSet.from_settings(
                self.settings, extra=extra, calibrated=self.calibrated_meter()
            )
        return self._meters

    def calibrated_meter(self) -> CalibratedMeter | None:
        """The estimate of ``--llm-energy-coefficients``, read once; `pytest.UsageError`
        naming the option and the file where it cannot be read."""
        if self._calibration_read:
            return self._calibrated
        self._calibration_read = True
        value = self.settings.energy_coefficients
        if value is None:
            return None
        from pytest_llmlab.energy.calibration import (
            CalibratedMeter,
            load_calibration,
            resolve_calibration,
        )
        from pytest_llmlab.fingerprint import hardware_fingerprint

        source = self.settings.sources.get("energy_coefficients", "command line")
        where = f"--llm-energy-coefficients={value}"
        if source != "command line":
            where += f" (from {source})"
        try:
            path = resolve_calibration(value, self._config.invocation_params.dir)
            calibration = load_calibration(path)
        except ValueError as exc:
            raise pytest.UsageError(f"pytest-llmlab: {where}: {exc}") from None
        here = hardware_fingerprint()
        self._calibrated = CalibratedMeter(calibration, source=path, this_fingerprint=here)
        if not hasattr(self._config, "workerinput"):  # the controller warns, once
            self._warn_about(self._calibrated, here)
        return self._calibrated

    def _warn_about(self, meter: CalibratedMeter, here: str) -> None:
        calibration = meter.calibration
        if meter.foreign:
            self._config.issue_config_time_warning(
                CalibrationWarning(
                    f"energy calibration {calibration.name!r} ({meter.source}) was measured "
                    f"on {calibration.box}, not on this machine (fingerprint {here}): its "
                    "estimates are that box's energy, not this one's"
                ),
                stacklevel=2,
            )
        models = {m.spec for m in self.settings.models}
        if calibration.model not in models:
            self._config.issue_config_time_warning(
                CalibrationWarning(
                    f"energy calibration {calibration.name!r} was measured for "
                    f"{calibration.model}, not for {', '.join(sorted(models))}: its "
                    "coefficients are applied to every model of this session"
                ),
                stacklevel=2,
            )

    def preload(self) -> None:
        """Import what generating needs (the LLM, the HTTP client's connection code,
        the prefetcher) once collection shows a test that generates: before the test
        loop, so the first test's time is its own. A session of plain tests never
        loads them (`pytest_llmlab.plugin` keeps its start-up small)."""
        import httpcore  # noqa: F401  # httpx loads it with its first client

        from pytest_llmlab import runner  # noqa: F401  # the LLM, its models and meters

        if self.settings.concurrency != 1:
            from pytest_llmlab import prefetch  # noqa: F401

    def measure_baseline_once(self) -> None:
        """Idle power after the first model load, announced in one line."""
        if self._baseline_done or self.settings.baseline_s <= 0:
            return
        self._baseline_done = True
        meters = self.meters()
        if not meters.meters or meters.token_only:  # a calibrated estimate has no idle
            return
        watts = meters.measure_baseline(self.settings.baseline_s)
        self.announce(
            f"llmlab: idle baseline {watts:.2f} W over {self.settings.baseline_s:g} s "
            f"({', '.join(meters.names)})"
        )

    # -- cassettes and this run's generations ------------------------------------------

    def bind_run(self, run_id: str | None, folder: Path | None, reuse: Path | None) -> None:
        """This process's part of a run: its generations log in the run's spool (for a
        later ``--llm-resume`` or rescore), and what it reuses (``reuse``: the merged
        generations of earlier runs under ``--llm-resume``; ``--llm-rescore``'s file).
        Opened when the first LLM item asks (`item_tape`)."""
        self.run_id = run_id
        self._run_binding = (run_id, folder, reuse)
        self._run_generations = None

    def _bound_run(self) -> RunGenerations | None:
        """The `RunGenerations` of `bind_run`, made on first use."""
        if self._run_binding is None:
            return self._run_generations
        run_id, folder, reuse = self._run_binding
        self._run_binding = None
        from pytest_llmlab.cassettes import CassetteFile, RunGenerations
        from pytest_llmlab.report.folder import generations_log_path

        rescore = self.settings.rescore
        if reuse is None and rescore is not None:  # no report session: read it in place
            reuse = self._config.invocation_params.dir / Path(rescore).expanduser()
        source: CassetteFile | None = None
        if reuse is not None:
            shown = rescore if rescore is not None else "the previous run (--llm-resume)"
            source = CassetteFile(reuse, shown)
        log = generations_log_path(folder, run_id, self.worker) if folder and run_id else None
        if log is not None or source is not None:
            self._run_generations = RunGenerations(
                log=log, reuse=source, strict=rescore is not None
            )
        return self._run_generations

    def item_tape(self, item: pytest.Item) -> ItemTape | None:
        """The cassette side of ``item`` (one per item: it counts the samples of each
        request), or None when nothing is recorded, replayed or logged."""
        run = self._bound_run()
        if self._cassettes is None and run is None:
            return None
        from pytest_llmlab.cassettes import ItemTape

        tape = item.stash.get(_ITEM_TAPE, None)
        if tape is None:
            tape = ItemTape(
                test_id=item.nodeid,
                test_file=item.path,
                cassettes=self._cassettes,
                run=run,
                replayer=self.pool.replayer,
            )
            item.stash[_ITEM_TAPE] = tape
        return tape

    def prefetcher(self, session: pytest.Session) -> Prefetcher | None:
        """What generates suite cases ahead of their items (`pytest_llmlab.prefetch`),
        built on first use; None under ``--llm-concurrency=1``."""
        if self.settings.concurrency == 1 or self._prefetcher_closed:
            return None
        if self._prefetcher is None:
            from pytest_llmlab.prefetch import Prefetcher

            self._prefetcher = Prefetcher(self, session)
        return self._prefetcher

    def close(self) -> None:
        if self._prefetcher is not None:  # before the providers it streams from
            self._prefetcher.close()
            self._prefetcher = None
        self._prefetcher_closed = True
        if self._cassettes is not None:
            self._cassettes.close()
        if self._run_generations is not None:
            self._run_generations.close()
        if self.spool is not None:
            self.spool.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._meters is not None:
            self._meters.close()
            self._meters = None
