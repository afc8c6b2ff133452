"""Model specs: ``[alias=]provider:model`` strings, parsed and validated.

``provider`` is split at the first colon only, so model names may hold colons
(``ollama:qwen2.5:7b``) and local paths may be absolute (``local:/models/x.gguf``).

Specs and aliases become test ids, which some reports render as markup (pytest-html
writes them unescaped), and terminal lines: an alias is letters, digits, ``_``, ``-``
and ``.``; a model name may hold anything printable but ``< > " ' &``, whitespace and
control or format characters (escape sequences, bidi overrides, line separators).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from pytest_llmlab.errors import LLMLabError
from pytest_llmlab.models.providers import PROVIDERS
from pytest_llmlab.option_values import split_list

__all__ = ["ModelSpec", "SpecError", "parse_spec", "parse_spec_list"]

_ALIAS_RE = re.compile(r"[A-Za-z0-9_.\-]+")
#: Characters no model name may hold (besides whitespace and `_UNSAFE_CATEGORIES`).
_UNSAFE_CHARS = frozenset("<>\"'&")
#: Unicode categories no model name may hold: controls, format characters (bidi
#: overrides, zero-width marks), line and paragraph separators, lone surrogates.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class SpecError(LLMLabError, ValueError):
    """A model spec that cannot be parsed; the message names the spec."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model to run: ``provider:model``, optionally shown under an alias."""

    provider: str
    model: str
    alias: str | None = None

    @property
    def spec(self) -> str:
        """The canonical ``provider:model`` string."""
        return f"{self.provider}:{self.model}"

    @property
    def display(self) -> str:
        """What test ids and reports show: the alias when there is one."""
        return self.alias or self.spec

    def __str__(self) -> str:
        return f"{self.alias}={self.spec}" if self.alias else self.spec


def _valid_providers() -> str:
    return ", ".join(sorted(PROVIDERS))


def parse_spec(text: str) -> ModelSpec:
    """Parse ``[alias=]provider:model``; raise `SpecError` naming the spec."""
    raw = text.strip()
    alias: str | None = None
    body = raw
    # An alias is a bare word before "=", so "openai:gpt=x" style model names survive.
    head, sep, rest = raw.partition("=")
    if sep and ":" not in head:
        alias, body = head.strip(), rest.strip()
        if not alias or not _ALIAS_RE.fullmatch(alias):
            raise SpecError(
                f"invalid alias {alias!r} in model spec {raw!r}: use letters, digits, '_', '-', '.'"
            )
    provider, colon, model = body.partition(":")
    provider, model = provider.strip(), model.strip()
    if not colon or not provider or not model:
        raise SpecError(
            f"invalid model spec {raw!r}: expected 'provider:model' "
            f"(valid providers: {_valid_providers()})"
        )
    if provider not in PROVIDERS:
        raise SpecError(
            f"unknown provider {provider!r} in model spec {raw!r} "
            f"(valid providers: {_valid_providers()})"
        )
    bad = _unsafe_char(model)
    if bad is not None:
        raise SpecError(
            f"invalid character {bad!r} in model spec {raw!r}: a model name may not hold "
            "< > \" ' &, whitespace or control characters"
        )
    return ModelSpec(provider=provider, model=model, alias=alias)


def _unsafe_char(model: str) -> str | None:
    """The first character of ``model`` that a test id must not carry, or None."""
    for char in model:
        if (
            char in _UNSAFE_CHARS
            or char.isspace()
            or unicodedata.category(char) in _UNSAFE_CATEGORIES
        ):
            return char
    return None


def parse_spec_list(values: str | list[str] | tuple[str, ...]) -> list[ModelSpec]:
    """Parse a list of specs, keeping the first of each display name.

    Two entries that would show under the same name but mean different models are an
    error: a report row must name one model.
    """
    specs: list[ModelSpec] = []
    seen: dict[str, ModelSpec] = {}
    for item in split_list(values):
        spec = parse_spec(item)
        previous = seen.get(spec.display)
        if previous is None:
            seen[spec.display] = spec
            specs.append(spec)
        elif previous.spec != spec.spec:
            raise SpecError(
                f"alias {spec.display!r} names two models: {previous.spec!r} and {spec.spec!r}"
            )
    return specs
