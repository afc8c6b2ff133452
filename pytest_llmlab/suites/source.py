"""Reading suite and data files with the position of everything in them.

Every error about a suite names ``file:line:column``; so YAML is composed node by node
and each mapping key and list entry keeps where it starts, JSONL rows keep their line,
and CSV rows the line their record starts on (a quoted cell may span lines).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pytest_llmlab.errors import SuiteError

__all__ = [
    "Located",
    "Position",
    "Row",
    "SuiteError",
    "load_yaml",
    "read_rows",
    "read_text",
]

#: A path into a document: mapping keys and list indexes.
Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    """Where something starts in a file (1-based line and column)."""

    path: Path
    line: int
    column: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"

    def error(self, message: str) -> SuiteError:
        return SuiteError(f"{self}: {message}")


@dataclass(frozen=True, slots=True)
class Located:
    """A parsed document and the position of every node in it."""

    path: Path
    value: Any
    positions: dict[Path_, tuple[int, int]]

    def position(self, at: Sequence[str | int] = ()) -> Position:
        """The position of the node at ``at``, or of its closest parent that has one
        (a validation error may point at a key the document does not have)."""
        key = tuple(at)
        while key and key not in self.positions:
            key = key[:-1]
        line, column = self.positions.get(key, (1, 1))
        return Position(self.path, line, column)


class _Loader(yaml.SafeLoader):
    """SafeLoader with libyaml's speed where the C extension is present."""


def _walk(
    node: yaml.Node, at: Path_, loader: yaml.SafeLoader, out: dict[Path_, tuple[int, int]]
) -> Any:
    out[at] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merges
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                mark = key_node.start_mark
                raise SuiteError(
                    f"{loader.name}:{mark.line + 1}:{mark.column + 1}: a mapping key must "
                    "be a plain value"
                )
            result[key] = _walk(value_node, (*at, str(key)), loader, out)
            # A key's position is its own, not its value's: `max_token: 5` is at `m`.
            out[(*at, str(key))] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_walk(child, (*at, i), loader, out) for i, child in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_yaml(path: Path, text: str | None = None) -> Located:
    """One YAML document with positions; a syntax error is a `SuiteError` at its line."""
    if text is None:
        text = read_text(path)
    loader = _Loader(text)
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        positions: dict[Path_, tuple[int, int]] = {}
        value = _walk(node, (), loader, positions) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None:
            # "found unexpected end of stream" alone hides where the quote was opened
            start = exc.context_mark
            problem += f" ({exc.context} at line {start.line + 1}, column {start.column + 1})"
        raise SuiteError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: YAML error: {exc}") from None
    finally:
        loader.dispose()
    return Located(path, value, positions)


@dataclass(frozen=True, slots=True)
class Row:
    """One data row and the line of the file it starts on; a row that cannot be read
    (kept by ``read_rows(..., keep_bad=True)``) has no values and says why."""

    line: int
    values: dict[str, Any]
    error: str | None = None
    #: The column of the error, where known (0: the line only).
    column: int = 0


def read_text(path: Path, error: type[SuiteError] = SuiteError) -> str:
    """A suite or data file's text (UTF-8, a spreadsheet's BOM tolerated); ``error``
    (a `SuiteError` class) naming the file when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None


def _bad(path: Path, row: Row, keep_bad: bool) -> Row:
    if not keep_bad:
        column = f":{row.column}" if row.column else ""
        raise SuiteError(f"{path}:{row.line}{column}: {row.error}")
    return row


def _jsonl_rows(path: Path, text: str, keep_bad: bool) -> Iterator[Row]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield _bad(path, Row(number, {}, f"invalid JSON: {exc.msg}", exc.colno), keep_bad)
            continue
        if not isinstance(value, dict):
            message = f"each line must be a JSON object, not {type(value).__name__}"
            yield _bad(path, Row(number, {}, message, 1), keep_bad)
            continue
        yield Row(number, value)


def _csv_rows(path: Path, text: str, keep_bad: bool) -> Iterator[Row]:
    stream = io.StringIO(text, newline="")
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise SuiteError(f"{path}:1:1: empty CSV file (a header row is needed)") from None
    except csv.Error as exc:
        raise SuiteError(f"{path}:1:1: invalid CSV: {exc}") from None
    names = [name.strip() for name in header]
    seen: set[str] = set()
    for column, name in enumerate(names, start=1):
        if not name:
            raise SuiteError(f"{path}:1: column {column} has no name")
        if name in seen:
            raise SuiteError(f"{path}:1: duplicate column {name!r}")
        seen.add(name)
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise SuiteError(f"{path}:{start}: invalid CSV: {exc}") from None
        if cells and any(cell.strip() for cell in cells):
            if len(cells) != len(names):
                message = f"{len(cells)} cells, but the header has {len(names)} columns"
                yield _bad(path, Row(start, {}, message), keep_bad)
            else:
                yield Row(start, dict(zip(names, cells, strict=True)))
        start = reader.line_num + 1


def read_rows(path: Path, *, keep_bad: bool = False) -> list[Row]:
    """The rows of a ``.jsonl`` or ``.csv`` file (by extension), each with its line.

    A row that cannot be read (not JSON, the wrong number of cells) raises SuiteError
    naming its line, or with ``keep_bad`` comes back as a `Row` with its ``error``.
    """
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return list(_jsonl_rows(path, text, keep_bad))
    if suffix == ".csv":
        return list(_csv_rows(path, text, keep_bad))
    raise SuiteError(f"{path}: data files are .jsonl or .csv, not {suffix or 'extensionless'}")
