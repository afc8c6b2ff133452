"""From a suite file to its cases: validation, defaults, templates, data rows, presets.

`read_suite` returns every case of one file, in file order, or raises for the whole file
(unreadable, YAML syntax, a header that does not validate); a case that does not
validate comes back as a `BrokenCase` so the file's other cases still run. Every error
message starts with ``file:line:column`` and names the case.
"""

from __future__ import annotations

import dataclasses
import difflib
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pytest_llmlab.errors import FormatError, TemplateError
from pytest_llmlab.models.base import CHECK_TOP_LOGPROBS
from pytest_llmlab.suites import formats, structured, templates
from pytest_llmlab.suites.checks import CheckCall, CustomCheck, parse_check, reads_alternatives
from pytest_llmlab.suites.presets import resolve_system
from pytest_llmlab.suites.schema import CASE_KEYS, CaseEntry, Defaults, SuiteHeader
from pytest_llmlab.suites.source import Located, Position, SuiteError, load_yaml, read_rows

__all__ = ["BrokenCase", "SuiteCase", "SuiteContext", "read_suite", "suite_kind"]

#: The double extensions collected as suites, by kind.
SUITE_SUFFIXES = {
    ".suite.yaml": "yaml",
    ".suite.yml": "yaml",
    ".suite.jsonl": "jsonl",
    ".suite.csv": "csv",
}
#: Keys of the custom-prompt JSONL shape (``evaluation_method: keyword_match``).
_KEYWORD_SHAPE = ("evaluation_method", "expected_keywords")


def suite_kind(path: Path, *, forced: bool = False) -> str | None:
    """``yaml``, ``jsonl`` or ``csv`` for a suite file (by double extension, or for any
    file by its last one when ``forced`` by ``--llm-suite``), else None."""
    name = path.name.lower()
    for suffix, kind in SUITE_SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    if forced:
        return {".yaml": "yaml", ".yml": "yaml", ".jsonl": "jsonl", ".csv": "csv"}.get(
            path.suffix.lower()
        )
    return None


@dataclass(frozen=True, slots=True)
class SuiteContext:
    """What expanding a suite needs from the session."""

    #: Folders searched for system-prompt presets after the suite's own.
    preset_folders: Sequence[Path] = ()
    custom_checks: Mapping[str, CustomCheck] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SuiteCase:
    """One case, fully expanded: what to send, how to check it, what it is worth."""

    suite: str
    id: str
    #: Where the case is written (the suite file's line; the data row's for data files).
    position: Position
    prompt: str | None
    messages: tuple[Mapping[str, str], ...] | None
    #: Marker keywords of the case's generations and runs (max_tokens, system,
    #: temperatures, runs, params as extra keywords...): planned like ``@pytest.mark.llm``.
    plan: Mapping[str, Any]
    checks: tuple[CheckCall, ...]
    #: What passing every check is worth (the sum of per-check points when given).
    max_points: float
    category: str | None
    tags: tuple[str, ...]
    variables: Mapping[str, Any]
    description: str | None = None
    #: A scripted conversation's user turns (None: one generation), and the turn whose
    #: answer each of `checks` holds (the case's own checks: the last).
    turns: tuple[str, ...] | None = None
    turn_of: tuple[int, ...] = ()

    @property
    def per_check_points(self) -> bool:
        return any(check.points is not None for check in self.checks)

    def points(self, passed: Sequence[bool]) -> float:
        """Points scored given each check's verdict: all or nothing, or the sum of the
        passed checks' points when they carry points (partial credit)."""
        if self.per_check_points:
            return float(
                sum(
                    check.points or 0.0 for check, ok in zip(self.checks, passed, strict=True) if ok
                )
            )
        return self.max_points if all(passed) else 0.0

    def as_dict(self) -> dict[str, Any]:
        """What a ``python:`` check receives as ``case``."""
        return {
            "suite": self.suite,
            "id": self.id,
            "prompt": self.prompt,
            "category": self.category,
            "tags": list(self.tags),
            "vars": dict(self.variables),
            "max_points": self.max_points,
        }


@dataclass(frozen=True, slots=True)
class BrokenCase:
    """A case that cannot run; its item reports ``message`` as an error."""

    id: str
    position: Position
    message: str


