"""The declarative checks of a suite: ``- icontains: paris`` is ``expect(gen).icontains("paris")``.

Each check name maps to one `Expectation` method (one implementation for Python tests
and suites). A check's argument is a mapping of the method's parameters, a bare value
for its main parameter (``max_words: 5``), a list for methods taking several values
(``contains_all: [a, b]``), or ``true`` for methods taking none (``json: true``). The
arguments are validated at collection against the method's own signature, so a wrong
type is a collection error naming the check, not a failure when the test runs.

Plugins and conftest files add checks with the ``pytest_llmlab_checks`` hook: a mapping
of name to ``function(generation, args) -> bool | str | None`` (a string is the failure
message; None or True passes).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from pytest_llmlab.expect import Expectation, load_check, load_object
from pytest_llmlab.models.base import Generation

__all__ = [
    "CHECKS",
    "CheckCall",
    "CheckKind",
    "CustomCheck",
    "check_names",
    "parse_check",
    "run_check",
]

#: A user check from the ``pytest_llmlab_checks`` hook.
CustomCheck = Callable[[Generation, Any], "bool | str | None"]


@dataclass(frozen=True, slots=True)
class CheckKind:
    """How one declarative check calls its `Expectation` method."""

    method: str
    #: The parameter a bare value fills (``max_words: 5`` -> ``n=5``); None: none does.
    scalar: str | None = None
    #: Suite keys that name a parameter differently (``field: {equals: 36}``).
    aliases: Mapping[str, str] = field(default_factory=dict)
    #: Takes no argument: written ``json: true``.
    flag: bool = False
    #: Parameters holding ``module:attribute`` strings to import at collection.
    imports: tuple[str, ...] = ()
    #: A mapping is the main parameter's value, not the parameters (a JSON schema).
    whole: bool = False


#: Every built-in check, by its suite name.
CHECKS: dict[str, CheckKind] = {
    "contains": CheckKind("contains", "s"),
    "icontains": CheckKind("icontains", "s"),
    "not_contains": CheckKind("not_contains", "s"),
    "contains_all": CheckKind("contains_all", "ss"),
    "contains_any": CheckKind("contains_any", "ss"),
    "regex": CheckKind("matches", "regex", {"pattern": "regex"}),
    "not_regex": CheckKind("not_matches", "regex", {"pattern": "regex"}),
    "equals": CheckKind("equals", "s"),
    "exact": CheckKind("exact", "reference"),
    "starts_with": CheckKind("starts_with", "s"),
    "one_of": CheckKind("one_of", "options"),
    "max_words": CheckKind("max_words", "n"),
    "json": CheckKind("is_json", flag=True),
    "json_schema": CheckKind("validates", "model_or_schema", whole=True),
    "pydantic": CheckKind(
        "validates", "model_or_schema", {"model": "model_or_schema"}, imports=("model_or_schema",)
    ),
    "field": CheckKind("field", None, {"equals": "expected"}),
    "rouge": CheckKind("rouge", "reference"),
    "confidence": CheckKind("confidence", "min_mean"),
    "answer_prob": CheckKind("answer_prob", None),
    "tool_call": CheckKind("tool_call", "name"),
    "no_tool_call": CheckKind("no_tool_call", flag=True),
    "ttft": CheckKind("ttft", "max"),
    "decode_tokens_per_s": CheckKind("decode_tokens_per_s", "min"),
    "total_s": CheckKind("total_s", "max"),
    "completion_tokens": CheckKind("completion_tokens", "max"),
    "finish_reason": CheckKind("finish_reason", "expected"),
    "wh_per_1k": CheckKind("wh_per_1k", "max"),
    "max_wh_per_1k": CheckKind("wh_per_1k", "max"),
    "joules": CheckKind("joules", "max"),
    "measured": CheckKind("measured", flag=True),
    "keywords": CheckKind("keywords", "words"),
    "bleu": CheckKind("bleu", "reference"),
    "chrf": CheckKind("chrf", "reference"),
    "exact_match": CheckKind("exact_match", "reference"),
    "number": CheckKind("number", "equals"),
    "choice": CheckKind("choice", "answer"),
    "similar": CheckKind("similar", "reference"),
    "judge": CheckKind("judge", "rubric"),
    "python": CheckKind("python", "check", {"function": "check"}, imports=("check",)),
}


@dataclass(frozen=True, slots=True)
class CheckCall:
    """One check of a case, validated and ready to run."""

    name: str
    #: The arguments as written (templates rendered), for reports.
    args: Any
    #: Positional and keyword arguments of the method (or of the custom check).
    call_args: tuple[Any, ...] = ()
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)
    points: float | None = None
    custom: CustomCheck | None = None

    @property
    def label(self) -> str:
        return f"{self.name}: {self.args!r}" if self.args is not True else self.name


def reads_alternatives(check: CheckCall) -> bool:
    """The check reads each token's top alternatives, which a request asks for only
    when told (`pytest_llmlab.models.base.Request`): ``answer_prob`` and the entropy
    part of ``confidence``."""
    return check.name == "answer_prob" or (
        check.name == "confidence" and check.call_kwargs.get("max_entropy") is not None
    )


def check_names(custom: Mapping[str, CustomCheck] = {}) -> list[str]:
    return sorted({*CHECKS, *custom})


def _unknown(name: str, custom: Mapping[str, CustomCheck]) -> str:
    names = check_names(custom)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown check {name!r}{hint}; valid checks: {', '.join(names)}"


#: Parameters the suite fills in itself, never written in a check (the running case).
_SUPPLIED = frozenset({"case"})


@functools.cache
def _arguments_model(method_name: str) -> tuple[type[BaseModel], str | None]:
    """A pydantic model of the method's parameters, and the name of its ``*args``."""
    method = getattr(Expectation, method_name)
    hints = typing.get_type_hints(method)
    fields: dict[str, Any] = {}
    varargs: str | None = None
    for parameter in list(inspect.signature(method).parameters.values())[1:]:
        annotation = hints.get(parameter.name, Any)
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            varargs = parameter.name
            fields[parameter.name] = (list[annotation], ...)  # type: ignore[valid-type]
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD or parameter.name in _SUPPLIED:
            continue
        elif parameter.default is inspect.Parameter.empty:
            fields[parameter.name] = (annotation, ...)
        else:
            fields[parameter.name] = (annotation, parameter.default)
    model = create_model(
        f"{method_name}_arguments",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True, strict=False),
        **fields,
    )
    return model, varargs


