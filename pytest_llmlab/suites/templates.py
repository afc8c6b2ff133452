"""Jinja2 templates over a case's ``vars`` (and a data row as ``row``).

Strict: a variable the template uses but the case does not define is an error naming
it (jinja2's StrictUndefined), never an empty string in a prompt. Only strings that
contain template syntax are compiled, and each distinct template once, so a suite of
ten thousand literal prompts costs no template work.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jinja2

from pytest_llmlab.errors import TemplateError

__all__ = ["TemplateError", "is_template", "render", "render_value"]


@functools.cache
def _environment() -> jinja2.Environment:
    # Not HTML: prompts are plain text, so no autoescaping; the reports escape later.
    return jinja2.Environment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


@functools.lru_cache(maxsize=4096)
def _template(text: str) -> jinja2.Template:
    try:
        return _environment().from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error in {text!r}: {exc.message}") from None


def is_template(text: str) -> bool:
    """Whether ``text`` has template syntax (else it renders as itself)."""
    return "{{" in text or "{%" in text


def render(text: str, variables: Mapping[str, Any]) -> str:
    """``text`` rendered over ``variables`` (returned as is when it has no template)."""
    if not is_template(text):
        return text
    try:
        return _template(text).render(variables)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{exc.message} in {text!r}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{exc} in {text!r}") from None


def render_value(value: Any, variables: Mapping[str, Any]) -> Any:
    """Every string inside ``value`` (lists and mappings walked) rendered."""
    if isinstance(value, str):
        return render(value, variables)
    if isinstance(value, list):
        return [render_value(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: render_value(item, variables) for key, item in value.items()}
    return value
