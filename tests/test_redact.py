"""The one redaction step (`pytest_llmlab.redact`): secrets, encodings, nested values,
the process-wide redactor, terminal-safe text and CSV cells."""

from __future__ import annotations

import base64
import re
from collections import namedtuple
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llmlab import redact
from pytest_llmlab.models.providers import PROVIDERS
from pytest_llmlab.redact import (
    MASK,
    Redactor,
    csv_cell,
    redact_text,
    redact_value,
    secrets_from,
    terminal_safe,
)

KEY = "sk-test-8f2Kq9zLmW4xR7vB"


pytestmark = pytest.mark.usefixtures("fresh_process_redactor")


# --------------------------------------------------------------------------- Redactor


def test_masks_every_occurrence_and_nothing_else() -> None:
    redactor = Redactor([KEY])
    assert redactor.text(f"a {KEY} b {KEY}{KEY}") == f"a {MASK} b {MASK}{MASK}"
    assert redactor.text("sk-test-8f2Kq9 is half a key") == "sk-test-8f2Kq9 is half a key"


def test_longest_secret_wins() -> None:
    redactor = Redactor(["abcd", "abcd1234efgh"])
    assert redactor.text("xabcd1234efghx abcdz") == f"x{MASK}x {MASK}z"
    redactor = Redactor()
    redactor.add("abcd")
    redactor.add("abcd1234efgh")  # added later, still matched first
    assert redactor.text("abcd1234efgh") == MASK


def test_short_secrets_are_ignored_and_bool_says_whether_any() -> None:
    redactor = Redactor(["", "abc"])
    assert not redactor
    assert redactor.text("abc abc") == "abc abc"
    redactor.add("abcd")
    assert redactor
    assert redactor.text("abc abcd") == f"abc {MASK}"


def test_encodings_are_masked() -> None:
    secret = "p@ss/w0rd:é"
    redactor = Redactor([secret])
    encoded = quote(secret, safe="")
    forms = [
        secret,
        encoded,
        re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), encoded),  # lower-case escapes
        quote(secret),
        base64.b64encode(secret.encode()).decode(),
    ]
    for form in forms:
        assert redactor.text(f"<{form}>") == f"<{MASK}>", form
    decoded = Redactor(["p%40ss%2Fw0rd"])  # a password as written in a URL
    assert decoded.text("p@ss/w0rd") == MASK


def test_value_is_recursive_and_copies() -> None:
    Pair = namedtuple("Pair", "a b")
    redactor = Redactor([KEY])
    original = {
        "output": f"key={KEY}",
        "nested": [{"finish_reason": KEY}, (KEY, 3)],
        KEY: "a key as a key",
        "pair": Pair(KEY, 1.5),
        "n": 7,
        "none": None,
        "flag": True,
    }
    masked = redactor.value(original)
    assert masked == {
        "output": f"key={MASK}",
        "nested": [{"finish_reason": MASK}, (MASK, 3)],
        MASK: "a key as a key",
        "pair": Pair(MASK, 1.5),
        "n": 7,
        "none": None,
        "flag": True,
    }
    assert isinstance(masked, dict) and type(masked["pair"]) is Pair
    assert original["output"] == f"key={KEY}"  # the input is untouched
    empty = Redactor()
    nested = {"a": [1, {"b": "c"}]}
    copied = empty.value(nested)
    assert copied == nested
    assert isinstance(copied, dict) and copied is not nested and copied["a"] is not nested["a"]


def test_clipped_drops_a_secret_cut_by_a_window() -> None:
    redactor = Redactor([KEY])
    window = ("x" * 20 + KEY)[:30]  # the window ends inside the key
    assert KEY[:10] in window
    assert redactor.clipped(window) == "x" * 20
    assert redactor.clipped(f"x {KEY} y") == f"x {MASK} y"
    assert Redactor().clipped("abc") == "abc"


def test_ends_of_a_secret_around_an_ellipsis_are_masked() -> None:
    """pytest shortens assertion reprs to ``'head...tail'`` before anyone sees them."""
    redactor = Redactor([KEY])
    assert redactor.text(f"'xxxx...{KEY[-9:]} done'") == f"'xxxx...{MASK} done'"
    assert redactor.text(f"Bearer {KEY[:12]}... more") == f"Bearer {MASK}... more"
    assert redactor.text(f"{KEY[:5]}\u2026{KEY[-5:]}") == f"{MASK}\u2026{MASK}"
    b64 = base64.b64encode(KEY.encode()).decode()
    assert redactor.text(f"...{b64[-8:]}") == f"...{MASK}"
    for harmless in ("wait... what", "sk-...", "...XYZ", f"{KEY[-6:]}... {KEY[:6]}"):
        assert redactor.text(harmless) == harmless  # too short, or the wrong end


