"""Structured extraction from a CSV: one JSON field per target column, scored per field.

A CSV holds a ``source`` column (the text to extract from), target columns (the values
expected for it) and optionally an ``id`` column. A prompt template file asks for a JSON
object with one key per target column. `read_structured` turns each data row into a
`StructuredRow` (the rendered prompt and the expected values); `score_fields` scores a
model's answer to it; `target_model` is the pydantic model of the expected object (its
JSON schema can constrain a backend's output).

The prompt template may use ``{source}`` (exactly that token, replaced by the row's
source text; every other brace is left alone, so JSON examples in a prompt stay as
written) and jinja2: ``{{ source }}`` and ``{{ row.column }}`` (``{{ row["a column"] }}``
for a name that is not an identifier), with StrictUndefined. The source text is inserted
as a value, never parsed as a template itself.

Scoring (`score_fields`): ``<think>`` blocks are stripped (`strip_thinking`), the JSON
value is found as `pytest_llmlab.extract.extract_json` finds it and validated against
`target_model`. Every target key must be present (``null`` is allowed); other keys are
ignored. Values become text: strings as they are, numbers and booleans as JSON writes
them, lists joined with ``", "``, objects as JSON text. Each field then gets ROUGE-1/2/L
F-measures (``rouge-score`` with Porter stemming, the scorer `expect().rouge` uses;
0-1), sentence BLEU and chrF++ (`pytest_llmlab.scoring`, sacrebleu; 0-100) and
`pytest_llmlab.scoring.exact_match`. A ``null`` prediction is scored as the empty text
(so it exact-matches an empty reference). An answer with no valid JSON object, or one
that does not fit the schema, is invalid: its ``error`` says why and every field has
prediction None and zero scores.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import keyword
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jinja2
import jinja2.meta
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from pytest_llmlab.errors import FormatError, SuiteError
from pytest_llmlab.extract import (
    JSONExtractionError,
    SchemaValidationError,
    extract_json,
    json_kind,
    validate,
)
from pytest_llmlab.scoring import exact_match, rouge_f, sentence_bleu, sentence_chrf
from pytest_llmlab.suites.source import read_rows

__all__ = [
    "CHRF_WORD_ORDER",
    "ID_COLUMN",
    "FieldScore",
    "StructuredRow",
    "StructuredScore",
    "StructuredSpec",
    "field_text",
    "read_structured",
    "score_fields",
    "strip_thinking",
    "target_model",
]

#: The column that names rows, when the CSV has one.
ID_COLUMN = "id"
#: chrF++: chrF with word uni- and bigrams.
CHRF_WORD_ORDER = 2
_ROUGE_METRICS = ("rouge1", "rouge2", "rougeL")

#: ``{source}`` on its own, not part of jinja2's ``{{source}}``.
_SOURCE_TOKEN = re.compile(r"(?<!\{)\{source\}(?!\})")
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
#: The file name jinja2 gives a template compiled from a string (its frames carry it).
_TEMPLATE_NAME = "<template>"


@dataclass(frozen=True)
class StructuredSpec:
    """A structured-extraction suite: the CSV, the prompt template file, the source
    column and the target columns (None: every column but the source and ``id``)."""

    data: Path
    prompt_file: Path
    source: str = "source"
    targets: tuple[str, ...] | None = None


@dataclass(frozen=True)
class StructuredRow:
    """One data row: its id (the ``id`` column, else ``row-N``), the 1-based line it
    starts on (the header is line 1), the rendered prompt, the expected value of each
    target column (in target order) and the source text."""

    id: str
    line: int
    prompt: str
    references: dict[str, str]
    source: str


@dataclass(frozen=True)
class FieldScore:
    """The scores of one field: ROUGE F-measures 0-1, BLEU and chrF++ 0-100."""

    prediction: str | None
    reference: str
    rouge1: float
    rouge2: float
    rougeL: float  # the metric's own name, as in metrics.csv
    bleu: float
    chrf: float
    exact_match: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "prediction": self.prediction,
            "reference": self.reference,
            "rouge1": self.rouge1,
            "rouge2": self.rouge2,
            "rougeL": self.rougeL,
            "bleu": self.bleu,
            "chrf": self.chrf,
            "exact_match": self.exact_match,
        }


@dataclass(frozen=True)
class StructuredScore:
    """Whether the answer held a valid object (and if not, why) and each field's score,
    in target order."""

    valid: bool
    error: str | None
    fields: dict[str, FieldScore]

    def to_dict(self) -> dict[str, Any]:
        """JSON types: ``{"valid", "error", "fields": {name: FieldScore.to_dict()}}``."""
        return {
            "valid": self.valid,
            "error": self.error,
            "fields": {name: score.to_dict() for name, score in self.fields.items()},
        }


# --------------------------------------------------------------------------- reading


def _read_prompt(spec: StructuredSpec) -> str:
    try:
        text = spec.prompt_file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FormatError(
            f"{spec.prompt_file}: no such file (the prompt_file of {spec.data})"
        ) from None
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"{spec.prompt_file}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise FormatError(f"{spec.prompt_file}: cannot read: {exc.strerror or exc}") from None
    text = text.rstrip("\r\n")
    if not text.strip():
        raise FormatError(f"{spec.prompt_file}: empty prompt file")
    return text


def _header(path: Path) -> list[str]:
    """The column names of a CSV with a header and no data rows."""
    text = path.read_text(encoding="utf-8-sig")
    return [name.strip() for name in next(csv.reader(io.StringIO(text, newline="")))]


def _targets(spec: StructuredSpec, columns: Sequence[str]) -> tuple[str, ...]:
    where = f"{spec.data}:1"
    if spec.source not in columns:
        raise FormatError(
            f"{where}: no source column {spec.source!r} (columns: {', '.join(columns)})"
        )
    if spec.targets is None:
        targets = tuple(c for c in columns if c not in (spec.source, ID_COLUMN))
        if not targets:
            raise FormatError(f"{where}: no target columns besides {spec.source!r} and id")
        return targets
    if not spec.targets:
        raise FormatError(f"{where}: targets is empty (leave it out for every other column)")
    for name in spec.targets:
        if name not in columns:
            raise FormatError(
                f"{where}: target column {name!r} is not in the header "
                f"(columns: {', '.join(columns)})"
            )
        if name == spec.source:
            raise FormatError(f"{where}: target column {name!r} is the source column")
    if len(set(spec.targets)) != len(spec.targets):
        twice = sorted({t for t in spec.targets if spec.targets.count(t) > 1})
        raise FormatError(f"{where}: target column {twice[0]!r} is named twice")
    return spec.targets


def _template_line(exc: BaseException) -> int | None:
    """The template line an error was raised on (jinja2 rewrites tracebacks so that
    the template's frames carry its lines), or None."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_NAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@functools.cache
def _environment() -> jinja2.Environment:
    # Plain text, as `pytest_llmlab.suites.templates` renders prompts.
    return jinja2.Environment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


class _Prompt:
    """The prompt template of one file, rendered per row."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        self.jinja: jinja2.Template | None = None
        if "{{" in text or "{%" in text:
            # The ``{source}`` token becomes a jinja2 variable, so the source text is
            # inserted as a value and never rendered as a template itself.
            source = _SOURCE_TOKEN.sub(lambda _: "{{ source }}", text)
            environment = _environment()
            try:
                parsed = environment.parse(source)
            except jinja2.TemplateSyntaxError as exc:
                raise FormatError(
                    f"{path}:{exc.lineno}: template syntax error: {exc.message}"
                ) from None
            used = jinja2.meta.find_undeclared_variables(parsed)
            self.jinja = environment.from_string(parsed)
            uses_source = bool(used & {"source", "row"})
        else:
            uses_source = _SOURCE_TOKEN.search(text) is not None
        if not uses_source:
            raise FormatError(
                f"{path}: the prompt never uses the source text: "
                "write {source} (or {{ source }}) where it goes"
            )

    def render(self, source: str, row: Mapping[str, str], where: str) -> str:
        if self.jinja is None:
            return _SOURCE_TOKEN.sub(lambda _: source, self.text)
        try:
            return self.jinja.render(source=source, row=dict(row))
        except jinja2.TemplateError as exc:
            line = _template_line(exc)
            at = f"{self.path}:{line}" if line is not None else str(self.path)
            message = exc.message if isinstance(exc, jinja2.UndefinedError) else str(exc)
            raise FormatError(f"{at}: {message} (rendering the row at {where})") from None


def _cell_text(value: Any) -> str:
    """A data cell as text (CSV cells already are; a JSONL row's values may not be)."""
    if isinstance(value, str):
        return value
    return "" if value is None else field_text(value) or ""


def read_structured(spec: StructuredSpec) -> list[StructuredRow]:
    """The rows of ``spec.data``, each with its prompt rendered from ``spec.prompt_file``.

    The CSV is read as every data file of a suite (`pytest_llmlab.suites.source.read_rows`:
    UTF-8, a BOM tolerated, a header line, blank lines skipped, ``line`` the line a
    record starts on even when a quoted cell spans lines). Raises `FormatError`
    (``file:line: message``) for a missing or empty file, a missing source or target
    column, a missing, empty or unusable prompt file, a template error, and an empty or
    duplicate id.
    """
    try:
        rows = read_rows(spec.data)
    except SuiteError as exc:
        raise FormatError(str(exc)) from None
    if rows:  # a CSV row has every column, in header order
        columns = list(dict.fromkeys(key for row in rows for key in row.values))
    elif spec.data.suffix.lower() == ".csv":
        columns = _header(spec.data)
    else:
        raise FormatError(f"{spec.data}: empty file (no rows)")
    targets = _targets(spec, columns)
    if not rows:
        raise FormatError(f"{spec.data}: no data rows, only the header")
    prompt = _Prompt(spec.prompt_file, _read_prompt(spec))
    has_id = ID_COLUMN in columns
    seen: dict[str, int] = {}
    out: list[StructuredRow] = []
    for number, row in enumerate(rows, start=1):
        where = f"{spec.data}:{row.line}"
        values = {key: _cell_text(value) for key, value in row.values.items()}
        for name in (spec.source, *targets):
            if name not in values:
                raise FormatError(f"{where}: missing field {name!r}")
        row_id = values.get(ID_COLUMN, "").strip() if has_id else f"row-{number}"
        if not row_id:
            raise FormatError(f"{where}: empty id")
        if row_id in seen:
            raise FormatError(f"{where}: duplicate id {row_id!r} (first at line {seen[row_id]})")
        seen[row_id] = row.line
        source = values[spec.source]
        out.append(
            StructuredRow(
                id=row_id,
                line=row.line,
                prompt=prompt.render(source, values, where),
                references={name: values[name] for name in targets},
                source=source,
            )
        )
    return out


# --------------------------------------------------------------------------- schema


def field_text(value: Any) -> str | None:
    """A JSON value as the text it is scored as: None stays None, strings as they are,
    numbers and booleans as JSON writes them, lists joined with ``", "`` (null items
    left out), objects as JSON text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return ", ".join(text for item in value if (text := field_text(item)) is not None)
    return json.dumps(value, ensure_ascii=False)


_Text = Annotated[str | None, BeforeValidator(field_text)]


def _usable_name(name: str) -> bool:
    """Whether a column name can be a pydantic field name as it is."""
    return (
        name.isidentifier()
        and not keyword.iskeyword(name)
        and not name.startswith(("_", "model_"))
        and not hasattr(BaseModel, name)
    )


@functools.lru_cache(maxsize=256)
def _target_model(targets: tuple[str, ...]) -> type[BaseModel]:
    if not targets:
        raise ValueError("target_model needs at least one target column")
    if len(set(targets)) != len(targets):
        raise ValueError(f"target columns named twice in {list(targets)}")
    used = {name for name in targets if _usable_name(name)}
    fields: dict[str, Any] = {}
    for index, name in enumerate(targets):
        if _usable_name(name):
            fields[name] = (_Text, Field(..., title=name))
            continue
        attribute = f"field_{index}"
        while attribute in used:
            attribute += "_"
        used.add(attribute)
        fields[attribute] = (_Text, Field(..., alias=name, title=name))
    model: type[BaseModel] = create_model(
        "StructuredAnswer",
        __config__=ConfigDict(extra="ignore"),
        **fields,
    )
    return model


def target_model(targets: Sequence[str]) -> type[BaseModel]:
    """The pydantic model of the expected answer: one required key per target column,
    in order, each ``str | None``; numbers, booleans, lists and objects become text (see
    `field_text`), extra keys are ignored. A column name that is not a Python
    identifier (``"side effects"``) or would shadow a pydantic attribute is the field's
    alias, so the keys (and ``model_json_schema()``'s properties) are the column names.
    """
    return _target_model(tuple(targets))


# --------------------------------------------------------------------------- scoring


def strip_thinking(text: str) -> str:
    """``text`` without reasoning: ``<think>...</think>`` blocks removed, everything up
    to a lone ``</think>`` (the chat template opened the block) removed, and everything
    from an unclosed ``<think>`` on (the answer was cut off while thinking) removed."""
    text = _THINK_BLOCK.sub("", text)
    end = text.rfind("</think>")
    if end >= 0:
        text = text[end + len("</think>") :]
    start = text.find("<think>")
    if start >= 0:
        text = text[:start]
    return text


def _score(prediction: str | None, reference: str) -> FieldScore:
    hypothesis = prediction or ""
    rouge = {metric: rouge_f(hypothesis, reference, metric) for metric in _ROUGE_METRICS}
    return FieldScore(
        prediction=prediction,
        reference=reference,
        rouge1=rouge["rouge1"],
        rouge2=rouge["rouge2"],
        rougeL=rouge["rougeL"],
        bleu=sentence_bleu(hypothesis, reference),
        chrf=sentence_chrf(hypothesis, reference, word_order=CHRF_WORD_ORDER),
        exact_match=exact_match(hypothesis, reference),
    )


def _invalid(references: Mapping[str, str], error: str) -> StructuredScore:
    zero = {
        name: FieldScore(None, reference, 0.0, 0.0, 0.0, 0.0, 0.0, False)
        for name, reference in references.items()
    }
    return StructuredScore(valid=False, error=error, fields=zero)


def score_fields(text: str, references: Mapping[str, str]) -> StructuredScore:
    """Score an answer against the expected value of each target column (the keys of
    ``references``, in order); see the module docstring for what is scored how."""
    model = target_model(tuple(references))
    try:
        value = extract_json(strip_thinking(text))
    except JSONExtractionError as exc:
        return _invalid(references, str(exc))
    if not isinstance(value, dict):
        return _invalid(references, f"expected a JSON object, not {json_kind(value)}")
    try:
        answer = validate(value, model)
    except SchemaValidationError as exc:
        return _invalid(references, str(exc))
    predicted = answer.model_dump(by_alias=True)
    return StructuredScore(
        valid=True,
        error=None,
        fields={name: _score(predicted[name], ref) for name, ref in references.items()},
    )
