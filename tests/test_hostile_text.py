"""Hostile text from servers, models and settings never harms what leaves the process.

* Credentials (items 12, 13): an API key or base-URL password echoed by a server, in
  an error body, an error event (object or not), the finish reason or the model's
  output, placed to straddle every length cut, reaches no message and no artefact.
* CSV injection (item 14): text cells that a spreadsheet would run as formulas get a
  leading ``'``; numbers stay numbers.
* Terminal control characters (item 15): server text in error messages is escaped.
* Markup in test ids (item 16): specs and aliases with markup or controls are refused.

The server here (`tests/loopback.py`) is a loopback protocol double of the OpenAI
chat-completions streaming format on 127.0.0.1, NOT a real model server: it plays the
scripted answers below, including error bodies that repeat what the client sent.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clients import Binder
from loopback import (
    LoopbackServer,
    Script,
    error_event,
    http_error,
    malformed,
    stream,
)

from pytest_llmlab import redact
from pytest_llmlab.config import SettingsError, build_settings
from pytest_llmlab.errors import LLMLabError
from pytest_llmlab.llm import LLM
from pytest_llmlab.models.base import Generation
from pytest_llmlab.models.openai import redact_url
from pytest_llmlab.report.csvfile import CSV_COLUMNS, write_csv
from pytest_llmlab.report.html import render_html
from pytest_llmlab.report.leaderboard import format_leaderboard, leaderboard

KEY = "sk-hostile-0123456789abcdefXYZ"
KEY_B64 = base64.b64encode(KEY.encode()).decode()
PASSWORD = "pw-h1dden-4e7Q"
BASIC = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
DISPLAY = "vllm:test-model"


def leaks(text: str, secrets: tuple[str, ...] = (KEY, KEY_B64)) -> list[str]:
    """Every piece (8 characters or more) of a secret found in ``text``."""
    found = []
    for secret in secrets:
        for start in range(len(secret) - 7):
            piece = secret[start : start + 8]
            if piece in text:
                found.append(piece)
    return found


pytestmark = pytest.mark.usefixtures("fresh_process_redactor")


@pytest.fixture
def client() -> Iterator[Callable[..., tuple[LLM, list[Generation]]]]:
    """An `LLM` over `OpenAICompatible` at a base URL, with a key; closed at teardown."""
    with Binder() as binder:

        def make(base_url: str, api_key: str | None = KEY) -> tuple[LLM, list[Generation]]:
            bound = binder(base_url, api_key=api_key, display=DISPLAY, deadline_s=None)
            return bound.llm, bound.records

        yield make


def failure(llm: LLM) -> str:
    with pytest.raises(LLMLabError) as info:
        llm.generate("hi")
    return str(info.value)


# --------------------------------------------------------------------------- item 12


def _json_escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


def _raw_json_body(status: int, message_json: str) -> Script:
    """An error body written by hand (JSON escapes the double would not write)."""
    return http_error(status, f'{{"error": {{"message": {message_json}}}}}', json_body=False)


#: name -> (what the server says, whether a mask is left to see in the message: a key
#: cut off by the 4 KiB window is dropped whole).
ECHOES: dict[str, tuple[Script, bool]] = {
    # The JSON message is cut at 300 characters: the key straddles the cut.
    "401-json-at-300": (http_error(401, "m" * 290 + KEY), True),
    "401-json-short": (http_error(401, f"Incorrect API key provided: {KEY}."), True),
    # The key written with JSON escapes only reads plainly once decoded.
    "401-json-escaped": (_raw_json_body(401, '"bad key ' + _json_escaped(KEY) + '"'), True),
    # A non-JSON body is read up to 4 KiB, whitespace collapsed, cut at 300: a key cut by
    # the 4 KiB window would land in the first 300 characters.
    "500-text-at-4096": (
        http_error(500, " " * 4080 + f"Bearer {KEY} " + "z" * 100, json_body=False),
        False,
    ),
    "500-text-at-300": (http_error(500, "t" * 290 + f" Bearer {KEY}", json_body=False), True),
    "500-json-string": (http_error(500, json.dumps(f"Bearer {KEY}"), json_body=False), True),
    # An error event's message is cut at 300 characters.
    "event-at-300": (error_event("e" * 290 + f" key {KEY} revoked"), True),
    "event-base64": (error_event(f"Authorization: Basic {KEY_B64}"), True),
    # A non-object JSON event is quoted, cut at 200 characters.
    "event-non-object": (malformed(json.dumps(f"invalid credentials Bearer {KEY}")), True),
    "event-non-object-at-200": (malformed(json.dumps("q" * 190 + f"Bearer {KEY}")), True),
    "event-non-object-escaped": (malformed('"Bearer ' + _json_escaped(KEY) + '"'), True),
    "event-error-string": (
        malformed(json.dumps({"error": f"invalid credentials Bearer {KEY}"})),
        True,
    ),
    # Malformed JSON is quoted, cut at 200 characters.
    "malformed-at-200": (malformed("{" + "w" * 190 + f"Bearer {KEY}"), True),
}


@pytest.mark.parametrize(("script", "mask_shown"), list(ECHOES.values()), ids=list(ECHOES))
def test_echoed_key_is_masked_before_any_cut(
    server: LoopbackServer,
    client: Callable[..., tuple[LLM, list[Generation]]],
    script: Script,
    mask_shown: bool,
) -> None:
    server.play(script)
    llm, records = client(server.base_url)
    message = failure(llm)
    assert server.posts[0].headers["authorization"] == f"Bearer {KEY}"
    assert (redact.MASK[:2] in message) is mask_shown, message  # the key was there
    assert not leaks(message), message
    assert [r.finish_reason for r in records] == ["error"]
    assert not leaks(records[0].model_dump_json())


def test_key_known_only_from_the_environment_is_masked(
    server: LoopbackServer,
    client: Callable[..., tuple[LLM, list[Generation]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key of another provider (set in the environment) echoed by this server."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server.play(http_error(401, "p" * 280 + f" {KEY}"))
    llm, _ = client(server.base_url, api_key=None)
    message = failure(llm)
    assert "authorization" not in server.posts[0].headers
    assert not leaks(message) and "**" in message


def test_url_password_and_its_basic_auth_are_masked(
    server: LoopbackServer, client: Callable[..., tuple[LLM, list[Generation]]]
) -> None:
    """A client built directly (settings refuse such URLs) with ``user:password@``:
    httpx sends Basic auth; a server repeating it, or the password, is masked."""
    server.play(
        http_error(401, f"Basic {BASIC} rejected"),
        error_event(f"password {PASSWORD} is wrong"),
        http_error(401, "u" * 290 + f"Basic {BASIC}"),
    )
    encoded = PASSWORD.replace("-", "%2D")  # as written in a URL; the server sees it decoded
    llm, _ = client(f"http://alice:{encoded}@127.0.0.1:{server.port}/v1", api_key=None)
    messages = [failure(llm) for _ in range(3)]
    assert server.posts[0].headers["authorization"] == f"Basic {BASIC}"
    for message in messages:
        assert not leaks(message, (PASSWORD, BASIC)), message
        assert "alice" not in message  # the endpoint is shown without userinfo


# --------------------------------------------------------------------------- item 13


@pytest.mark.parametrize(
    ("env", "source", "shown", "hint"),
    [
        (
            {"LLMLAB_VLLM_BASE_URL": f"http://alice:{PASSWORD}@127.0.0.1:8000/v1"},
            "env LLMLAB_VLLM_BASE_URL",
            "'http://alice:***@127.0.0.1:8000/v1'",
            "set VLLM_API_KEY",
        ),
        (
            {"OPENAI_BASE_URL": f"https://{PASSWORD}@api.example.com/v1"},
            "env OPENAI_BASE_URL",
            "'https://***@api.example.com/v1'",
            "set OPENAI_API_KEY",
        ),
    ],
)
def test_base_url_with_credentials_is_refused(
    env: dict[str, str], source: str, shown: str, hint: str
) -> None:
    with pytest.raises(SettingsError) as info:
        build_settings(cli={}, ini={}, env=env)
    message = str(info.value)
    assert message.startswith(f"{source}: {shown}: credentials (user:password@) in a base URL")
    assert hint in message and PASSWORD not in message


@pytest.mark.parametrize(
    "url",
    [f"ftp://alice:{PASSWORD}@host/v1", f"alice:{PASSWORD}@host:8000/v1", f"//a:{PASSWORD}@h"],
)
def test_bad_scheme_error_hides_the_password(url: str) -> None:
    with pytest.raises(SettingsError) as info:
        build_settings(cli={}, ini={"llm_lmstudio_base_url": url}, env={})
    message = str(info.value)
    assert message.startswith("ini llm_lmstudio_base_url: ") and "is not an http(s) URL" in message
    assert PASSWORD not in message and "***" in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"http://alice:{PASSWORD}@127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        (f"http://alice:{PASSWORD}@[::1]:8000/v1", "http://[::1]:8000/v1"),
        (f"http://{KEY}@h:notaport/v1", "http://h:notaport/v1"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
    ],
)
def test_endpoint_is_shown_without_userinfo(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_html_report_masks_keys_before_its_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record written before masking (an old results file re-rendered by ``llmlab
    report``): the key straddles the page's 2,000-character cut of each text."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    record = {
        "test_id": "t::x[openai:m-T0]",
        "model": "openai:m",
        "outcome": "failed",
        "output": "o" * 1990 + KEY,
        "error": "e" * 1995 + KEY_B64,
        "failure": f"assert 'xxxx...{KEY[-12:]} done' == 'y'",
    }
    page = render_html([record], text_limit=2000)
    assert not leaks(page)
    assert "o" * 1990 + "***" in page


# --------------------------------------------------------------------------- item 15

ANSI = "\x1b[2J\x1b[H\x1b[1;32m===== 1 passed in 0.01s =====\x1b[0m"
TITLE = "\x1b]0;owned\x07"


@pytest.mark.parametrize(
    "script",
    [
        http_error(500, ANSI, json_body=False),
        http_error(500, ANSI),
        error_event(TITLE + " overloaded\r\u202e"),
        malformed(json.dumps(ANSI)),
        malformed("{" + ANSI),
    ],
    ids=["500-text", "500-json", "event", "non-object-event", "malformed"],
)
def test_server_text_in_errors_has_no_control_characters(
    server: LoopbackServer, client: Callable[..., tuple[LLM, list[Generation]]], script: Script
) -> None:
    server.play(script)
    llm, records = client(server.base_url)
    message = failure(llm)
    assert not [c for c in message if c in "\x1b\x07\r\x9b\u202e"], repr(message)
    assert "\\x1b" in message or "\\u001b" in message  # shown, harmlessly
    assert records[0].error == message


def test_user_sees_no_escape_sequence_from_the_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, server: LoopbackServer
) -> None:
    _clean_env(monkeypatch)
    monkeypatch.setenv("LLMLAB_VLLM_BASE_URL", server.base_url)
    server.play(http_error(500, ANSI, json_body=False), error_event(TITLE))
    pytester.makepyfile(
        """
        def test_one(llm):
            llm.generate("hello")

        def test_two(llm):
            llm.generate("hello")
        """
    )
    result = pytester.runpytest_subprocess("--llm-models=vllm:tiny", *INNER_ARGS, timeout=60)
    result.assert_outcomes(failed=2)
    output = result.stdout.str() + result.stderr.str()
    assert "\x1b" not in output and "\x07" not in output
    assert "\\x1b[2J" in output and "\\x1b]0;owned\\x07" in output


# --------------------------------------------------------------------------- item 14

FORMULA_STARTS = ["=", "+", "-", "@", "\t", "\r"]
TEXT_FIELDS = ["model", "alias", "category", "suite", "finish_reason", "output", "test_id"]


def _hostile_records() -> list[dict[str, Any]]:
    records = []
    for index, start in enumerate(FORMULA_STARTS):
        record: dict[str, Any] = {
            name: f'{start}HYPERLINK("http://x/{name}","{index}")' for name in TEXT_FIELDS
        }
        record.update(
            spec="vllm:m",
            provider="vllm",
            outcome="passed",
            temperature=0.0,
            ttft_s=-1.5,
            prompt_tokens=-3,
            energy={"joules": -0.25, "provenance": f"{start}cmd|' /C calc'!A0"},
        )
        records.append(record)
    return records


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_results_csv_defuses_formulas_and_keeps_numbers(tmp_path: Path) -> None:
    records = _hostile_records()
    path = write_csv(records, tmp_path / "results.csv")
    rows = _read_csv(path)
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        for name in ("model", "alias", "category", "suite", "finish_reason", "test_id"):
            assert row[name] == "'" + record[name], name
        assert row["provenance"] == "'" + record["energy"]["provenance"]
        assert (row["ttft_s"], row["prompt_tokens"], row["joules"]) == ("-1.5", "-3", "-0.25")
        assert row["temperature"] == "0.0"
    for row in rows:  # no cell anywhere (the output is not a column) starts a formula
        for name in CSV_COLUMNS:
            cell = row[name]
            assert not cell.startswith(tuple(FORMULA_STARTS)) or cell in ("-1.5", "-3", "-0.25")


def test_results_csv_defuses_formulas_in_mixed_type_columns(tmp_path: Path) -> None:
    """A hand-edited results file: a column mixing text and numbers (object dtype)."""
    records = [{"model": "=1+1", "test_id": "t", "host": 5}, {"model": 7, "host": "@SUM(A1)"}]
    rows = _read_csv(write_csv(records, tmp_path / "r.csv"))
    assert [(r["model"], r["host"]) for r in rows] == [("'=1+1", "5"), ("7", "'@SUM(A1)")]


def test_leaderboard_csv_defuses_formulas_in_names_and_groups() -> None:
    records = [
        {"test_id": f"t{i}", "model": "=cmd()", "category": f"{start}grp", "outcome": "passed"}
        for i, start in enumerate(FORMULA_STARTS)
    ]
    rows = list(csv.reader(io.StringIO(format_leaderboard(leaderboard(records), "csv"))))
    header, body = rows[0], rows[1:]
    assert body[0][0] == "'=cmd()"
    groups = [c for c in header[1:] if c.endswith("grp")]
    assert sorted(groups) == sorted("'" + f"{s}grp" for s in FORMULA_STARTS)
    assert not [c for row in rows for c in row if c.startswith(tuple(FORMULA_STARTS))]


# --------------------------------------------------------------------------- item 16

INNER_ARGS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:xdist")


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if (name.startswith("LLMLAB_") and name != "LLMLAB_HOME") or name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("LLMLAB_BASELINE_S", "0")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("vllm:<img src=x onerror=alert(1)>", "invalid character '<' in model spec"),
        ("x<img/onerror=alert(1)>=vllm:m", "invalid alias 'x<img/onerror"),
        ("vllm:a\u202eb", "invalid character '\\u202e' in model spec"),
        ("vllm:a b", "invalid character ' ' in model spec 'vllm:a b'"),
    ],
)
def test_markup_in_a_spec_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, spec: str, expected: str
) -> None:
    _clean_env(monkeypatch)
    pytester.makepyfile("def test_one(llm): pass\n")
    result = pytester.runpytest_subprocess(f"--llm-models={spec}", *INNER_ARGS, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert expected in result.stderr.str()


def test_markup_in_a_marker_spec_fails_collection(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.llm(models=['vllm:"><script>alert(1)</script>'])
        def test_one(llm):
            pass
        """
    )
    result = pytester.runpytest_subprocess(*INNER_ARGS, timeout=60)
    assert result.ret != pytest.ExitCode.OK
    output = result.stdout.str()
    assert "invalid character '\"' in model spec" in output
    assert "test_one[" not in output  # no test id was made from it


