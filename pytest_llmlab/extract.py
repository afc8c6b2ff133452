"""The JSON value in a model's answer, and its validation against a model or a schema.

Models wrap JSON in prose, Markdown fences and ``<think>`` blocks. `extract_json` finds
the value the way a reader would, and never repairs it: a trailing comma or a cut-off
object is an error that says where, not a guess. `validate` checks the value against a
pydantic model or a JSON schema and lists every error with its JSON path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError

from pytest_llmlab.errors import LLMLabError

__all__ = [
    "JSONExtractionError",
    "SchemaValidationError",
    "extract_json",
    "json_kind",
    "json_path",
    "validate",
]

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)```", re.DOTALL)
#: Fence languages that may hold JSON; an untagged fence counts too.
_JSON_FENCES = frozenset({"", "json", "jsonc", "json5"})
_CLOSING = {"{": "}", "[": "]"}
_OPENING = re.compile(r"[{\[]")
#: Excerpt width on each side of the caret, for long (minified) lines.
_EXCERPT_HALF = 40


def json_kind(value: object) -> str:
    """The JSON type of a decoded value, with its article: ``"a string"``, ``"null"``
    (error messages say what was found: "must be a list, not a string")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


class JSONExtractionError(LLMLabError, ValueError):
    """The answer holds no valid JSON value; the message says what was tried and where.

    ``text`` is the answer that was searched.
    """

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


class SchemaValidationError(LLMLabError, AssertionError):
    """The value does not match the model or schema.

    ``errors`` holds ``(json_path, message)`` pairs, one per error.
    """

    def __init__(self, target: str, errors: Sequence[tuple[str, str]]) -> None:
        self.target = target
        self.errors = list(errors)
        count = len(self.errors)
        lines = [f"{count} schema error{'s' if count != 1 else ''} against {target}:"]
        lines += [f"  {path}: {message}" for path, message in self.errors]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class _Candidate:
    """A piece of the answer that may be the JSON value, with its offset in the answer."""

    where: str
    start: int
    source: str


@dataclass(frozen=True)
class _Problem:
    """Why a candidate did not parse: a reason and the offset in the answer.

    ``{at}`` in the reason becomes "at line L column C" of the offset.
    """

    reason: str
    offset: int | None


class _NonStandard(ValueError):
    """``NaN``/``Infinity``: Python's json accepts them, JSON does not."""


def _reject_constant(name: str) -> NoReturn:
    raise _NonStandard(f"{name} is not valid JSON")


def _loads(source: str) -> Any:
    """Strict `json.loads`: no NaN or Infinity."""
    return json.loads(source, parse_constant=_reject_constant)


def _blank(match: re.Match[str]) -> str:
    """Replace a span by spaces, keeping newlines, so offsets and lines stay true."""
    return re.sub(r"[^\n]", " ", match.group(0))


def _without_thinking(text: str) -> str:
    """The answer with ``<think>`` blocks blanked out (same length, same lines).

    A lone ``</think>`` (the template opened the block in the prompt) blanks everything
    before it.
    """
    cleaned = _THINK.sub(_blank, text)
    end = cleaned.rfind("</think>")
    if end >= 0:
        head = cleaned[: end + len("</think>")]
        cleaned = re.sub(r"[^\n]", " ", head) + cleaned[end + len("</think>") :]
    return cleaned


def _fenced(text: str) -> list[_Candidate]:
    """Fenced blocks tagged json (or untagged), in order of appearance."""
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group(1).lower() in _JSON_FENCES:
            line = text.count("\n", 0, match.start()) + 1
            blocks.append(
                _Candidate(f"fenced block at line {line}", match.start(2), match.group(2))
            )
    return blocks