@dataclass(frozen=True, slots=True)
class _Spots:
    """Where the keys of one case entry are written, for error messages: the key itself
    in a YAML suite (the case's, else the defaults' one), else the case's position (a
    JSONL line, a CSV row, a benchmark item)."""

    position: Position
    located: Located | None = None
    base: tuple[str | int, ...] = ()
    own: frozenset[str] = frozenset()
    #: Checks before the written ones (a benchmark item's own), and the defaults' count.
    lead: int = 0
    default_checks: int = 0
    #: A row of a ``vars`` list or data file: a template error points at the row, which
    #: is where a variable is missing.
    row: bool = False

    def at(self, key: tuple[str | int, ...]) -> Position:
        if self.located is None or key not in self.located.positions:
            return self.position
        return self.located.position(key)

    def key(self, name: str) -> Position:
        return self.at((*self.base, name) if name in self.own else ("defaults", name))

    def check(self, index: int) -> Position:
        """The position of the case's check at ``index`` (defaults' checks come first)."""
        index -= self.lead
        if index < 0:
            return self.position
        if index < self.default_checks:
            return self.at(("defaults", "checks", index))
        return self.at((*self.base, "checks", index - self.default_checks))


# -- reading files ----------------------------------------------------------------------


def read_suite(
    path: Path, context: SuiteContext, *, forced: bool = False
) -> list[SuiteCase | BrokenCase]:
    """Every case of the suite file at ``path``; raises SuiteError for the whole file."""
    kind = suite_kind(path, forced=forced)
    if kind is None:
        raise SuiteError(f"{path}: not a suite file (.yaml, .yml, .jsonl or .csv)")
    name = path.name
    for suffix in (*SUITE_SUFFIXES, path.suffix):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if kind == "yaml":
        return list(_yaml_cases(load_yaml(path), name, context))
    entries: list[tuple[Any, Position, tuple[str | int, ...]]] = [
        (
            {"__error__": row.error} if row.error is not None else _row_entry(row.values, kind),
            Position(path, row.line, row.column or 1),
            (),
        )
        for row in read_rows(path, keep_bad=True)  # a bad line is one broken case
    ]
    return list(_cases(name, Defaults(), entries, path.parent, context))


