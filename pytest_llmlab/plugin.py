"""pytest hooks and fixtures: wiring only.

Options come from `pytest_llmlab.config`, providers from `pytest_llmlab.models`,
records and the JSONL writer from `pytest_llmlab.results`. This module decides when
each is called.
"""

from __future__ import annotations

import html
import inspect
import os
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_llmlab.config import (
    OPTIONS,
    Settings,
    SettingsError,
    build_settings,
    cli_type,
    report_dir,
)
from pytest_llmlab.energy.apportion import apportion_records
from pytest_llmlab.energy.cloud import zone_intensity
from pytest_llmlab.energy.meters import MeterSelectionError, MeterSet, OpenWindow, select_meters
from pytest_llmlab.errors import ModelUnavailable
from pytest_llmlab.expect import ExpectationFailed, collecting
from pytest_llmlab.fingerprint import hardware, hardware_fingerprint
from pytest_llmlab.llm import LLM
from pytest_llmlab.models.base import Generation
from pytest_llmlab.models.registry import ProviderPool
from pytest_llmlab.models.spec import ModelSpec, SpecError, parse_spec, split_list
from pytest_llmlab.report.summary import append_github_summary, junit_properties, terminal_table
from pytest_llmlab.report.table import model_summary
from pytest_llmlab.results import JsonlWriter, record_from_generation
from pytest_llmlab.sampling import (
    RunOutcome,
    SamplingPlan,
    SamplingResult,
    parse_pass_rule,
    run_repeated,
)

SAMPLING_KEYS = ("runs", "pass_rate", "pass_rule", "confidence", "early_stop")
MARKER_KEYS = ("models", "temperatures", "max_tokens", "system", "seed", "stop", *SAMPLING_KEYS)
MARKER_HELP = (
    "llm(models=[...], temperatures=[...], max_tokens=None, system=None, seed=None, "
    "stop=None, runs=1, pass_rate=1.0, pass_rule='rate', confidence=0.95, "
    "early_stop=True, **params): run this test on these models/temperatures instead of "
    "the session's, with these generation defaults, repeated and decided by pass rate"
)
#: Report attributes that carry records and the sampling summary. Plain attributes,
#: not user_properties: pytest-xdist ships every JSON-able report attribute to the
#: controller, and JUnit XML then gets only the short properties it should show.
RECORDS_ATTR = "llmlab_records"
SAMPLING_ATTR = "llmlab_sampling"


@dataclass(frozen=True, slots=True)
class LLMCase:
    """One parametrization: a model at a temperature (the value behind each test id)."""

    model: ModelSpec
    temperature: float

    @property
    def id(self) -> str:
        return f"{self.model.display}-T{self.temperature:g}"


@dataclass
class SessionState:
    settings: Settings
    pool: ProviderPool
    writer: JsonlWriter | None  # None on xdist workers: only the controller writes
    announce: Callable[[str], None]
    config: pytest.Config
    meters: MeterSet | None = None
    baseline_done: bool = False

    def meter_set(self) -> MeterSet:
        """The process's meters, chosen on first use so unused sessions start no thread."""
        if self.meters is None:
            settings = self.settings
            extra = [m for found in self.config.hook.pytest_llmlab_make_meters(
                config=self.config) for m in found]  # fmt: skip
            meters = select_meters(settings.meter, cpu_tdp=settings.cpu_tdp, extra=extra)
            meters.grid_gco2_per_kwh = settings.grid_gco2_per_kwh
            if meters.grid_gco2_per_kwh is None and settings.grid_zone:
                meters.grid_gco2_per_kwh = zone_intensity(settings.grid_zone)
            meters.grid_zone = settings.grid_zone
            meters.kwh_price = settings.kwh_price
            self.meters = meters
        return self.meters

    def measure_baseline_once(self) -> None:
        """Idle power after the first model load, announced in one line."""
        if self.baseline_done or self.settings.baseline_s <= 0:
            return
        self.baseline_done = True
        meters = self.meter_set()
        if not meters.meters:
            return
        watts = meters.measure_baseline(self.settings.baseline_s)
        self.announce(
            f"llmlab: idle baseline {watts:.2f} W over {self.settings.baseline_s:g} s "
            f"({', '.join(meters.names)})"
        )

    def close(self) -> None:
        self.pool.close()
        if self.meters is not None:
            self.meters.close()
            self.meters = None


