"""pytest hooks and fixtures: wiring only.

Each hook is a few lines calling into the module that owns its concern: options and
settings (`config`), the process's providers and meters (`resources`), cases and
marker plans (`cases`), repeated runs (`repeat`), budgets (`budgets`), records
(`results`), and the controller's report session (`report.session`).
"""

from __future__ import annotations

import inspect
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_llmlab import redact
from pytest_llmlab.config import SettingsError, add_options, build_settings, report_dir
from pytest_llmlab.keys import MARKER_HELP, RECORDS, RECORDS_ATTR, REPEAT_ATTR, RESOURCES
from pytest_llmlab.resources import SessionResources

# Every pytest start imports this module: what LLM tests need (pydantic, httpx, the
# providers, meters and reports) is imported by the hooks and fixtures that use it,
# so a session without LLM tests never pays for it (bench/startup.py).
if TYPE_CHECKING:
    from pytest_llmlab.cases import LLMCase
    from pytest_llmlab.energy.meters import EnergyMeter
    from pytest_llmlab.llm import LLM

#: Whether ``--llm-suite`` named files (then every collected file is looked at).
_FORCED_ANY = pytest.StashKey[bool]()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# -- configuration --------------------------------------------------------------------


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_llmlab import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    try:
        settings = build_settings(
            cli=vars(config.option),
            ini={key: config.getini(key) for key in _ini_keys()},
        )
    except SettingsError as exc:
        raise pytest.UsageError(f"pytest-llmlab: {exc}") from None
    redact.install(redact.secrets_from(settings.base_urls))
    if _is_worker(config):
        resources = SessionResources.for_worker(settings, config)
    else:
        resources = SessionResources(settings, config)
    config.stash[RESOURCES] = resources
    resources.check()
    _add_forced_suites(config, settings.suite or [])
    if not _is_worker(config):  # only the controller writes reports
        from pytest_llmlab.report.session import ReportSession

        session = ReportSession.start(config, settings)
        if session is None:
            resources.bind_run(None, None, None)
        else:
            resources.bind_run(
                session.run_id, session.folder.path, session.reuse and session.reuse[0]
            )


def _add_forced_suites(config: pytest.Config, suites: list[str]) -> None:
    """``--llm-suite`` files are collected as suites; without test paths of the user's
    own (pytest fell back to testpaths or the current folder) they are the only ones."""
    if not suites:
        return
    from pytest_llmlab.suites.items import FORCED_SUITES

    base = config.invocation_params.dir
    paths = [(base / Path(p).expanduser()).resolve() for p in suites]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise pytest.UsageError(f"pytest-llmlab: --llm-suite: no such file: {missing[0]}")
    config.stash[FORCED_SUITES] = frozenset(paths)
    config.stash[_FORCED_ANY] = True
    if config.args_source is not pytest.Config.ArgsSource.ARGS:
        config.args[:] = [str(p) for p in paths]
    else:
        config.args.extend(str(p) for p in paths if str(p) not in config.args)


def _ini_keys() -> list[str]:
    from pytest_llmlab.config import OPTIONS

    return [option.ini_key for option in OPTIONS]


def pytest_unconfigure(config: pytest.Config) -> None:
    redact.reset()  # in-process pytester runs share one process
    resources = config.stash.get(RESOURCES, None)
    if resources is not None:
        resources.close()
    session = config.pluginmanager.get_plugin("llmlab-report-session")
    if session is not None:
        session.close()
        config.pluginmanager.unregister(session)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[RESOURCES].settings
    models = ", ".join(str(spec) for spec in settings.models)
    temperatures = ", ".join(f"{t:g}" for t in settings.temperatures)
    line = (
        f"llmlab: models {models} ({settings.sources['models']}); "
        f"temperatures {temperatures} ({settings.sources['temperatures']}); "
        f"reports {report_dir(settings, config.invocation_params.dir)}"
    )
    lines = [line]
    if settings.record != "off":
        lines.append(
            f"llmlab: cassettes --llm-record={settings.record} in {settings.cassette_dir}/ "
            f"(replay speed {settings.replay_speed:g})"
        )
    session = config.pluginmanager.get_plugin("llmlab-report-session")
    if settings.resume and settings.rescore is None:
        reuse = getattr(session, "reuse", None)
        found = (
            f"{reuse[1]} generation(s) of earlier runs to reuse" if reuse else "nothing to reuse"
        )
        lines.append(f"llmlab: --llm-resume: {found}")
    if settings.rescore is not None:
        lines.append(f"llmlab: rescoring: every generation from {settings.rescore}")
    return lines


