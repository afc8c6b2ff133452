"""One validated settings object built from the command line, ini and environment.

Every setting has three spellings: ``--llm-<name>`` on the command line, ``llm_<name>``
in ``[tool.pytest.ini_options]`` (or pytest.ini / tox.ini / setup.cfg), and
``LLMLAB_<NAME>`` in the environment. The command line wins, then ini, then the
environment, then the default. A value that does not parse is a usage error naming
where it came from.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_llmlab.errors import LLMLabError
from pytest_llmlab.models.providers import PROVIDERS
from pytest_llmlab.models.spec import ModelSpec, SpecError, parse_spec_list
from pytest_llmlab.option_values import (
    Price,
    RecordMode,
    RegressionCheck,
    parse_compare_fail,
    parse_meter_choice,
    parse_pass_rule,
    parse_prices_option,
    parse_record_mode,
    split_list,
)

__all__ = [
    "OPTIONS",
    "Option",
    "Settings",
    "SettingsError",
    "add_options",
    "build_settings",
    "non_negative",
    "parse_temperatures",
    "report_dir",
]


class SettingsError(LLMLabError, ValueError):
    """A setting that does not parse; the message names its source."""


def _parse_models(raw: str) -> list[ModelSpec]:
    specs = parse_spec_list(raw)
    if not specs:
        raise ValueError("no model given")
    return specs


def parse_temperatures(raw: str) -> list[float]:
    values: list[float] = []
    for item in split_list(raw):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"{item!r} is not a number") from None
        if not math.isfinite(value) or not 0.0 <= value <= 2.0:
            raise ValueError(f"temperature {item} is outside 0..2")
        if value not in values:
            values.append(value)
    if not values:
        raise ValueError("no temperature given")
    return values


def _positive(kind: type[int | float]) -> Callable[[str], float | int]:
    def parse(raw: str) -> float | int:
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a {kind.__name__}") from None
        if not value > 0:
            raise ValueError(f"{raw} must be greater than 0")
        return value

    return parse


def _parse_paths(raw: str) -> list[str]:
    paths = split_list(raw)
    if not paths:
        raise ValueError("no path given")
    return paths


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{raw!r} is not a boolean (use true or false)")


def _parse_threads(raw: str) -> int | None:
    if raw.strip().lower() == "auto":
        return None
    value = _positive(int)(raw)
    return int(value)


def _auto_or_at_least(least: int) -> Callable[[str], int | None]:
    """A parser of ``auto`` (None: chosen by provider or backend) or a whole number of
    at least ``least``."""

    def parse(raw: str) -> int | None:
        if raw.strip().lower() == "auto":
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number or auto") from None
        if value < least:
            raise ValueError(f"{raw} must be {least} or more")
        return value

    return parse


#: ``--llm-retries``: auto (by provider) or 0 or more.
_parse_retries = _auto_or_at_least(0)
#: ``--llm-concurrency``: auto (by backend) or 1 or more.
_parse_concurrency = _auto_or_at_least(1)


def _parse_deadline(raw: str) -> float | None:
    """``auto`` -> None (derived per request), ``0``/``none``/``off`` -> 0 (no deadline)."""
    lowered = raw.strip().lower()
    if lowered == "auto":
        return None
    if lowered in {"none", "off"}:
        return 0.0
    try:
        return non_negative(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number of seconds, auto or 0") from None


def non_negative(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{raw} must be 0 or more")
    return value


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(raw: str) -> Any:
        return None if raw.strip().lower() in {"", "none"} else parse(raw)

    return parse_optional


def _fraction(raw: str) -> float:
    value = non_negative(raw)
    if value > 1.0:
        raise ValueError(f"{raw} is not between 0 and 1")
    return value


def _open_fraction(raw: str) -> float:
    value = _fraction(raw)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{raw} must be strictly between 0 and 1")
    return value


def _split_authority(raw: str) -> tuple[str, str, str]:
    """``raw`` as (``scheme://``, authority, the rest), for text that may not be a
    valid URL (no scheme: an empty first part)."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "", raw
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    return scheme + sep, rest[:end], rest[end:]


def _masked_userinfo(raw: str) -> str:
    """``raw`` with everything between the scheme and its last ``@`` masked but a plain
    user name (``http://alice:***@host/v1``; ``***@`` for a userinfo without a colon,
    often a token). For messages only: it errs on the side of hiding, URL or not."""
    if "@" not in raw:
        return raw
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "", raw
    userinfo, _, host = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    plain_user = colon and not any(c in user for c in "/?#[]")
    return f"{scheme}{sep}{f'{user}:***' if plain_user else '***'}@{host}"


def _parse_url(
    raw: str, key_env: str | None = None, spelled: Callable[[str], str] | None = None
) -> str:
    """A base URL: http(s), without ``user:password@``; ``spelled`` first turns a
    provider's own way of writing it (``OLLAMA_HOST=gpu-box``) into a URL.

    httpx would turn a userinfo into HTTP Basic auth, silently replacing the Bearer
    key, so it is refused; messages never show the password.
    """
    if spelled is not None and "@" not in raw:  # credentials: refused below, not dropped
        raw = spelled(raw)
    url = raw.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{_masked_userinfo(raw)!r} is not an http(s) URL")
    if "@" in _split_authority(url)[1]:
        use = f"set {key_env}" if key_env else "use the provider's API-key variable"
        raise ValueError(
            f"{_masked_userinfo(url)!r}: credentials (user:password@) in a base URL are "
            f"not supported; remove them and {use} (sent as a Bearer token)"
        )
    return url


@dataclass(frozen=True, slots=True)
class Option:
    """One setting and its three spellings."""

    name: str
    help: str
    parse: Callable[[str], Any]
    default: str | None
    flag: bool = False  # a command-line switch without a value
    cli: bool = True  # some settings (base URLs) live in ini and env only
    ini_type: str = "string"
    env: tuple[str, ...] = ()  # environment names besides LLMLAB_<NAME>
    const: str | None = None  # the value of a bare ``--llm-x`` given without ``=VALUE``
    #: Repeatable on the command line (``--llm-suite a --llm-suite b``); every source
    #: gives a comma-separated list, and the value is the list.
    multiple: bool = False

    @property
    def cli_flag(self) -> str:
        return "--llm-" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return "llm_" + self.name

    @property
    def ini_key(self) -> str:
        return "llm_" + self.name

    @property
    def env_names(self) -> tuple[str, ...]:
        return ("LLMLAB_" + self.name.upper(), *self.env)


OPTIONS: tuple[Option, ...] = (
    Option(
        "models",
        "comma-separated model specs [alias=]provider:model (default local:smollm2-135m)",
        _parse_models,
        "local:smollm2-135m",
        ini_type="linelist",
    ),
    Option(
        "temperatures",
        "comma-separated sampling temperatures, each a test parameter (default 0)",
        parse_temperatures,
        "0",
        ini_type="linelist",
    ),
    Option(
        "report_dir",
        "folder for results.jsonl and the other reports (default reports)",
        str,
        "reports",
    ),
    Option(
        "timeout",
        "seconds to wait for a connection and for each streamed chunk (default 120)",
        _positive(float),
        "120",
    ),
    Option(
        "deadline",
        "seconds one generation may take in all, however steadily data arrives: auto "
        "(--llm-timeout + 0.5 s per max_tokens token, 2048 tokens when unset, the "
        "per-token part at most 3600 s), a number, or 0 for none (default auto)",
        _parse_deadline,
        "auto",
    ),
    Option(
        "retries",
        "retries of a request answered 429/503/529 or reset before its first byte, with "
        "backoff and Retry-After, within --llm-deadline: auto (3 for clouds, 0 for local "
        "and self-hosted servers) or a number (default auto)",
        _parse_retries,
        "auto",
    ),
    Option(
        "concurrency",
        "generations in flight per process (suite cases generated ahead of their "
        "tests, llm.map): auto (1 for the embedded model, 4 for local and self-hosted "
        "servers, 8 for clouds) or a number (default auto)",
        _parse_concurrency,
        "auto",
    ),
    Option(
        "skip_unavailable",
        "skip tests whose model is unavailable (unreachable endpoint, missing API key, "
        "missing model) instead of erroring",
        _parse_bool,
        "false",
        flag=True,
    ),
    Option(
        "threads",
        "CPU threads for embedded llama.cpp (default auto: CPU count / xdist workers)",
        _parse_threads,
        "auto",
    ),
    Option(
        "ctx",
        "context size in tokens for embedded llama.cpp (default 4096)",
        _positive(int),
        "4096",
    ),
    Option(
        "meter",
        "energy meters: auto (RAPL + NVML where readable, else the CPU estimate), "
        "rapl, nvml, estimate, a comma list, or none (default auto)",
        parse_meter_choice,
        "auto",
    ),
    Option(
        "baseline_s",
        "seconds of idle power measured after the first model load, for net energy "
        "(default 3; 0 disables)",
        non_negative,
        "3",
    ),
    Option(
        "cpu_tdp",
        "watts per logical CPU for the CPU estimate (default: by CPU model, see README)",
        _optional(_positive(float)),
        None,
    ),
    Option(
        "energy_coefficients",
        "estimate energy from a calibration (llmlab calibrate): NAME in "
        ".llmlab/calibrations or a .toml FILE; used where the CPU estimate would run",
        _optional(str),
        None,
    ),
    Option(
        "grid_gco2_per_kwh",
        "grid carbon intensity in gCO2e/kWh, for the gco2e of every reading",
        _optional(non_negative),
        None,
    ),
    Option(
        "grid_zone",
        "EcoLogits electricity-mix zone (FRA, USA, WOR...) for carbon intensity and "
        "cloud estimates (needs the [cloud] extra)",
        _optional(str),
        None,
    ),
    Option(
        "kwh_price",
        "electricity price per kWh, for the cost of every reading",
        _optional(non_negative),
        None,
    ),
    Option(
        "runs",
        "run every LLM test body this many times and decide by the pass rate (default 1)",
        _positive(int),
        "1",
    ),
    Option(
        "pass_rate",
        "share of runs that must pass, 0..1 (default 1.0: all)",
        _fraction,
        "1.0",
    ),
    Option(
        "pass_rule",
        "how runs decide: rate, wilson (lower confidence bound), pass@K, pass^K (default rate)",
        parse_pass_rule,
        "rate",
    ),
    Option(
        "confidence",
        "confidence level of intervals and the wilson rule (default 0.95)",
        _open_fraction,
        "0.95",
    ),
    Option(
        "no_early_stop",
        "run every planned run even once the verdict can no longer change",
        _parse_bool,
        "false",
        flag=True,
    ),
    Option(
        "strict_capabilities",
        "fail (instead of skip) confidence checks on backends that return no logprobs",
        _parse_bool,
        "false",
        flag=True,
    ),
    Option(
        "energy_budget",
        "fail any generation above this many Wh per 1000 output tokens",
        _optional(non_negative),
        None,
    ),
    Option(
        "ttft_budget",
        "fail any generation whose time to first token exceeds this many seconds",
        _optional(_positive(float)),
        None,
    ),
    Option(
        "cost_budget",
        "USD the session may spend on priced (cloud) generations, across xdist workers; "
        "once spent, tests needing a new one skip and the session fails",
        _optional(_positive(float)),
        None,
    ),
    Option(
        "history",
        "SQLite file of saved runs (default .llmlab/history.sqlite)",
        str,
        ".llmlab/history.sqlite",
    ),
    Option(
        "save",
        "save this session's records in the history as run NAME (a name saved again is replaced)",
        _optional(str),
        None,
    ),
    Option(
        "autosave",
        "save this session in the history as auto-YYYYMMDD-HHMMSS (the commit is stored too)",
        _parse_bool,
        "false",
        flag=True,
    ),
    Option(
        "compare",
        "compare this session with a baseline: a saved run NAME, latest (the default "
        "without a value), or a results.jsonl file",
        _optional(str),
        None,
        const="latest",
    ),
    Option(
        "compare_fail",
        "fail on a significant regression against --llm-compare: METRIC:N then a "
        "percent sign, comma-separated; N > 0 limits a rise, N < 0 a fall (metrics: "
        "wh_per_1k, joules, ttft_p50, decode_tps, cost, pass_rate in points; see README)",
        _optional(parse_compare_fail),
        None,
    ),
    Option(
        "record",
        "cassettes: off (live, the default), new (replay what is recorded, record the "
        "rest), all (record everything again), none (replay only: a request without a "
        "recording fails its test)",
        parse_record_mode,
        "off",
    ),
    Option(
        "cassette_dir",
        "folder of cassettes, beside each test or suite file when relative (default cassettes)",
        str,
        "cassettes",
    ),
    Option(
        "replay_speed",
        "pace of a replay: 0 plays at once (the default), 1 at the recorded pace (TTFT "
        "and tokens/s as recorded), 2 twice as fast",
        non_negative,
        "0",
    ),
    Option(
        "resume",
        "reuse the generations the previous run in --llm-report-dir completed (same "
        "request, same model) and generate only the rest",
        _parse_bool,
        "false",
        flag=True,
    ),
    Option(
        "rescore",
        "take every generation from this generations.jsonl (what `llmlab rescore` "
        "passes): a request it lacks fails, nothing is generated",
        _optional(str),
        None,
    ),
    Option(
        "suite",
        "run this file as a prompt suite whatever its name (.yaml, .jsonl, .csv); "
        "repeatable; without test paths, only the suites run",
        _parse_paths,
        None,
        ini_type="linelist",
        multiple=True,
    ),
    Option(
        "system_prompts",
        "folder of system-prompt presets (.txt/.md) that suites name with `system:`, "
        "relative to the rootdir (default system_prompts)",
        str,
        "system_prompts",
    ),
    Option(
        "prices",
        "extra or corrected cloud prices, USD per million input/output tokens: MODEL=IN/OUT,...",
        _optional(parse_prices_option),
        None,
        cli=False,
    ),
    *(
        Option(
            info.base_url_setting,
            f"base URL of the {info.name}: provider (default {info.default_base_url})",
            functools.partial(_parse_url, key_env=info.api_key_env, spelled=info.parse_base_url),
            info.default_base_url,
            cli=False,
            env=info.base_url_env,
        )
        for info in PROVIDERS.values()
        if info.default_base_url is not None
    ),
)

#: The options that are a provider's base URL, by provider name.
_BASE_URL_OPTIONS: dict[str, str] = {
    info.base_url_setting: info.name
    for info in PROVIDERS.values()
    if info.default_base_url is not None
}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The resolved settings of one session (each value parsed by its `Option`).

    A plain dataclass, not a pydantic model: every pytest start builds one, and
    importing pydantic would cost every session ~50 ms (`bench/startup.py`).
    """

    models: list[ModelSpec]
    temperatures: list[float]
    report_dir: str
    timeout: float
    #: Seconds per generation; None: auto (from the timeout and max_tokens); 0: none.
    deadline: float | None
    #: Retries per request; None: auto (by provider).
    retries: int | None
    #: Generations in flight per process; None: auto (by backend).
    concurrency: int | None
    skip_unavailable: bool
    threads: int | None
    ctx: int
    meter: tuple[str, ...]
    baseline_s: float
    cpu_tdp: float | None
    #: A calibration NAME or .toml file (``--llm-energy-coefficients``), unresolved.
    energy_coefficients: str | None
    grid_gco2_per_kwh: float | None
    grid_zone: str | None
    kwh_price: float | None
    runs: int
    pass_rate: float
    pass_rule: tuple[str, int]
    confidence: float
    no_early_stop: bool
    strict_capabilities: bool
    energy_budget: float | None
    ttft_budget: float | None
    #: USD for priced generations in the whole session (``--llm-cost-budget``).
    cost_budget: float | None
    history: str
    save: str | None
    autosave: bool
    compare: str | None
    compare_fail: list[RegressionCheck] | None
    prices: dict[str, Price] | None
    #: Cassettes: ``--llm-record`` mode, folder, and replay pace (0: at once).
    record: RecordMode
    cassette_dir: str
    replay_speed: float
    #: Reuse the previous run's generations (``--llm-resume``), or take all of them
    #: from a generations file (``--llm-rescore``).
    resume: bool
    rescore: str | None
    #: Files run as prompt suites whatever their name (``--llm-suite``).
    suite: list[str] | None
    system_prompts: str
    #: Base URL per provider that has one (ini, env, else the provider's default).
    base_urls: dict[str, str]
    #: Where each value came from: "command line", "ini llm_x", "env LLMLAB_X", "default".
    sources: dict[str, str]

    def base_url(self, provider: str) -> str:
        return self.base_urls[provider]


def _cli_type(option: Option) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses the value once, at parse time: a bad value is
    argparse's usage error naming the flag, a good one reaches the settings parsed."""

    def parse(raw: str) -> Any:
        try:
            return option.parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = option.cli_flag  # argparse names the type in some messages
    return parse


def add_options(parser: pytest.Parser) -> None:
    """Register every option: the ``--llm-*`` flags in group ``llmlab`` and the
    ``llm_*`` ini keys (their help names the environment variables too)."""
    group = parser.getgroup("llmlab", "LLM behaviour and energy tests (pytest-llmlab)")
    for option in OPTIONS:
        if option.cli and option.multiple:
            group.addoption(
                option.cli_flag, action="append", default=None, dest=option.dest,
                type=_cli_type(option), metavar="PATH", help=option.help,
            )  # fmt: skip
        elif option.cli and option.flag:
            group.addoption(
                option.cli_flag, action="store_true", default=None, dest=option.dest,
                help=option.help,
            )  # fmt: skip
        elif option.cli:
            extra: dict[str, Any] = (
                {"nargs": "?", "const": option.const} if option.const is not None else {}
            )
            group.addoption(
                option.cli_flag, action="store", default=None, dest=option.dest,
                type=_cli_type(option), metavar=option.name.upper(), help=option.help,
                **extra,
            )  # fmt: skip
        ini_help = f"{option.help} (env {', '.join(option.env_names)})"
        parser.addini(option.ini_key, ini_help, type=option.ini_type, default=None)  # type: ignore[arg-type]


def _ini_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) if value else None
    text = str(value)
    return text if text.strip() else None