@dataclass
class ItemRecords:
    pending: list[dict[str, Any]] = field(default_factory=list)
    call_outcome: str | None = None
    sampling: SamplingResult | None = None


STATE = pytest.StashKey[SessionState]()
RECORDS = pytest.StashKey[ItemRecords]()


# -- options --------------------------------------------------------------------------


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_llmlab import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llmlab", "LLM behaviour and energy tests (pytest-llmlab)")
    for option in OPTIONS:
        if option.cli:
            if option.flag:
                group.addoption(
                    option.cli_flag, action="store_true", default=None, dest=option.dest,
                    help=option.help,
                )  # fmt: skip
            else:
                extra: dict[str, Any] = (
                    {"nargs": "?", "const": option.const} if option.const is not None else {}
                )
                group.addoption(
                    option.cli_flag, action="store", default=None, dest=option.dest,
                    type=cli_type(option), metavar=option.name.upper(), help=option.help,
                    **extra,
                )  # fmt: skip
        ini_help = f"{option.help} (env {', '.join(option.env_names)})"
        parser.addini(option.ini_key, ini_help, type=option.ini_type, default=None)  # type: ignore[arg-type]


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _announcer(config: pytest.Config) -> Callable[[str], None]:
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    ini = {option.ini_key: config.getini(option.ini_key) for option in OPTIONS}
    try:
        settings = build_settings(cli=vars(config.option), ini=ini)
    except SettingsError as exc:
        raise pytest.UsageError(f"pytest-llmlab: {exc}") from None
    announce = _announcer(config)
    writer = None
    if not _is_worker(config):
        directory = report_dir(settings, config.invocation_params.dir)
        writer = JsonlWriter(directory / "results.jsonl")
        config.pluginmanager.register(RecordSink(writer, settings), "llmlab-record-sink")
        if config.pluginmanager.hasplugin("html"):
            config.pluginmanager.register(PytestHtmlColumns(), "llmlab-pytest-html")
    state = SessionState(
        settings=settings,
        pool=ProviderPool(settings, announce=announce),
        writer=writer,
        announce=announce,
        config=config,
    )
    config.stash[STATE] = state
    if settings.compare_fail and settings.compare is None:
        raise pytest.UsageError(
            "pytest-llmlab: --llm-compare-fail needs a baseline: add --llm-compare[=NAME]"
        )
    if settings.grid_zone:
        try:
            zone_intensity(settings.grid_zone)
        except ValueError as exc:
            raise pytest.UsageError(f"pytest-llmlab: --llm-grid-zone: {exc}") from None
    if set(settings.meter) - {"auto", "none", "estimate"}:
        # An explicit hardware meter is checked now: asking for one the machine lacks
        # is a usage error, not a surprise in the middle of the run.
        try:
            state.meter_set()
        except MeterSelectionError as exc:
            raise pytest.UsageError(f"pytest-llmlab: {exc}") from None


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.close()
        if state.writer is not None:
            state.writer.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash[STATE]
    settings = state.settings
    models = ", ".join(str(spec) for spec in settings.models)
    temperatures = ", ".join(f"{t:g}" for t in settings.temperatures)
    line = (
        f"llmlab: models {models} ({settings.sources['models']}); "
        f"temperatures {temperatures} ({settings.sources['temperatures']}); "
        f"reports {report_dir(settings, config.invocation_params.dir)}"
    )
    return [line]


# -- parametrization ------------------------------------------------------------------


def _marker_values(definition: pytest.Function) -> dict[str, Any]:
    """Merge every ``llm`` marker on the test, the closest one winning per key."""
    merged: dict[str, Any] = {}
    for marker in definition.iter_markers("llm"):
        if marker.args:
            raise SpecError(
                "@pytest.mark.llm takes keyword arguments only, "
                "e.g. @pytest.mark.llm(models=['local:smollm2-135m'])"
            )
        for key, value in marker.kwargs.items():
            merged.setdefault(key, value)
    return merged