# -- collection -----------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # `llm`, `llm_spec` and `llm_temperature` all depend on `llm_case`; a test module
    # that overrides `llm` with its own fixture is left alone.
    if "llm_case" not in metafunc.fixturenames:
        return
    from pytest_llmlab.cases import check_marker, marker_values
    from pytest_llmlab.models.spec import SpecError

    settings = metafunc.config.stash[RESOURCES].settings
    try:
        cases = check_marker(settings, marker_values(metafunc.definition))
    except (SpecError, ValueError) as exc:
        pytest.fail(f"{metafunc.definition.nodeid}: @pytest.mark.llm: {exc}", pytrace=False)
    metafunc.parametrize("llm_case", cases, ids=[case.id for case in cases])


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Prompt suites: ``*.suite.yaml|yml|jsonl|csv``, and ``--llm-suite`` files."""
    if ".suite." not in file_path.name.lower() and not parent.config.stash.get(_FORCED_ANY, False):
        return None  # the cheap test first: most files are not suites
    from pytest_llmlab.suites.items import suite_collector

    return suite_collector(file_path, parent)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Say what meters this run uses, once, where the header is: only when a collected
    test needs them (collection is when that becomes known), and load what generating
    needs (workers too). A session that will record nothing lets go of its report
    folder."""
    config = session.config
    metered = any(
        getattr(i, "needs_llm", False)
        or {"llm_case", "meter"} & set(getattr(i, "fixturenames", ()))
        for i in session.items
    )
    if metered and not config.option.collectonly:
        config.stash[RESOURCES].preload()
    if _is_worker(config):
        return
    report_session = config.pluginmanager.get_plugin("llmlab-report-session")
    if report_session is not None and session.items and (config.option.collectonly or not metered):
        report_session.folder.release()  # under xdist the controller collects nothing
    if config.option.collectonly or not metered:
        return
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"llmlab energy: {config.stash[RESOURCES].meters().description}")


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


@pytest.fixture
def llm(request: pytest.FixtureRequest, llm_case: LLMCase) -> Iterator[LLM]:
    """The model of this parametrization, bound to its temperature.

    ``llm.generate(prompt, ...)`` returns a Generation; ``llm.stream(prompt, ...)``
    iterates text chunks. The endpoint is checked (and a local model loaded) here, so
    an unavailable model errors the test at setup, or skips it under
    ``--llm-skip-unavailable``.
    """
    from pytest_llmlab.runner import open_llm

    bound = open_llm(request.node, llm_case)
    yield bound
    bound.close()


@pytest.fixture
def meter(request: pytest.FixtureRequest) -> EnergyMeter:
    """Meter arbitrary code: ``with meter.window("label") as w: ...``; ``w.reading``."""
    from pytest_llmlab.energy.meters import EnergyMeter

    return EnergyMeter(request.config.stash[RESOURCES].meters())


# -- running --------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an LLM test: soft `expect` checks reported at the end of each run, the
    body repeated per its plan, then the energy and TTFT budgets."""
    if "llm_case" not in pyfuncitem.fixturenames or inspect.iscoroutinefunction(pyfuncitem.obj):
        return None  # plain tests, and async ones (their plugin runs them), as usual
    from pytest_llmlab.llm import LLM
    from pytest_llmlab.runner import run_llm_body

    bound = pyfuncitem.funcargs.get("llm")
    run_llm_body(
        pyfuncitem,
        pyfuncitem.obj,
        {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames},
        bound if isinstance(bound, LLM) else None,
    )
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(
    report: pytest.TestReport, config: pytest.Config
) -> tuple[str, str, str] | None:
    """``PASSED 7/10`` in verbose output for repeated tests."""
    summary = getattr(report, REPEAT_ATTR, None)
    if report.when != "call" or not isinstance(summary, dict):
        return None
    word = {"passed": "PASSED", "failed": "FAILED"}.get(report.outcome)
    if word is None:
        return None
    letter = "." if report.passed else "F"
    return report.outcome, letter, f"{word} {summary['passed']}/{summary['runs']}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    records = item.stash.get(RECORDS, None)
    if records is None:
        return report
    from pytest_llmlab.resources import sanitize_report

    sanitize_report(report)
    if report.when == "call" and records.repeat_summary is not None:
        setattr(report, REPEAT_ATTR, records.repeat_summary)
        report.sections.append(("llmlab sampling", records.repeat_text))
    finished = records.finish(report)
    if finished:
        setattr(report, RECORDS_ATTR, finished)
        spool = item.config.stash[RESOURCES].spool
        if spool is not None:
            spool.reported(finished)
        from pytest_llmlab.report.terminal import junit_properties

        # The item's list, which JUnit XML reads from the teardown report; and this
        # report's copy, which pytest-html's row of this phase shows.
        properties = junit_properties(finished)
        item.user_properties.extend(properties)
        report.user_properties.extend(properties)
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    resources = session.config.stash.get(RESOURCES, None)
    if resources is not None:
        resources.close()
