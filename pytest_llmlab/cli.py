"""The ``llmlab`` command: the model store, and reports from saved results.

llmlab models pull smollm2-135m       fetch, verify and store a known model
llmlab models list                    what the store holds (name, size, path)
llmlab models list --endpoint URL|PROVIDER
                                      what an OpenAI-compatible server offers
llmlab report results.jsonl -o report.html [--csv out.csv]
                                      re-render the reports of a run
llmlab compare BASELINE CURRENT [--fail wh_per_1k:10%]
                                      changes per test and model; exit 1 on a regression
llmlab leaderboard results.jsonl [--by category] [--format md|csv|json]
                                      models ranked by points per category (suite points,
                                      one per passed Python test), speed, energy, cost
llmlab history list | save results.jsonl --name NAME
                                      the run history (.llmlab/history.sqlite)
llmlab calibrate --model SPEC [--runs 30] [--prompt TEXT] [--name NAME]
                                      measure J per prefill/decode token for estimates
llmlab calibrate list | show NAME | delete NAME
                                      the calibrations (.llmlab/calibrations/NAME.toml)
llmlab prompts list [--dir DIR]       the system-prompt presets suites can name
llmlab rescore [REPORT_DIR] [--out DIR] [-- PYTEST_ARGS]
                                      re-run a run's tests on its stored generations
                                      (after editing checks), generating nothing

A run (every RESULTS argument) is a results.jsonl file, ``history:NAME`` or a bare saved
run's name (``latest``: the newest) from ``--history PATH`` (default ``$LLMLAB_HISTORY``
or ``.llmlab/history.sqlite``); see `report.history.load_source`. Lines of a results
file that are not records are skipped with a warning. A bad argument is a one-line
error and exit status 2; a missing report writer or an unusable file, exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pytest_llmlab.config import OPTIONS, non_negative
from pytest_llmlab.errors import LLMLabError
from pytest_llmlab.models.openai import list_models, redact_url
from pytest_llmlab.models.providers import PROVIDERS
from pytest_llmlab.models.store import KNOWN_MODELS, list_stored, pull, store_home
from pytest_llmlab.redact import terminal_safe
from pytest_llmlab.report.compare import METRICS, compare_runs, parse_compare_fail
from pytest_llmlab.report.history import (
    DEFAULT_HISTORY,
    HistoryError,
    list_runs,
    load_source,
    save_run,
)
from pytest_llmlab.report.leaderboard import FORMATS, format_leaderboard, leaderboard
from pytest_llmlab.report.prices import load_prices, parse_prices_option

__all__ = ["main"]


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB"


def _pull(args: argparse.Namespace) -> int:
    for name in args.names:
        path = pull(name, force=args.force, announce=lambda m: print(m, file=sys.stderr))
        print(f"{name}\t{_size(path.stat().st_size)}\t{path}")
    return 0


def _endpoint_url(value: str) -> str:
    """A base URL as given, or a provider's name resolved as the plugin would: its
    ``LLMLAB_<NAME>_BASE_URL`` (and alternative) variable, else its default URL."""
    info = PROVIDERS.get(value)
    if info is None or info.default_base_url is None:
        return value
    option = next(o for o in OPTIONS if o.name == info.base_url_setting)
    return next(
        (os.environ[v] for v in option.env_names if os.environ.get(v)), info.default_base_url
    )


def _list_endpoint(url: str) -> int:
    base = _endpoint_url(url).rstrip("/")
    info = PROVIDERS.get(url)
    try:
        if info is not None and info.protocol == "ollama":
            return _list_ollama(base)
        if info is not None and info.protocol == "lmstudio":
            return _list_lmstudio(base)
        models = list_models(base)
    except ValueError as exc:
        print(f"llmlab: cannot list models at {redact_url(base)}: {exc}", file=sys.stderr)
        return 1
    for model in models:
        print(terminal_safe(model))
    return 0


def _list_ollama(base: str) -> int:
    """Ollama's models (``/api/tags``) with their facts, and which are loaded (``/api/ps``)."""
    from pytest_llmlab.models.ollama import list_ollama_models

    for entry in list_ollama_models(base):
        size = entry.get("size")
        facts = [
            _size(size) if isinstance(size, int) else "",
            *(str(entry.get(key) or "") for key in ("family", "parameter_size", "quantization")),
            "loaded" if entry.get("loaded") else "",
        ]
        print(terminal_safe("\t".join([str(entry.get("name")), *facts]).rstrip()))
    return 0