def _outside_strings(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """(offset, character) of every character of ``text`` from ``start`` that is not
    inside a double-quoted JSON string (backslash escapes understood); quotes excluded."""
    in_string = escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        else:
            yield index, char


def _span_end(text: str, start: int) -> int | _Problem:
    """The end (exclusive) of the bracketed span opening at ``start``, or why none.

    Counts brackets outside double-quoted strings. A wrong closing bracket or a span
    never closed is a `_Problem` at that offset.
    """
    stack: list[str] = []
    for index, char in _outside_strings(text, start):
        if char in _CLOSING:
            stack.append(_CLOSING[char])
        elif char in "}]":
            if not stack or stack.pop() != char:
                line, column = _line_column(text, start)
                opened = f"'{text[start]}' opened at line {line} column {column}"
                return _Problem(f"'{char}' {{at}} does not close the {opened}", index)
            if not stack:
                return index + 1
    return _Problem(f"'{text[start]}' {{at}} is never closed (is the answer cut off?)", start)


def _spans(text: str) -> Iterator[_Candidate | _Problem]:
    """Balanced ``{...}``/``[...]`` spans in order, or the `_Problem` of a broken one.

    The caller stops at the first span that parses. Scanning resumes after a span's end,
    never inside it, so a broken object never yields one of its parts; it stops at a
    span that is never closed (everything after it belongs to the cut-off value).
    """
    index = 0
    while True:
        match = _OPENING.search(text, index)
        if match is None:
            return
        start = match.start()
        end = _span_end(text, start)
        if isinstance(end, _Problem):
            yield end
            if end.offset == start:  # never closed
                return
            assert end.offset is not None
            index = end.offset + 1
            continue
        line, column = _line_column(text, start)
        yield _Candidate(f"span at line {line} column {column}", start, text[start:end])
        index = end


def _trailing_comma(source: str) -> int | None:
    """Offset of the first comma followed only by whitespace and ``}``/``]``, or None."""
    for index, char in _outside_strings(source):
        if char == "," and re.match(r"\s*[}\]]", source[index + 1 :]):
            return index
    return None


def _problem(candidate: _Candidate) -> _Problem | None:
    """None when the candidate parses, else why not (trailing commas named as such)."""
    try:
        _loads(candidate.source)
    except _NonStandard as exc:
        return _Problem(str(exc), None)
    except json.JSONDecodeError as exc:
        comma = _trailing_comma(candidate.source)
        if comma is not None:
            return _Problem("trailing comma {at}: JSON does not allow it", candidate.start + comma)
        return _Problem(exc.msg + " {at}", candidate.start + exc.pos)
    return None


def _line_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of an offset."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _caret(text: str, offset: int) -> str:
    """The line holding ``offset`` (cut around it when long) with a caret under it."""
    begin = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    line = text[begin : end if end >= 0 else len(text)]
    column = offset - begin
    left = max(0, column - _EXCERPT_HALF)
    excerpt = line[left : column + _EXCERPT_HALF]
    prefix = "..." if left else ""
    suffix = "..." if column + _EXCERPT_HALF < len(line) else ""
    return f"    {prefix}{excerpt}{suffix}\n    {' ' * (len(prefix) + column - left)}^"


def _describe(text: str, where: str, problem: _Problem) -> str:
    """One problem as ``where: reason`` (its position filled in) and a caret excerpt."""
    if problem.offset is None:
        return f"{where}: {problem.reason}"
    line, column = _line_column(text, problem.offset)
    reason = problem.reason.replace("{at}", f"at line {line} column {column}")
    return f"{where}: {reason}\n{_caret(text, problem.offset)}"


def extract_json(text: str) -> Any:
    """The JSON value in a model's answer.

    In order: ``<think>...</think>`` blocks are ignored; the last fenced block tagged
    ``json`` (or untagged) that parses wins; else the first balanced ``{...}`` or
    ``[...]`` span that parses (brackets inside strings and escapes are understood, and
    leading prose is skipped); else the whole text. Nothing is repaired.

    Raises `JSONExtractionError` saying what was tried and, for the most likely
    candidate (the last fenced block, else the longest span, else the whole text), the
    JSON error with its line, column and a caret excerpt. Trailing commas are named as
    such.
    """
    cleaned = _without_thinking(text)
    if not cleaned.strip():
        raise JSONExtractionError(
            "no JSON value: the answer is empty" + (" after <think> blocks" if text else ""),
            text,
        )
    fenced = _fenced(cleaned)
    for block in reversed(fenced):
        if _problem(block) is None:
            return _loads(block.source)
    spans: list[tuple[_Candidate, _Problem]] = []
    broken: list[_Problem] = []
    for item in _spans(cleaned):
        if isinstance(item, _Problem):
            broken.append(item)
            continue
        problem = _problem(item)
        if problem is None:
            return _loads(item.source)
        spans.append((item, problem))
    whole = _Candidate("whole text", 0, cleaned)
    whole_problem = _problem(whole)
    if whole_problem is None:
        return _loads(cleaned)
    raise JSONExtractionError(_failure(text, fenced, spans, broken, whole_problem), text)


def _failure(
    text: str,
    fenced: list[_Candidate],
    spans: list[tuple[_Candidate, _Problem]],
    broken: list[_Problem],
    whole_problem: _Problem,
) -> str:
    """The extraction failure: what was tried, then the most telling problem."""
    tried = []
    if fenced:
        tried.append(f"{len(fenced)} fenced block{'s' if len(fenced) != 1 else ''}")
    if spans or broken:
        count = len(spans) + len(broken)
        tried.append(f"{count} {{...}}/[...] span{'s' if count != 1 else ''}")
    else:
        tried.append("{...}/[...] spans (none found)")
    tried.append("the whole text")
    head = f"no valid JSON value in the answer (tried {', '.join(tried)})"
    if fenced:  # the last fenced block is where the model meant its answer to be
        last = fenced[-1]
        problem = _problem(last)
        assert problem is not None  # every fenced block failed
        detail = _describe(text, last.where, problem)
    elif broken:  # a cut-off or mismatched value is the clearest signal
        detail = _describe(text, "span", broken[0])
    elif spans:
        candidate, problem = max(spans, key=lambda pair: len(pair[0].source))
        detail = _describe(text, candidate.where, problem)
    else:
        detail = _describe(text, "whole text", whole_problem)
    return f"{head}\n{detail}"


def json_path(location: Sequence[str | int]) -> str:
    """``("items", 0, "price")`` as ``$.items[0].price`` (``$`` is the whole value)."""
    parts = ["$"]
    for key in location:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif key.isidentifier():
            parts.append(f".{key}")
        else:
            parts.append(f"[{json.dumps(key)}]")
    return "".join(parts)


def validate(value: Any, model_or_schema: type[BaseModel] | dict[str, Any]) -> Any:
    """Check a JSON value against a pydantic model or a JSON schema.

    A `pydantic.BaseModel` subclass: returns ``Model.model_validate(value)``, the
    instance. A dict: a JSON schema, checked with the ``jsonschema`` package (its draft
    from ``$schema``, else the latest); returns ``value``. Raises `SchemaValidationError`
    listing every error with its JSON path (``$.items[0].price``).
    """
    if isinstance(model_or_schema, type) and issubclass(model_or_schema, BaseModel):
        try:
            return model_or_schema.model_validate(value)
        except ValidationError as exc:
            errors = [(json_path(error["loc"]), error["msg"]) for error in exc.errors()]
            raise SchemaValidationError(model_or_schema.__name__, errors) from None
    if isinstance(model_or_schema, dict):
        _validate_schema(value, model_or_schema)
        return value
    raise TypeError(
        "validate() takes a pydantic BaseModel subclass or a JSON schema dict, "
        f"not {type(model_or_schema).__name__}"
    )


def _validate_schema(value: Any, schema: dict[str, Any]) -> None:
    """Validate with ``jsonschema``; an ImportError says how to install it."""
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportError(
            "validating against a JSON schema needs the jsonschema package: "
            "pip install jsonschema (or pass a pydantic model)"
        ) from exc
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    found = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    if found:
        errors = [(json_path(list(error.absolute_path)), error.message) for error in found]
        raise SchemaValidationError(str(schema.get("title", "the JSON schema")), errors)
