"""Read records back from ``results.jsonl``, tolerating what a crash leaves behind.

A run that was killed mid-write can leave a truncated last line, and a file edited by
hand can hold anything: such lines are skipped with a warning naming the file and the
line number, never a crash of the re-render.
"""

from __future__ import annotations

import functools
import types
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_llmlab.results import RecordLineWarning, iter_json_lines

__all__ = [
    "RecordLineWarning",
    "iter_records",
    "load_records",
    "wrong_field",
]


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Each record of a JSONL file in order; bad lines warn and are skipped: not JSON,
    not a record (no ``test_id``), or a field of the wrong type (``"outcome": []``)."""
    for record in iter_json_lines(path):
        line = record.pop("__line__")
        problem = "no test_id" if "test_id" not in record else wrong_field(record)
        if problem is not None:
            warnings.warn(
                f"{path}:{line}: skipped a line that is not a record ({problem})",
                RecordLineWarning,
                stacklevel=2,
            )
            continue
        yield record


@functools.cache
def _field_types() -> dict[str, tuple[type, ...]]:
    """The JSON types each `Record` field may hold: its annotation's, or null."""
    from pytest_llmlab.results import Record

    def types_of(hint: Any) -> tuple[type, ...]:
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            return tuple(t for arg in typing.get_args(hint) for t in types_of(arg))
        if hint is float:
            return (float, int)  # JSON has one number type
        if hint is type(None):
            return (type(None),)
        origin = typing.get_origin(hint)
        return (origin if isinstance(origin, type) else hint,)

    # None is every report's missing value: a field may always be null.
    return {
        name: (*types_of(hint), type(None)) for name, hint in typing.get_type_hints(Record).items()
    }


def wrong_field(record: dict[str, Any]) -> str | None:
    """``"field 'outcome' is a list"`` for the first field of a type its `Record`
    annotation does not allow, else None. Unknown keys are allowed (newer writers)."""
    for name, allowed in _field_types().items():
        if name in record and not isinstance(record[name], allowed):
            return f"field {name!r} is {type(record[name]).__name__}"
    return None


def load_records(path: Path) -> list[dict[str, Any]]:
    """All records of a JSONL file (see `iter_records`)."""
    return list(iter_records(path))