def test_merge_and_union() -> None:
    one, two = Redactor(["first-secret"]), Redactor(["second-secret"])
    both = one | two
    assert both.text("first-secret second-secret") == f"{MASK} {MASK}"
    assert one.text("second-secret") == "second-secret"  # `|` builds a new one
    one.merge(two)
    assert one.text("second-secret") == MASK
    assert KEY not in repr(Redactor([KEY]))


@given(
    secret=st.text(min_size=4, max_size=40).filter(lambda s: "\x00" not in s),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_a_secret_never_survives(secret: str, before: str, after: str) -> None:
    masked = Redactor([secret]).text(before + secret + after)
    assert secret not in masked


# --------------------------------------------------------------------------- sources


def test_key_variables_are_the_provider_tables() -> None:
    expected = {name for info in PROVIDERS.values() for name in info.key_envs}
    assert set(redact.key_variables()) == expected
    assert {"GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY"} <= expected


@pytest.mark.parametrize(
    "variable", sorted(name for i in PROVIDERS.values() for name in i.key_envs)
)
def test_secrets_from_reads_each_provider_key(variable: str) -> None:
    redactor = secrets_from(env={variable: KEY, "UNRELATED_TOKEN": "not-a-provider-key"})
    assert redactor.text(f"{KEY} not-a-provider-key") == f"{MASK} not-a-provider-key"


def test_secrets_from_base_url_credentials() -> None:
    redactor = secrets_from(
        {"vllm": "http://alice:pw%2Fh1dden@127.0.0.1:8000/v1", "lmstudio": "http://h:1/v1"},
        env={},
    )
    basic = base64.b64encode(b"alice:pw/h1dden").decode()
    raw_basic = base64.b64encode(b"alice:pw%2Fh1dden").decode()
    text = f"pw/h1dden pw%2Fh1dden Basic {basic} {raw_basic} alice"
    assert redactor.text(text) == f"{MASK} {MASK} Basic {MASK} {MASK} alice"
    assert not secrets_from({"vllm": "http://127.0.0.1:8000/v1"}, env={})


def test_process_redactor_covers_the_environment_and_installed_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert redact_text(f"a {KEY}") == f"a {KEY}"
    monkeypatch.setenv("VLLM_API_KEY", KEY)  # set after import, before configure
    assert redact_text(f"a {KEY}") == f"a {MASK}"
    assert redact_value({"x": [KEY]}) == {"x": [MASK]}
    redact.install(Redactor(["installed-secret"]))
    assert redact_text("installed-secret") == MASK
    assert redact.active().text("installed-secret") == MASK
    monkeypatch.delenv("VLLM_API_KEY")
    assert redact_text(KEY) == KEY  # the environment is read at each call
    assert redact_text("installed-secret") == MASK
    redact.reset()
    assert redact_text("installed-secret") == "installed-secret"


# --------------------------------------------------------------------------- terminal

UNSAFE = (
    [chr(c) for c in range(0x20) if chr(c) not in "\t\n"]
    + ["\x7f"]
    + [chr(c) for c in range(0x80, 0xA0)]
    + ["\u061c", "\u200e", "\u200f", "\u2028", "\u2029"]
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
)


@pytest.mark.parametrize("char", UNSAFE, ids=[f"U+{ord(c):04X}" for c in UNSAFE])
def test_terminal_safe_escapes_each_control_character(char: str) -> None:
    assert terminal_safe(f"a{char}b") == f"a{_escape(char)}b"


def test_terminal_safe_keeps_text_newlines_and_tabs() -> None:
    text = "line 1\n\tline 2: Grüße, 東京, emoji 👍🏽, \\x1b as text"
    assert terminal_safe(text) is text
    assert terminal_safe("\x1b[2J\x1b[32m1 passed\x1b[0m") == "\\x1b[2J\\x1b[32m1 passed\\x1b[0m"
    assert terminal_safe("\x1b]0;pwned\x07") == "\\x1b]0;pwned\\x07"


def _escape(char: str) -> str:
    return f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}"


@given(st.text().filter(lambda t: "\\" not in t))
def test_terminal_safe_leaves_no_unsafe_character_and_loses_nothing(text: str) -> None:
    shown = terminal_safe(text)
    assert not set(shown) & set(UNSAFE)
    restored = shown
    for char in UNSAFE:
        restored = restored.replace(_escape(char), char)
    assert restored == text


# --------------------------------------------------------------------------- CSV


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cell_defuses_formula_starts(start: str) -> None:
    assert csv_cell(f"{start}HYPERLINK(1)") == f"'{start}HYPERLINK(1)"


@pytest.mark.parametrize(
    "value", ["-1.5", "+2", "-3e-4", "-.5", "plain", "", "a=b", 3, -1.5, None], ids=repr
)
def test_csv_cell_keeps_numbers_and_harmless_text(value: object) -> None:
    assert csv_cell(value) == value
