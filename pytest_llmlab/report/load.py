"""Read records back from ``results.jsonl``, tolerating what a crash leaves behind.

A run that was killed mid-write can leave a truncated last line, and a file edited by
hand can hold anything: such lines are skipped with a warning naming the file and the
line number, never a crash of the re-render.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["RecordLineWarning", "iter_records", "load_records"]


class RecordLineWarning(UserWarning):
    """A line of a results file that is not a record; it was skipped."""


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Each record of a JSONL file in order; bad lines warn and are skipped."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                warnings.warn(
                    f"{path}:{number}: skipped a line that is not JSON ({exc.msg})",
                    RecordLineWarning,
                    stacklevel=2,
                )
                continue
            if not isinstance(record, dict) or "test_id" not in record:
                warnings.warn(
                    f"{path}:{number}: skipped a line that is not a record (no test_id)",
                    RecordLineWarning,
                    stacklevel=2,
                )
                continue
            yield record


def load_records(path: Path) -> list[dict[str, Any]]:
    """All records of a JSONL file (see `iter_records`)."""
    return list(iter_records(path))