# --------------------------------------------------------------------------- end to end

INNER_TESTS = f"""
KEY = {KEY!r}
KEY_B64 = {KEY_B64!r}


def test_raw_in_memory(llm):
    gen = llm.generate("hello")
    assert KEY in gen.text and KEY_B64 in gen.text  # what the model said, in memory
    assert KEY in gen.finish_reason


def test_shown_in_failure(llm):
    gen = llm.generate("hello")
    assert gen.text == "something else"


def test_http_401(llm):
    llm.generate("hello")


def test_error_event(llm):
    llm.generate("hello")
"""


def _echo_scripts() -> list[Script]:
    """Model output and finish reason that repeat the key (straddling the HTML report's
    2,000-character cut), then an HTTP 401 and a non-object error event that do."""
    output = ["x" * 1990, f"key {KEY} ", f"b64 {KEY_B64} ", "done"]
    echo = stream(output, finish_reason=f"stop: {KEY}")
    return [
        echo,
        echo,
        http_error(401, "m" * 290 + KEY),  # straddles the 300-character cut
        malformed(json.dumps(f"invalid credentials Bearer {KEY}")),
    ]


def _run_inner(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, server: LoopbackServer
) -> tuple[pytest.RunResult, dict[str, bytes]]:
    _clean_env(monkeypatch)
    monkeypatch.setenv("LLMLAB_VLLM_BASE_URL", server.base_url)
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    server.play(*_echo_scripts())
    pytester.makepyfile(test_echo=INNER_TESTS)
    result = pytester.runpytest_subprocess(
        "--llm-models=vllm:tiny",
        "--junitxml=junit.xml",
        "--llm-save=x",
        "--llm-history=history.sqlite",
        "-p",
        "no:randomly",
        *INNER_ARGS,
        timeout=120,
    )
    assert [p.headers["authorization"] for p in server.posts] == [f"Bearer {KEY}"] * 4
    root = pytester.path
    files = {
        name: (root / name).read_bytes()
        for name in (
            "reports/results.jsonl",
            "reports/results.csv",
            "reports/report.html",
            "junit.xml",
            "history.sqlite",
        )
    }
    files["terminal"] = (result.stdout.str() + result.stderr.str()).encode()
    return result, files


