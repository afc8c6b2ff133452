"""The model x temperature cases of a test, and its ``@pytest.mark.llm`` plan.

`llm_cases` turns the session's models and temperatures (or the marker's replacements)
into the ordered, de-duplicated parametrization every xdist worker collects the same
way. `item_plan` merges a test item's ``llm`` markers once (the closest marker wins per
keyword) and keeps the result in ``item.stash``: the generation defaults of its
``llm.generate`` calls and its repeated-runs plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llmlab.keys import MARKER_HELP
from pytest_llmlab.models.spec import ModelSpec, SpecError, parse_spec
from pytest_llmlab.option_values import split_list
from pytest_llmlab.repeat import REPEAT_KEYS, RepeatPlan, repeat_plan

if TYPE_CHECKING:
    from pytest_llmlab.config import Settings

__all__ = [
    "MARKER_HELP",
    "MARKER_KEYS",
    "ItemPlan",
    "LLMCase",
    "check_marker",
    "item_plan",
    "llm_cases",
    "marker_values",
    "plan_of",
    "set_item_plan",
]

#: Marker keywords with a meaning of their own; any other keyword is a request param.
_GENERATION_KEYS = ("max_tokens", "system", "context", "injections", "seed", "stop")
MARKER_KEYS = ("models", "temperatures", *_GENERATION_KEYS, *REPEAT_KEYS)


@dataclass(frozen=True, slots=True)
class LLMCase:
    """One parametrization: a model at a temperature (the value behind each test id)."""

    model: ModelSpec
    temperature: float

    @property
    def id(self) -> str:
        return f"{self.model.display}-T{self.temperature:g}"


@dataclass(frozen=True, slots=True)
class ItemPlan:
    """What a test's merged ``llm`` markers ask for."""

    #: Defaults of every ``llm.generate`` / ``llm.stream`` call (``params`` holds the
    #: extra request keywords).
    defaults: Mapping[str, Any]
    repeat: RepeatPlan


def marker_values(node: pytest.Item) -> dict[str, Any]:
    """Merge every ``llm`` marker on ``node``, the closest one winning per keyword."""
    merged: dict[str, Any] = {}
    for marker in node.iter_markers("llm"):
        if marker.args:
            raise SpecError(
                "@pytest.mark.llm takes keyword arguments only, "
                "e.g. @pytest.mark.llm(models=['local:smollm2-135m'])"
            )
        for key, value in marker.kwargs.items():
            merged.setdefault(key, value)
    return merged


def _marker_models(value: Any, session: list[ModelSpec]) -> list[ModelSpec]:
    """Marker model entries: specs, or bare names of session aliases."""
    aliases = {spec.alias: spec for spec in session if spec.alias}
    specs: list[ModelSpec] = []
    for item in split_list(value):
        spec = aliases[item] if ":" not in item and item in aliases else parse_spec(item)
        if spec.display not in {s.display for s in specs}:
            specs.append(spec)
    return specs


def _marker_temperatures(value: Any) -> list[float]:
    from pytest_llmlab.config import parse_temperatures

    items = [value] if isinstance(value, int | float) else list(value)
    return parse_temperatures(",".join(str(v) for v in items))


def llm_cases(settings: Settings, marker: Mapping[str, Any]) -> list[LLMCase]:
    """The ordered, de-duplicated cases of one test: models x temperatures.

    Raises SpecError naming the marker keyword at fault.
    """
    models = settings.models
    if "models" in marker:
        models = _marker_models(marker["models"], settings.models)
    temperatures = settings.temperatures
    if "temperatures" in marker:
        try:
            temperatures = _marker_temperatures(marker["temperatures"])
        except ValueError as exc:
            raise SpecError(f"temperatures: {exc}") from None
    if not models:
        raise SpecError("models=[] selects no model")
    return [LLMCase(model, t) for model in models for t in temperatures]


def _generation_defaults(marker: Mapping[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {k: marker[k] for k in _GENERATION_KEYS if k in marker}
    params = {k: v for k, v in marker.items() if k not in MARKER_KEYS}
    if params:
        defaults["params"] = params
    return defaults


def _plan(settings: Settings, marker: Mapping[str, Any]) -> ItemPlan:
    return ItemPlan(defaults=_generation_defaults(marker), repeat=repeat_plan(settings, marker))


def check_marker(settings: Settings, marker: Mapping[str, Any]) -> list[LLMCase]:
    """The cases of a test definition, its marker checked whole (cases and plan):
    a bad marker fails at collection, not when the test runs."""
    cases = llm_cases(settings, marker)
    _plan(settings, marker)
    return cases


_PLAN = pytest.StashKey[ItemPlan]()


def item_plan(item: pytest.Item, settings: Settings) -> ItemPlan:
    """The item's plan, merged from its markers on first use and kept in its stash."""
    plan = item.stash.get(_PLAN, None)
    if plan is None:
        plan = item.stash[_PLAN] = _plan(settings, marker_values(item))
    return plan


def plan_of(settings: Settings, values: Mapping[str, Any]) -> tuple[list[LLMCase], ItemPlan]:
    """The cases and plan of marker keywords ``values`` (a suite case's), checked whole:
    raises SpecError or ValueError naming the keyword at fault."""
    return llm_cases(settings, values), _plan(settings, values)


def set_item_plan(item: pytest.Item, plan: ItemPlan) -> None:
    """Give ``item`` this plan instead of its markers': how a suite case, which has no
    ``llm`` marker, says what its generations use (one plan shared by its items)."""
    item.stash[_PLAN] = plan