def build_settings(
    *,
    cli: Mapping[str, Any],
    ini: Mapping[str, object],
    env: Mapping[str, str] | None = None,
    options: Sequence[Option] = OPTIONS,
) -> Settings:
    """Resolve every option: command line, then ini, then environment, then default.

    Command-line values arrive parsed (argparse ran `Option.parse` as their ``type=``);
    a string among them (a bare flag's ``const``, or a caller passing raw text) is
    parsed here like every other source.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in options:
        cli_value = cli.get(option.dest)
        if option.multiple and isinstance(cli_value, list):  # one parsed list per use
            cli_value = [item for part in cli_value for item in part]
        if not option.flag and cli_value is not None and not isinstance(cli_value, str):
            values[option.name] = cli_value
            sources[option.name] = "command line"
            continue
        candidates: list[tuple[str, str | None]] = []
        if option.flag:
            candidates.append(("command line", "true" if cli_value else None))
        else:
            candidates.append(("command line", cli_value))
        candidates.append((f"ini {option.ini_key}", _ini_text(ini.get(option.ini_key))))
        candidates.extend((f"env {name}", env.get(name) or None) for name in option.env_names)
        candidates.append(("default", option.default))
        source, raw = next(((s, r) for s, r in candidates if r is not None), ("default", None))
        if raw is None:  # an optional setting nobody set
            values[option.name] = None
            sources[option.name] = source
            continue
        try:
            values[option.name] = option.parse(raw)
        except (ValueError, SpecError) as exc:
            where = option.cli_flag if source == "command line" else source
            raise SettingsError(f"{where}: {exc}") from None
        sources[option.name] = source
    base_urls = {
        provider: values.pop(name) for name, provider in _BASE_URL_OPTIONS.items() if name in values
    }
    if values.get("compare_fail") and values.get("compare") is None:
        raise SettingsError("--llm-compare-fail needs a baseline: add --llm-compare[=NAME]")
    return Settings(**values, base_urls=base_urls, sources=sources)


def report_dir(settings: Settings, invocation_dir: Path) -> Path:
    """The report folder, relative paths taken from where pytest was started."""
    path = Path(settings.report_dir).expanduser()
    return path if path.is_absolute() else invocation_dir / path