def _marker_models(value: Any, session: list[ModelSpec]) -> list[ModelSpec]:
    """Marker model entries: specs, or bare names of session aliases."""
    aliases = {spec.alias: spec for spec in session if spec.alias}
    specs: list[ModelSpec] = []
    for item in split_list(value):
        spec = aliases[item] if ":" not in item and item in aliases else parse_spec(item)
        if spec.display not in {s.display for s in specs}:
            specs.append(spec)
    return specs


def _marker_temperatures(value: Any) -> list[float]:
    from pytest_llmlab.config import OPTIONS as options

    parse = next(o.parse for o in options if o.name == "temperatures")
    items = [value] if isinstance(value, int | float) else list(value)
    return parse(",".join(str(v) for v in items))  # type: ignore[no-any-return]


def llm_cases(settings: Settings, marker: dict[str, Any]) -> list[LLMCase]:
    """The ordered, de-duplicated cases for one test: models x temperatures."""
    models = settings.models
    if "models" in marker:
        models = _marker_models(marker["models"], settings.models)
    temperatures = settings.temperatures
    if "temperatures" in marker:
        try:
            temperatures = _marker_temperatures(marker["temperatures"])
        except ValueError as exc:
            raise SpecError(f"temperatures: {exc}") from None
    if not models:
        raise SpecError("models=[] selects no model")
    return [LLMCase(model, t) for model in models for t in temperatures]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # `llm`, `llm_spec` and `llm_temperature` all depend on `llm_case`; a test module
    # that overrides `llm` with its own fixture is left alone.
    if "llm_case" not in metafunc.fixturenames:
        return
    settings = metafunc.config.stash[STATE].settings
    marker = _marker_values(metafunc.definition)
    try:
        cases = llm_cases(settings, marker)
        sampling_plan(settings, marker)
    except (SpecError, ValueError) as exc:
        pytest.fail(f"{metafunc.definition.nodeid}: @pytest.mark.llm: {exc}", pytrace=False)
    metafunc.parametrize("llm_case", cases, ids=[case.id for case in cases])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Say what meters this run uses, once, where the header is: only when a collected
    test needs them (collection is when that becomes known)."""
    if _is_worker(session.config) or session.config.option.collectonly:
        return
    metered = any(
        {"llm_case", "meter"} & set(getattr(item, "fixturenames", ())) for item in session.items
    )
    if not metered:
        return
    state = session.config.stash[STATE]
    reporter = session.config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"llmlab energy: {state.meter_set().description}")


def sampling_plan(settings: Settings, marker: dict[str, Any]) -> SamplingPlan:
    """The test's repeated-sampling plan: marker keywords over the session's options."""
    rule, k = settings.pass_rule
    if "pass_rule" in marker:
        rule, k = parse_pass_rule(str(marker["pass_rule"]))
    runs = marker.get("runs", settings.runs)
    pass_rate = marker.get("pass_rate", settings.pass_rate)
    confidence = marker.get("confidence", settings.confidence)
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise ValueError(f"runs={runs!r} must be a whole number >= 1")
    if not isinstance(pass_rate, int | float) or not 0.0 <= pass_rate <= 1.0:
        raise ValueError(f"pass_rate={pass_rate!r} must be between 0 and 1")
    if not isinstance(confidence, float) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be strictly between 0 and 1")
    return SamplingPlan(
        runs=runs,
        pass_rate=float(pass_rate),
        rule=rule,
        k=k,
        confidence=confidence,
        early_stop=bool(marker.get("early_stop", not settings.no_early_stop)),
    )


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
def llm_case(request: pytest.FixtureRequest) -> LLMCase:
    """The model and temperature of this test (parametrized by the plugin)."""
    pytest.fail(
        "the llm fixtures are parametrized at collection: request `llm` as a test or "
        "fixture argument, not through request.getfixturevalue()",
        pytrace=False,
    )


@pytest.fixture
def llm_spec(llm_case: LLMCase) -> str:
    """The ``provider:model`` spec of this test's parametrization."""
    return llm_case.model.spec


@pytest.fixture
def llm_temperature(llm_case: LLMCase) -> float:
    """The temperature of this test's parametrization."""
    return llm_case.temperature


