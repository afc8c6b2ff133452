"""The one redaction step: credentials masked, control characters and formulas defused.

Everything that leaves the process (records, ``results.jsonl``, ``results.csv``, the
HTML page, JUnit XML, the terminal, the history database, error messages) goes through
a `Redactor` first. It masks, as `MASK`, every credential in use:

* each provider's API key (the environment variables named by
  `pytest_llmlab.models.providers.PROVIDERS` ``api_key_env``, registered here by that
  table with `register_key_variables`);
* passwords in configured base URLs, URL-decoded as they are sent, and the
  ``base64(user:password)`` that HTTP Basic auth sends;
* for every secret also its URL-encoded, URL-decoded and base64 forms.

Masking happens before any truncation: a key cut in half by a length limit would leave
its first half readable. A text that is itself the start of a longer one (a read
window) goes through `Redactor.clipped`, which also drops a trailing partial secret.
In memory a `Generation` keeps what the model said; only its copies on the way out are
masked.

A process-wide redactor (`install`, `active`) collects what the session configures;
`redact_text` / `redact_value` use it together with the provider keys set in the
environment right now, so code that runs before ``pytest_configure`` (or in the
``llmlab`` command) is covered too.

Two more functions make untrusted text (server messages, model output, model names)
safe for where it goes: `terminal_safe` (no escape sequences, no bidi tricks) and
`csv_cell` (no spreadsheet formulas).

This module imports nothing from the package, so every layer may use it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus, unquote, urlsplit

__all__ = [
    "MASK",
    "Redactor",
    "active",
    "csv_cell",
    "current",
    "install",
    "key_variables",
    "redact_text",
    "redact_value",
    "register_key_variables",
    "reset",
    "secrets_from",
    "terminal_safe",
    "url_secrets",
]

#: What a masked credential reads as.
MASK = "***"
#: Shorter secrets are ignored: masking "ab" everywhere would garble every text.
_MIN_SECRET = 4

_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")
#: Where another program shortened a text (pytest's ``saferepr``, ``…``).
_ELLIPSIS = re.compile(r"\.\.\.|\u2026")


def _encodings(secret: str) -> set[str]:
    """``secret`` and the forms it travels in: URL-encoded (upper- and lower-case
    escapes, ``+`` for spaces), URL-decoded, and base64 (with and without padding);
    each at least `_MIN_SECRET` long; none for a shorter secret."""
    if len(secret) < _MIN_SECRET:
        return set()
    forms = {secret, unquote(secret)}
    try:
        forms |= {quote(secret, safe=""), quote(secret), quote_plus(secret)}
        forms |= {_PERCENT_ESCAPE.sub(lambda m: m[0].lower(), form) for form in forms}
        encoded = _b64(secret)
        forms |= {encoded, encoded.rstrip("=")}
    except UnicodeEncodeError:  # a lone surrogate (an undecodable environment value)
        pass
    return {form for form in forms if len(form) >= _MIN_SECRET}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


class Redactor:
    """Masks a set of secrets (and their encodings) in text and in nested values.

    Matching is one compiled alternation, longest secret first (so a key that contains
    a shorter one is masked whole), rebuilt when a secret is added.
    """

    __slots__ = ("_forms", "_pattern", "generation")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        #: Bumped on every change, so caches built from this redactor can tell.
        self.generation = 0
        self._extend(form for secret in secrets for form in _encodings(secret))

    def _extend(self, forms: Iterable[str]) -> None:
        new = set(forms) - self._forms
        if not new:
            return
        self._forms |= new
        ordered = sorted(self._forms, key=lambda s: (-len(s), s))
        self._pattern = re.compile("|".join(map(re.escape, ordered)))
        self.generation += 1

    def add(self, secret: str) -> None:
        """Mask ``secret`` and its encodings from now on (ignored under 4 characters)."""
        self._extend(_encodings(secret))

    def merge(self, other: Redactor) -> None:
        """Mask everything ``other`` masks, too."""
        self._extend(other._forms)

    def __or__(self, other: Redactor) -> Redactor:
        """A new redactor masking what either masks."""
        both = Redactor()
        both._extend(self._forms | other._forms)
        return both

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __repr__(self) -> str:  # never the secrets themselves
        return f"<Redactor of {len(self._forms)} secret forms>"

    def text(self, value: str) -> str:
        """``value`` with every secret replaced by `MASK`.

        A text that was shortened elsewhere, before it got here (pytest's assertion
        messages read ``'abc...xyz'``), may hold the two ends of a secret around an
        ellipsis: an end of 4 characters or more that touches ``...`` or ``…`` is
        masked too.
        """
        if self._pattern is None:
            return value
        masked = self._pattern.sub(MASK, value)
        if "..." in masked or "\u2026" in masked:
            masked = self._mask_ends_at_cuts(masked)
        return masked

    def _longest_end(self, text: str, at: int, *, before: bool) -> int:
        """The longest start of a secret (``before``: ending at ``at``) or end of a
        secret (starting at ``at``) in ``text``, at least `_MIN_SECRET` long; 0 if none."""
        best = 0
        for form in self._forms:
            for k in range(len(form) - 1, max(best, _MIN_SECRET - 1), -1):
                if before:
                    found = k <= at and text.startswith(form[:k], at - k)
                else:
                    found = text.startswith(form[-k:], at)
                if found:
                    best = k
                    break
        return best

    def _mask_ends_at_cuts(self, text: str) -> str:
        out: list[str] = []
        last = 0
        for match in _ELLIPSIS.finditer(text):
            start, end = match.span()
            if start < last:
                continue
            head = min(self._longest_end(text, start, before=True), start - last)
            tail = self._longest_end(text, end, before=False)
            out.append(text[last : start - head])
            out.append((MASK if head else "") + match[0] + (MASK if tail else ""))
            last = end + tail
        out.append(text[last:])
        return "".join(out)

    def clipped(self, value: str) -> str:
        """Like `text`, for the start of a longer text (a read window, a cut body):
        a trailing start of a secret, cut off by the window, is dropped too."""
        masked = self.text(value)
        if self._pattern is None:
            return masked
        cut = max(
            (
                k
                for form in self._forms
                for k in range(min(len(form) - 1, len(masked)), 0, -1)
                if masked.endswith(form[:k])
            ),
            default=0,
        )
        return masked[: len(masked) - cut]

    def value(self, obj: object) -> object:
        """``obj`` with every string in it masked, recursively through dicts (keys and
        values), lists and tuples; new containers, other values unchanged."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {
                self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in obj.items()
            }
        if isinstance(obj, list):
            return [self.value(v) for v in obj]
        if isinstance(obj, tuple):
            items = [self.value(v) for v in obj]
            make = getattr(type(obj), "_make", None)  # a named tuple keeps its type
            return make(items) if make is not None else tuple(items)
        return obj


