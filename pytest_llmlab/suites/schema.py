"""The suite file's schema (pydantic): what a YAML suite, a JSONL line or a CSV row may say.

Validation is strict about names (an unknown key is an error, so a typo such as
``max_token`` never silently does nothing) and lax about scalars (``"16"`` from a CSV
cell is the integer 16).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pytest_llmlab.models.base import tool_problem

__all__ = [
    "CASE_KEYS",
    "FORMAT_NAMES",
    "CaseEntry",
    "Defaults",
    "FewShotEntry",
    "Injection",
    "MessageEntry",
    "StructuredEntry",
    "SuiteHeader",
    "TurnEntry",
]

FORMAT_NAMES = ("gsm8k", "mmlu", "arc", "hellaswag", "truthfulqa")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MessageEntry(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class Injection(_Strict):
    """Free-form text appended to the system message (a behaviour-lab injection)."""

    description: str = ""
    content: str


class StructuredEntry(_Strict):
    """Structured extraction: one case per CSV row, its prompt from a template file, the
    answer a JSON object of the target columns (`pytest_llmlab.suites.structured`)."""

    data: str
    prompt_file: str
    source: str = "source"
    targets: list[str] | None = None


class TurnEntry(_Strict):
    """One user turn of a scripted conversation, and the checks of its answer."""

    say: str
    checks: list[Any] = []


class FewShotEntry(_Strict):
    data: str
    n: Annotated[int, Field(ge=0)] = 5
    seed: int = 0


def _tools(value: Any) -> Any:
    """OpenAI function schemas, each checked (`tool_problem`): a bad one is an error
    naming it."""
    if isinstance(value, list):
        for index, tool in enumerate(value):
            problem = tool_problem(tool, f"tools[{index}]")
            if problem is not None:
                raise ValueError(problem)
    return value


def _tags(value: Any) -> Any:
    if isinstance(value, str):
        return [tag for tag in value.replace(";", ",").replace(" ", ",").split(",") if tag]
    return value


class Defaults(_Strict):
    """Keys merged into every case; a case's own keys win, ``checks`` and ``tags`` add up
    (defaults first) and ``params`` merge key by key."""

    system: str | None = None
    context: str | None = None
    injections: list[Injection] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    params: dict[str, Any] | None = None
    #: OpenAI function schemas offered to the model (``tool_choice`` goes in ``params``).
    tools: list[dict[str, Any]] | None = None
    runs: Annotated[int, Field(ge=1)] | None = None
    pass_rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    pass_rule: str | None = None
    points: Annotated[float, Field(ge=0.0)] | None = None
    category: str | None = None
    tags: list[str] = []
    checks: list[Any] = []

    _split_tags = field_validator("tags", mode="before")(_tags)
    _check_tools = field_validator("tools", mode="before")(_tools)


class CaseEntry(Defaults):
    """One entry of ``cases:`` (or one JSONL line / CSV row): a case, or a template of
    many (a list of ``vars``, a ``data`` file, a standard ``format``)."""

    id: str | None = None
    description: str | None = None
    prompt: str | None = None
    messages: list[MessageEntry] | None = None
    #: A scripted conversation: each turn's user text and checks (the case's own
    #: checks hold the last answer to them).
    turns: list[TurnEntry] | None = None
    vars: dict[str, Any] | list[dict[str, Any]] | None = None
    data: str | None = None
    format: Literal["gsm8k", "mmlu", "arc", "hellaswag", "truthfulqa"] | None = None
    fewshot: FewShotEntry | None = None
    structured: StructuredEntry | None = None
    limit: Annotated[int, Field(ge=1)] | None = None
    shuffle_seed: int | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


#: Every key a case may have.
CASE_KEYS = frozenset(CaseEntry.model_fields)


class SuiteHeader(_Strict):
    """The keys of a YAML suite besides case keys written at its top level (a suite of
    one data-driven case may write ``data:``, ``prompt:``, ``checks:`` there)."""

    suite: str | None = None
    description: str | None = None
    defaults: Defaults = Defaults()
    cases: list[Any] = []