def _list_lmstudio(base: str) -> int:
    """LM Studio's models with their facts (``/api/v0/models``); only the ids
    (``/v1/models``) from a server without that REST API."""
    from pytest_llmlab.models.lmstudio import LISTED, list_lmstudio_models

    for entry in list_lmstudio_models(base):
        fields = ["" if entry.get(key) is None else str(entry.get(key)) for key in LISTED]
        print(terminal_safe("\t".join(fields).rstrip()))
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.endpoint:
        return _list_endpoint(args.endpoint)
    stored = list_stored()
    if not stored:
        known = ", ".join(sorted(KNOWN_MODELS))
        print(f"no models in {store_home()} (pull one of: {known})", file=sys.stderr)
        return 0
    for model in stored:
        print(f"{model.name}\t{_size(model.size_bytes)}\t{model.path}")
    return 0


# -- reports ------------------------------------------------------------------------

T = TypeVar("T")


class _UsageError(Exception):
    """A bad argument found after parsing (a missing file, an unknown run): exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``llmlab compare: error: ... (usage: ...)``."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split())
        self.exit(2, f"{self.prog}: error: {message} ({usage})\n")


def _arg(parse: Callable[[str], T]) -> Callable[[str], T]:
    """A ValueError-raising parser as an argparse ``type=`` that keeps its message."""

    def check(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    check.__name__ = parse.__name__
    return check


def _history_path(args: argparse.Namespace) -> Path:
    if args.history is not None:
        return Path(args.history)
    return Path(os.environ.get("LLMLAB_HISTORY") or DEFAULT_HISTORY)


def _records(source: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """A results file, ``history:NAME`` or a run name (`load_source`); notes on stderr."""
    try:
        description, records, notes = load_source(source, _history_path(args))
    except HistoryError as exc:
        raise _UsageError(str(exc)) from None
    for note in notes:
        print(f"llmlab: warning: {note}", file=sys.stderr)
    if not description.startswith("results file"):
        print(f"llmlab: {source} is {description}", file=sys.stderr)
    return records


class _Missing(Exception):
    """A report writer this installation does not have: exit 1."""


def _writer(module: str, function: str, what: str) -> Callable[..., Any]:
    """``module.function``, imported only when asked for; `_Missing` if it is not there."""
    try:
        return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]
    except ModuleNotFoundError as exc:
        missing = "" if exc.name == module else f" (it needs {exc.name}, not installed)"
        raise _Missing(
            f"{what} needs {module}, which this installation does not have{missing}"
        ) from None
    except AttributeError:
        raise _Missing(f"{what} needs {module}.{function}, which this version lacks") from None


def _report(args: argparse.Namespace) -> int:
    if args.output is None and args.csv is None:
        raise _UsageError("nothing to write: give -o REPORT.html and/or --csv FILE.csv")
    records = _records(args.results, args)
    title = args.title or f"pytest-llmlab: {args.results}"
    jobs: list[tuple[Callable[..., Any], Path, dict[str, Any]]] = []
    if args.output is not None:
        write = _writer("pytest_llmlab.report.html", "write_html", "an HTML report")
        jobs.append(
            (write, Path(args.output), {"title": title, "meter_setup": None, "hardware": None})
        )
    if args.csv is not None:
        jobs.append(
            (_writer("pytest_llmlab.report.csvfile", "write_csv", "a CSV file"), Path(args.csv), {})
        )
    for write, path, options in jobs:
        write(records, path, **options)
        print(f"{path}\t{len(records)} records")
    return 0


def _compare(args: argparse.Namespace) -> int:
    baseline = _records(args.baseline, args)
    current = _records(args.current, args)
    prices = load_prices(args.prices)
    comparison = compare_runs(baseline, current, prices=prices, kwh_price=args.kwh_price)
    for warning in comparison.warnings:
        print(f"llmlab: warning: {warning}", file=sys.stderr)
    for line in comparison.table():
        print(line)
    failures = comparison.failures(args.fail or [])
    if failures:
        print(f"llmlab: {len(failures)} regression(s) beyond --fail:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    records = [r for source in args.results for r in _records(source, args)]
    rows = leaderboard(
        records, by=args.by, prices=load_prices(args.prices), kwh_price=args.kwh_price
    )
    text = format_leaderboard(rows, args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def _history_list(args: argparse.Namespace) -> int:
    path = _history_path(args)
    try:
        runs = list_runs(path)
    except HistoryError as exc:
        raise _UsageError(str(exc)) from None
    if not runs:
        print(f"no runs saved in {path}", file=sys.stderr)
    for info in runs:
        print(f"{info.describe()}\tfingerprint {info.fingerprint or 'unknown'}")
    return 0


def _history_save(args: argparse.Namespace) -> int:
    records = _records(args.results, args)
    prints = sorted({str(r["fingerprint"]) for r in records if r.get("fingerprint")})
    path = _history_path(args)
    run_id = save_run(
        path,
        records,
        name=args.name,
        fingerprint=",".join(prints) or None,
        hardware=None,
        announce=lambda note: print(note, file=sys.stderr),
    )
    print(f"saved {len(records)} records as run {args.name!r} (id {run_id}) in {path}")
    return 0


def _add_pricing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prices",
        type=_arg(parse_prices_option),
        metavar="MODEL=IN/OUT,...",
        help="extra or corrected USD prices per million input/output tokens",
    )
    parser.add_argument(
        "--kwh-price",
        type=_arg(non_negative),
        metavar="P",
        help="electricity price per kWh: the cost of local generations",
    )


def _add_history(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--history",
        metavar="PATH",
        help="the history file (default $LLMLAB_HISTORY or .llmlab/history.sqlite)",
    )


_RUN = "a results.jsonl file, history:NAME or a saved run's name (latest: the newest)"


def _report_commands(commands: Any) -> None:
    report = commands.add_parser("report", help="write HTML and/or CSV from results.jsonl")
    report.add_argument("results", metavar="RUN", help=_RUN)
    report.add_argument("-o", "--output", metavar="REPORT.html", help="write the HTML report")
    report.add_argument("--csv", metavar="FILE.csv", help="write one CSV row per generation")
    report.add_argument("--title", help="the HTML report's title")
    _add_history(report)
    report.set_defaults(func=_report)

    compare = commands.add_parser("compare", help="compare two runs per test and model")
    compare.add_argument("baseline", metavar="BASELINE", help=_RUN)
    compare.add_argument("current", metavar="CURRENT", help=_RUN)
    compare.add_argument(
        "--fail",
        type=_arg(parse_compare_fail),
        metavar="CHECKS",
        help="exit 1 on a significant regression beyond a threshold: METRIC:N%% rises, "
        "METRIC:-N%% falls (pass_rate in percentage points), comma-separated; metrics: "
        + ", ".join(METRICS),
    )
    _add_history(compare)
    _add_pricing(compare)
    compare.set_defaults(func=_compare)

    board = commands.add_parser("leaderboard", help="rank models by points per category")
    board.add_argument("results", nargs="+", metavar="RUN", help=_RUN)
    board.add_argument(
        "--by",
        default="category",
        metavar="FIELD",
        help="group tests by a record field, test (function) or file (default category; "
        "records without the field form the group 'all')",
    )
    board.add_argument("--format", choices=FORMATS, default="md", help="default md")
    board.add_argument("-o", "--output", metavar="FILE", help="write here, not to stdout")
    _add_history(board)
    _add_pricing(board)
    board.set_defaults(func=_leaderboard)

    history = commands.add_parser("history", help="the saved runs")
    actions = history.add_subparsers(dest="action", required=True)
    list_cmd = actions.add_parser("list", help="saved runs, newest first")
    _add_history(list_cmd)
    list_cmd.set_defaults(func=_history_list)
    save = actions.add_parser("save", help="save a results file as a named run")
    save.add_argument("results", metavar="RESULTS.jsonl", help=_RUN)
    save.add_argument("--name", required=True, help="the run's name (replaces a run of that name)")
    _add_history(save)
    save.set_defaults(func=_history_save)


# -- calibrate ----------------------------------------------------------------------

_CALIBRATE = """Run generations of one model with the best meter available, fit joules per
prefill token, per decode token and per request (least squares, with confidence
intervals), and store them with this machine's hardware fingerprint as
DIR/NAME.toml (default .llmlab/calibrations; commit it). pytest
--llm-energy-coefficients=NAME then uses it where the CPU estimate would run.
Subcommands: list, show NAME, delete NAME."""


def _calibrations(args: argparse.Namespace) -> Path:
    from pytest_llmlab.energy.calibration import DEFAULT_DIR

    return Path(args.dir if args.dir is not None else DEFAULT_DIR)


def _calibration_file(value: str, args: argparse.Namespace) -> Path:
    """NAME in the calibrations folder, or a .toml path."""
    from pytest_llmlab.energy.calibration import calibration_path

    if "/" in value or "\\" in value or value.endswith(".toml"):
        return Path(value).expanduser()
    try:
        return calibration_path(value, _calibrations(args))
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


def _read_calibration(value: str, args: argparse.Namespace) -> tuple[Path, Any]:
    from pytest_llmlab.energy.calibration import load_calibration

    path = _calibration_file(value, args)
    if not path.exists():
        raise _UsageError(f"no calibration {value!r} ({path} does not exist)")
    try:
        return path, load_calibration(path)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


def _default_calibration_name(model: str, fingerprint: str) -> str:
    stem = Path(model).name.removesuffix(".gguf")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "model"
    return f"{slug[:80]}-{fingerprint}"


def _print_calibration(calibration: Any, path: Path) -> None:
    from pytest_llmlab.fingerprint import hardware_fingerprint

    here = hardware_fingerprint()
    where = "this machine" if calibration.fingerprint == here else f"not this machine ({here})"
    low = (
        f", {calibration.low_confidence_runs} low-confidence"
        if calibration.low_confidence_runs
        else ""
    )
    print(f"calibration {calibration.name!r} ({path})")
    print(f"  model      {calibration.model}")
    print(
        f"  measured   {calibration.created} with {calibration.meter} "
        f"({calibration.provenance}), {calibration.runs} runs{low}"
    )
    print(f"  on         {calibration.box}: {where}")
    print(
        f"  tokens     prompt {calibration.prompt_tokens[0]}-{calibration.prompt_tokens[1]}, "
        f"output {calibration.completion_tokens[0]}-{calibration.completion_tokens[1]}"
    )
    ci = f"{calibration.confidence:.0%} CI"
    print(
        f"  {'component':<10} {'J/request [' + ci + ']':<30} {'J/prefill token [' + ci + ']':<32} "
        f"{'J/decode token [' + ci + ']':<32} residual CV"
    )

    def cell(coefficient: Any) -> str:
        low, high = coefficient.ci
        return f"{coefficient.value:.4g} [{low:.4g}, {high:.4g}]"

    rows = [("total", calibration.total), *sorted(calibration.components.items())]
    for kind, fit in rows:
        print(
            f"  {kind:<10} {cell(fit.request_j):<30} {cell(fit.prefill_j_per_token):<32} "
            f"{cell(fit.decode_j_per_token):<32} {fit.residual_cv:.1%}"
        )


def _calibrate_run(args: argparse.Namespace) -> int:
    from pytest_llmlab.config import SettingsError, build_settings
    from pytest_llmlab.energy.calibration import (
        calibration_doubts,
        calibration_path,
        calibration_plan,
        run_calibration,
        save_calibration,
    )
    from pytest_llmlab.energy.meters import MeterSelectionError, MeterSet
    from pytest_llmlab.energy.reading import EnergyReading
    from pytest_llmlab.fingerprint import hardware, hardware_fingerprint
    from pytest_llmlab.llm import LLM
    from pytest_llmlab.models.registry import ProviderPool

    if args.model is None:
        raise _UsageError("give --model SPEC to calibrate, or one of: list, show NAME, delete NAME")
    try:
        settings = build_settings(cli={"llm_models": args.model, "llm_meter": args.meter}, ini={})
        plan = calibration_plan(args.runs, args.prompt or [], args.max_tokens)
    except (SettingsError, ValueError) as exc:
        raise _UsageError(str(exc)) from None
    if len(settings.models) != 1:
        raise _UsageError(f"--model takes one model, got {len(settings.models)}")
    spec = settings.models[0]
    fingerprint = hardware_fingerprint()
    name = args.name or _default_calibration_name(spec.model, fingerprint)
    try:
        path = calibration_path(name, _calibrations(args))
    except ValueError as exc:
        raise _UsageError(f"--name: {exc}") from None

    def announce(message: str) -> None:
        print(f"llmlab calibrate: {message}", file=sys.stderr)

    pool = ProviderPool(
        base_urls=settings.base_urls,
        timeout_s=settings.timeout,
        deadline_s=settings.deadline,
        threads=settings.threads,
        ctx=settings.ctx,
        announce=announce,
    )
    try:
        provider = pool.get(spec)
        if not getattr(provider, "runs_locally", True):
            raise _UsageError(
                f"{spec} runs at {provider.endpoint}, not on this machine: its meters cannot "
                "see that energy, so it cannot be calibrated here"
            )
        provider.ensure_available()
        try:
            meters = MeterSet.from_settings(settings)
        except MeterSelectionError as exc:
            raise _UsageError(str(exc)) from None
        announce(f"meters: {meters.description}")
        llm = LLM(model_spec=spec, temperature=args.temperature, provider=provider, meters=meters)
        seeds = iter(range(1, 1_000_000))

        def generate(prompt: str, max_tokens: int) -> tuple[EnergyReading, int, int]:
            gen = llm.generate(prompt, max_tokens=max_tokens, seed=next(seeds), logprobs=False)
            energy = gen.energy or EnergyReading.unavailable("no reading")
            return energy, gen.usage.processed_prompt_tokens, gen.usage.completion_tokens

        try:
            calibration = run_calibration(
                generate,
                name=name,
                model=spec.spec,
                plan=plan,
                meter=",".join(meters.names) or "none",
                meter_description=meters.description,
                fingerprint=fingerprint,
                hardware=hardware(),
                warmup=args.warmup,
                announce=announce,
            )
        except ValueError as exc:  # no reading, or runs that cannot be fitted
            print(f"llmlab calibrate: {exc}", file=sys.stderr)
            return 1
        finally:
            llm.close()
            meters.close()
    finally:
        pool.close()
    if path.exists():
        announce(f"replacing the calibration in {path}")
    save_calibration(calibration, path)
    _print_calibration(calibration, path)
    for doubt in calibration_doubts(calibration):
        print(f"llmlab calibrate: warning: {doubt}", file=sys.stderr)
    print(f"use it with: pytest --llm-energy-coefficients={name}")
    return 0


def _calibrate_list(args: argparse.Namespace) -> int:
    from pytest_llmlab.energy.calibration import Calibration, list_calibrations
    from pytest_llmlab.fingerprint import hardware_fingerprint

    directory = _calibrations(args)
    here = hardware_fingerprint()
    found = False
    for path, item in list_calibrations(directory):
        found = True
        if not isinstance(item, Calibration):
            print(f"{path.stem}	unreadable: {item}	{path}")
            continue
        machine = " (this machine)" if item.fingerprint == here else ""
        print(
            f"{item.name}	{item.model}	{item.date}	"
            f"{item.total.decode_j_per_token.value:.4g} J/decode token	"
            f"fingerprint {item.fingerprint}{machine}	{path}"
        )
    if not found:
        print(
            f"no calibrations in {directory} (make one: llmlab calibrate --model SPEC)",
            file=sys.stderr,
        )
    return 0


def _calibrate_show(args: argparse.Namespace) -> int:
    path, calibration = _read_calibration(args.calibration, args)
    _print_calibration(calibration, path)
    return 0


def _calibrate_delete(args: argparse.Namespace) -> int:
    path, calibration = _read_calibration(args.calibration, args)  # only a calibration goes
    path.unlink()
    print(f"deleted calibration {calibration.name!r} ({path})")
    return 0


def _add_calibrations_dir(parser: argparse.ArgumentParser, *, sub: bool = False) -> None:
    parser.add_argument(
        "--dir",
        metavar="DIR",
        # A subcommand's own default would replace a --dir given before it.
        default=argparse.SUPPRESS if sub else None,
        help="the calibrations folder (default .llmlab/calibrations)",
    )


def _calibrate_commands(commands: Any) -> None:
    calibrate = commands.add_parser(
        "calibrate",
        help="measure energy per token for calibrated estimates; list, show, delete",
        description=_CALIBRATE,
    )
    calibrate.add_argument(
        "--model", metavar="SPEC", help="the model to calibrate (provider:model)"
    )
    calibrate.add_argument(
        "--runs", type=_arg(_int_at_least(6)), default=30, help="generations to fit (default 30)"
    )
    calibrate.add_argument(
        "--prompt",
        action="append",
        metavar="TEXT",
        help="a calibration prompt (repeatable; runs repeat it 1-8 times); default: a story request",
    )
    calibrate.add_argument(
        "--max-tokens",
        type=_arg(_int_at_least(4)),
        default=128,
        help="longest answer; runs use a quarter, half and all of it (default 128)",
    )
    calibrate.add_argument("--name", help="the calibration's name (default MODEL-FINGERPRINT)")
    calibrate.add_argument(
        "--meter",
        default="auto",
        help="meters, as --llm-meter (default auto: RAPL/NVML, else the CPU estimate)",
    )
    calibrate.add_argument(
        "--temperature",
        type=_arg(non_negative),
        default=0.7,
        help="sampling temperature (default 0.7)",
    )
    calibrate.add_argument(
        "--warmup",
        type=_arg(_int_at_least(0)),
        default=1,
        help="untimed generations first (default 1)",
    )
    _add_calibrations_dir(calibrate)
    calibrate.set_defaults(func=_calibrate_run)
    actions = calibrate.add_subparsers(dest="action", metavar="{list,show,delete}")
    list_cmd = actions.add_parser("list", help="the stored calibrations")
    _add_calibrations_dir(list_cmd, sub=True)
    list_cmd.set_defaults(func=_calibrate_list)
    for action, func, what in (
        ("show", _calibrate_show, "print a calibration's coefficients and where it was measured"),
        ("delete", _calibrate_delete, "delete a calibration file"),
    ):
        command = actions.add_parser(action, help=what)
        command.add_argument("calibration", metavar="NAME", help="a calibration name or .toml file")
        _add_calibrations_dir(command, sub=True)
        command.set_defaults(func=func)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise ValueError(f"{value} is less than {minimum}")
        return value

    parse.__name__ = f"int>={minimum}"
    return parse


def rescore_command(
    records: Sequence[Mapping[str, Any]], store: Path, out: Path, extra: Sequence[str] = ()
) -> list[str]:
    """The pytest command that re-runs the tests of ``records`` with every generation
    taken from ``store`` (``--llm-rescore``): their node ids, under the models and
    temperatures they ran with, reporting into ``out``."""
    tests: dict[str, None] = {}
    models: dict[str, None] = {}
    temperatures: dict[str, None] = {}
    for record in records:
        tests.setdefault(str(record["test_id"]))
        if record.get("judge_for") is not None:
            continue  # a judge's model is the check's, not a parameter
        alias, spec = record.get("alias"), str(record.get("spec"))
        models.setdefault(f"{alias}={spec}" if alias else spec)
        temperatures.setdefault(f"{float(record.get('temperature') or 0):g}")
    command = [sys.executable, "-m", "pytest", *tests, f"--llm-rescore={store}"]
    command.append(f"--llm-report-dir={out}")
    if models:
        command += [
            f"--llm-models={','.join(models)}",
            f"--llm-temperatures={','.join(temperatures)}",
        ]
    return [*command, *extra]


def _rescore(args: argparse.Namespace) -> int:
    folder = Path(args.report_dir)
    results, store = folder / "results.jsonl", folder / "generations.jsonl"
    for path, what in ((results, "no results.jsonl"), (store, "no generations.jsonl")):
        if not path.is_file():
            raise _UsageError(f"{folder}: {what} (run the tests first; generations.jsonl is "
                              "written by pytest-llmlab 0.1 and later)")  # fmt: skip
    records = _records(str(results), args)
    if not records:
        raise _UsageError(f"{results}: no records to rescore")
    extra = list(args.pytest_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    command = rescore_command(records, store, Path(args.out or folder), extra)
    print(f"llmlab rescore: {len({r['test_id'] for r in records})} test(s) from {results}, "
          f"every generation from {store}", file=sys.stderr)  # fmt: skip
    return subprocess.run(command, check=False).returncode


def _rescore_commands(commands: Any) -> None:
    rescore = commands.add_parser(
        "rescore",
        help="re-run a run's tests and checks on its stored generations, generating nothing",
    )
    rescore.add_argument(
        "report_dir", nargs="?", default="reports", metavar="REPORT_DIR",
        help="the run's report folder: its results.jsonl and generations.jsonl (default reports)",
    )  # fmt: skip
    rescore.add_argument(
        "--out", metavar="DIR",
        help="report folder of the new results (default REPORT_DIR: the rescored run "
        "moves into previous/, as any earlier run)",
    )  # fmt: skip
    rescore.add_argument(
        "--history", default=None, help=argparse.SUPPRESS
    )  # `_records` reads it for history: sources
    rescore.add_argument(
        "pytest_args", nargs=argparse.REMAINDER, metavar="-- PYTEST_ARGS",
        help="more pytest arguments, after --",
    )  # fmt: skip
    rescore.set_defaults(func=_rescore)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llmlab", description="pytest-llmlab tools")
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser("models", help="the local model store ($LLMLAB_HOME)")
    actions = models.add_subparsers(dest="action", required=True)
    pull_cmd = actions.add_parser("pull", help="fetch and verify a known model")
    pull_cmd.add_argument("names", nargs="+", choices=sorted(KNOWN_MODELS), metavar="NAME")
    pull_cmd.add_argument("--force", action="store_true", help="fetch again even if stored")
    pull_cmd.set_defaults(func=_pull)
    list_cmd = actions.add_parser("list", help="list stored models, or an endpoint's")
    list_cmd.add_argument(
        "--endpoint",
        metavar="URL|PROVIDER",
        help="an OpenAI-compatible base URL, or a provider name for its configured URL "
        f"({', '.join(n for n, i in PROVIDERS.items() if i.default_base_url)})",
    )
    list_cmd.set_defaults(func=_list)
    _report_commands(commands)
    _calibrate_commands(commands)
    _prompts_commands(commands)
    _rescore_commands(commands)
    return parser


def _prompts_list(args: argparse.Namespace) -> int:
    from pytest_llmlab.suites.presets import list_presets

    folders = [Path(folder) for folder in args.dir or ["system_prompts"]]
    presets = list_presets(folders)
    if not presets:
        searched = ", ".join(str(folder) for folder in folders)
        print(f"no system-prompt presets (.txt, .md) in {searched}", file=sys.stderr)
        return 0
    width = max(len(name) for name in presets)
    for name, path in presets.items():
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        first = terminal_safe(text.splitlines()[0] if text else "")
        print(f"{terminal_safe(name):<{width}}  {path}  {first[:80]}")
    return 0


def _prompts_commands(commands: Any) -> None:
    prompts = commands.add_parser("prompts", help="the system-prompt presets suites name")
    actions = prompts.add_subparsers(dest="action", required=True)
    list_cmd = actions.add_parser("list", help="presets: name, file, first line")
    list_cmd.add_argument(
        "--dir",
        action="append",
        default=None,
        metavar="DIR",
        help="a presets folder (repeatable; earlier wins; default system_prompts)",
    )
    list_cmd.set_defaults(func=_prompts_list)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except _UsageError as exc:
        print(f"llmlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (LLMLabError, _Missing, OSError) as exc:
        print(f"llmlab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
