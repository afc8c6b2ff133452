"""What one pytest process holds for its LLM tests: providers, meters, the baseline.

`SessionResources` is built at configure time from the settings and kept in
``config.stash``. Providers start on first use; meters are chosen on first use too, so
a session without LLM tests starts no sampler thread; the idle baseline is measured
once, after the first local model has loaded. Everything is closed at session end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from pytest_llmlab.config import Settings
from pytest_llmlab.energy.meters import MeterSelectionError, MeterSet
from pytest_llmlab.models.registry import ProviderPool

__all__ = ["SessionResources", "announcer"]


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


class SessionResources:
    """The process's providers and meters, for the settings of this session."""

    def __init__(self, settings: Settings, config: pytest.Config) -> None:
        self.settings = settings
        self.announce = announcer(config)
        self.pool = ProviderPool(
            base_urls=settings.base_urls,
            timeout_s=settings.timeout,
            threads=settings.threads,
            ctx=settings.ctx,
            announce=self.announce,
        )
        self._config = config
        self._meters: MeterSet | None = None
        self._baseline_done = False

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
        if set(self.settings.meter) - {"auto", "none", "estimate"}:
            try:
                self.meters()
            except MeterSelectionError as exc:
                raise pytest.UsageError(f"pytest-llmlab: {exc}") from None

    def meters(self) -> MeterSet:
        """The process's meters, chosen on first use (plugin meters included)."""
        if self._meters is None:
            extra = [
                meter
                for found in self._config.hook.pytest_llmlab_make_meters(config=self._config)
                for meter in found
            ]
            self._meters = MeterSet.from_settings(self.settings, extra=extra)
        return self._meters

    def measure_baseline_once(self) -> None:
        """Idle power after the first model load, announced in one line."""
        if self._baseline_done or self.settings.baseline_s <= 0:
            return
        self._baseline_done = True
        meters = self.meters()
        if not meters.meters:
            return
        watts = meters.measure_baseline(self.settings.baseline_s)
        self.announce(
            f"llmlab: idle baseline {watts:.2f} W over {self.settings.baseline_s:g} s "
            f"({', '.join(meters.names)})"
        )

    def close(self) -> None:
        self.pool.close()
        if self._meters is not None:
            self._meters.close()
            self._meters = None