def _leaks_in(files: dict[str, bytes]) -> dict[str, list[str]]:
    return {name: found for name, data in files.items() if (found := leaks(data.decode("latin-1")))}


def test_error_text_echo_is_masked_in_every_artefact(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, server: LoopbackServer
) -> None:
    """The HTTP 401 and error-event echoes are masked where the message is made, so
    no artefact gets them (the key in the model's output is the next test's)."""
    result, files = _run_inner(pytester, monkeypatch, server)
    result.assert_outcomes(passed=1, failed=3)
    records = [json.loads(line) for line in files["reports/results.jsonl"].splitlines()]
    errors = {r["test_id"].split("::")[1].split("[")[0]: r["error"] for r in records}
    for name in ("test_http_401", "test_error_event"):
        assert "***" in errors[name] and not leaks(errors[name]), errors[name]
    terminal = files["terminal"].decode()
    shown = [line for line in terminal.splitlines() if "HTTPStatusError" in line]
    shown += [line for line in terminal.splitlines() if "StreamError" in line]
    assert any("HTTP 401" in line for line in shown) and any("Bearer" in line for line in shown)
    for line in shown:
        assert not leaks(line), line
    with sqlite3.connect(pytester.path / "history.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM records").fetchone() == (4,)


def test_key_echoed_in_output_reaches_no_artefact(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, server: LoopbackServer
) -> None:
    """The model's output and finish reason repeat the key: ``gen.text`` keeps it (the
    inner test checks), and results.jsonl, results.csv, report.html, the JUnit XML,
    the terminal and the history file have ``***`` instead."""
    result, files = _run_inner(pytester, monkeypatch, server)
    result.assert_outcomes(passed=1, failed=3)
    leaking = sorted(_leaks_in(files))
    assert not leaking, f"pieces of the key in: {', '.join(leaking)}"
    records = [json.loads(line) for line in files["reports/results.jsonl"].splitlines()]
    assert records[0]["finish_reason"] == "stop: ***"
    assert "key *** " in records[0]["output"] and "b64 *** " in records[0]["output"]