def _generation_defaults(marker: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        k: marker[k] for k in ("max_tokens", "system", "seed", "stop") if k in marker
    }
    params = {k: v for k, v in marker.items() if k not in MARKER_KEYS}
    if params:
        defaults["params"] = params
    return defaults


@pytest.fixture
def llm(request: pytest.FixtureRequest, llm_case: LLMCase) -> Iterator[LLM]:
    """The model of this parametrization, bound to its temperature.

    ``llm.generate(prompt, ...)`` returns a Generation; ``llm.stream(prompt, ...)``
    iterates text chunks. The endpoint is checked (and a local model loaded) here, so
    an unavailable model errors the test at setup, or skips it under
    ``--llm-skip-unavailable``.
    """
    state = request.config.stash[STATE]
    provider = state.pool.get(llm_case.model)
    unavailable: str | None = None
    try:
        provider.ensure_available()
    except ModelUnavailable as exc:
        unavailable = str(exc)
    if unavailable is not None:  # outside the except: no chained traceback in the report
        if state.settings.skip_unavailable:
            pytest.skip(f"model unavailable: {unavailable}")
        pytest.fail(unavailable, pytrace=False)
    meters = state.meter_set()
    if provider.runs_locally:
        state.measure_baseline_once()
    item = request.node
    records = item.stash.setdefault(RECORDS, ItemRecords())
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")

    def record(generation: Generation) -> None:
        entry = record_from_generation(
            generation, test_id=item.nodeid, alias=llm_case.model.alias, worker=worker
        )
        entry["run"] = bound.run_index
        records.pending.append(entry)

    bound = LLM(
        model_spec=llm_case.model,
        temperature=llm_case.temperature,
        provider=provider,
        defaults=_generation_defaults(_marker_values(item)),
        recorder=record,
        meters=meters,
    )
    yield bound
    bound.close()


class EnergyMeter:
    """The `meter` fixture: meter any block of code with the session's meters."""

    def __init__(self, meters: MeterSet) -> None:
        self._meters = meters

    @property
    def description(self) -> str:
        """What meters run here and why (the line the terminal summary shows)."""
        return self._meters.description

    @property
    def names(self) -> list[str]:
        return self._meters.names

    @property
    def baseline_w(self) -> float | None:
        return self._meters.baseline_w

    def window(self, label: str = "") -> OpenWindow:
        """``with meter.window("tokenize") as w: ...`` then ``w.reading``.

        Windows may nest and overlap: each reports the gross energy of its own span.
        """
        return self._meters.open(label)


@pytest.fixture
def meter(request: pytest.FixtureRequest) -> EnergyMeter:
    """Meter arbitrary code: ``with meter.window("label") as w: ...``; ``w.reading``."""
    return EnergyMeter(request.config.stash[STATE].meter_set())


# -- running: soft checks, repeated sampling, budgets -----------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return first if len(first) <= 200 else first[:197] + "..."