def _kwargs(name: str, kind: CheckKind, value: Any, varargs: str | None) -> dict[str, Any]:
    """The method's keyword arguments from the check's value as written."""
    if kind.flag:
        if value is not True:
            raise ValueError(f"{name} takes no argument: write `{name}: true`")
        return {}
    if isinstance(value, Mapping) and not kind.whole:
        return {kind.aliases.get(str(k), str(k)): v for k, v in value.items()}
    if kind.scalar is None:
        raise ValueError(f"{name} needs a mapping of its arguments")
    if kind.scalar == varargs:
        return {varargs: list(value) if isinstance(value, list) else [value]}
    return {kind.scalar: value}


def _message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        message = str(item["msg"])
        if item["type"] == "extra_forbidden":
            message = "unknown argument"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse_check(entry: Any, custom: Mapping[str, CustomCheck] = {}) -> CheckCall:
    """One check as written in a suite (``{name: args}``, with an optional ``points``).

    Raises ValueError with a message naming the check and what is wrong.
    """
    if isinstance(entry, str):
        entry = {entry: True}
    if not isinstance(entry, Mapping):
        raise ValueError(f"a check is a mapping like `icontains: paris`, not {entry!r}")  # noqa: TRY004  # one error type for every bad check
    entry = dict(entry)
    points = entry.pop("points", None)
    if points is not None and (
        isinstance(points, bool) or not isinstance(points, int | float) or points < 0
    ):
        raise ValueError(f"points: {points!r} is not a number >= 0")
    if len(entry) != 1:
        names = ", ".join(map(str, entry)) or "none"
        raise ValueError(f"a check names exactly one check (besides points), got: {names}")
    ((name, value),) = entry.items()
    name = str(name)
    if isinstance(value, Mapping) and "points" in value and points is None:
        value = dict(value)  # `field: {path: age, equals: 36, points: 2}` reads naturally
        points = value.pop("points")
        if isinstance(points, bool) or not isinstance(points, int | float) or points < 0:
            raise ValueError(f"{name}: points: {points!r} is not a number >= 0")
    if name in custom:
        return CheckCall(name, value, points=points, custom=custom[name])
    kind = CHECKS.get(name)
    if kind is None:
        raise ValueError(_unknown(name, custom))
    model, varargs = _arguments_model(kind.method)
    kwargs = _kwargs(name, kind, value, varargs)
    for parameter in kind.imports:
        target = kwargs.get(parameter)
        if isinstance(target, str):
            try:
                loaded = load_check(target) if name == "python" else load_object(target, name)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
            kwargs[parameter] = loaded
    try:
        validated = model.model_validate(kwargs)
    except ValidationError as exc:
        raise ValueError(f"{name}: {_message(exc)}") from None
    arguments = {key: getattr(validated, key) for key in type(validated).model_fields}
    positional: tuple[Any, ...] = ()
    if varargs is not None:
        positional = tuple(arguments.pop(varargs))
    return CheckCall(name, value, positional, arguments, points)


def run_check(expectation: Expectation, call: CheckCall, case: Mapping[str, Any]) -> bool:
    """Run one check on the expectation's generation; True when it passed (failures go
    to the active collector, as for any `expect` check)."""
    before = len(expectation.failures)
    if call.custom is not None:
        _run_custom(expectation, call)
    elif call.name == "python":
        expectation.python(call.call_kwargs["check"], case=case)
    else:
        method = getattr(expectation, CHECKS[call.name].method)
        method(*call.call_args, **call.call_kwargs)
    return len(expectation.failures) == before


def _run_custom(expectation: Expectation, call: CheckCall) -> None:
    assert call.custom is not None
    try:
        verdict = call.custom(expectation.gen, call.args)
    except Exception as exc:  # noqa: BLE001  # a user's bug fails the check, naming it
        expectation.fail(call.label, f"the check raised {type(exc).__name__}: {exc}")
        return
    if isinstance(verdict, str):
        expectation.fail(call.label, verdict)
    elif verdict is False:
        expectation.fail(call.label, "the check returned False")