def _row_entry(values: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A JSONL line or CSV row as a case entry: case keys as they are, a check name as a
    column holding its argument, the custom-prompt keyword shape translated, and every
    other key a template variable (also reachable as ``row``)."""
    entry: dict[str, Any] = {}
    variables: dict[str, Any] = dict(values.get("vars") or {}) if kind == "jsonl" else {}
    checks: list[Any] = list(values.get("checks") or []) if kind == "jsonl" else []
    from pytest_llmlab.suites.checks import CHECKS

    for key, value in values.items():
        if key in ("vars", "checks") and kind == "jsonl":
            continue
        if kind == "csv" and isinstance(value, str) and value == "":
            continue  # an empty cell says nothing
        if key in CASE_KEYS:
            entry[key] = value
        elif key in CHECKS and kind == "csv":
            checks.append({key: value})
        elif key not in _KEYWORD_SHAPE:
            variables[key] = value
    method = values.get("evaluation_method")
    if method is not None:
        if method != "keyword_match":
            entry["__error__"] = (
                f"evaluation_method {method!r} is not supported (supported: keyword_match)"
            )
        keywords = values.get("expected_keywords") or []
        if isinstance(keywords, str):
            keywords = [k.strip() for k in keywords.split(";") if k.strip()]
        checks.append({"keywords": {"words": list(keywords)}})
    entry["checks"] = checks
    variables.setdefault("row", dict(values))
    entry["vars"] = variables
    return entry


def _yaml_cases(
    located: Located, name: str, context: SuiteContext
) -> Iterator[SuiteCase | BrokenCase]:
    document = located.value
    if document is None:
        raise located.position().error("empty suite file")
    if not isinstance(document, dict):
        raise located.position().error("a suite is a mapping with `cases:` (or `data:`)")
    header_keys = set(SuiteHeader.model_fields)
    header_values = {k: v for k, v in document.items() if k in header_keys}
    top_case = {k: v for k, v in document.items() if k not in header_keys}
    unknown = [k for k in top_case if k not in CASE_KEYS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), [*header_keys, *CASE_KEYS], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise located.position((unknown[0],)).error(
            f"unknown key {unknown[0]!r}{hint}; a suite has {', '.join(sorted(header_keys))} "
            f"and case keys ({', '.join(sorted(CASE_KEYS))})"
        )
    try:
        header = SuiteHeader.model_validate(header_values)
    except ValidationError as exc:
        loc, message = _first_error(exc)
        raise located.position(loc).error(message) from None
    entries: list[tuple[Any, Position, tuple[str | int, ...]]] = [
        (entry, located.position(("cases", index)), ("cases", index))
        for index, entry in enumerate(header.cases)
    ]
    if top_case:
        entries.insert(0, (top_case, located.position((next(iter(top_case)),)), ()))
    if not entries:
        raise located.position().error("the suite has no cases (add `cases:` or `data:`)")
    yield from _cases(
        header.suite or name, header.defaults, entries, located.path.parent, context, located
    )


def _first_error(exc: ValidationError) -> tuple[tuple[str | int, ...], str]:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc)
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown key"
        known = [*CASE_KEYS, *SuiteHeader.model_fields, "role", "content", "description", "n"]
        close = difflib.get_close_matches(str(loc[-1]), known, n=1) if loc else []
        if close:
            message += f" (did you mean {close[0]!r}?)"
    return loc, f"{where}: {message}" if where else message


# -- expanding entries --------------------------------------------------------------------


def _cases(
    suite: str,
    defaults: Defaults,
    entries: Sequence[tuple[Any, Position, tuple[str | int, ...]]],
    folder: Path,
    context: SuiteContext,
    located: Located | None = None,
) -> Iterator[SuiteCase | BrokenCase]:
    seen: dict[str, Position] = {}
    for index, (raw, position, base) in enumerate(entries):
        fallback_id = f"case-{index + 1}"
        if isinstance(raw, dict) and raw.get("id") not in (None, ""):
            written = str(raw["id"])
            if not templates.is_template(written):  # a broken row is not named `{{ x }}`
                fallback_id = written
        try:
            expanded = list(
                _expand(suite, defaults, raw, position, base, fallback_id, folder, context, located)
            )
        except SuiteError as exc:
            yield BrokenCase(fallback_id, position, str(exc))
            continue
        for case in expanded:
            if isinstance(case, BrokenCase):  # one bad row of a vars list or data file
                yield case
                continue
            if case.id in seen:
                yield BrokenCase(
                    case.id,
                    case.position,
                    f"{case.position}: duplicate case id {case.id!r} (first at {seen[case.id]})",
                )
                continue
            seen[case.id] = case.position
            yield case


def _entry(
    raw: Any, position: Position, located: Located | None, base: tuple[str | int, ...]
) -> CaseEntry:
    """The validated entry; an error points at the key at fault where it is known."""
    if not isinstance(raw, dict):
        raise position.error(f"a case is a mapping with `prompt:` and `checks:`, not {raw!r}")
    message = raw.pop("__error__", None)
    if message is not None:
        raise position.error(message)
    try:
        return CaseEntry.model_validate(raw)
    except ValidationError as exc:
        loc, text = _first_error(exc)
        where = located.position((*base, *loc)) if located is not None else position
        raise where.error(f"case {raw.get('id', '?')!r}: {text}") from None


def _merged(defaults: Defaults, entry: CaseEntry) -> dict[str, Any]:
    values = {k: v for k, v in defaults.model_dump().items() if v is not None}
    own = entry.model_dump(exclude_unset=True)
    for key, value in own.items():
        if key in ("checks", "tags"):
            values[key] = [*values.get(key, []), *value]
        elif key == "params":
            values[key] = {**values.get("params", {}), **(value or {})}
        elif value is not None:
            values[key] = value
    return values


def _expand(
    suite: str,
    defaults: Defaults,
    raw: Any,
    position: Position,
    base: tuple[str | int, ...],
    fallback_id: str,
    folder: Path,
    context: SuiteContext,
    located: Located | None,
) -> Iterator[SuiteCase | BrokenCase]:
    entry = _entry(dict(raw) if isinstance(raw, dict) else raw, position, located, base)
    values = _merged(defaults, entry)
    shared_vars = entry.vars if isinstance(entry.vars, dict) else {}
    spots = _Spots(
        position, located, base, frozenset(entry.model_fields_set), 0, len(defaults.checks)
    )
    if entry.data is not None and not (folder / entry.data).is_file():
        where = spots.key("data")
        raise where.error(
            f"case {entry.id or fallback_id!r}: data file {entry.data!r} not found "
            f"(looked for {folder / entry.data})"
        )
    if entry.structured is not None:
        yield from _structured_cases(suite, values, entry, spots, folder, context)
        return
    if entry.format is not None:
        if entry.data is None:
            raise position.error(f"case {entry.id or '?'!r}: format {entry.format} needs `data:`")
        fewshot = None
        if entry.fewshot is not None:
            fewshot = formats.FewShot(
                data=folder / entry.fewshot.data, n=entry.fewshot.n, seed=entry.fewshot.seed
            )
        try:
            items = formats.read_format(entry.format, folder / entry.data, fewshot=fewshot)
        except (FormatError, OSError) as exc:
            raise position.error(str(exc)) from None
        items = _sample(items, entry)
        for item in items:
            variables = {**shared_vars, **item.get("vars", {}), "row": item.get("vars", {})}
            row_values = dict(values)
            row_values["checks"] = [*item.get("checks", []), *values.get("checks", [])]
            if values.get("category") is None and item.get("category"):
                row_values["category"] = item["category"]
            if entry.prompt is None:
                row_values["prompt"] = item["prompt"]
            row_position = Position(folder / entry.data, int(item.get("line", 1)))
            default_id = str(item["id"])
            row_spots = dataclasses.replace(
                spots, position=row_position, lead=len(item.get("checks", []))
            )
            yield _guarded(suite, row_values, variables, row_spots, default_id, folder, context)
        return
    if entry.data is not None:
        try:
            rows = _sample(read_rows(folder / entry.data), entry)
        except SuiteError as exc:
            raise spots.key("data").error(f"case {entry.id or fallback_id!r}: {exc}") from None
        for number, row in enumerate(rows, start=1):
            variables = {**shared_vars, "row": row.values}
            default_id = str(row.values.get("id") or f"row-{number}")
            row_position = Position(folder / entry.data, row.line)
            row_spots = dataclasses.replace(spots, position=row_position, row=True)
            yield _guarded(suite, values, variables, row_spots, default_id, folder, context)
        return
    if isinstance(entry.vars, list):
        for number, variables in enumerate(entry.vars, start=1):
            default_id = f"{fallback_id}-{number}"  # used only when the entry has no id
            row_position = spots.at((*base, "vars", number - 1))
            row_spots = dataclasses.replace(spots, position=row_position, row=True)
            yield _guarded(suite, values, variables, row_spots, default_id, folder, context)
        return
    yield _guarded(suite, values, shared_vars, spots, fallback_id, folder, context)


def _structured_cases(
    suite: str,
    values: Mapping[str, Any],
    entry: CaseEntry,
    spots: _Spots,
    folder: Path,
    context: SuiteContext,
) -> Iterator[SuiteCase | BrokenCase]:
    """One case per row of a structured-extraction CSV, checked by a ``structured``
    check holding the row's expected fields."""
    assert entry.structured is not None
    written = entry.structured
    spec = structured.StructuredSpec(
        data=folder / written.data,
        prompt_file=folder / written.prompt_file,
        source=written.source,
        targets=tuple(written.targets) if written.targets else None,
    )
    try:
        rows = _sample(structured.read_structured(spec), entry)
    except SuiteError as exc:
        raise spots.key("structured").error(f"case {entry.id or 'structured'!r}: {exc}") from None
    for row in rows:
        # The prompt is rendered already (the source text is data, never a template):
        # it goes in as a variable's value, which templates insert verbatim.
        row_values = {**values, "prompt": "{{ structured_prompt }}"}
        variables = {
            "structured_prompt": row.prompt,
            "row": {"id": row.id, "source": row.source, **row.references},
        }
        row_spots = dataclasses.replace(spots, position=Position(spec.data, row.line), row=True)
        case = _guarded(suite, row_values, variables, row_spots, row.id, folder, context)
        if isinstance(case, SuiteCase):
            extract = CheckCall("structured", dict(row.references))
            case = dataclasses.replace(case, checks=(*case.checks, extract))
        yield case


def _sample(items: list[Any], entry: CaseEntry) -> list[Any]:
    """Shuffled with ``shuffle_seed`` (the same order on every worker), then cut at
    ``limit``."""
    if entry.shuffle_seed is not None:
        items = list(items)
        random.Random(entry.shuffle_seed).shuffle(items)
    return items[: entry.limit] if entry.limit is not None else items


def _guarded(
    suite: str,
    values: Mapping[str, Any],
    variables: Mapping[str, Any],
    spots: _Spots,
    default_id: str,
    folder: Path,
    context: SuiteContext,
) -> SuiteCase | BrokenCase:
    """`_case`, or a `BrokenCase` saying why not, so one bad row leaves the others."""
    try:
        return _case(suite, values, variables, spots, default_id, folder, context)
    except SuiteError as exc:
        name = default_id
        written = values.get("id")
        if written:
            try:
                name = templates.render(str(written), variables).strip() or default_id
            except TemplateError:
                pass
        return BrokenCase(name, spots.position, str(exc))


def _case(
    suite: str,
    values: Mapping[str, Any],
    variables: Mapping[str, Any],
    spots: _Spots,
    default_id: str,
    folder: Path,
    context: SuiteContext,
) -> SuiteCase:
    position = spots.position
    case_id = str(values.get("id") or default_id)
    try:
        case_id = templates.render(case_id, variables).strip()
    except TemplateError as exc:
        where = position if spots.row else spots.key("id")
        raise where.error(f"case id: {exc}") from None
    if not case_id:
        raise spots.key("id").error("the case id renders empty")

    def render(what: str, value: Any, where: Position | None = None) -> Any:
        try:
            return templates.render_value(value, variables)
        except TemplateError as exc:
            if spots.row:
                where = position
            raise (where or spots.key(what)).error(f"case {case_id!r}: {what}: {exc}") from None

    prompt = render("prompt", values.get("prompt"))
    messages = render("messages", values.get("messages"))
    turns = values.get("turns")
    if turns and (prompt is not None or messages):
        raise position.error(f"case {case_id!r}: give `turns:` or `prompt:`/`messages:`, not both")
    if prompt is None and not messages and not turns:
        raise position.error(f"case {case_id!r}: needs `prompt:`, `messages:` or `turns:`")
    said = tuple(render(f"turn {n + 1}", turn["say"]) for n, turn in enumerate(turns or ()))
    plan: dict[str, Any] = {}
    system = render("system", values.get("system"))
    if system is not None:
        # the suite's own folder first; the session's folder may be the same one
        folders = list(dict.fromkeys([folder / "system_prompts", *context.preset_folders]))
        try:
            plan["system"] = resolve_system(system, folders)
        except ValueError as exc:
            raise spots.key("system").error(f"case {case_id!r}: {exc}") from None
    for key in ("max_tokens", "seed", "stop", "tools", "runs", "pass_rate", "pass_rule"):
        if values.get(key) is not None:
            plan[key] = values[key]
    if values.get("context") is not None:
        plan["context"] = render("context", values["context"])
    if values.get("injections"):
        plan["injections"] = render("injections", values["injections"])
    if values.get("temperature") is not None:
        plan["temperatures"] = [values["temperature"]]
    plan.update(values.get("params") or {})
    checks: list[CheckCall] = []
    turn_of: list[int] = []
    for number, turn in enumerate(turns or ()):
        for written in turn.get("checks", []):
            try:
                checks.append(
                    parse_check(render(f"turn {number + 1}", written), context.custom_checks)
                )
            except ValueError as exc:
                raise position.error(f"case {case_id!r}: turn {number + 1}: {exc}") from None
            turn_of.append(number)
    for index, written in enumerate(values.get("checks", [])):
        turn_of.append(len(said) - 1 if said else 0)
        where = spots.check(index)
        try:
            checks.append(
                parse_check(render(f"check {index + 1}", written, where), context.custom_checks)
            )
        except ValueError as exc:
            raise where.error(f"case {case_id!r}: {exc}") from None
    if "top_logprobs" not in plan and any(reads_alternatives(check) for check in checks):
        plan["top_logprobs"] = CHECK_TOP_LOGPROBS
    per_check = [c.points for c in checks if c.points is not None]
    if per_check and values.get("points") is not None and sum(per_check) != values["points"]:
        raise position.error(
            f"case {case_id!r}: points {values['points']:g} but its checks' points add up "
            f"to {sum(per_check):g}; give points on the case or on its checks"
        )
    max_points = float(sum(per_check)) if per_check else float(values.get("points", 1.0))
    return SuiteCase(
        suite=suite,
        id=case_id,
        position=position,
        prompt=prompt,
        messages=tuple(messages) if messages else None,
        plan=plan,
        checks=tuple(checks),
        max_points=max_points,
        turns=said or None,
        turn_of=tuple(turn_of),
        category=values.get("category"),
        tags=tuple(dict.fromkeys(values.get("tags", []))),
        variables=dict(variables),
        description=values.get("description"),
    )