def _budget_failures(settings: Settings, records: list[dict[str, Any]]) -> list[str]:
    """One line per generation above --llm-energy-budget or --llm-ttft-budget."""
    lines: list[str] = []
    for record in records:
        where = f"{record['model']} T={record['temperature']:g}"
        if record.get("run") is not None:
            where += f" run {record['run'] + 1}"
        energy = record.get("energy") or {}
        budget = settings.energy_budget
        if budget is not None:
            value = energy.get("wh_per_1k")
            if value is None:
                lines.append(
                    f"{where}: no Wh/1k to hold to --llm-energy-budget={budget:g} "
                    f"({energy.get('note') or 'energy unavailable'})"
                )
            elif value > budget:
                label = "" if energy.get("measured") else (
                    f" (estimated reading: {energy.get('note')})"
                )  # fmt: skip
                lines.append(f"{where}: {value:.4g} Wh/1k > --llm-energy-budget={budget:g}{label}")
        ttft_budget = settings.ttft_budget
        ttft = record.get("ttft_s")
        if ttft_budget is not None and ttft is not None and ttft > ttft_budget:
            lines.append(f"{where}: TTFT {ttft:.3f} s > --llm-ttft-budget={ttft_budget:g}")
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an LLM test: soft `expect` checks reported at the end of each run, the
    body repeated per its sampling plan, then the energy and TTFT budgets."""
    if "llm_case" not in pyfuncitem.fixturenames or inspect.iscoroutinefunction(pyfuncitem.obj):
        return None  # plain tests, and async ones (their plugin runs them), as usual
    settings = pyfuncitem.config.stash[STATE].settings
    plan = sampling_plan(settings, _marker_values(pyfuncitem))
    bound = pyfuncitem.funcargs.get("llm")
    llm = bound if isinstance(bound, LLM) else None
    funcargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    records = pyfuncitem.stash.setdefault(RECORDS, ItemRecords())

    def run_once(index: int) -> None:
        __tracebackhide__ = True
        if llm is not None and plan.runs > 1:
            llm.run_index, llm.seed_offset = index, index
        with collecting(strict_capabilities=settings.strict_capabilities) as checks:
            pyfuncitem.obj(**funcargs)
        failed: str | None = None
        try:
            checks.raise_if_failed()
        except ExpectationFailed as exc:
            failed = str(exc)
        if failed is not None:  # outside the except: no chained copy of the report
            # The report is the whole message: no frame of this runner to show.
            pytest.fail(failed, pytrace=False)

    if plan.runs == 1:
        run_once(0)
    else:
        result = run_repeated(plan, lambda index: _attempt(run_once, index, records))
        records.sampling = result
        for entry in records.pending:
            entry["sampling"] = result.to_dict()
        if not result.ok:
            failures = [
                f"  run {i + 1}: {o.failure}" for i, o in enumerate(result.outcomes) if o.failure
            ]
            pytest.fail(
                "\n".join([f"repeated sampling failed: {result.summary()}", *failures[:10]]),
                pytrace=False,
            )
    over = _budget_failures(settings, records.pending)
    if over:
        pytest.fail("\n".join(["budget exceeded:", *(f"  {line}" for line in over)]), pytrace=False)
    return True


def _attempt(run_once: Callable[[int], None], index: int, records: ItemRecords) -> RunOutcome:
    """One run of a repeated test: an assertion or `pytest.fail` is a failed run;
    anything else (an unreachable endpoint, a skip) ends the test as usual."""
    first = len(records.pending)
    try:
        run_once(index)
        outcome = RunOutcome(passed=True)
    except (AssertionError, pytest.fail.Exception) as exc:
        outcome = RunOutcome(passed=False, failure=_one_line(exc))
    for entry in records.pending[first:]:
        entry["run_passed"] = outcome.passed
    return outcome


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(
    report: pytest.TestReport, config: pytest.Config
) -> tuple[str, str, str] | None:
    """``PASSED 7/10`` in verbose output for repeated tests."""
    if report.when != "call":
        return None
    value = getattr(report, SAMPLING_ATTR, None)
    if not isinstance(value, dict):
        return None
    word = {"passed": "PASSED", "failed": "FAILED"}.get(report.outcome)
    if word is None:
        return None
    letter = "." if report.passed else "F"
    return report.outcome, letter, f"{word} {value['passed']}/{value['runs']}"


# -- reporting ------------------------------------------------------------------------


def _outcome(report: pytest.TestReport, records: ItemRecords) -> str | None:
    """The test outcome a record carries, or None while it is not yet known."""
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        return report.outcome
    if report.failed:
        return "error"
    if report.when == "setup":
        return "skipped" if report.skipped else None
    return records.call_outcome or "passed"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    records = item.stash.get(RECORDS, None)
    if records is None:
        return report
    outcome = _outcome(report, records)
    if report.when == "call":
        records.call_outcome = outcome
        if records.sampling is not None:
            setattr(report, SAMPLING_ATTR, records.sampling.to_dict())
            report.sections.append(("llmlab sampling", records.sampling.summary()))
    if records.pending and outcome is not None:
        failure = report.longreprtext[:2000] if report.failed else None
        finished = [
            {**record, "outcome": outcome, "failure": failure} for record in records.pending
        ]
        records.pending.clear()
        setattr(report, RECORDS_ATTR, finished)
        # The item's own list: JUnit XML reads the properties of the teardown report,
        # which shares it.
        item.user_properties.extend(junit_properties(finished))
    return report


class PytestHtmlColumns:
    """Model, Wh/1k, tokens/s and energy source columns in pytest-html's table.

    Registered only when pytest-html is installed. Its cells are HTML strings; every
    value here comes from records (model names are user text) and is escaped.
    """

    HEADERS = ("Model", "Wh/1k", "tok/s", "Energy source")

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        at = min(3, len(cells))
        cells[at:at] = [f'<th class="sortable">{name}</th>' for name in self.HEADERS]

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        records = getattr(report, RECORDS_ATTR, None) or []
        props = dict(junit_properties(records)) if records else {}
        values = [
            props.get("llm_model", ""),
            props.get("llm_wh_per_1k", ""),
            props.get("llm_tokens_per_s", ""),
            props.get("llm_provenance", ""),
        ]
        at = min(3, len(cells))
        cells[at:at] = [f"<td>{html.escape(value)}</td>" for value in values]


class RecordSink:
    """Writes the records on every report as it arrives (the controller only).

    Registered per config, so nested pytest sessions (pytester) keep their own files.
    Under xdist this hook runs on the controller for every worker's report.
    """

    def __init__(self, writer: JsonlWriter, settings: Settings) -> None:
        self.writer = writer
        self.settings = settings
        self.history_lines: list[str] = []
        self.history_failures: list[str] = []
        #: Distinct energy setups seen in records (every worker's), in arrival order.
        self.energy_notes: dict[str, None] = {}
        self.records: list[dict[str, Any]] = []
        self.apportioned = 0
        self.written: list[Path] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for value in getattr(report, RECORDS_ATTR, None) or ():
            if isinstance(value, dict):
                self.writer.write(value)
                self.records.append(value)
                energy = value.get("energy") or {}
                if isinstance(energy, dict) and energy.get("note"):
                    self.energy_notes.setdefault(str(energy["note"]))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Share overlapping windows' energy (xdist workers on one host), rewrite the
        file with the apportioned readings, then write the CSV and HTML reports."""
        self.apportioned = apportion_records(self.records)
        if self.apportioned:
            self.writer.rewrite(self.records)
        if not self.records:
            return
        # Imported here: pandas and jinja2 cost every pytest start otherwise.
        from pytest_llmlab.report.csvfile import write_csv
        from pytest_llmlab.report.html import write_html

        folder = self.writer.path.parent
        write_csv(self.records, folder / "results.csv")
        write_html(
            self.records,
            folder / "report.html",
            title=f"pytest-llmlab: {session.config.rootpath.name}",
            meter_setup="; ".join(self.energy_notes) or None,
            hardware={**hardware(), "fingerprint": hardware_fingerprint()},
        )
        self.written = [folder / "results.csv", folder / "report.html"]
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
            path = session.config.invocation_params.dir / path
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


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE, None)
    if state is not None:
        state.close()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or state.writer is None or not state.writer.count:
        return
    terminalreporter.write_line(
        f"llmlab: {state.writer.count} generation(s) recorded in {state.writer.path}"
    )
    sink = config.pluginmanager.get_plugin("llmlab-record-sink")
    for note in getattr(sink, "energy_notes", {}):
        terminalreporter.write_line(f"llmlab energy: {note}")
    apportioned = getattr(sink, "apportioned", 0)
    if apportioned:
        terminalreporter.write_line(
            f"llmlab energy: {apportioned} reading(s) overlapped others on the same "
            "host and were apportioned (measured-apportioned)"
        )
    for path in getattr(sink, "written", ()):
        terminalreporter.write_line(f"llmlab: wrote {path}")
    rows = model_summary(getattr(sink, "records", ()))
    if rows:
        terminalreporter.write_sep("-", "llmlab: models")
        for line in terminal_table(rows):
            terminalreporter.write_line(line)
        try:
            append_github_summary(rows)
        except OSError as exc:
            terminalreporter.write_line(f"llmlab: $GITHUB_STEP_SUMMARY not written: {exc}")
    for line in getattr(sink, "history_lines", ()):
        terminalreporter.write_line(line)
    failures = getattr(sink, "history_failures", ())
    if failures:
        terminalreporter.write_sep("=", "llmlab regressions", red=True, bold=True)
        for line in failures:
            terminalreporter.write_line(line, red=True)