# --------------------------------------------------------------------------- sources

_KEY_VARIABLES: list[str] = []


def register_key_variables(names: Iterable[str]) -> None:
    """Name environment variables that hold API keys (the provider table does)."""
    for name in names:
        if name and name not in _KEY_VARIABLES:
            _KEY_VARIABLES.append(name)


def key_variables() -> tuple[str, ...]:
    """The registered API-key variables, in registration order."""
    return tuple(_KEY_VARIABLES)


def url_secrets(url: str) -> list[str]:
    """The credentials in a URL's ``user:password@``: the password as written and
    URL-decoded, and ``base64(user:password)`` of both (HTTP Basic auth). A user
    without a password is taken as a token (some servers accept one there)."""
    try:
        parts = urlsplit(url.strip())
        user, password = parts.username, parts.password
    except ValueError:
        return []
    if password is None:
        return [user, unquote(user)] if user else []
    found = [password, unquote(password)]
    for u, p in {(user or "", password), (unquote(user or ""), unquote(password))}:
        with contextlib.suppress(UnicodeEncodeError):
            found.append(_b64(f"{u}:{p}"))
    return found


def secrets_from(
    base_urls: Mapping[str, str] = {},
    env: Mapping[str, str] = os.environ,
) -> Redactor:
    """A redactor of every API-key variable set in ``env`` and every credential in
    the ``base_urls`` (provider name -> URL)."""
    found = [env.get(name) or "" for name in _KEY_VARIABLES]
    for url in base_urls.values():
        found.extend(url_secrets(url))
    return Redactor(found)


# --------------------------------------------------------------------------- process-wide

_active = Redactor()
_current: tuple[tuple[object, ...], Redactor] | None = None


def install(redactor: Redactor) -> None:
    """Add ``redactor``'s secrets to the process-wide one."""
    _active.merge(redactor)


def active() -> Redactor:
    """The process-wide redactor (what `install` collected)."""
    return _active


def reset() -> None:
    """Forget what `install` collected (at the end of a session, between tests)."""
    global _active, _current
    _active = Redactor()
    _current = None


def current() -> Redactor:
    """The process-wide redactor plus the API keys set in the environment now.

    Cached: rebuilt only when either changes. Take it once for a batch of texts.
    """
    global _current
    keys = tuple(os.environ.get(name) for name in _KEY_VARIABLES)
    stamp = (id(_active), _active.generation, keys)
    cached = _current
    if cached is not None and cached[0] == stamp:
        return cached[1]
    combined = _active | Redactor(k for k in keys if k)
    _current = (stamp, combined)
    return combined


def redact_text(value: str) -> str:
    """``value`` masked by `current`."""
    return current().text(value)


def redact_value(obj: object) -> object:
    """``obj`` masked by `current` (see `Redactor.value`)."""
    return current().value(obj)


# --------------------------------------------------------------------------- terminal

#: Code points a terminal would act on or that reorder what it shows: C0 controls but
#: tab and newline, DEL, C1 controls, the Unicode line and paragraph separators, and
#: the bidirectional marks, embeddings, overrides and isolates ("Trojan Source").
_TERMINAL_UNSAFE: tuple[int, ...] = (
    *(c for c in range(0x20) if c not in (0x09, 0x0A)),
    *range(0x7F, 0xA0),
    0x061C,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)
_TERMINAL_ESCAPES: dict[int, str] = {
    c: f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}" for c in _TERMINAL_UNSAFE
}
_TERMINAL_RE = re.compile("[" + "".join(re.escape(chr(c)) for c in _TERMINAL_UNSAFE) + "]")


def terminal_safe(text: str) -> str:
    """``text`` with every control character but ``\\n`` and ``\\t`` shown as a
    visible escape (``\\x1b``, ``\\x9b``, ``\\u202e``): no escape sequence, carriage
    return, terminal title or reordering reaches a terminal or log viewer."""
    if _TERMINAL_RE.search(text) is None:
        return text
    return text.translate(_TERMINAL_ESCAPES)


# --------------------------------------------------------------------------- CSV

#: The first characters that make a spreadsheet read a cell as a formula (OWASP).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def csv_cell(value: object) -> object:
    """A text cell a spreadsheet would run as a formula gets a leading ``'`` (OWASP's
    advice); a text that is a plain number (``-1.5``) and every non-text value are
    returned unchanged."""
    if (
        isinstance(value, str)
        and value.startswith(_FORMULA_START)
        and _NUMBER.fullmatch(value) is None
    ):
        return "'" + value
    return value
